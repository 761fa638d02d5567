"""Weight quantization: AWQ and GPTQ through llm-compressor (and AutoAWQ for the legacy AWQ format)."""

from __future__ import annotations

from pathlib import Path

from llmprod.quantize.run import quantize
from llmprod.quantize.spec import QuantizeSettings, QuantizeSpec, resolve_settings

__all__ = ["build_spec", "quantize", "QuantizeSpec"]


def build_spec(*, model: str, output: Path, method: str | None, bits: int | None, group_size: int | None,
               symmetric: bool | None, ignore: list[str] | None, recipe: str | None, **rest) -> QuantizeSpec:
    """Command-line values (None = not given) over the recipe's, over the defaults."""
    from llmprod.quantize.recipes import find_recipe, settings_from_recipe

    recipe_path = find_recipe(recipe) if recipe else None
    from_recipe = settings_from_recipe(recipe_path) if recipe_path else None
    cli = QuantizeSettings(method=method, bits=bits, group_size=group_size, symmetric=symmetric,
                           ignore=tuple(ignore) if ignore else None)
    fmt = rest.get("format", "compressed-tensors")
    settings = resolve_settings(cli, from_recipe, symmetric_default=False if fmt == "awq" else None)
    spec = QuantizeSpec(model=model, output=Path(output), settings=settings, recipe_path=recipe_path, **rest)
    spec.validate()
    return spec
