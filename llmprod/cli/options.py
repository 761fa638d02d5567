"""Shared option types, so command signatures read like prose."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer


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
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random choice (sample selection, ...).")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show the backend libraries' own logging.")]
