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
        run(options, out)
