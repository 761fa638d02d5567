"""What a quantization run does, resolved once: command line > recipe file > defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from llmprod.errors import ConfigError, InputError

METHODS = ("awq", "gptq")
FORMATS = ("compressed-tensors", "awq")
SUPPORTED_BITS = (4, 8)
# Group sizes vLLM's Marlin/Machete kernels serve for W4A16/W8A16; -1 means one scale per output channel.
VLLM_GROUP_SIZES = (-1, 32, 64, 128)


@dataclass(frozen=True)
class QuantizeSettings:
    """The settings a recipe or the command line may give; None means "not given here"."""

    method: str | None = None
    bits: int | None = None
    group_size: int | None = None
    symmetric: bool | None = None
    ignore: tuple[str, ...] | None = None
    # Extra keyword arguments of the algorithm's modifier (GPTQ dampening_frac, AWQ duo_scaling, ...).
    options: dict[str, Any] | None = None

    def given(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


DEFAULTS = QuantizeSettings(method=None, bits=4, group_size=128, symmetric=None, ignore=("lm_head",), options={})


def resolve_settings(cli: QuantizeSettings, recipe: QuantizeSettings | None,
                     symmetric_default: bool | None = None) -> QuantizeSettings:
    """The one place precedence is decided: command line, then the recipe, then DEFAULTS.

    Symmetry defaults by method as the papers and llm-compressor's presets do: GPTQ symmetric
    (W4A16), AWQ asymmetric with zero points (W4A16_ASYM); the AWQ GEMM format is always asymmetric.
    """
    merged = {**DEFAULTS.given(), **(recipe.given() if recipe else {}), **cli.given()}
    method = merged.get("method")
    if method is None:
        raise InputError("no quantization method given", hint="pass --method awq or --method gptq, or a --recipe")
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}", hint="use --method awq or --method gptq")
    if "symmetric" not in merged:
        merged["symmetric"] = (method == "gptq") if symmetric_default is None else symmetric_default
    bits = merged["bits"]
    if bits not in SUPPORTED_BITS:
        raise InputError(f"{bits}-bit weights are not supported", hint="use --bits 4 or --bits 8 (W4A16 / W8A16)")
    group = merged["group_size"]
    if not isinstance(group, int) or (group < 1 and group != -1):
        raise InputError(f"--group-size {group} is not a positive integer (or -1 for per-channel)",
                         hint="128 is the usual choice")
    return QuantizeSettings(**merged)


@dataclass(frozen=True)
class QuantizeSpec:
    model: str
    output: Path
    settings: QuantizeSettings
    revision: str | None = None  # of a hub model
    format: str = "compressed-tensors"
    dataset: str = "pile-val"
    num_samples: int = 256
    seq_len: int = 2048
    device: str = "auto"
    seed: int = 0
    overwrite: bool = False
    recipe_path: Path | None = None
    verbose: bool = False

    def validate(self) -> None:
        s = self.settings
        if self.format not in FORMATS:
            raise InputError(f"unknown --format {self.format!r}", hint="use compressed-tensors or awq")
        if self.format == "awq" and (s.method != "awq" or s.bits != 4):
            raise InputError(f"--format awq writes AutoAWQ's 4-bit GEMM checkpoints; got --method {s.method} "
                             f"--bits {s.bits}",
                             hint="use --method awq --bits 4 with --format awq, or --format compressed-tensors")
        if self.format == "awq" and s.symmetric:
            raise InputError("--format awq stores zero points: it is always asymmetric",
                             hint="drop --symmetric, or use --format compressed-tensors")
        if self.num_samples < 1:
            raise InputError("--num-samples must be at least 1")
        if self.seq_len < 16:
            raise InputError("--seq-len must be at least 16 tokens")

    def scheme_name(self) -> str:
        s = self.settings
        return f"W{s.bits}A16" + ("" if s.symmetric else "_ASYM")

    def describe(self) -> dict[str, Any]:
        return {**asdict(self.settings), "format": self.format, "scheme": self.scheme_name()}


def check_group_size(linear_in_features: dict[str, int], settings: QuantizeSettings) -> None:
    """Every quantized layer's input size must be a multiple of the group size (refused before any work)."""
    if settings.group_size == -1:
        return
    bad = {name: n for name, n in linear_in_features.items() if n % settings.group_size}
    if bad:
        name, n = next(iter(bad.items()))
        divisors = [g for g in (32, 64, 128) if all(v % g == 0 for v in linear_in_features.values())]
        raise ConfigError(
            f"--group-size {settings.group_size} does not divide the input size {n} of {name} "
            f"({len(bad)} layer(s) affected)",
            hint=f"use one of {divisors or [-1]} or add those layers to --ignore",
        )
