"""`--csv` (one row per level) and `--report` (one self-contained HTML page: the table and the plot inline)."""

from __future__ import annotations

import base64
import csv
import html
import tempfile
from pathlib import Path
from typing import Any

FIGURES = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "queue_ms")
STATS = ("p50", "p90", "p99", "mean")


def rows(levels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for lv in levels:
        row = {k: lv.get(k) for k in ("rate", "concurrency", "requests", "errors", "seconds", "requests_per_s",
                                      "output_tokens_per_s", "goodput_requests_per_s", "slo_met")}
        for figure in FIGURES:
            for stat in STATS:
                row[f"{figure.removesuffix('_ms')}_{stat}_ms"] = (lv.get(figure) or {}).get(stat)
        for figure, stats in (lv.get("server") or {}).items():
            for stat in ("p50", "p99", "mean"):
                row[f"server_{figure.removesuffix('_ms')}_{stat}_ms"] = stats.get(stat)
        out.append(row)
    return out


def _columns(table: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in table:
        columns += [k for k in row if k not in columns]
    return columns


def write_csv(levels: list[dict[str, Any]], path: Path) -> None:
    table = rows(levels)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=_columns(table))
        writer.writeheader()
        writer.writerows(table)


def write_html(result: dict[str, Any], path: Path, title: str) -> None:
    from llmprod.bench.plot import plot_levels

    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "plot.png"
        plot_levels(result["levels"], png, title, search=result.get("search"))
        image = base64.b64encode(png.read_bytes()).decode("ascii")
    table = rows(result["levels"])
    columns = [c for c in _columns(table) if any(row.get(c) is not None for row in table)]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.2f}"
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(row.get(c))}</td>" for c in columns) + "</tr>" for row in table)
    search = ""
    if result.get("search"):
        s = result["search"]
        answer = "none: even the lowest load missed" if s["answer"] is None else f"{s['answer']:g}"
        probes = "".join(f"<li>{p['load']:g}: {'met' if p['passed'] else 'missed: ' + html.escape('; '.join(p['misses']))}</li>"
                         for p in s["probes"])
        search = (f"<h2>--find-max ({s['mode']}, p{s['percentile']})</h2><p>SLOs (ms): "
                  f"{html.escape(str(s['slos_ms']))}. Largest load that met them: <b>{answer}</b></p><ol>{probes}</ol>")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}</style></head>
<body><h1>llmprod bench</h1><p>{html.escape(title)}: {html.escape(result['loop'])} loop, {result['output_tokens']} output
tokens a request.</p>{search}<img alt="plot" src="data:image/png;base64,{image}">
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
