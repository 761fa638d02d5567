"""`llmprod tiny-model`: build the bundled tiny model (quickstart, tests, benchmarks)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from llmprod.cli.exits import command_output
from llmprod.cli.options import JsonOpt
from llmprod.errors import InputError

EXAMPLE = "Example: [bold]llmprod tiny-model work/tiny --trained --texts work[/bold]"


class Kind(str, Enum):
    llama = "llama"
    llama_guard = "llama-guard"
    prompt_guard = "prompt-guard"


def tiny_model(
    output: Annotated[Path, typer.Argument(help="Directory to create (must not exist or be empty).")],
    trained: Annotated[
        bool, typer.Option("--trained/--random", help="Train briefly (about a minute) or keep random weights.")
    ] = True,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training steps with --trained.")] = 300,
    texts: Annotated[
        Optional[Path],
        typer.Option("--texts", help="Also write calibration.txt (training topics) and eval.txt (held out) here."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    kind: Annotated[Kind, typer.Option("--kind", case_sensitive=False, help="llama: the model to quantize and serve; llama-guard / "
                                       "prompt-guard: random-weight guard models with the real architectures, "
                                       "for trying a sandwich policy offline.")] = Kind.llama,
    json_output: JsonOpt = False,
) -> None:
    """Build a tiny Llama-architecture model (or guard model) offline, from this Python's own documentation text."""
    with command_output(json_output) as out:
        from dataclasses import replace

        from llmprod.tinymodel import RANDOM, build_tiny_model, corpus_split

        if output.exists() and (not output.is_dir() or any(output.iterdir())):
            raise InputError(f"{output} already exists and is not an empty directory",
                             hint="choose a new path or remove it")
        if kind is not Kind.llama:
            from llmprod.tinymodel import guards

            build = guards.build_tiny_llama_guard if kind is Kind.llama_guard else guards.build_tiny_prompt_guard
            out.info(f"building a tiny {kind.value} model in {output} (random weights: its verdicts mean nothing)")
            report = build(output, seed=seed)
            out.result(report)
            return
        spec = replace(RANDOM, train_steps=steps if trained else 0, seed=seed)
        with out.progress() as progress:
            task = progress.add_task("training the tiny model", total=spec.train_steps or None)

            def on_step(step: int, total: int, loss: float) -> None:
                progress.update(task, completed=step, description=f"training (loss {loss:.3f})")

            out.info(f"building the tiny model in {output} ({'trained' if trained else 'random weights'})")
            report = build_tiny_model(output, spec, on_step=on_step)
        if texts is not None:
            texts.mkdir(parents=True, exist_ok=True)
            train_text, eval_text = corpus_split()
            (texts / "calibration.txt").write_text(train_text)
            (texts / "eval.txt").write_text(eval_text)
            report["texts"] = {"calibration": str(texts / "calibration.txt"), "eval": str(texts / "eval.txt")}
        out.result(report if json_output else {
            "model": report["path"],
            "parameters": report["parameters"],
            "held-out perplexity": report["held_out_perplexity"],
            "uniform perplexity": report["uniform_perplexity"],
            "seconds": report["seconds"],
            **({"texts": str(texts)} if texts else {}),
        })
