"""The TTFT-versus-throughput trade-off, as one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmprod.errors import require


def plot_levels(levels: list[dict[str, Any]], path: Path, title: str) -> None:
    matplotlib = require("matplotlib", "bench")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [lv["concurrency"] for lv in levels]
    fig, left = plt.subplots(figsize=(7, 4.2), dpi=120)
    left.plot(xs, [lv["ttft_ms"]["p50"] for lv in levels], "o-", color="tab:blue", label="TTFT p50")
    left.plot(xs, [lv["ttft_ms"]["p99"] for lv in levels], "o--", color="tab:blue", alpha=0.6, label="TTFT p99")
    left.set_xlabel("concurrent streams")
    left.set_ylabel("time to first token (ms)", color="tab:blue")
    left.set_xscale("log", base=2)
    left.set_xticks(xs, [str(x) for x in xs])
    right = left.twinx()
    right.plot(xs, [lv["output_tokens_per_s"] for lv in levels], "s-", color="tab:orange", label="output tokens/s")
    right.set_ylabel("output tokens/s (all streams)", color="tab:orange")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(handles, [h.get_label() for h in handles], loc="upper left", fontsize=8)
    left.set_title(title, fontsize=10)
    left.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
