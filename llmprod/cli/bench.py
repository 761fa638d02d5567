"""`llmprod bench`."""

from __future__ import annotations

from llmprod.cli.options import JsonOpt
from llmprod.cli.pending import CONTEXT, not_available
from llmprod.cli.runner import command_output

EXAMPLE = "Example: [bold]llmprod bench http://127.0.0.1:8000 --model llama-awq --concurrency 1,8,32 --plot bench.png[/bold]"
__all__ = ["CONTEXT", "EXAMPLE", "bench"]


def bench(json_output: JsonOpt = False) -> None:
    """Load-test an OpenAI-compatible server: TTFT and tokens/s against concurrency, with a plot."""
    with command_output(json_output):
        raise not_available("bench")
