"""Weight quantization through llm-compressor (and AutoAWQ for the legacy AWQ format).

Integer weight-only (GPTQ, AWQ, RTN: W4A16, W8A16), INT8 W8A8 (SmoothQuant + GPTQ), FP8 (per channel or
in blocks, no calibration data), NVFP4 weight-only, and calibrated FP8 KV cache scales.
"""

from __future__ import annotations

from pathlib import Path

from llmprod.quantize.run import quantize
from llmprod.quantize.spec import QuantizeSettings, QuantizeSpec, resolve_settings, scheme_from_flags

__all__ = ["build_spec", "quantize", "QuantizeSpec"]

CALIBRATION_DEFAULTS = {"dataset": ("--dataset", "pile-val"), "num_samples": ("--num-samples", 256),
                        "seq_len": ("--seq-len", 2048)}


def build_spec(*, model: str, output: Path, method: str | None, bits: int | None, group_size: int | None,
               symmetric: bool | None, ignore: list[str] | None, recipe: str | None, scheme: str | None = None,
               smoothquant: float | None = None, kv_cache: str | None = None, **rest) -> QuantizeSpec:
    """Command-line values (None = not given) over the recipe's, over the defaults."""
    from llmprod.quantize.recipes import find_recipe, settings_from_recipe

    recipe_path = find_recipe(recipe) if recipe else None
    from_recipe = settings_from_recipe(recipe_path) if recipe_path else None
    cli = QuantizeSettings(method=method, scheme=scheme_from_flags(scheme, bits), group_size=group_size,
                           symmetric=symmetric, ignore=tuple(ignore) if ignore else None,
                           smoothquant=smoothquant, kv_cache=kv_cache)
    fmt = rest.get("format", "compressed-tensors")
    settings = resolve_settings(cli, from_recipe, symmetric_default=False if fmt == "awq" else None)
    given = tuple(flag for key, (flag, _) in CALIBRATION_DEFAULTS.items() if rest.get(key) is not None)
    for key, (_, default) in CALIBRATION_DEFAULTS.items():
        if rest.get(key) is None:
            rest[key] = default
    spec = QuantizeSpec(model=model, output=Path(output), settings=settings, recipe_path=recipe_path,
                        calibration_flags=given, **rest)
    spec.validate()
    return spec
