"""The table and plot of benchmarks/results/h200-formats (made by benchmarks/h200/formats.sh on the H200).

    python benchmarks/formats_table.py [RESULTS_DIR]    # prints Markdown, writes RESULTS_DIR/formats.png

For each checkpoint: what `llmprod quantize` took, the kernel vLLM chose (from its log, kept in
tests/data/vllm-0.26.0), the weights vLLM loaded, and `llmprod bench` through the gateway: output tokens/s and
TTFT p50 at each concurrency, with the ratio to bf16 at the same concurrency.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["bf16", "gptq-w4a16", "awq-w4a16", "awq-gemm", "gptq-w8a16", "w8a8-fp8", "w8a8-fp8-kv", "fp8-block", "w8a8-int8",
         "nvfp4a16"]
KERNEL = re.compile(r"(?:Using|Selected) (\w+) for")
LOADED = re.compile(r"Model loading took ([\d.]+) GiB")


def rows(results: Path) -> list[dict]:
    out = []
    for name in ORDER:
        bench = results / f"bench-{name}.json"
        if not bench.is_file():
            continue
        log = (ROOT / "tests/data/vllm-0.26.0" / f"llama-3.1-8b-{name}-4k.log").read_text()
        kernel = KERNEL.search(log)
        quant = results / f"q-{name}.json"
        q = json.loads(quant.read_text()) if quant.is_file() else {}
        levels = {lv["concurrency"]: lv for lv in json.loads(bench.read_text())["levels"]}
        out.append({"name": name, "kernel": kernel.group(1) if kernel else "bf16 (cuBLAS)",
                    "loaded_gib": float(LOADED.search(log).group(1)), "quantize_seconds": q.get("seconds"),
                    "levels": levels})
    return out


def markdown(table: list[dict]) -> str:
    base = next(r for r in table if r["name"] == "bf16")["levels"]
    concurrencies = sorted(base)
    head = ("| checkpoint | vLLM kernel | weights GiB | quantize s | "
            + " | ".join(f"tok/s @{c} (× bf16)" for c in concurrencies) + " | "
            + " | ".join(f"TTFT p50 ms @{c}" for c in concurrencies) + " |")
    lines = [head, "|" + "---|" * (4 + 2 * len(concurrencies))]
    for r in table:
        tps = [f"{r['levels'][c]['output_tokens_per_s']:,.0f} ({r['levels'][c]['output_tokens_per_s'] / base[c]['output_tokens_per_s']:.2f})"
               for c in concurrencies]
        ttft = [f"{r['levels'][c]['ttft_ms']['p50']:,.0f}" for c in concurrencies]
        q = f"{r['quantize_seconds']:.0f}" if r["quantize_seconds"] else "–"
        lines.append(f"| {r['name']} | {r['kernel']} | {r['loaded_gib']:.2f} | {q} | " + " | ".join(tps) + " | "
                     + " | ".join(ttft) + " |")
    return "\n".join(lines)


def plot(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in table:
        cs = sorted(r["levels"])
        left.plot(cs, [r["levels"][c]["output_tokens_per_s"] for c in cs], marker="o", label=r["name"])
        right.plot(cs, [r["levels"][c]["tpot_ms"]["p50"] for c in cs], marker="o", label=r["name"])
    for ax, title in ((left, "output tokens/s"), (right, "time per output token, p50 (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent streams")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    right.set_ylim(0, 14)  # fp8-block's first-use compilation stalls are off this scale (see README)
    left.legend(fontsize=8)
    fig.suptitle("Llama-3.1-8B shape on one H200, vLLM 0.26.0 behind llmprod serve")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "benchmarks/results/h200-formats"
    table = rows(results)
    print(markdown(table))
    plot(table, results / "formats.png")


if __name__ == "__main__":
    main()
