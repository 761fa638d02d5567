"""`llmprod serve` keeping an engine alive under load: kill its processes, measure what clients see.

    python benchmarks/supervision.py MODEL --vllm-bin /tmp/vbin/vllm --out results.json [-- ENGINE FLAGS]

Starts `llmprod serve MODEL --engine vllm --json`, runs `--clients` closed-loop chat clients (16 tokens a
request), then, one at a time, SIGKILLs vLLM's engine process (the child whose command line matches
`--core-pattern`, VLLM::EngineCore) and the API server (the engine's process-group leader). For each kill:
the statuses clients got, whether every error was OpenAI-shaped, and the recovery time (from the kill to the
first 200 after it). Then SIGTERM to `serve`: its exit code and whether any process of the engine's groups
is left. Without a GPU the fake engine stands in (`--vllm-bin` a script running llmprod.testing.fake_engine
with --spawn-child, `--core-pattern time.sleep`), which checks this script, not vLLM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from _measure import engine_leader, processes
from llmprod.serve.engines import free_port


def group_members(pgid: int) -> list[str]:
    return [f"{pid} {cmd[:120]}" for pid, (group, cmd) in processes().items() if group == pgid]


class Load:
    """Closed-loop clients; every answer is recorded as (time, status, OpenAI-shaped error or not)."""

    def __init__(self, url: str, model: str, clients: int) -> None:
        self.url, self.model = url, model
        self.records: list[tuple[float, int, bool, float]] = []  # (answered, status, shaped, sent)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        self.lock = threading.Lock()

    def _client(self) -> None:
        body = {"model": self.model, "messages": [{"role": "user", "content": "Say something."}], "max_tokens": 16}
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    r = client.post(f"{self.url}/chat/completions", json=body)
                    status = r.status_code
                    shaped = status == 200 or _openai_error(r)
                except httpx.HTTPError:
                    status, shaped = 0, False  # connection refused or reset: a dropped request
                with self.lock:
                    self.records.append((time.monotonic(), status, shaped, sent))
                if status != 200:
                    time.sleep(0.1)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def between(self, start: float, end: float) -> list[tuple[float, int, bool, float]]:
        with self.lock:
            return [r for r in self.records if start <= r[0] < end]


def _openai_error(response: httpx.Response) -> bool:
    try:
        error = response.json().get("error")
    except ValueError:
        return False
    return isinstance(error, dict) and isinstance(error.get("message"), str) and "type" in error


def read_document(stream) -> dict:
    """The one JSON document `serve --json` prints once it listens ({} if it exits first)."""
    text = ""
    for line in stream:
        text += line
        try:
            return json.loads(text)
        except ValueError:
            continue
    return {}


def kill_and_recover(load: Load, victim: int, what: str, timeout: float) -> dict:
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    recovered = None
    while time.monotonic() - killed < timeout:
        after = load.between(killed, time.monotonic())
        failures = [r for r in after if r[1] != 200]
        # recovered: a request sent after the first failure was answered
        ok_after_failure = [r for r in after if r[1] == 200 and failures and r[3] > failures[0][0]]
        if ok_after_failure:
            recovered = ok_after_failure[0][0]
            break
        time.sleep(0.2)
    window = load.between(killed, recovered or time.monotonic())
    statuses: dict[str, int] = {}
    for _, status, _, _ in window:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {"killed": what, "pid": victim, "recovery_seconds": round(recovered - killed, 2) if recovered else None,
            "statuses_until_recovered": statuses,
            "all_errors_openai_shaped": all(r[2] for r in window)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--vllm-bin", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--core-pattern", default="EngineCore")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds each recovery may take")
    argv = sys.argv[1:]
    engine_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.engine_args = engine_args

    port = free_port()
    log = args.out.with_suffix(".engine.log")
    cmd = [sys.executable, "-m", "llmprod", "serve", args.model, "--engine", "vllm", "--vllm-bin", args.vllm_bin,
           "--port", str(port), "--served-model-name", "m", "--engine-log", str(log), "--json", "--", *args.engine_args]
    started = time.monotonic()
    serve = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = read_document(serve.stdout)
    result: dict = {"command": " ".join(cmd), "ready": ready, "startup_seconds": round(time.monotonic() - started, 1)}
    groups: set[int] = set()
    try:
        if "url" not in ready:
            result["error"] = serve.stderr.read()[-2000:]
            return 1
        load = Load(ready["url"], "m", args.clients)
        load.start()
        time.sleep(3)
        kills = []
        leader = ready["engine_pid"]
        groups.add(leader)
        core = [pid for pid, (group, cmd) in processes().items() if group == leader and args.core_pattern in cmd
                and pid != leader]
        if core:
            kills.append(kill_and_recover(load, core[0], f"engine core ({args.core_pattern})", args.timeout))
        else:
            kills.append({"killed": "engine core", "error": f"no process matching {args.core_pattern!r}",
                          "group": group_members(leader)})
        time.sleep(2)
        leader = _engine_leader(serve.pid)
        groups.add(leader)
        kills.append(kill_and_recover(load, leader, "API server (group leader)", args.timeout))
        time.sleep(2)
        load.stop.set()
        result["kills"] = kills
        result["requests"] = len(load.records)
        result["dropped_connections"] = sum(1 for r in load.records if r[1] == 0)
    finally:
        try:
            groups.add(_engine_leader(serve.pid))  # the engine started after the last kill
        except SystemExit:
            pass
        stopping = time.monotonic()
        serve.send_signal(signal.SIGTERM)
        try:
            result["serve_exit_code"] = serve.wait(timeout=120)
        except subprocess.TimeoutExpired:
            serve.kill()
            result["serve_exit_code"] = "killed after 120 s"
        result["shutdown_seconds"] = round(time.monotonic() - stopping, 1)
        time.sleep(1)
        # Every process of every engine `serve` started (each in its own group, EngineCore and workers with
        # it); other vLLMs on the machine are not this run's business.
        left = [f"{pid} {cmd[:120]}" for pid, (pgid, cmd) in processes().items() if pgid in groups]
        result["left_behind"] = left
        result["serve_stderr_tail"] = serve.stderr.read()[-3000:]
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k != "serve_stderr_tail"}, indent=2))
    return 0


def _engine_leader(serve_pid: int) -> int:
    """The engine's process now (a restart changed it), or exit: nothing to measure without it."""
    leader = engine_leader(serve_pid)
    if leader is None:
        raise SystemExit("cannot find the engine's process after the restart")
    return leader


if __name__ == "__main__":
    sys.exit(main())
