"""`llmprod bench`: TTFT and throughput under load against any OpenAI-compatible server."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from llmprod.cli.options import ApiKeyOpt, JsonOpt, SeedOpt

EXAMPLE = ("Example: [bold]llmprod bench http://127.0.0.1:8000 --model llama-awq --concurrency 1,8,32 "
           "--plot bench.png[/bold]")


class Endpoint(str, Enum):
    chat = "chat"
    completions = "completions"


class Arrival(str, Enum):
    poisson = "poisson"
    gamma = "gamma"
    constant = "constant"


def bench(
    url: Annotated[str, typer.Argument(help="The server's base URL, with or without /v1.", show_default=False)],
    model: Annotated[str, typer.Option("--model", help="The model name the server serves.")],
    concurrency: Annotated[Optional[str], typer.Option(
        "--concurrency", help="Closed loop: comma-separated stream counts (default 1,4,16,64); auto with --find-max.")] = None,
    rate: Annotated[Optional[str], typer.Option(
        "--rate", help="Open loop: comma-separated request rates (requests/s), sent whether or not earlier ones finished.")] = None,
    arrival: Annotated[Arrival, typer.Option("--arrival", case_sensitive=False, help="Open-loop arrivals: poisson, gamma or constant.")] = Arrival.poisson,
    burstiness: Annotated[float, typer.Option("--burstiness", help="Gamma arrivals' shape: 1 Poisson, <1 burstier.")] = 1.0,
    max_concurrency: Annotated[Optional[int], typer.Option(
        "--max-concurrency", help="Open loop: at most this many in flight; the wait is reported as queue time.")] = None,
    find_max: Annotated[Optional[str], typer.Option(
        "--find-max", help="Search the largest load meeting SLOs in ms, e.g. ttft:500,tpot:50 (exit 1 if none).")] = None,
    percentile: Annotated[int, typer.Option("--percentile", help="Percentile the SLOs apply to: 50, 90 or 99.")] = 99,
    requests: Annotated[Optional[int], typer.Option(
        "--requests", help="Requests per level (default: max(16, 4 × concurrency), or about 10 s of arrivals).")] = None,
    duration: Annotated[Optional[float], typer.Option("--duration", help="Seconds per level: no new requests after it.")] = None,
    input_tokens: Annotated[int, typer.Option("--input-tokens", help="Tokens per synthetic prompt.")] = 512,
    output_tokens: Annotated[int, typer.Option("--output-tokens", help="max_tokens of each request.")] = 128,
    dataset: Annotated[Optional[Path], typer.Option("--dataset", help="Prompts: .txt (one per line) or .jsonl (prompt/text/messages).")] = None,
    endpoint: Annotated[Endpoint, typer.Option("--endpoint", case_sensitive=False, help="chat or completions.")] = Endpoint.chat,
    api_key: ApiKeyOpt = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write the TTFT / tokens-per-second plot (PNG).")] = None,
    goodput: Annotated[Optional[str], typer.Option("--goodput", help="SLOs for goodput, e.g. ttft:500,tpot:50 (ms).")] = None,
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos", help="Ask vLLM to always generate --output-tokens.")] = False,
    server_metrics: Annotated[bool, typer.Option(
        "--server-metrics/--no-server-metrics", help="Read the server's /metrics around each level.")] = True,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Also write one row per level (CSV).")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Also write a self-contained HTML report.")] = None,
    seed: SeedOpt = 0,
    json_output: JsonOpt = False,
) -> None:
    """Load-test an OpenAI-compatible server: TTFT and tokens/s against concurrency or request rate, with a plot."""
    from llmprod.cli.exits import command_output

    with command_output(json_output) as out:
        from llmprod.bench.command import BenchOptions, run

        options = BenchOptions(url=url, model=model, concurrency=concurrency, requests=requests, duration=duration,
                               input_tokens=input_tokens, output_tokens=output_tokens, dataset=dataset,
                               endpoint=endpoint.value, api_key=api_key,
                               plot=plot, goodput=goodput, ignore_eos=ignore_eos, seed=seed, rate=rate,
                               arrival=arrival.value, burstiness=burstiness, max_concurrency=max_concurrency,
                               find_max=find_max, percentile=percentile, server_metrics=server_metrics, csv=csv,
                               report=report)
        run(options, out, emit=lambda result: out.result(result, render=lambda console: _render(console, result)))


def _render(console, result: dict) -> None:
    from rich.table import Table

    def fmt(v):
        return "–" if v is None else f"{v:,.1f}"

    for lv in result["levels"]:
        if lv.get("rate") is not None:
            load = f"rate {lv['rate']:g}/s" + (f" (at most {lv['concurrency']} in flight)" if lv["concurrency"] else "")
        else:
            load = f"concurrency {lv['concurrency']}"
        title = (f"{load}: {lv['requests']} requests, {lv['errors']} errors, "
                 f"{lv['output_tokens_per_s']:,.1f} output tokens/s, {lv['requests_per_s']:,.2f} requests/s")
        if "slo_met" in lv:
            title += ", SLOs met" if lv["slo_met"] else ", SLOs missed"
        if "goodput_requests_per_s" in lv:
            title += f", goodput {lv['goodput_requests_per_s']:,.2f} req/s ({lv['goodput_fraction']:.0%})"
        if lv.get("interrupted"):
            title += " (interrupted)"
        table = Table(title=title, title_justify="left")
        for col in ("ms", "p50", "p90", "p99", "mean"):
            table.add_column(col, justify="right" if col != "ms" else "left")
        for label, key in (("time to first token", "ttft_ms"), ("time per output token", "tpot_ms"),
                           ("inter-token latency", "itl_ms"), ("end to end", "e2e_ms"), ("queued (client)", "queue_ms")):
            if key in lv:
                table.add_row(label, *(fmt(lv[key][k]) for k in ("p50", "p90", "p99", "mean")))
        for key, stats in (lv.get("server") or {}).items():
            label = {"ttft_ms": "server: TTFT", "itl_ms": "server: inter-token", "e2e_ms": "server: end to end",
                     "queue_ms": "server: queued"}[key]
            table.add_row(label, *(fmt(stats[k]) for k in ("p50", "p90", "p99", "mean")))
        console.print(table)
        over = [key for key, stats in (lv.get("server") or {}).items()
                if key in lv and stats.get("p50") is not None and stats["p50"] > lv[key]["p50"]]
        if over:
            console.print("[dim]a server figure above the client's: the server's percentiles are interpolated within "
                          "its histogram buckets (as Prometheus' histogram_quantile does), the client's are exact; "
                          "the bucket, not the server, is the difference[/dim]")
        if not lv["usage_reported"] and lv["requests"]:
            console.print("[dim]the server reported no usage: output tokens counted as text chunks[/dim]")
    if result.get("search"):
        s = result["search"]
        unit = "requests/s" if s["mode"] == "rate" else "streams"
        for probe in s["probes"]:
            verdict = "met" if probe["passed"] else "missed: " + "; ".join(probe["misses"])
            console.print(f"  probe {probe['load']:g} {unit}: {verdict}")
        answer = "none (even the lowest load missed)" if s["answer"] is None else f"{s['answer']:g} {unit}"
        console.print(f"largest load meeting the SLOs at p{s['percentile']}: [bold]{answer}[/bold]")
    for key in ("plot", "csv", "report"):
        if result.get(key):
            console.print(f"{key}: {result[key]}")

