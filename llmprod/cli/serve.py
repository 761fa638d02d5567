"""`llmprod serve`."""

from __future__ import annotations

from llmprod.cli.options import JsonOpt
from llmprod.cli.pending import CONTEXT, not_available
from llmprod.cli.runner import command_output

EXAMPLE = "Example: [bold]llmprod serve llama-awq --guardrails recipes/guardrails/default.yaml --port 8000[/bold]"
__all__ = ["CONTEXT", "EXAMPLE", "serve"]


def serve(json_output: JsonOpt = False) -> None:
    """Serve a model with vLLM or the embedded engine behind a guarded OpenAI-compatible gateway."""
    with command_output(json_output):
        raise not_available("serve")
