"""Recipes in llm-compressor's format: read one into settings, and write the one actually used.

A recipe maps stage → modifier group → `ModifierName: {kwargs}`. llmprod reads the method, bits,
group size, symmetry and ignore list out of it, lets command-line flags override them
(`spec.resolve_settings`), and writes the resolved recipe back in the same format, so the
`recipe.yaml` saved next to the weights is exactly what ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmprod.bundled import RECIPES, find_bundled, yaml_error
from llmprod.errors import ConfigError
from llmprod.quantize.spec import QuantizeSettings, QuantizeSpec

QUANTIZERS = ("QuantizationModifier", "GPTQModifier")
KNOWN_MODIFIERS = ("AWQModifier",) + QUANTIZERS
# Preset schemes of compressed-tensors that are weight-only integer group quantization.
PRESETS = {"W4A16": (4, 128, True), "W4A16_ASYM": (4, 128, False), "W8A16": (8, 128, True)}
_QUANTIZER_KEYS = {"scheme", "config_groups", "ignore", "targets"}

BUNDLED = RECIPES / "quantize"


def find_recipe(name_or_path: str | Path) -> Path:
    """A path, or the name of a bundled recipe (`awq-w4a16` for llmprod/recipes/quantize/awq-w4a16.yaml)."""
    return find_bundled(name_or_path, BUNDLED, "recipe")


def modifiers_of(recipe: dict[str, Any], source: str) -> list[tuple[str, dict[str, Any]]]:
    """The (ModifierName, kwargs) pairs in order, walked as llm-compressor walks them."""
    if not isinstance(recipe, dict):
        raise ConfigError(f"{source}: a recipe is a mapping of stages", hint=f"see the bundled recipes in {BUNDLED}")
    found = []
    for stage_key, stage in recipe.items():
        if not (stage_key.endswith("_stage") and isinstance(stage, dict)):
            continue
        for group_key, group in stage.items():
            if not (group_key.endswith("_modifiers") and isinstance(group, dict)):
                continue
            for name, kwargs in group.items():
                if name not in KNOWN_MODIFIERS:
                    raise ConfigError(f"{source}: unsupported modifier {name!r} in {stage_key}.{group_key}",
                                      hint=f"llmprod runs {', '.join(KNOWN_MODIFIERS)}")
                found.append((name, dict(kwargs or {})))
    if not found:
        raise ConfigError(f"{source}: no modifiers found",
                          hint="expected <name>_stage: <name>_modifiers: ModifierName: {...}")
    return found


def settings_from_recipe(path: Path) -> QuantizeSettings:
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise yaml_error(path, exc) from exc
    mods = modifiers_of(data, source)
    names = [n for n, _ in mods]
    if "AWQModifier" in names:
        awq_at = names.index("AWQModifier")
        if not any(n in QUANTIZERS for n in names[awq_at + 1:]):
            raise ConfigError(f"{source}: AWQModifier has no quantization modifier after it",
                              hint=f"AWQ only smooths; add QuantizationModifier after it (see {BUNDLED / 'awq-w4a16.yaml'})")
        method = "awq"
    elif "GPTQModifier" in names:
        method = "gptq"
    else:
        raise ConfigError(f"{source}: round-to-nearest QuantizationModifier alone is not AWQ or GPTQ",
                          hint="use GPTQModifier, or AWQModifier followed by QuantizationModifier")
    quant_name, quant = next((n, kw) for n, kw in mods if n in QUANTIZERS)
    bits, group_size, symmetric = _weight_args(quant, f"{source}: {quant_name}")
    algo = dict(mods[names.index("AWQModifier")][1]) if method == "awq" else {
        k: v for k, v in quant.items() if k not in _QUANTIZER_KEYS}
    ignore = quant.get("ignore")
    return QuantizeSettings(method=method, bits=bits, group_size=group_size, symmetric=symmetric,
                            ignore=tuple(ignore) if ignore is not None else None, options=algo)


def _weight_args(quant: dict[str, Any], where: str) -> tuple[int, int, bool]:
    if "scheme" in quant:
        scheme = quant["scheme"]
        if scheme not in PRESETS:
            raise ConfigError(f"{where}: scheme {scheme!r} is not a weight-only integer scheme llmprod writes",
                              hint=f"use one of {', '.join(PRESETS)} or config_groups")
        return PRESETS[scheme]
    groups = quant.get("config_groups")
    if not isinstance(groups, dict) or len(groups) != 1:
        raise ConfigError(f"{where}: needs a scheme or exactly one entry in config_groups",
                          hint=f"see the bundled recipes in {BUNDLED}")
    group = next(iter(groups.values())) or {}
    if group.get("input_activations") or group.get("output_activations"):
        raise ConfigError(f"{where}: activation quantization is not weight-only (W4A16/W8A16)",
                          hint="remove input_activations; llmprod writes weight-only checkpoints")
    weights = group.get("weights") or {}
    try:
        bits = int(weights["num_bits"])
        symmetric = bool(weights.get("symmetric", True))
        strategy = weights.get("strategy", "group")
        group_size = -1 if strategy == "channel" else int(weights["group_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: weights need num_bits and group_size (or strategy: channel)",
                          hint=f"see the bundled recipes in {BUNDLED}") from exc
    if weights.get("type", "int") != "int":
        raise ConfigError(f"{where}: only integer weights are supported here", hint="use type: int")
    return bits, group_size, symmetric


def recipe_dict(spec: QuantizeSpec) -> dict[str, Any]:
    """The llm-compressor recipe for the resolved settings (what runs, and what is saved)."""
    s = spec.settings
    weights: dict[str, Any] = {"num_bits": s.bits, "type": "int", "symmetric": s.symmetric,
                               "strategy": "channel" if s.group_size == -1 else "group"}
    if s.group_size != -1:
        weights["group_size"] = s.group_size
    quant = {"targets": ["Linear"], "ignore": list(s.ignore or ()),
             "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights}}}
    options = dict(s.options or {})
    if s.method == "gptq":
        modifiers = {"GPTQModifier": {**options, **quant}}
    else:
        modifiers = {"AWQModifier": options, "QuantizationModifier": quant}
    return {"quant_stage": {"quant_modifiers": modifiers}}


def recipe_yaml(spec: QuantizeSpec) -> str:
    header = (f"# Written by llmprod: the recipe that produced this checkpoint ({spec.settings.method.upper()}, "
              f"{spec.scheme_name()}, group size {spec.settings.group_size}).\n")
    return header + yaml.safe_dump(recipe_dict(spec), sort_keys=False)
