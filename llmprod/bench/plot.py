"""The TTFT-versus-throughput trade-off as one PNG; with --find-max, the search's probes against the SLOs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmprod.errors import require


def _x(levels: list[dict[str, Any]]) -> tuple[list[float], str, bool]:
    """The levels' load axis: offered rate (open loop) or streams (closed loop)."""
    if levels and levels[0].get("rate") is not None:
        return [lv["rate"] for lv in levels], "offered requests/s", False
    return [lv["concurrency"] for lv in levels], "concurrent streams", True


def plot_levels(levels: list[dict[str, Any]], path: Path, title: str, search: dict | None = None) -> None:
    matplotlib = require("matplotlib", "bench")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, label, log2 = _x(levels)
    panels = 2 if search else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4.2), dpi=120, squeeze=False)
    left = axes[0][0]
    left.plot(xs, [lv["ttft_ms"]["p50"] for lv in levels], "o-", color="tab:blue", label="TTFT p50")
    left.plot(xs, [lv["ttft_ms"]["p99"] for lv in levels], "o--", color="tab:blue", alpha=0.6, label="TTFT p99")
    left.set_xlabel(label)
    left.set_ylabel("time to first token (ms)", color="tab:blue")
    if log2:
        left.set_xscale("log", base=2)
        left.set_xticks(xs, [str(x) for x in xs])
    right = left.twinx()
    right.plot(xs, [lv["output_tokens_per_s"] for lv in levels], "s-", color="tab:orange", label="output tokens/s")
    right.set_ylabel("output tokens/s (all streams)", color="tab:orange")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(handles, [h.get_label() for h in handles], loc="upper left", fontsize=8)
    left.set_title(title, fontsize=10)
    left.grid(alpha=0.3)
    if search:
        _plot_search(axes[0][1], levels, search, label)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _plot_search(ax, levels: list[dict[str, Any]], search: dict, label: str) -> None:
    """Each probe's SLO figures as a fraction of their limits (1 = the SLO), passes green, misses red."""
    key = f"p{search['percentile']}"
    xs, _, _ = _x(levels)
    for name, limit in search["slos_ms"].items():
        ys = [((lv.get(f"{name}_ms") or {}).get(key) or float("nan")) / limit for lv in levels]
        ax.plot(xs, ys, "-", alpha=0.5, label=f"{name} {key} / {limit:g} ms")
        ax.scatter(xs, ys, c=["tab:green" if lv.get("slo_met") else "tab:red" for lv in levels], zorder=3)
    ax.axhline(1.0, color="black", lw=0.8)
    if search.get("answer") is not None:
        ax.axvline(search["answer"], color="tab:green", ls="--", lw=1, label=f"max {search['answer']:g}")
    ax.set_xlabel(label)
    ax.set_ylabel("figure / SLO (at most 1 passes)")
    ax.set_title(f"--find-max: {len(search['probes'])} probes", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
