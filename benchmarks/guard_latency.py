"""What the guardrail sandwich adds to each request: `llmprod bench` through `llmprod serve` with the default
policy (deterministic checks only) and with the sandwich (plus Prompt Guard and Llama Guard on the input,
Llama Guard on the output), the Llama Guard model in-process or behind an endpoint.

    python benchmarks/guard_latency.py --out benchmarks/results/guard-latency-cpu.json
    python benchmarks/guard_latency.py --device cuda --llama-guard DIR --prompt-guard DIR \\
        --guard-endpoint http://127.0.0.1:8011 --guard-name NAME --out ...        # on a GPU, vLLM as the endpoint

One fake engine (llmprod.testing.fake_engine, plain words, known pace) behind every gateway, so the engine
adds the same time to each; one request at a time (`--concurrency 1`), so TTFT is the input checks' cost
plus a constant. Targets run back to back, A-B-C then C-B-A, round after round. Reported: TTFT p50 and
end-to-end p50 added by each sandwich over the default policy (paired by round, median and range), and
each check's own time per request from the gateway's `llmprod_guardrail_latency_seconds`.

Without --llama-guard / --prompt-guard the tiny guard models (real architectures, random weights) are built;
without --guard-endpoint the endpoint is llmprod.testing.guard_endpoint serving the same Llama Guard on CPU.
Thresholds are 1.0: every check runs to the end and none blocks, so the numbers are the checks' cost.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_overhead import free_port, wait_ready  # noqa: E402


def policy(llama_guard: dict, prompt_guard: str, device: str) -> dict:
    never = 1.0  # P >= 1.0 never happens: each check runs, none blocks
    return {"name": "sandwich-bench", "input": [
        {"check": "secrets", "action": "block"}, {"check": "injection", "action": "block"},
        {"check": "pii", "action": "redact"},
        {"check": "prompt_guard", "action": "block", "options": {"model": prompt_guard, "threshold": never,
                                                                  "device": device}},
        {"check": "llama_guard", "action": "block", "options": {**llama_guard, "threshold": never}}],
        "output": [{"check": "secrets", "action": "block"}, {"check": "pii", "action": "redact"},
                   {"check": "llama_guard", "action": "block", "options": {**llama_guard, "threshold": never}}]}


def bench(url: str, requests: int, input_tokens: int, output_tokens: int) -> dict:
    args = [sys.executable, "-m", "llmprod", "bench", url, "--model", "fake", "--concurrency", "1",
            "--requests", str(requests), "--input-tokens", str(input_tokens), "--output-tokens",
            str(output_tokens), "--json"]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"llmprod bench exited {done.returncode}: {done.stderr.strip()}")
    level = json.loads(done.stdout)["levels"][0]
    if level["errors"]:
        raise RuntimeError(f"{url}: {level['errors']} requests failed")
    return {"ttft_p50_ms": level["ttft_ms"]["p50"], "e2e_p50_ms": level["e2e_ms"]["p50"]}


def check_times(metrics_url: str) -> dict[str, float]:
    """Mean ms per request of each (stage, check) from the gateway's histogram."""
    text = httpx.get(metrics_url, timeout=10).text
    sums, counts = {}, {}
    for name, labels, value in re.findall(r"^llmprod_guardrail_latency_seconds_(sum|count)\{([^}]*)\} (\S+)$",
                                          text, re.M):
        found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        key = f"{found['stage']}/{found['check']}"
        (sums if name == "sum" else counts)[key] = float(value)
    return {k: round(1000 * sums[k] / counts[k], 3) for k in sorted(sums) if counts.get(k)}


