"""`llmprod guardrails ...`: try a guardrail policy before deploying it."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from llmprod.cli.options import JsonOpt, PolicyOpt

app = typer.Typer(
    help="Guardrail policies: deterministic and model-based checks on inputs and outputs.",
    no_args_is_help=True,
)

EXAMPLE = "Example: [bold]llmprod guardrails scan prompts.jsonl --policy sandwich --stage input[/bold]"


class Stage(str, Enum):
    input = "input"
    output = "output"


@app.command("scan", epilog=EXAMPLE)
def scan(
    file: Annotated[str, typer.Argument(help=".txt (one text per line), .jsonl (a `text` field), or - for stdin "
                                             "(one text per line).", show_default=False)],
    policy: PolicyOpt = "default",
    stage: Annotated[Stage, typer.Option("--stage", case_sensitive=False, help="Apply the policy's input or output checks.")] = Stage.input,
    json_output: JsonOpt = False,
) -> None:
    """Run a policy over a file of texts and report each verdict and finding."""
    from llmprod.cli.exits import command_output

    with command_output(json_output) as out:
        from llmprod.guardrails.scan import run_scan

        result = run_scan(file, policy, stage.value, out)
        out.result(result, render=lambda console: _render(console, result["results"], result["summary"]))


def _render(console, results: list[dict], summary: dict) -> None:
    from rich.table import Table

    table = Table(title=f"policy {summary['policy']} ({summary['stage']})", title_justify="left")
    for column in ("#", "verdict", "findings"):
        table.add_column(column)
    style = {"allow": "green", "flag": "yellow", "redact": "cyan", "block": "red"}
    for r in results:
        if r["verdict"] == "allow" and len(results) > 50:
            continue  # long corpora: show what the policy acted on
        findings = ", ".join(f"{f['check']}:{f['category']}@{f['start']}-{f['end']}"
                             + (f" p={f['score']:.2f}" if "score" in f else "") for f in r["findings"])
        table.add_row(str(r["index"]), f"[{style[r['verdict']]}]{r['verdict']}[/]", findings or "-")
    console.print(table)
    v = summary["verdicts"]
    console.print(f"{summary['texts']} texts: {v['allow']} allowed, {v['flag']} flagged, {v['redact']} redacted, "
                  f"{v['block']} blocked")
    latency = ", ".join(f"{check} {t['p50_ms']:.3f} ms" for check, t in summary["latency"].items())
    if latency:
        console.print(f"latency per text, p50: {latency}", style="dim")
