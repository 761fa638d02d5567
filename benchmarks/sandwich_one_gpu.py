"""The sandwich on one GPU against the default policy on the same engine (issue #32's goals), A-B-B-A.

    python benchmarks/sandwich_one_gpu.py --vllm-bin /tmp/vbin/vllm --out OUTDIR      # on the H200 machine

A: `llmprod serve MAIN --engine vllm --guardrails SANDWICH` — serve starts the main model's vLLM and a vLLM for the
policy's Llama Guard on the same GPU, the memory split between them; Prompt Guard in-process (on CPU here:
the gateway runs without a GPU of its own). B: `llmprod serve --upstream MAIN_ENGINE --guardrails default`, a
second gateway in front of A's main engine, so both measure the same engine. `llmprod bench` at each
concurrency, A-B-B-A, `--rounds` times. Reported: TTFT p50 added by A over B at each concurrency, end to end
p50 ratio, tokens/s ratio, the guard checks' own latency from A's /metrics, A's ready document (the split),
and every engine's start-up log (the main model's KV against `estimate-memory --vllm-log`).

Models (random weights, real shapes; nothing downloaded): the main model is Llama-3.1-8B's config served with
`--load-format dummy`; Llama Guard is Llama-3.2-1B-shaped (Llama Guard 3 1B's shapes) with Llama Guard's prompt
vocabulary; Prompt Guard is the tiny DeBERTa-v2 (Prompt Guard 2 is a 86M one; in-process either way). Guard
thresholds are 1.0: every check runs to the end and none blocks, so the numbers are the checks' cost.
`--vllm-bin` may be llmprod.testing.fake_engine's stand-in, to try the orchestration without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "tests" / "data" / "model-configs"


def models(work: Path, shaped: bool) -> tuple[Path, Path, Path]:
    """(main model directory, Llama Guard directory, Prompt Guard directory)."""
    from llmprod.tinymodel import RANDOM, _train_tokenizer, corpus_split
    from llmprod.tinymodel.guards import build_tiny_llama_guard, build_tiny_prompt_guard

    main = work / "llama-3.1-8b"
    main.mkdir(parents=True, exist_ok=True)
    config = json.loads((CONFIGS / "meta-llama__Llama-3.1-8B-Instruct.json").read_text())
    (main / "config.json").write_text(json.dumps({k: v for k, v in config.items() if not k.startswith("_")}))
    _train_tokenizer(corpus_split()[0], RANDOM).save_pretrained(main)
    guard = work / "llama-guard-1b"  # the name says "guard": the stand-in vllm scores it as a Llama Guard
    if not (guard / "tiny-model.json").exists():
        build_tiny_llama_guard(guard, config_json=CONFIGS / "meta-llama__Llama-3.2-1B-Instruct.json" if shaped else None,
                               dtype="bfloat16" if shaped else "float32")
    prompt_guard = work / "prompt-guard"
    if not (prompt_guard / "tiny-model.json").exists():
        build_tiny_prompt_guard(prompt_guard)
    return main, guard, prompt_guard


def sandwich(path: Path, guard: Path, prompt_guard: Path) -> Path:
    import yaml

    policy = {"name": "sandwich-one-gpu",
              "input": [{"check": "secrets", "action": "block"}, {"check": "injection", "action": "block"},
                        {"check": "prompt_guard", "action": "block",
                         "options": {"model": str(prompt_guard), "threshold": 1.0}},
                        {"check": "llama_guard", "action": "block",
                         "options": {"model": str(guard), "format": "llama-guard-3-1b", "threshold": 1.0}}],
              "output": [{"check": "secrets", "action": "block"},
                         {"check": "llama_guard", "action": "block",
                          "options": {"model": str(guard), "format": "llama-guard-3-1b", "threshold": 1.0,
                                      "every_tokens": 64}}]}
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


def serve(args: list[str], out: Path, name: str, env: dict) -> tuple[subprocess.Popen, dict]:
    """`llmprod serve --json ARGS` in its own group, once ready: (process, ready document)."""
    proc = subprocess.Popen([sys.executable, "-m", "llmprod", "serve", "--json", *args], stdout=subprocess.PIPE,
                            stderr=open(out / f"{name}.stderr", "w"), text=True, env=env, start_new_session=True)
    lines = []
    while True:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"{name}: serve exited ({proc.wait()}); see {out / (name + '.stderr')}")
        lines.append(line)
        if line.rstrip("\n") == "}":
            ready = json.loads("".join(lines))
            (out / f"{name}-ready.json").write_text(json.dumps(ready, indent=2) + "\n")
            return proc, ready


def bench(url: str, model: str, concurrency: int, requests: int, out: Path, tag: str, env: dict) -> dict:
    path = out / f"bench-{tag}-c{concurrency}.json"
    cmd = [sys.executable, "-m", "llmprod", "bench", url, "--model", model, "--concurrency", str(concurrency),
           "--requests", str(requests), "--input-tokens", "256", "--output-tokens", "128", "--ignore-eos", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench {tag} c={concurrency}: {done.stderr.strip()[-500:]}")
    path.write_text(done.stdout)
    return json.loads(done.stdout)["levels"][0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vllm-bin", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sandwich-one-gpu"))
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-model-len", default="8192")
    parser.add_argument("--tiny", action="store_true", help="tiny guard models (the stand-in vllm, no GPU)")
    parser.add_argument("--engine-timeout", default="900")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    main_dir, guard, prompt_guard = models(args.work, shaped=not args.tiny)
    policy = sandwich(args.work / "sandwich.yaml", guard, prompt_guard)
    port_a, port_b = 8300, 8301
    a, ready_a = serve([str(main_dir), "--engine", "vllm", "--vllm-bin", args.vllm_bin, "--port", str(port_a),
                        "--guardrails", str(policy), "--max-concurrency", "256", "--max-model-len", args.max_model_len,
                        "--engine-timeout", args.engine_timeout, "--engine-log", str(args.out / "main-engine.log"),
                        *(["--gpu-memory", "80GiB"] if args.tiny else []), "--", "--load-format", "dummy"],
                       args.out, "sandwich", env)
    processes = [a]
    try:
        b, _ = serve(["--upstream", ready_a["upstream"], "--port", str(port_b), "--guardrails", "default",
                      "--served-model-name", str(main_dir)], args.out, "default", env)
        processes.append(b)
        urls = {"sandwich": f"http://127.0.0.1:{port_a}", "default": f"http://127.0.0.1:{port_b}"}
        rows = []
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            samples: dict[str, list[dict]] = {"sandwich": [], "default": []}
            for r in range(args.rounds):
                for tag in (("default", "sandwich", "sandwich", "default") if r % 2 == 0
                            else ("sandwich", "default", "default", "sandwich")):  # A-B-B-A
                    samples[tag].append(bench(urls[tag], str(main_dir), concurrency, args.requests, args.out,
                                              f"{tag}-r{r}", env))
            ttft = {t: statistics.median(s["ttft_ms"]["p50"] for s in v) for t, v in samples.items()}
            e2e = {t: statistics.median(s["e2e_ms"]["p50"] for s in v) for t, v in samples.items()}
            tps = {t: statistics.median(s["output_tokens_per_s"] for s in v) for t, v in samples.items()}
            rows.append({"concurrency": concurrency, "ttft_p50_ms": ttft, "ttft_added_ms": ttft["sandwich"] - ttft["default"],
                         "e2e_p50_ms": e2e, "e2e_ratio": e2e["sandwich"] / e2e["default"],
                         "tokens_per_s": tps, "tokens_per_s_ratio": tps["sandwich"] / tps["default"]})
            print(json.dumps(rows[-1]))
        import httpx

        metrics = httpx.get(f"{urls['sandwich']}/metrics", timeout=10).text
        (args.out / "sandwich-metrics.txt").write_text(metrics)
        (args.out / "summary.json").write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows,
                                                           "guard_engines": ready_a.get("guard_engines")}, indent=2) + "\n")
    finally:
        for proc in reversed(processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
