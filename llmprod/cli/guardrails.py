"""`llmprod guardrails ...`: try a guardrail policy before deploying it."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from llmprod.cli.options import JsonOpt

app = typer.Typer(
    help="Guardrail policies: deterministic and model-based checks on inputs and outputs.",
    no_args_is_help=True,
)

EXAMPLE = "Example: [bold]llmprod guardrails scan prompts.jsonl --policy recipes/guardrails/default.yaml[/bold]"


class Stage(str, Enum):
    input = "input"
    output = "output"


@app.command("scan", epilog=EXAMPLE)
def scan(
    file: Annotated[str, typer.Argument(help=".txt (one text per line), .jsonl (a `text` field), or - for stdin "
                                             "(one text per line).", show_default=False)],
    policy: Annotated[str, typer.Option("--policy", help="Policy file or bundled name (default, sandwich, "
                                        "pii-redact).")] = "default",
    stage: Annotated[Stage, typer.Option("--stage", help="Apply the policy's input or output checks.")] = Stage.input,
    json_output: JsonOpt = False,
) -> None:
    """Run a policy over a file of texts and report each verdict and finding."""
    from llmprod.cli.runner import command_output

    with command_output(json_output) as out:
        from llmprod.serve.guardrails.scan import run_scan

        run_scan(file, policy, stage.value, out)