def paired(runs: dict[str, list[dict]], target: str, key: str) -> dict:
    diffs = [t[key] - d[key] for t, d in zip(runs[target], runs["default"])]
    return {"median": round(statistics.median(diffs), 2), "min": round(min(diffs), 2), "max": round(max(diffs), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "guard-latency-cpu.json")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=30, help="per target and round")
    parser.add_argument("--input-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="where the in-process guard models run")
    parser.add_argument("--llama-guard", help="a Llama Guard model directory (default: the tiny one, built)")
    parser.add_argument("--prompt-guard", help="a Prompt Guard model directory (default: the tiny one, built)")
    parser.add_argument("--guard-endpoint", help="a running server of --llama-guard (default: a loopback one)")
    parser.add_argument("--guard-name", help="the model name the endpoint serves")
    parser.add_argument("--format", default="llama-guard-3-1b", help="the Llama Guard prompt format")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="llmprod-guard-latency-"))
    procs: list[subprocess.Popen] = []
    try:
        from llmprod.tinymodel import guards

        llama_guard = args.llama_guard or str(guards.cached(work, "llama-guard"))
        prompt_guard = args.prompt_guard or str(guards.cached(work, "prompt-guard"))
        endpoint, name = args.guard_endpoint, args.guard_name
        if endpoint is None:
            port = free_port()
            procs.append(subprocess.Popen([sys.executable, "-m", "llmprod.testing.guard_endpoint", llama_guard,
                                           "--port", str(port), "--served-model-name", "guard"]))
            endpoint, name = f"http://127.0.0.1:{port}", "guard"
            wait_ready(f"{endpoint}/health", timeout=120)
        engine_port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "llmprod.testing.fake_engine", "--port",
                                       str(engine_port), "--tokens", str(args.output_tokens), "--itl", "0.002",
                                       "--words"]))
        engine = f"http://127.0.0.1:{engine_port}"
        wait_ready(f"{engine}/health")
        policies = {
            "default": None,
            "sandwich, Llama Guard in-process": policy({"model": llama_guard, "device": args.device,
                                                         "format": args.format}, prompt_guard, args.device),
            "sandwich, Llama Guard via endpoint": policy({"endpoint": endpoint, "model": name,
                                                           "format": args.format}, prompt_guard, args.device),
        }
        targets: dict[str, str] = {}
        for label, body in policies.items():
            flags = ["--guardrails", "default"]
            if body is not None:
                path = work / f"{len(targets)}.yaml"
                path.write_text(json.dumps(body))
                flags = ["--guardrails", str(path)]
            port = free_port()
            procs.append(subprocess.Popen([sys.executable, "-m", "llmprod", "serve", "--upstream", engine,
                                           "--port", str(port), *flags], stdout=subprocess.DEVNULL))
            targets[label] = f"http://127.0.0.1:{port}"
            wait_ready(f"{targets[label]}/health", timeout=300)
        runs: dict[str, list[dict]] = {label: [] for label in targets}
        order = list(targets)
        for round_ in range(args.rounds):
            for label in (order if round_ % 2 == 0 else order[::-1]):
                runs[label].append(bench(targets[label], args.requests, args.input_tokens, args.output_tokens))
                print(f"round {round_ + 1} {label}: {runs[label][-1]}", file=sys.stderr)
        runs["default"] = runs.pop("default")
        result = {
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "when": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": {"platform": platform.platform(), "python": platform.python_version()},
            "setup": {"rounds": args.rounds, "requests": args.requests, "concurrency": 1,
                      "input_tokens": args.input_tokens, "output_tokens": args.output_tokens,
                      "device": args.device, "llama_guard": llama_guard, "prompt_guard": prompt_guard,
                      "endpoint": endpoint, "format": args.format},
            "added_over_default_ms": {label: {"ttft_p50": paired(runs, label, "ttft_p50_ms"),
                                              "e2e_p50": paired(runs, label, "e2e_p50_ms")}
                                      for label in targets if label != "default"},
            "check_ms_per_request": {label: check_times(f"{url}/metrics") for label, url in targets.items()},
            "runs": runs,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: result[k] for k in ("added_over_default_ms", "check_ms_per_request")}, indent=2))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
