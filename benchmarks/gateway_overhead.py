"""The gateway's cost: `llmprod bench` against a fast engine directly and through `llmprod serve --upstream`.

    python benchmarks/gateway_overhead.py --out benchmarks/results/gateway-overhead-cpu.json

One engine (llmprod.testing.fake_engine: a real HTTP server on loopback that streams tokens as fast as it
can, or at --itl seconds per token, of the kind of text --text says, with the usage chunk and [DONE] like vLLM) and two gateways in front of
it, one with --no-guardrails and one with the default policy. The same client (`llmprod bench`) loads each
target in turn for --duration seconds per concurrency level, in A-B-C then C-B-A order round after round
so drift hits all alike. Reported, paired by round (each gateway run against the direct run of the same
round): TTFT p50/p99 added by the gateway (ms), output tokens/s kept (ratio), and each stream's pace after
its first token kept (ratio of TPOT p50), medians and ranges.
By default everything shares this machine's cores: the client, the engine and the gateway compete for
them, so at high concurrency the ratio also measures the gateway's CPU use per token, which is reported
beside the engine's (CPU seconds from /proc over each run, per streamed token). With --isolate the engine,
the client and each gateway run on a core of their own (as a gateway does in production, beside an
engine on a GPU), so the ratio measures the extra hop rather than the competition for CPU. --workers N
runs each gateway as N processes (`serve --workers N`), with N cores of its own under --isolate; their CPU
is summed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path


from llmprod.serve.engines import free_port
from llmprod.testing.servers import proc_stat, wait_ready

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a running process and its children have used so far (Linux /proc): a gateway
    with --workers is `serve` and the worker processes it started."""
    total = 0
    for p in [pid, *_children(pid)]:
        fields = proc_stat(p)[1]
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def spawn(args: list[str], cores: set[int] | None, **kwargs) -> subprocess.Popen:
    """Start a process, pinned to `cores` (None: wherever the system puts it). Pinned as it starts, long
    before its imports could start a thread, so any thread it makes inherits the set."""
    proc = subprocess.Popen(args, **kwargs)
    if cores:
        os.sched_setaffinity(proc.pid, cores)
    return proc


