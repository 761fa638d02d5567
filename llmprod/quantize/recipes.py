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
KNOWN_MODIFIERS = ("SmoothQuantModifier", "AWQModifier") + QUANTIZERS
# compressed-tensors' preset schemes: (llmprod scheme, group size, symmetric); None where the layout is fixed.
PRESETS = {"W4A16": ("w4a16", 128, True), "W4A16_ASYM": ("w4a16", 128, False), "W8A16": ("w8a16", 128, True),
           "W8A8": ("w8a8-int8", None, None), "FP8_DYNAMIC": ("w8a8-fp8", None, None),
           "FP8_BLOCK": ("fp8-block", None, None), "NVFP4A16": ("nvfp4a16", None, None)}
# Per-tensor FP8 (E4M3) scales for keys and values, calibrated on the calibration data (static).
FP8_KV_CACHE = {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False, "symmetric": True}
_QUANTIZER_KEYS = {"scheme", "config_groups", "ignore", "targets", "kv_cache_scheme"}

BUNDLED = RECIPES / "quantize"


def find_recipe(name_or_path: str | Path) -> Path:
    """A path, or the name of a bundled recipe (`awq-w4a16` for recipes/quantize/awq-w4a16.yaml)."""
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
    elif "QuantizationModifier" in names:
        method = "rtn"
    else:
        raise ConfigError(f"{source}: no quantization modifier (QuantizationModifier or GPTQModifier)",
                          hint=f"SmoothQuant only rescales; see {BUNDLED / 'w8a8-int8.yaml'}")
    smoothquant = None
    if "SmoothQuantModifier" in names:
        smoothquant = float(mods[names.index("SmoothQuantModifier")][1].get("smoothing_strength", 0.5))
    quant_name, quant = next((n, kw) for n, kw in mods if n in QUANTIZERS)
    scheme, group_size, symmetric = _weight_args(quant, f"{source}: {quant_name}")
    if method == "awq":
        algo = dict(mods[names.index("AWQModifier")][1])
    else:
        algo = {k: v for k, v in quant.items() if k not in _QUANTIZER_KEYS}
    ignore = quant.get("ignore")
    return QuantizeSettings(method=method, scheme=scheme, group_size=group_size, symmetric=symmetric,
                            ignore=tuple(ignore) if ignore is not None else None, options=algo,
                            smoothquant=smoothquant, kv_cache=_kv_cache(quant, f"{source}: {quant_name}"))


def _kv_cache(quant: dict[str, Any], where: str) -> str | None:
    kv = quant.get("kv_cache_scheme")
    if kv is None:
        return None
    if not isinstance(kv, dict) or kv.get("type") != "float" or int(kv.get("num_bits", 0)) != 8:
        raise ConfigError(f"{where}: kv_cache_scheme {kv!r} is not FP8", hint=f"use {FP8_KV_CACHE}")
    return "fp8"


def _weight_args(quant: dict[str, Any], where: str) -> tuple[str, int | None, bool | None]:
    if "scheme" in quant:
        preset = quant["scheme"]
        if preset not in PRESETS:
            raise ConfigError(f"{where}: scheme {preset!r} is not one llmprod writes",
                              hint=f"use one of {', '.join(PRESETS)} or config_groups")
        return PRESETS[preset]
    groups = quant.get("config_groups")
    if not isinstance(groups, dict) or len(groups) != 1:
        raise ConfigError(f"{where}: needs a scheme or exactly one entry in config_groups",
                          hint=f"see the bundled recipes in {BUNDLED}")
    group = next(iter(groups.values())) or {}
    if group.get("input_activations") or group.get("output_activations"):
        raise ConfigError(f"{where}: config_groups with activation quantization are not a layout llmprod checks",
                          hint="use scheme: W8A8, FP8_DYNAMIC or FP8_BLOCK for quantized activations")
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
        raise ConfigError(f"{where}: config_groups here are integer weights only",
                          hint="use scheme: FP8_DYNAMIC, FP8_BLOCK or NVFP4A16 for float weights")
    if bits not in (4, 8):
        raise ConfigError(f"{where}: {bits}-bit weights are not supported", hint="use num_bits: 4 or 8")
    return f"w{bits}a16", group_size, symmetric


def recipe_dict(spec: QuantizeSpec) -> dict[str, Any]:
    """The llm-compressor recipe for the resolved settings (what runs, and what is saved)."""
    s = spec.settings
    quant: dict[str, Any] = {"targets": ["Linear"], "ignore": list(s.ignore or ())}
    if s.info.preset:
        quant["scheme"] = s.info.preset
    else:
        weights: dict[str, Any] = {"num_bits": s.bits, "type": "int", "symmetric": s.symmetric,
                                   "strategy": "channel" if s.group_size == -1 else "group"}
        if s.group_size != -1:
            weights["group_size"] = s.group_size
        quant["config_groups"] = {"group_0": {"targets": ["Linear"], "weights": weights}}
    if s.kv_cache == "fp8":
        quant["kv_cache_scheme"] = dict(FP8_KV_CACHE)
    options = dict(s.options or {})
    modifiers: dict[str, Any] = {}
    if s.smoothquant is not None:
        modifiers["SmoothQuantModifier"] = {"smoothing_strength": s.smoothquant}
    if s.method == "gptq":
        modifiers["GPTQModifier"] = {**options, **quant}
    elif s.method == "awq":
        modifiers.update({"AWQModifier": options, "QuantizationModifier": quant})
    else:
        modifiers["QuantizationModifier"] = {**options, **quant}
    return {"quant_stage": {"quant_modifiers": modifiers}}


def recipe_yaml(spec: QuantizeSpec) -> str:
    s = spec.settings
    layout = f", group size {s.group_size}" if s.info.grouped else ""
    header = f"# Written by llmprod: the recipe that produced this checkpoint ({s.method.upper()}, {spec.scheme_name()}{layout}).\n"
    return header + yaml.safe_dump(recipe_dict(spec), sort_keys=False)
