"""A soak with chaos: `llmprod serve` under a long mixed load while its engine is killed every minute.

    python benchmarks/soak.py --minutes 10 --out benchmarks/results/soak-cpu.json

`llmprod serve --engine vllm --vllm-bin FAKE` with the default guardrail policy and --api-keys (four clients,
one limited to 30 requests a minute), where FAKE runs llmprod.testing.fake_engine (the supervised engine
path; vLLM cannot run here). `--streams` clients loop until the time is up, each request one of:
  a normal chat request, streamed or not (most), with one of the keys;
  a stream the client drops after its first chunk (~10%);
  a malformed body (~4%), an oversized one sent chunked with no Content-Length (~2%);
  a stream read slowly, 50 ms between reads (~5%).
Every `--kill-every` seconds the engine's process group leader is SIGKILLed; serve restarts it.

Each request's outcome, as the client saw it: completed, an error in OpenAI's shape (status counted; a
stream's error event counts as its status), dropped by the client on purpose, or **lost**: anything
else (a connection reset, a stream that ends without [DONE] or an error event, a non-JSON error). The
goal is 0 lost. Also: the gateway's RSS and open file descriptors (after a minute of warm-up and at the
end), `llmprod_requests_total` against what the clients saw, and the engine processes left after SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _measure import engine_leader, processes, rss_and_fds  # noqa: E402
from llmprod.testing.fake_engine import vllm_executable  # noqa: E402
from llmprod.testing.servers import free_port  # noqa: E402

KEYS = {"alpha": "soak-alpha-0001", "beta": "soak-beta-0002", "gamma": "soak-gamma-0003", "capped": "soak-capped-04"}
MAX_BODY = 64 * 1024
# A stream's error event → the status the gateway counts it under (llmprod/serve/gateway/relay.py).
STREAM_ERROR_STATUS = {"upstream_stream_error": 502, "upstream_timeout": 504, "guardrail_unavailable": 503,
                       "internal_error": 500}


def fake_vllm(work: Path) -> Path:
    return vllm_executable(work, "--tokens", "24", "--itl", "0.01", "--text", "prose", "--spawn-child")


def keys_file(work: Path) -> Path:
    path = work / "keys.yaml"
    lines = ["keys:"] + [f"  - {{name: {n}, key: {k}{', requests_per_minute: 30' if n == 'capped' else ''}}}"
                         for n, k in KEYS.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def engine_processes(groups: set[int]) -> list[tuple[int, str]]:
    """Processes of the engines `serve` started (each in its own group); other engines on the machine aside."""
    return [(pid, cmd) for pid, (group, cmd) in processes().items() if group in groups]


class Tally:
    def __init__(self) -> None:
        self.outcomes: collections.Counter = collections.Counter()
        self.statuses: collections.Counter = collections.Counter()  # what the gateway should have counted
        self.lost: list[str] = []
        self.sent = 0

    def record(self, outcome: str, status: int | None, detail: str = "") -> None:
        self.outcomes[outcome] += 1
        if status is not None:
            self.statuses[str(status)] += 1
        if outcome == "lost" and len(self.lost) < 20:
            self.lost.append(detail)


def _error_shaped(body: bytes) -> bool:
    try:
        error = json.loads(body)["error"]
        return all(k in error for k in ("message", "type", "code"))
    except (ValueError, KeyError, TypeError):
        return False


async def one_request(session, url: str, rng: random.Random, tally: Tally) -> None:
    import aiohttp

    roll = rng.random()
    name = "capped" if rng.random() < 0.06 else rng.choice(["alpha", "beta", "gamma"])
    headers = {"Authorization": f"Bearer {KEYS[name]}", "Content-Type": "application/json"}
    stream = rng.random() < 0.7
    body = {"model": "soak", "messages": [{"role": "user", "content": "tell me about the weather"}], "max_tokens": 24,
            "stream": stream}
    data: bytes | None = json.dumps(body).encode()
    kind = "normal"
    if roll < 0.04:
        kind, data = "malformed", b'{"model": "soak", "messages": [{"role": '
    elif roll < 0.06:
        kind = "oversized"

        async def chunks():
            yield b'{"model": "soak", "prompt": "'
            for _ in range(100):
                yield b"x" * 1024
            yield b'"}'
        data = chunks()
    elif roll < 0.16 and stream:
        kind = "drop"
    elif roll < 0.21 and stream:
        kind = "slow"
    tally.sent += 1
    try:
        async with session.post(f"{url}/v1/chat/completions", data=data, headers=headers) as response:
            status = response.status
            if status != 200:
                raw = await response.read()
                if _error_shaped(raw):
                    tally.record(f"error {status}", status)
                    if status == 503:
                        await asyncio.sleep(0.2)  # the engine is restarting: back off a little
                else:
                    tally.record("lost", status, f"HTTP {status} not in OpenAI's shape: {raw[:120]!r}")
                return
            if not stream or kind in ("malformed", "oversized"):
                raw = await response.read()
                ok = b'"choices"' in raw
                tally.record("completed" if ok else "lost", 200, "" if ok else f"200 without choices: {raw[:120]!r}")
                return
            seen_done, error_event, first = False, None, True
            async for line in response.content:
                if kind == "drop" and not first:
                    response.close()  # hang up mid-stream: the gateway counts a 499
                    tally.record("dropped by the client", 499)
                    return
                first = False
                if kind == "slow":
                    await asyncio.sleep(0.05)
                if line.startswith(b"data: [DONE]"):
                    seen_done = True
                elif line.startswith(b"data: {") and b'"error"' in line[:40]:
                    error_event = line
            if seen_done and error_event is None:
                tally.record("completed", 200)
            elif error_event is not None and _error_shaped(error_event[6:]):
                # The stream began with 200; the gateway labels it by how it failed (relay.py).
                code = json.loads(error_event[6:])["error"]["code"]
                tally.record("error event in the stream", STREAM_ERROR_STATUS.get(code, 200))
            else:
                tally.record("lost", 200, f"a stream ended without [DONE] or an error event ({kind})")
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        tally.record("lost", None, f"{type(exc).__name__}: {exc} ({kind})")


async def load(url: str, streams: int, seconds: float, seed: int, tally: Tally) -> None:
    import aiohttp

    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=120)

    async def worker(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                await one_request(session, url, rng, tally)

    await asyncio.gather(*(worker(i) for i in range(streams)))


async def chaos(every: float, seconds: float, kills: list[dict], serve_pid: int, groups: set[int]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() + every < deadline:
        await asyncio.sleep(every)
        leader = engine_leader(serve_pid)
        if leader is not None:
            groups.add(leader)
            os.killpg(leader, signal.SIGKILL)
            kills.append({"at": round(time.monotonic(), 1), "pid": leader})


async def sample(pid: int, seconds: float, samples: list[dict]) -> None:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        rss, fds = rss_and_fds(pid)
        samples.append({"t": round(time.monotonic() - start, 1), "rss": rss, "fds": fds})
        await asyncio.sleep(5)


def gateway_counts(metrics_text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, float] = collections.Counter()
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "llmprod_requests":
            for sample_ in family.samples:
                if sample_.name.endswith("_total"):
                    counts[sample_.labels["status"]] += sample_.value
    return dict(counts)


def run(minutes: float, streams: int, kill_every: float, seed: int) -> dict:
    import httpx

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    port = free_port()
    (work / "soak").mkdir()
    (work / "soak" / "config.json").write_text("{}")  # a model directory for serve's check; the engine is fake
    cmd = [sys.executable, "-m", "llmprod", "serve", str(work / "soak"), "--engine", "vllm",
           "--vllm-bin", str(fake_vllm(work)), "--api-keys", str(keys_file(work)), "--served-model-name", "soak",
           "--port", str(port), "--max-body-size", f"{MAX_BODY}B",
           "--request-timeout", "30", "--grace-period", "10", "--engine-log", str(work / "engine.log"), "--json"]
    serve = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(work / "serve.err", "w"), text=True)
    buffer = ""
    for line in serve.stdout:  # the ready document, printed once the gateway listens
        buffer += line
        if line.rstrip() == "}":
            break
    if not buffer:
        raise RuntimeError(f"serve did not start: {(work / 'serve.err').read_text()[-2000:]}")
    ready = json.loads(buffer)
    url = ready["url"].removesuffix("/v1")
    seconds = minutes * 60
    tally, kills, samples = Tally(), [], []
    groups = {ready["engine_pid"]}

    async def main() -> None:
        await asyncio.gather(load(url, streams, seconds, seed, tally), chaos(kill_every, seconds, kills, serve.pid, groups),
                             sample(serve.pid, seconds, samples))

    started = time.monotonic()
    asyncio.run(main())
    elapsed = time.monotonic() - started
    time.sleep(1.0)
    counted = gateway_counts(httpx.get(f"{url}/metrics", timeout=10).text)
    last = engine_leader(serve.pid)
    groups |= {last} if last is not None else set()
    serve.send_signal(signal.SIGTERM)
    exit_code = serve.wait(timeout=60)
    time.sleep(1.0)
    left = engine_processes(groups)
    clients = dict(tally.statuses)
    return {
        "command": " ".join(["python", "benchmarks/soak.py", *sys.argv[1:]]),
        "minutes": minutes, "streams": streams, "kill_every_seconds": kill_every, "seconds": round(elapsed, 1),
        "requests_sent": tally.sent,
        "outcomes": dict(tally.outcomes),
        "silently_lost": tally.outcomes.get("lost", 0),
        "lost_examples": tally.lost,
        "engine_kills": len(kills),
        "statuses_seen_by_clients": clients,
        "llmprod_requests_total_by_status": {k: int(v) for k, v in counted.items()},
        "metrics_match_clients": {k: int(v) for k, v in counted.items()} == clients,
        **growth(samples, seconds),
        "serve_exit_code": exit_code,
        "engine_processes_left": len(left),
        "engine_processes_left_commands": [cmd[:200] for _, cmd in left],
        "samples": samples,
    }


def growth(samples: list[dict], seconds: float) -> dict:
    """RSS and open descriptors: the median of the minute after a minute of warm-up against the median of the
    last minute (single samples swing with the connections open at that instant: an engine kill drops ~40)."""
    import statistics

    window = min(60.0, seconds / 3)
    early = [s for s in samples if window <= s["t"] < 2 * window]
    late = [s for s in samples if s["t"] >= samples[-1]["t"] - window] if samples else []
    out = {}
    for key, name in (("rss", "gateway_rss_bytes"), ("fds", "gateway_open_fds")):
        if early and late:
            a, b = statistics.median(x[key] for x in early), statistics.median(x[key] for x in late)
            out[name] = {"after_warm_up": a, "end": b, "growth": round(b / a - 1, 4),
                         "max": max(x[key] for x in samples)}
        else:
            out[name] = {"after_warm_up": None, "end": None, "growth": None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--kill-every", type=float, default=60.0, help="seconds between engine kills")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = run(args.minutes, args.streams, args.kill_every, args.seed)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    sys.exit(0 if result["silently_lost"] == 0 and result["engine_processes_left"] == 0 else 1)


if __name__ == "__main__":
    main()
