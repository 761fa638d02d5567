"""The root command: wiring only. Each command lives in its own module under llmprod/cli/."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from llmprod import __version__
from llmprod.cli import bench, deploy, estimate_memory, guardrails, perplexity, quantize, serve, tiny_model
from llmprod.cli.usage import LlmprodGroup

EPILOG = "\n\n".join(
    ["[bold]Examples[/bold] (each command's --help says more):"]
    + [m.EXAMPLE.removeprefix("Example: ") for m in (quantize, perplexity, estimate_memory, serve, guardrails, bench, deploy, tiny_model)]
    + ["Exit codes: 0 ok, 1 a check or gate failed, 2 bad input. LLMPROD_DEBUG=1 shows tracebacks."]
)

app = typer.Typer(
    name="llmprod",
    cls=LlmprodGroup,
    help="From a Hugging Face checkpoint to a production endpoint: quantize → perplexity → "
    "estimate-memory → serve (with guardrails) → bench.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"]},
)


app.command("quantize", epilog=quantize.EXAMPLE)(quantize.quantize)
app.command("perplexity", epilog=perplexity.EXAMPLE)(perplexity.perplexity)
app.command("estimate-memory", epilog=estimate_memory.EXAMPLE)(estimate_memory.estimate_memory)
app.command("serve", epilog=serve.EXAMPLE, context_settings=serve.CONTEXT)(serve.serve)
app.add_typer(guardrails.app, name="guardrails")
app.command("bench", epilog=bench.EXAMPLE)(bench.bench)
app.command("deploy", epilog=deploy.EXAMPLE)(deploy.deploy)
app.command("tiny-model", epilog=tiny_model.EXAMPLE)(tiny_model.tiny_model)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmprod {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """From a Hugging Face checkpoint to a production endpoint."""


def main() -> None:
    app(prog_name="llmprod")
