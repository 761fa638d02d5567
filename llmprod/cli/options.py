"""Shared option types, so command signatures read like prose."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from llmprod.bundled import RECIPES, names


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print exactly one JSON document on stdout; logs go to stderr.")
]
ModelArg = Annotated[
    str, typer.Argument(help="A Hugging Face hub id (org/name) or a local model directory.", show_default=False)
]
DeviceOpt = Annotated[
    Device, typer.Option("--device", help="Where to run: auto picks a GPU when there is one.")
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show the backend libraries' own logging.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random choice (sample selection, ...).")]
ApiKeyOpt = Annotated[Optional[str], typer.Option("--api-key", envvar="LLMPROD_API_KEY", show_envvar=True,
                                                  help="Bearer key (clients send it; the gateway checks it).")]
RevisionOpt = Annotated[Optional[str], typer.Option("--revision", help="Branch, tag or commit of a hub model "
                                                    "(a local directory has none).")]
PolicyOpt = Annotated[str, typer.Option("--policy", help="A guardrail policy YAML, or a bundled one: "
                                        f"{', '.join(names(RECIPES / 'guardrails'))}.")]
RecipeOpt = Annotated[Optional[str], typer.Option("--recipe", help="A recipe YAML, or a bundled one: "
                                                  f"{', '.join(names(RECIPES / 'quantize'))}.")]