def bench(url: str, levels: str, duration: float, output_tokens: int, cores: set[int] | None,
          model: str = "fake") -> dict:
    args = [sys.executable, "-m", "llmprod", "bench", url, "--model", model, "--concurrency", levels,
            "--input-tokens", "64", "--output-tokens", str(output_tokens), "--duration", str(duration), "--json"]
    if model != "fake":
        args.append("--ignore-eos")  # a real engine: every request the same length
    proc = spawn(args, cores, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"llmprod bench exited {proc.returncode}: {err.strip()}")
    return {level["concurrency"]: level for level in json.loads(out)["levels"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gateway-overhead-cpu.json")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--duration", type=float, default=2.0,
                        help="seconds per concurrency level and round (a fixed request count is over in ms at c=1)")
    parser.add_argument("--text", default="prose", choices=("prose", "runs", "code", "json", "base64"),
                        help="what the engine streams (llmprod.testing.texts): the output guardrails' hold-back "
                             "and work depend on it")
    parser.add_argument("--itl", type=float, default=0.0,
                        help="seconds the engine waits between tokens of a stream (0: as fast as it can)")
    parser.add_argument("--upstream", help="a running engine to measure instead of the fake one (e.g. vLLM); "
                                           "its CPU is not read")
    parser.add_argument("--model", default="fake", help="the model name the --upstream engine serves")
    parser.add_argument("--isolate", action="store_true",
                        help="a core of its own for the engine, the client and each gateway (needs 4 cores)")
    parser.add_argument("--workers", type=int, default=1, help="gateway processes each (serve --workers)")
    args = parser.parse_args()

    placement: dict[str, set[int]] = {}
    if args.isolate:
        cores = sorted(os.sched_getaffinity(0))
        need = 2 + 2 * args.workers
        if len(cores) < need:
            parser.error(f"--isolate needs {need} cores, this process may use {len(cores)}")
        cores = cores[1:] if len(cores) > need else cores  # leave the first core to the system where possible
        placement = {"engine": {cores[0]}, "client": {cores[1]},
                     "gateway": set(cores[2:2 + args.workers]),
                     "gateway+default-policy": set(cores[2 + args.workers:2 + 2 * args.workers])}

    procs = []
    try:
        if args.upstream:
            engine = args.upstream.rstrip("/").removesuffix("/v1")
        else:
            engine_port = free_port()
            procs.append(spawn([sys.executable, "-m", "llmprod.testing.fake_engine", "--port", str(engine_port),
                                "--tokens", "4096", "--text", args.text, "--itl", str(args.itl)],
                               placement.get("engine")))
            engine = f"http://127.0.0.1:{engine_port}"
        wait_ready(f"{engine}/health")
        targets = {"direct": engine}
        pids = {"direct": None}
        for name, flags in (("gateway", ["--no-guardrails"]), ("gateway+default-policy", [])):
            port = free_port()
            procs.append(spawn([sys.executable, "-m", "llmprod", "serve", "--upstream", engine, "--port", str(port),
                                "--workers", str(args.workers), *flags], placement.get(name), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            targets[name], pids[name] = f"http://127.0.0.1:{port}", procs[-1].pid
            wait_ready(f"{targets[name]}/health")
        levels = [int(c) for c in args.concurrency.split(",")]
        runs: dict[str, dict[int, list[dict]]] = {name: {level: [] for level in levels} for name in targets}
        # CPU seconds of the engine and of the gateway, and tokens streamed, summed over all runs of a target
        cpu: dict[str, dict[str, float]] = {name: {"engine": 0.0, "gateway": 0.0, "tokens": 0} for name in targets}
        for round_ in range(args.rounds):
            for level in levels:
                # The targets back to back at each level, A-B-C then C-B-A: the runs compared are seconds
                # apart, and drift hits all alike.
                order = list(targets.items())
                for name, url in order if round_ % 2 == 0 else order[::-1]:
                    watched = {"engine": None if args.upstream else procs[0].pid, "gateway": pids[name]}
                    before = {part: cpu_seconds(pid) for part, pid in watched.items() if pid}
                    result = bench(url, str(level), args.duration, args.output_tokens, placement.get("client"),
                                   args.model)[level]
                    runs[name][level].append(result)
                    for part, start in before.items():
                        cpu[name][part] += cpu_seconds(watched[part]) - start
                    cpu[name]["tokens"] += result["output_tokens"]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)

    def series(name: str, level: int, key: str) -> list[float]:
        """One value per round; key "ttft_ms.p50" reaches into the nested summary."""
        values = []
        for value in runs[name][level]:
            for part in key.split("."):
                value = value[part]
            values.append(value)
        return values

    def summary(values: list[float], digits: int = 3) -> tuple[float, list[float]]:
        return round(statistics.median(values), digits), [round(min(values), digits), round(max(values), digits)]

    table = []
    for level in levels:
        base = {key: series("direct", level, key)
                for key in ("ttft_ms.p50", "ttft_ms.p99", "tpot_ms.p50", "output_tokens_per_s")}
        row = {"concurrency": level, "direct": {"ttft_p50_ms": statistics.median(base["ttft_ms.p50"]),
                                                "ttft_p99_ms": statistics.median(base["ttft_ms.p99"]),
                                                "output_tokens_per_s": statistics.median(base["output_tokens_per_s"])}}
        for name in ("gateway", "gateway+default-policy"):
            got = {key: series(name, level, key) for key in base}
            # Paired by round (the two ran back to back): the median of the per-round differences and
            # ratios, with their range, rather than a ratio of medians taken at different times.
            added_p50, added_p50_range = summary([g - d for g, d in zip(got["ttft_ms.p50"], base["ttft_ms.p50"])])
            added_p99, _ = summary([g - d for g, d in zip(got["ttft_ms.p99"], base["ttft_ms.p99"])])
            ratio, ratio_range = summary([g / d for g, d in zip(got["output_tokens_per_s"], base["output_tokens_per_s"])])
            # A stream's own pace after its first token (1 / TPOT): what the gateway costs per token,
            # apart from what it adds once per request (the added TTFT).
            pace, pace_range = summary([d / g for g, d in zip(got["tpot_ms.p50"], base["tpot_ms.p50"])])
            row[name] = {"ttft_p50_ms": statistics.median(got["ttft_ms.p50"]),
                         "ttft_p99_ms": statistics.median(got["ttft_ms.p99"]),
                         "output_tokens_per_s": statistics.median(got["output_tokens_per_s"]),
                         "added_ttft_p50_ms": added_p50, "added_ttft_p50_ms_range": added_p50_range,
                         "added_ttft_p99_ms": added_p99,
                         "throughput_ratio": ratio, "throughput_ratio_range": ratio_range,
                         "stream_pace_ratio": pace, "stream_pace_ratio_range": pace_range}
        # The policy's own cost: the guarded gateway against the unguarded one, paired by round.
        plain, guarded = (series(n, level, "output_tokens_per_s") for n in ("gateway", "gateway+default-policy"))
        ttft_plain, ttft_guarded = (series(n, level, "ttft_ms.p50") for n in ("gateway", "gateway+default-policy"))
        ratio, ratio_range = summary([g / p for g, p in zip(guarded, plain)])
        added, added_range = summary([g - p for g, p in zip(ttft_guarded, ttft_plain)])
        row["default-policy-vs-gateway"] = {"throughput_ratio": ratio, "throughput_ratio_range": ratio_range,
                                            "added_ttft_p50_ms": added, "added_ttft_p50_ms_range": added_range}
        table.append(row)
    cpu_us_per_token = {name: {part: round(cpu[name][part] / max(cpu[name]["tokens"], 1) * 1e6, 2)
                               for part in ("engine", "gateway")} for name in targets}

    def brief(r: dict) -> dict:
        return {"ttft_p50_ms": round(r["ttft_ms"]["p50"], 3), "tpot_p50_ms": round(r["tpot_ms"]["p50"], 4),
                "output_tokens_per_s": round(r["output_tokens_per_s"])}

    per_round = {str(level): {name: [brief(r) for r in runs[name][level]] for name in targets} for level in levels}
    result = {"command": " ".join(["python", *sys.argv]), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "cores": {role: sorted(c) for role, c in placement.items()} or "shared",
              "rounds": args.rounds, "seconds_per_level": args.duration, "output_tokens": args.output_tokens,
              "text": "what the model writes" if args.upstream else args.text, "engine_itl_s": args.itl,
              "upstream": args.upstream, "model": args.model, "gateway_workers": args.workers,
              "goal": {"added_ttft_p50_ms": 2.0, "throughput_ratio": 0.9}, "levels": table,
              "cpu_us_per_output_token": cpu_us_per_token, "per_round": per_round}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for row in table:
        print(f"c={row['concurrency']:3d} direct ttft p50 {row['direct']['ttft_p50_ms']:.2f} ms "
              f"{row['direct']['output_tokens_per_s']:.0f} tok/s | " + " | ".join(
                  f"{n}: {row[n]['added_ttft_p50_ms']:+.2f} ms p50 {row[n]['added_ttft_p50_ms_range']}, "
                  f"{row[n]['added_ttft_p99_ms']:+.2f} ms p99, {row[n]['throughput_ratio']:.2f}x "
                  f"{row[n]['throughput_ratio_range']}, pace {row[n]['stream_pace_ratio']:.2f}x"
                  for n in ("gateway", "gateway+default-policy"))
              + " | policy vs gateway: {throughput_ratio:.2f}x {throughput_ratio_range}, "
                "{added_ttft_p50_ms:+.2f} ms p50".format(**row["default-policy-vs-gateway"]))
    print("CPU per output token (us): " + ", ".join(
        f"{name}: engine {v['engine']:.1f}, gateway {v['gateway']:.1f}" for name, v in cpu_us_per_token.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
