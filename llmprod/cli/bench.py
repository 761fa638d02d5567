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


def bench(
    url: Annotated[str, typer.Argument(help="The server's base URL, with or without /v1.", show_default=False)],
    model: Annotated[str, typer.Option("--model", help="The model name the server serves.")],
    concurrency: Annotated[str, typer.Option("--concurrency", help="Comma-separated concurrency levels.")] = "1,4,16,64",
    requests: Annotated[Optional[int], typer.Option("--requests", help="Requests per level (default: max(16, 4 × concurrency)).")] = None,
    duration: Annotated[Optional[float], typer.Option("--duration", help="Seconds per level: no new requests after it.")] = None,
    input_tokens: Annotated[int, typer.Option("--input-tokens", help="Tokens per synthetic prompt.")] = 512,
    output_tokens: Annotated[int, typer.Option("--output-tokens", help="max_tokens of each request.")] = 128,
    dataset: Annotated[Optional[Path], typer.Option("--dataset", help="Prompts: .txt (one per line) or .jsonl (prompt/text/messages).")] = None,
    endpoint: Annotated[Endpoint, typer.Option("--endpoint", help="chat or completions.")] = Endpoint.chat,
    api_key: ApiKeyOpt = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write the TTFT / tokens-per-second plot (PNG).")] = None,
    goodput: Annotated[Optional[str], typer.Option("--goodput", help="SLOs for goodput, e.g. ttft:500,tpot:50 (ms).")] = None,
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos", help="Ask vLLM to always generate --output-tokens.")] = False,
    seed: SeedOpt = 0,
    json_output: JsonOpt = False,
) -> None:
    """Load-test an OpenAI-compatible server: TTFT and tokens/s against concurrency, with a plot."""
    from llmprod.cli.exits import command_output

    with command_output(json_output) as out:
        from llmprod.bench.command import BenchOptions, run

        options = BenchOptions(url=url, model=model, concurrency=concurrency, requests=requests, duration=duration,
                               input_tokens=input_tokens, output_tokens=output_tokens, dataset=dataset,
                               endpoint=endpoint.value, api_key=api_key,
                               plot=plot, goodput=goodput, ignore_eos=ignore_eos, seed=seed)
        run(options, out, emit=lambda result: out.result(result, render=lambda console: _render(console, result)))


def _render(console, result: dict) -> None:
    from rich.table import Table

    def fmt(v):
        return "–" if v is None else f"{v:,.1f}"

    for lv in result["levels"]:
        title = (f"concurrency {lv['concurrency']}: {lv['requests']} requests, {lv['errors']} errors, "
                 f"{lv['output_tokens_per_s']:,.1f} output tokens/s, {lv['requests_per_s']:,.2f} requests/s")
        if "goodput_requests_per_s" in lv:
            title += f", goodput {lv['goodput_requests_per_s']:,.2f} req/s ({lv['goodput_fraction']:.0%})"
        if lv.get("interrupted"):
            title += " (interrupted)"
        table = Table(title=title, title_justify="left")
        for col in ("ms", "p50", "p90", "p99", "mean"):
            table.add_column(col, justify="right" if col != "ms" else "left")
        for label, key in (("time to first token", "ttft_ms"), ("time per output token", "tpot_ms"),
                           ("inter-token latency", "itl_ms"), ("end to end", "e2e_ms")):
            stats = lv[key]
            table.add_row(label, *(fmt(stats[k]) for k in ("p50", "p90", "p99", "mean")))
        console.print(table)
        if not lv["usage_reported"] and lv["requests"]:
            console.print("[dim]the server reported no usage: output tokens counted as text chunks[/dim]")
    if result.get("plot"):
        console.print(f"plot: {result['plot']}")

