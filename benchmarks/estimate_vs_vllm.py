"""`llmprod estimate-memory --vllm-log` on every recorded vLLM start (tests/data/vllm-0.26.0/runs.json).

    python benchmarks/estimate_vs_vllm.py --out benchmarks/results/estimate-vs-vllm-0.26.0-h200.json \
        --markdown benchmarks/results/estimate-vs-vllm-0.26.0-h200.md

Each run is planned by the command a user runs, with the run's own settings read from its log, and each
predicted figure is set beside vLLM's: ratios of 1.0000 are exact. The logs were recorded on an H200 with
the commands listed in runs.json (benchmarks/h200/vllm_checks.sh and benchmarks/h200/preflight.sh for the later ones). A run marked partial in
runs.json (stopped before vLLM's memory summary) is planned given its KV cache memory only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

GIVEN = "KV cache tokens (given vLLM's KV memory)"
DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--markdown", type=Path, help="also write the table docs/memory.md quotes")
    args = parser.parse_args()
    runs = json.loads((DATA / "vllm-0.26.0" / "runs.json").read_text())["runs"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            if run["config"] == "tiny":
                from llmprod.tinymodel import RANDOM, cached_tiny_model

                model = str(cached_tiny_model(Path(tmp), RANDOM))
            else:
                model = str(DATA / run["config"])
            log = DATA / "vllm-0.26.0" / run["log"]
            if run.get("partial"):
                rows.append(_given_only(run, model, log))
                continue
            cmd = [sys.executable, "-m", "llmprod", "estimate-memory", model, "--vllm-log", str(log), "--json"]
            doc = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            versus = doc["vs_vllm"]
            rows.append({"run": run["log"].removesuffix(".log"), "vllm_command": run["command"],
                         "estimate_command": "llmprod estimate-memory "
                                             f"{'TINY_MODEL_DIR' if run['config'] == 'tiny' else 'tests/data/' + run['config']}"
                                             f" --vllm-log tests/data/vllm-0.26.0/{run['log']}",
                         "settings": versus["settings"],
                         "figures": {r["figure"]: {"llmprod": r["predicted"], "vllm": r["vllm"], "ratio": r["ratio"]}
                                     for r in versus["rows"]}})
            ratios = {r["figure"]: r["ratio"] for r in versus["rows"]}
            print(f"{rows[-1]['run']:40s} KV memory {ratios['KV cache memory (from the GPU)']}, tokens "
                  f"{ratios['KV cache tokens (from the GPU)']} (given vLLM's KV memory "
                  f"{ratios[GIVEN]}), concurrency "
                  f"{ratios['maximum concurrency (from the GPU)']}, weights {ratios['weights']}")
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "gpu": "NVIDIA H200 (139.8 GiB as CUDA reports it)",
                                    "vllm": "0.26.0", "runs": rows}, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(rows))
    return 0


def _given_only(run: dict, model: str, log: Path) -> dict:
    from llmprod.vllm import parse_startup

    startup = parse_startup(log.read_text())
    cmd = [sys.executable, "-m", "llmprod", "estimate-memory", model, "--kv-cache-memory", f"{startup.kv_cache_gib}GiB",
           "--max-model-len", str(startup.max_model_len), "--kv-cache-dtype", startup.kv_cache_dtype or "auto", "--json"]
    doc = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    figures = {GIVEN: {"llmprod": doc["kv_cache_tokens"], "vllm": startup.kv_cache_tokens,
                       "ratio": round(doc["kv_cache_tokens"] / startup.kv_cache_tokens, 4)}}
    print(f"{run['log'].removesuffix('.log'):40s} (partial) tokens given vLLM's KV memory {figures[GIVEN]['ratio']}")
    return {"run": run["log"].removesuffix(".log"), "vllm_command": run["command"], "partial": run["partial"],
            "estimate_command": "llmprod " + " ".join(cmd[3:]).replace(str(DATA) + "/", "tests/data/"),
            "settings": {"max_model_len": startup.max_model_len, "kv_cache_dtype": startup.kv_cache_dtype},
            "figures": figures}


def markdown(rows: list[dict]) -> str:
    """One line per start: the KV cache from the GPU alone and given vLLM's, and the peak activation."""
    lines = ["| vLLM start (tests/data/vllm-0.26.0) | max_model_len | KV from the GPU alone | tokens given vLLM's KV "
             "memory | weights | peak activation, llmprod / vLLM (GiB) |", "|---|---|---|---|---|---|"]
    for row in rows:
        f = row["figures"]
        gpu = f.get("KV cache memory (from the GPU)", {}).get("ratio")
        act = f.get("peak activation", {})
        act_text = (f"{act['llmprod'] / 2**30:.2f} / {act['vllm'] / 2**30:.2f}" if act.get("llmprod") and act.get("vllm")
                    else "-")
        weights = f.get("weights", {}).get("ratio")
        lines.append(f"| {row['run']} | {row['settings'].get('max_model_len'):,} | "
                     f"{f'{gpu:.4f}' if gpu else '(partial log)'} | {f[GIVEN]['ratio']:.4f} | "
                     f"{f'{weights:.4f}' if weights else '-'} | {act_text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
