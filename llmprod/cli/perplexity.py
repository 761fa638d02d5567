"""`llmprod perplexity`."""

from __future__ import annotations

from llmprod.cli.options import JsonOpt
from llmprod.cli.pending import CONTEXT, not_available
from llmprod.cli.runner import command_output

EXAMPLE = "Example: [bold]llmprod perplexity llama-awq --baseline meta-llama/Llama-3.2-1B-Instruct --max-increase 0.05[/bold]"
__all__ = ["CONTEXT", "EXAMPLE", "perplexity"]


def perplexity(json_output: JsonOpt = False) -> None:
    """Measure perplexity, optionally against a baseline, and gate on the increase."""
    with command_output(json_output):
        raise not_available("perplexity")
