"""`llmprod estimate-memory --vllm-log` on every recorded vLLM start (tests/data/vllm-0.26.0/runs.json).

    python benchmarks/estimate_vs_vllm.py --out benchmarks/results/estimate-vs-vllm-0.26.0-h200.json

Each run is planned by the command a user runs, with the run's own settings read from its log, and each
predicted figure is set beside vLLM's: ratios of 1.0000 are exact. The logs were recorded on an H200 with
the commands listed in runs.json (benchmarks/h200/vllm_checks.sh for the later ones).
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
