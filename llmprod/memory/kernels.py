"""Will vLLM load this checkpoint's weight format on this GPU, and with which kernel?

The answer is data, one file per vLLM release (llmprod/memory/data/kernels-vllm-X.yaml), each row naming
where it was read: the release's own kernel priority lists and capability checks, and the start-up logs in
tests/data. A format below its quantization method's minimum compute capability does not load (vLLM refuses
to start); above it, the first kernel whose capability range holds is the one vLLM picks.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Any

from llmprod.errors import ConfigError
from llmprod.memory.model import ModelShape
from llmprod.memory.sizes import GPUS, gpu_key

# --weights names (and quantize --scheme names) to the table's formats
WEIGHTS_FORMATS = {"bf16": "unquantized", "fp16": "unquantized", "fp8": "w8a8-fp8", "int8": "w8a8-int8",
                   "w4a16": "w4a16", "w8a16": "w8a16", "awq": "w4a16", "gptq": "w4a16", "w8a8-int8": "w8a8-int8",
                   "w8a8-fp8": "w8a8-fp8", "fp8-block": "fp8-block", "nvfp4a16": "nvfp4a16"}


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


@functools.cache
def tables() -> dict[str, dict[str, Any]]:
    """{release: table} for every kernels-vllm-*.yaml shipped."""
    import yaml

    out = {}
    for entry in resources.files("llmprod.memory").joinpath("data").iterdir():
        m = re.fullmatch(r"kernels-vllm-(.+)\.yaml", entry.name)
        if m:
            out[m[1]] = yaml.safe_load(entry.read_text(encoding="utf-8"))
    return out


def table_for(version: str) -> tuple[str, dict[str, Any]]:
    """The table of `version`, else of the newest release at or below it, else the oldest."""
    known = sorted(tables(), key=_version_key)
    older = [v for v in known if _version_key(v) <= _version_key(version)]
    chosen = older[-1] if older else known[0]
    return chosen, tables()[chosen]


def checkpoint_format(shape: ModelShape, weights: str = "auto") -> str:
    """The table's format for --weights, or for the checkpoint's quantization_config."""
    if weights != "auto":
        return WEIGHTS_FORMATS.get(weights, "unquantized")
    qc = shape.quantization_config or {}
    method = str(qc.get("quant_method", "")).lower()
    if not qc:
        return "unquantized"
    if method == "mxfp4":
        return "mxfp4-moe"
    if method in ("awq", "gptq"):
        return "w8a16" if int(qc.get("bits") or qc.get("w_bit") or 4) == 8 else "w4a16"
    if method == "fp8":
        return "fp8-block" if qc.get("weight_block_size") else "w8a8-fp8"
    if method == "modelopt":
        algo = str(qc.get("quant_algo") or (qc.get("quantization") or {}).get("quant_algo", "")).upper()
        return "modelopt-fp8" if algo == "FP8" else "nvfp4" if "FP4" in algo else "unquantized"
    if method == "compressed-tensors":
        return _compressed_tensors_format(qc)
    raise ConfigError(f"quantization method {method!r} is not in llmprod's kernel table",
                      hint="plan without --gpu (memory only), or pass --weights")


def _compressed_tensors_format(qc: dict[str, Any]) -> str:
    group = next(iter((qc.get("config_groups") or {}).values()), {})
    weights, acts = group.get("weights") or {}, group.get("input_activations") or {}
    bits, kind = int(weights.get("num_bits") or 16), weights.get("type", "int")
    if kind == "float" and bits == 4:
        return "nvfp4" if acts else "nvfp4a16"
    if kind == "float" and bits == 8:
        return "fp8-block" if weights.get("strategy") == "block" else "w8a8-fp8"
    if bits == 4 and acts.get("type") == "float":
        return "w4a8-fp8"
    if bits == 8 and acts:
        return "w8a8-int8"
    return "w8a16" if bits == 8 else "w4a16"


def preflight(fmt: str, gpu: str, version: str) -> dict[str, Any]:
    """Whether vLLM `version` loads `fmt` on `gpu`, the kernel it picks, and what that means for the weights."""
    release, table = table_for(version)
    key = gpu_key(gpu)
    card = GPUS[key]
    row = table["formats"].get(fmt)
    where = f"{card.label} (" + (f"compute capability {card.capability / 10:.1f}" if card.capability else "ROCm") + ")"
    base = {"format": fmt, "gpu": card.label, "compute_capability": card.capability and card.capability / 10,
            "platform": card.platform, "table": f"kernels-vllm-{release}.yaml"}
    if row is None:
        return {**base, "loads": None, "kernel": None, "reason": f"no row for {fmt} in vLLM {release}'s kernel table"}
    base["describes"] = row["describes"]
    minimum = row.get("min_capability")
    if card.platform == "cuda" and minimum and card.capability < minimum:
        return _refused(base, row, gpu, version, f"vLLM {release} does not load {fmt} on {where}: it needs compute "
                                                 f"capability {minimum / 10:.1f}")
    for option in row.get(card.platform) or []:
        low, high = option.get("capability") or [None, None]
        if card.platform == "cuda" and ((low and card.capability < low) or (high and card.capability > high)):
            continue
        return {**base, "loads": True, "kernel": option["kernel"], "kernel_class": option.get("class"),
                "needs": option.get("needs"), "weight_memory": option["weight_memory"], "source": option["source"],
                "seen": option.get("seen", []),
                "reason": f"vLLM {release} loads {fmt} on {where} with {option['kernel']}"}
    return _refused(base, row, gpu, version, f"vLLM {release} has no {fmt} kernel for {where}")


def _refused(base: dict[str, Any], row: dict[str, Any], gpu: str, version: str, reason: str) -> dict[str, Any]:
    """A format that does not load, with the row's nearest format if that one loads on the same GPU."""
    nearest = row.get("nearest")
    if nearest and not preflight(nearest, gpu, version)["loads"]:
        nearest = None
    words = f"; the nearest scheme that loads there is {nearest}" if nearest else ""
    return {**base, "loads": False, "kernel": None, "source": row["source"], "nearest": nearest,
            "reason": reason + words}
