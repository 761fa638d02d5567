"""`llmprod quantize`."""

from __future__ import annotations

from llmprod.cli.options import JsonOpt
from llmprod.cli.pending import CONTEXT, not_available
from llmprod.cli.runner import command_output

EXAMPLE = "Example: [bold]llmprod quantize meta-llama/Llama-3.2-1B-Instruct --method awq --output llama-awq[/bold]"
__all__ = ["CONTEXT", "EXAMPLE", "quantize"]


def quantize(json_output: JsonOpt = False) -> None:
    """Quantize a model to 4 or 8 bits with AWQ or GPTQ (llm-compressor), ready for vLLM."""
    with command_output(json_output):
        raise not_available("quantize")
