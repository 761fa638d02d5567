"""`llmprod guardrails ...`: try a guardrail policy before deploying it."""

from __future__ import annotations

import typer

from llmprod.cli.options import JsonOpt
from llmprod.cli.pending import CONTEXT, not_available
from llmprod.cli.runner import command_output

app = typer.Typer(
    help="Guardrail policies: deterministic and model-based checks on inputs and outputs.",
    no_args_is_help=True,
)

EXAMPLE = "Example: [bold]llmprod guardrails scan prompts.jsonl --policy recipes/guardrails/default.yaml[/bold]"


@app.command("scan", epilog=EXAMPLE, context_settings=CONTEXT)
def scan(json_output: JsonOpt = False) -> None:
    """Run a policy over a file of texts and report each verdict and finding."""
    with command_output(json_output):
        raise not_available("guardrails scan")
