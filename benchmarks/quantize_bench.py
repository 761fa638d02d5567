"""`llmprod quantize` against plain library scripts on the same model, data and settings.

1. llmprod GPTQ / AWQ (compressed-tensors) vs a plain llm-compressor script: wall time and peak RSS.
   llmprod's run includes what the plain script does not do: validation, the reload check with a
   forward pass, manifest and model card. Goal: <= 1.05x time, <= 1.10x memory.
2. llm-compressor AWQ vs AutoAWQ (the legacy engine) on the same samples.

Every run is its own process (peak RSS from wait4), runs alternate ABBA, median of --repeats. Calibration
samples are chosen once by llmprod's loader and handed to the plain scripts as token ids, so all
runs see identical data (the fingerprint is checked).

    python benchmarks/quantize_bench.py --out benchmarks/results/quantize-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _measure import median, run_measured  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("work/bench"))
    parser.add_argument("--model", type=Path, help="an existing model directory (default: build one)")
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", default="gptq,awq,autoawq",
                        help="gptq / awq: llmprod vs plain llm-compressor; autoawq: llm-compressor AWQ vs AutoAWQ")
    parser.add_argument("--shape", type=Path, help="a real config.json: its shapes with random weights")
    parser.add_argument("--device", default="auto", help="passed to llmprod quantize (plain scripts use the GPU if any)")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from llmprod.quantize.calibration import load_calibration
    from llmprod.tinymodel import RANDOM, build_shaped_model, cached_tiny_model, corpus_split

    # Random weights: quantization time and memory do not depend on what the weights say.
    if args.shape is not None:
        model = args.work / f"shaped-{args.shape.stem}"
        if not (model / "tiny-model.json").exists():
            build_shaped_model(args.shape, model)
    else:
        spec = replace(RANDOM, hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                       num_key_value_heads=4)
        model = args.model or cached_tiny_model(args.work, spec)
    text = args.work / "calibration.txt"
    text.write_text(corpus_split()[0])
    calib = load_calibration(str(text), AutoTokenizer.from_pretrained(model), args.num_samples, args.seq_len, 0)
    samples_file = args.work / "samples.json"
    samples_file.write_text(json.dumps(calib.samples))

    def llmprod(method: str, fmt: str, out: Path) -> list[str]:
        return [sys.executable, "-m", "llmprod", "quantize", str(model), "--method", method, "--format", fmt,
                "--output", str(out), "--dataset", str(text), "--num-samples", str(args.num_samples),
                "--seq-len", str(args.seq_len), "--device", args.device, "--json"]

    def plain(method: str):
        return lambda out: [sys.executable, str(HERE / "plain_llmcompressor.py"), str(model), method, str(out),
                            str(samples_file), str(args.seq_len)]

    chosen = args.pairs.split(",")
    pairs = {}
    for method in chosen:  # in the order given: a run stopped by a time limit keeps the first pairs
        if method in ("gptq", "awq"):
            pairs[f"{method}: llmprod vs plain llm-compressor"] = (
                lambda out, m=method: llmprod(m, "compressed-tensors", out), plain(method))
    if "autoawq" in chosen:
        pairs["awq: plain llm-compressor vs plain AutoAWQ"] = (
            plain("awq"),
            lambda out: [sys.executable, str(HERE / "plain_autoawq.py"), str(model), str(out), str(samples_file),
                         str(args.seq_len)])

    os.sync()  # the model was just written: its write-back must not land inside a measured run
    results = {}
    for name, (first, second) in pairs.items():
        runs = {"first": [], "second": []}
        for i in range(args.repeats):
            # ABBA: alternate which side goes first, so page cache and clock drift favour neither
            order = (("first", first), ("second", second))
            for key, make in order if i % 2 == 0 else order[::-1]:
                tmp = Path(tempfile.mkdtemp(dir=args.work))
                try:
                    r = run_measured(make(tmp / "out"))
                    runs[key].append({"seconds": r["seconds"], "peak_rss_bytes": r["peak_rss_bytes"],
                                      "peak_gpu_bytes": _gpu_peak(r["stdout"]), **_stages(r["stdout"])})
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                if runs["first"] and runs["second"]:
                    results[name] = _compare(runs)
                    _write(args, model, calib, results)  # a run stopped by a time limit keeps what it measured
        print(f"{name}: " + ", ".join(f"{k} x{v:.3f}" for k, v in results[name].items() if k.endswith("ratio")),
              flush=True)


def _compare(runs: dict) -> dict:
    keys = ("seconds", "peak_rss_bytes") + (("peak_gpu_bytes",) if runs["first"][0]["peak_gpu_bytes"] else ())
    a = {k: median([r[k] for r in runs["first"]]) for k in keys}
    b = {k: median([r[k] for r in runs["second"]]) for k in keys}
    result = {"first": a, "second": b, "time_ratio": a["seconds"] / b["seconds"],
              "host_memory_ratio": a["peak_rss_bytes"] / b["peak_rss_bytes"], "runs": runs}
    if "peak_gpu_bytes" in a and b.get("peak_gpu_bytes"):
        result["gpu_memory_ratio"] = a["peak_gpu_bytes"] / b["peak_gpu_bytes"]
    return result


def _stages(stdout: str) -> dict:
    """llmprod's own split of its time: the quantization proper and the reload check."""
    try:
        doc = json.loads(stdout)
    except ValueError:
        return {}
    keys = ("quantize_seconds", "reload_seconds")
    return {"llmprod_" + k: doc[k] for k in keys if isinstance(doc, dict) and k in doc}


def _gpu_peak(stdout: str) -> int | None:
    """Peak GPU bytes from the child's JSON: llmprod's whole result, or the plain scripts' last line."""
    candidates = [stdout] + list(reversed(stdout.strip().splitlines()))
    for text in candidates:
        try:
            doc = json.loads(text)
        except ValueError:
            continue
        if isinstance(doc, dict):
            return doc.get("peak_gpu_memory_bytes") or doc.get("peak_gpu_bytes")
    return None


def _write(args, model, calib, results) -> None:
    report_file = Path(model) / "tiny-model.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    out = {
        "command": " ".join(["python", "benchmarks/quantize_bench.py", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "model": {"path": str(model), "parameters": report.get("parameters"), "spec": report.get("spec")},
        "calibration": {**calib.describe(), "seq_len": args.seq_len},
        "repeats": args.repeats,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
