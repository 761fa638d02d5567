"""`llmprod estimate-memory`."""

from __future__ import annotations

from llmprod.cli.options import JsonOpt
from llmprod.cli.pending import CONTEXT, not_available
from llmprod.cli.runner import command_output

EXAMPLE = "Example: [bold]llmprod estimate-memory meta-llama/Llama-3.1-8B-Instruct --weights w4a16 --gpu L4 --context 8192[/bold]"
__all__ = ["CONTEXT", "EXAMPLE", "estimate_memory"]


def estimate_memory(json_output: JsonOpt = False) -> None:
    """Estimate GPU memory (weights + KV cache + overhead) as vLLM would allocate it."""
    with command_output(json_output):
        raise not_available("estimate-memory")
