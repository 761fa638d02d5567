"""`llmprod bench` beside GuideLLM 0.8.1 on the same servers and loads, with the server's own clock as referee.

    python3 -m venv /tmp/glvenv && /tmp/glvenv/bin/pip install guidellm==0.8.1 torch==2.13.0
    python benchmarks/bench_vs_guidellm.py --guidellm /tmp/glvenv/bin/guidellm \
        --out benchmarks/results/bench-vs-guidellm.json

Two servers: the known-timing server (tests/bench/timed_server.py: 100 ms to the first token, 10 ms a token,
32 tokens, at most 8 requests at once, so about 19.5 requests/s of capacity) at 4, 12 and 30 requests/s
(under, near and over capacity); and `llmprod serve --upstream` (the gateway, its llmprod_* histograms) in
front of a second such server, at 4 and 30 requests/s. `llmprod serve` on the tiny model with the embedded
transformers engine cannot be the second: `transformers serve` answers GuideLLM's requests with 422 (GuideLLM
sends `"stop": null` and vLLM's `ignore_eos` to fix the output length, and transformers' request schema
refuses them), so every GuideLLM request failed there. Each level is run by one tool then the other (A-B, then B-A at the next
level), with constant arrivals for 8 s. Around every run the script scrapes the server's Prometheus
histograms itself (the timed server's vLLM-named ones, the gateway's llmprod_* ones), so both tools are
judged by the same server-side figures: mean TTFT, queue time and end-to-end latency by the server's clock.
Where the tools differ by more than 5%, the one closer to the server's figure is named.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmprod.bench.server_metrics import level_view, parse  # noqa: E402
from llmprod.testing.servers import free_port, wait_ready  # noqa: E402

SECONDS = 8.0


def scrape(root: str) -> dict:
    return parse(httpx.get(f"{root}/metrics", timeout=10.0).text)


def run_llmprod(root: str, model: str, rate: float, output_tokens: int) -> dict:
    cmd = [sys.executable, "-m", "llmprod", "bench", root, "--model", model, "--rate", str(rate), "--arrival",
           "constant", "--duration", str(SECONDS), "--input-tokens", "64", "--output-tokens", str(output_tokens),
           "--no-server-metrics", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    (level,) = json.loads(done.stdout)["levels"]
    return {"requests": level["requests"], "errors": level["errors"], "requests_per_s": level["requests_per_s"],
            "ttft_ms_mean": level["ttft_ms"]["mean"], "ttft_ms_p50": level["ttft_ms"]["p50"],
            "itl_ms_mean": level["itl_ms"]["mean"], "e2e_ms_mean": level["e2e_ms"]["mean"],
            "output_tokens_per_s": level["output_tokens_per_s"]}


def run_guidellm(guidellm: str, root: str, model: str, rate: float, output_tokens: int, work: Path) -> dict:
    out = work / f"guidellm-{time.monotonic_ns()}.json"
    cmd = [guidellm, "run", "--backend", f"kind=openai_http,target={root},model={model}",
           "--profile", f"kind=constant,rate={rate}", "--constraint", f"kind=max_duration,seconds={SECONDS}",
           "--data", f"kind=synthetic_text,prompt_tokens=64,output_tokens={output_tokens}",
           "--output", f"kind=json,path={out}", "--disable-console"]
    subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=work,
                   env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    m = json.loads(out.read_text())["benchmarks"][0]["metrics"]

    def stat(name: str, key: str = "mean") -> float:
        return m[name]["successful"][key]

    return {"requests": int(m["request_totals"]["successful"]), "errors": int(m["request_totals"]["errored"]),
            "requests_per_s": stat("requests_per_second"), "ttft_ms_mean": stat("time_to_first_token_ms"),
            "ttft_ms_p50": stat("time_to_first_token_ms", "median"), "itl_ms_mean": stat("inter_token_latency_ms"),
            "e2e_ms_mean": stat("request_latency") * 1000, "output_tokens_per_s": stat("output_tokens_per_second")}


def server_side(before: dict, after: dict) -> dict:
    view = level_view(before, after) or {}
    return {f"{k}_mean": v["mean"] for k, v in view.items()} | {"requests": (view.get("e2e_ms") or {}).get("count")}


def compare(target: str, root: str, model: str, rates: list[float], output_tokens: int, guidellm: str,
            work: Path) -> list[dict]:
    rows = []
    for i, rate in enumerate(rates):
        row: dict = {"target": target, "rate": rate}
        order = ("llmprod", "guidellm") if i % 2 == 0 else ("guidellm", "llmprod")
        for tool in order:
            before = scrape(root)
            row[tool] = (run_llmprod(root, model, rate, output_tokens) if tool == "llmprod"
                         else run_guidellm(guidellm, root, model, rate, output_tokens, work))
            row[tool]["server"] = server_side(before, scrape(root))
        row["differences"] = explain(row)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def explain(row: dict) -> list[str]:
    """Each figure where the tools differ by more than 5%, and which one the server's own clock supports."""
    notes = []
    for figure, server_key in (("ttft_ms_mean", "ttft_ms_mean"), ("e2e_ms_mean", "e2e_ms_mean"),
                               ("requests_per_s", None), ("output_tokens_per_s", None), ("itl_ms_mean", "itl_ms_mean")):
        a, b = row["llmprod"][figure], row["guidellm"][figure]
        if not a or not b or abs(a - b) <= 0.05 * max(a, b):
            continue
        note = f"{figure}: llmprod {a:,.1f}, GuideLLM {b:,.1f}"
        if server_key:
            sa, sb = row["llmprod"]["server"].get(server_key), row["guidellm"]["server"].get(server_key)
            if sa and sb:
                closer = "llmprod" if abs(a - sa) / sa < abs(b - sb) / sb else "GuideLLM"
                note += f"; the server measured {sa:,.1f} under llmprod's load and {sb:,.1f} under GuideLLM's: {closer} is closer"
        notes.append(note)
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guidellm", required=True, help="the guidellm executable (its own virtualenv)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-vs-guidellm-"))
    tiny = work / "tiny"
    subprocess.run([sys.executable, "-m", "llmprod", "tiny-model", str(tiny), "--random", "--json"], check=True,
                   capture_output=True)
    version = subprocess.run([args.guidellm, "--version"], capture_output=True, text=True).stdout.strip()
    rows, procs = [], []
    try:
        port = free_port()
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "tests/bench/timed_server.py"), "--port", str(port),
                                       "--ttft", "0.1", "--itl", "0.01", "--tokens", "32", "--capacity", "8",
                                       "--model", str(tiny)]))
        root = f"http://127.0.0.1:{port}"
        wait_ready(f"{root}/health")
        rows += compare("timed server (100 ms + 31 x 10 ms, 8 slots: ~19.5 req/s)", root, str(tiny),
                        [4.0, 12.0, 30.0], 32, args.guidellm, work)
        upstream = free_port()
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "tests/bench/timed_server.py"), "--port",
                                       str(upstream), "--ttft", "0.1", "--itl", "0.01", "--tokens", "32",
                                       "--capacity", "8", "--model", str(tiny)]))
        wait_ready(f"http://127.0.0.1:{upstream}/health")
        port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "llmprod", "serve", "--upstream",
                                       f"http://127.0.0.1:{upstream}", "--no-guardrails", "--port", str(port),
                                       "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        root = f"http://127.0.0.1:{port}"
        wait_ready(f"{root}/health", proc=procs[-1])
        rows += compare("llmprod serve --upstream (gateway) in front of the same timed server", root, str(tiny),
                        [4.0, 30.0], 32, args.guidellm, work)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
    doc = {"command": " ".join(["python", "benchmarks/bench_vs_guidellm.py", *sys.argv[1:]]), "guidellm": version,
           "seconds_per_level": SECONDS, "arrivals": "constant", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
