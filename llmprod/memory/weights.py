"""Weight bytes on the most loaded GPU, for a weight format, tensor and pipeline parallelism.

Exact when safetensors headers are at hand (a local checkpoint: every tensor's dtype and shape);
otherwise from the architecture: attention (MLA too), dense MLP, MoE with every expert resident,
shared experts, routers, embeddings tied or not. Group-quantized formats add one 16-bit scale per
group and output channel, plus a packed zero point when asymmetric; embeddings, lm_head, norms and
routers stay in the checkpoint's dtype.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path


from llmprod.errors import InputError
from llmprod.memory.model import DTYPE_BYTES, ModelShape, decoder_layer_params, parameter_count

WEIGHT_FORMATS = ("auto", "bf16", "fp16", "fp8", "int8", "w4a16", "w8a16", "awq", "gptq",
                  "w8a8-int8", "w8a8-fp8", "fp8-block", "nvfp4a16")
_SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                      "F8_E4M3": 1, "F8_E5M2": 1, "BOOL": 1}


@dataclass(frozen=True)
class WeightFormat:
    name: str
    linear_bits: float  # bits per quantized linear weight
    group_size: int | None  # None: no group scales
    zero_points: bool
    base_bytes: int  # dtype of everything that is not quantized
    scale_bytes: int = 2  # per group and output channel
    attention_quantized: bool = True  # gpt-oss's MXFP4 covers only the experts
    # Bytes per zero point once served; None: packed at the weights' bits. vLLM's Machete kernel (Hopper) keeps
    # zero points unpacked and pre-multiplied by the scale, in the scales' 16 bits: compressed-tensors' and
    # AutoAWQ's alike (measured: an 8B AWQ GEMM checkpoint loads 0.02 GiB above its compressed-tensors twin).
    zero_bytes: float | None = None

    def linear_bytes(self, params: float) -> float:
        if self.group_size is None:
            return params * self.linear_bits / 8
        groups = params / self.group_size
        zeros = groups * (self.zero_bytes or self.linear_bits / 8) if self.zero_points else 0
        return params * self.linear_bits / 8 + groups * self.scale_bytes + zeros


def weight_format(name: str, shape: ModelShape, group_size: int) -> WeightFormat:
    base = DTYPE_BYTES.get(shape.dtype, 2)
    if name == "auto":
        return _format_from_checkpoint(shape, group_size)
    if name not in WEIGHT_FORMATS:
        raise InputError(f"unknown --weights {name!r}", hint=f"use one of {', '.join(WEIGHT_FORMATS)}")
    return {
        "bf16": WeightFormat("bf16", 16, None, False, 2),
        "fp16": WeightFormat("fp16", 16, None, False, 2),
        "fp8": WeightFormat("fp8", 8, None, False, base),
        "int8": WeightFormat("int8", 8, None, False, base),
        "w8a16": WeightFormat("w8a16", 8, group_size, False, base),
        "w4a16": WeightFormat("w4a16", 4, group_size, False, base),
        "gptq": WeightFormat("gptq", 4, group_size, True, base),  # legacy GPTQ stores zeros even when symmetric
        "awq": WeightFormat("awq", 4, group_size, True, base, zero_bytes=2),
        # llmprod quantize's schemes. Per-channel and 128x128-block scales are under 0.1% of the weights.
        "w8a8-int8": WeightFormat("w8a8-int8", 8, None, False, base),
        "w8a8-fp8": WeightFormat("w8a8-fp8", 8, None, False, base),
        "fp8-block": WeightFormat("fp8-block", 8, None, False, base),
        "nvfp4a16": _nvfp4("nvfp4a16", base),
    }[name]


def _nvfp4(name: str, base: int, group_size: int = 16) -> WeightFormat:
    """FP4 E2M1 weights, one FP8 scale per group of 16 (plus a global scale per tensor, negligible)."""
    return WeightFormat(name, 4, group_size, False, base, scale_bytes=1)


def _format_from_checkpoint(shape: ModelShape, group_size: int) -> WeightFormat:
    qc = shape.quantization_config
    base = DTYPE_BYTES.get(shape.dtype, 2)
    if not qc:
        return WeightFormat(shape.dtype, base * 8, None, False, base)
    method = qc.get("quant_method")
    if method in ("awq", "gptq"):
        bits = int(qc.get("bits", 4))
        zeros = 2 if method == "awq" else None
        return WeightFormat(method, bits, int(qc.get("group_size", group_size)), True, base, zero_bytes=zeros)
    if method == "fp8":
        return WeightFormat("fp8", 8, None, False, base)
    if method == "mxfp4":  # 4-bit E2M1 in blocks of 32 sharing one 8-bit exponent; experts only
        return WeightFormat("mxfp4 (experts)", 4, 32, False, base, scale_bytes=1, attention_quantized=False)
    if method == "compressed-tensors":
        group = next(iter((qc.get("config_groups") or {}).values()), {})
        weights = group.get("weights") or {}
        bits = int(weights.get("num_bits", 8))
        acts = group.get("input_activations") or {}
        a = f"a{acts.get('num_bits', 16)}" if acts else "a16"
        if weights.get("type") == "float":
            if bits == 4:
                return _nvfp4("compressed-tensors nvfp4a16", base, int(weights.get("group_size") or 16))
            return WeightFormat(f"compressed-tensors fp{bits} w{bits}{a}", bits, None, False, base)
        gs = weights.get("group_size") if weights.get("strategy") == "group" else None
        asym = not weights.get("symmetric", True)
        return WeightFormat(f"compressed-tensors w{bits}{a}", bits, gs, asym, base, zero_bytes=2 if asym else None)
    raise InputError(f"quantization method {method!r} in config.json is not one llmprod can size",
                     hint=f"pass --weights with one of {', '.join(WEIGHT_FORMATS[1:])}")


@dataclass(frozen=True)
class WeightsEstimate:
    bytes_per_gpu: int
    parameters: int
    format: str
    how: str


def safetensors_tensors(directory: Path | None) -> dict[str, tuple[str, tuple[int, ...]]] | None:
    """{name: (dtype, shape)} from the headers of a local checkpoint's safetensors files (no tensor data read)."""
    if directory is None:
        return None
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    for file in files:
        with file.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        for name, info in header.items():
            if name != "__metadata__":
                tensors[name] = (info["dtype"], tuple(info["shape"]))
    return tensors


_LAYER = re.compile(r"\.layers\.(\d+)\.")


def estimate_weights(shape: ModelShape, fmt: WeightFormat, tp: int, stage_ranges: list[range],
                     tensors: dict[str, tuple[str, tuple[int, ...]]] | None) -> WeightsEstimate:
    """Bytes on the most loaded GPU: the largest pipeline stage, its tensors split across `tp` ranks."""
    if tensors and (fmt.name == shape.dtype or shape.quantization_config):
        return _from_tensors(shape, tp, stage_ranges, tensors)
    per_stage = []
    last = len(stage_ranges) - 1
    embed = shape.vocab_size * shape.hidden_size
    for s, layers in enumerate(stage_ranges):
        total = 0.0
        for i in layers:
            p = decoder_layer_params(shape, i)
            kv_rank = (p.kv_linear / shape.num_kv_heads) if tp > shape.num_kv_heads else p.kv_linear / tp
            attn = p.attention / tp + kv_rank
            total += fmt.linear_bytes(p.mlp / tp) + p.other * fmt.base_bytes
            total += fmt.linear_bytes(attn) if fmt.attention_quantized else attn * fmt.base_bytes
        if s == 0:
            total += embed / tp * fmt.base_bytes
        if s == last:
            total += (embed / tp + shape.hidden_size) * fmt.base_bytes
            if shape.tie_word_embeddings and last == 0:
                total -= embed / tp * fmt.base_bytes  # one tensor serves both
        per_stage.append(total)
    return WeightsEstimate(int(max(per_stage)) + rope_cache_bytes(shape), parameter_count(shape), fmt.name,
                           "from the architecture")


def rope_cache_bytes(shape: ModelShape) -> int:
    """vLLM's rotary cos/sin table, one per distinct rope, counted in its "Model loading took" figure:
    max_position_embeddings x rotary dim in the model's dtype (32 MiB for Llama-3.1's 131,072 positions)."""
    raw = shape.raw
    if shape.is_mla:
        rotary = int(raw.get("qk_rope_head_dim") or 0)
    else:
        rotary = int(shape.head_dim * float(raw.get("partial_rotary_factor", 1.0)))
    ropes = 2 if raw.get("rope_local_base_freq") else 1  # Gemma 3: a local and a global rope
    return ropes * shape.max_position_embeddings * rotary * DTYPE_BYTES.get(shape.dtype, 2)


def _from_tensors(shape: ModelShape, tp: int, stage_ranges: list[range],
                  tensors: dict[str, tuple[str, tuple[int, ...]]]) -> WeightsEstimate:
    stage_of = {i: s for s, layers in enumerate(stage_ranges) for i in layers}
    per_stage = [0.0] * len(stage_ranges)
    params = 0
    served = DTYPE_BYTES[shape.dtype]
    downcast = DTYPE_BYTES[shape.checkpoint_dtype] > served  # a float32 checkpoint served in 16 bits
    for name, (dtype, dims) in tensors.items():
        numel = 1
        for d in dims:
            numel *= d
        params += numel
        size = numel * (served if downcast and dtype in ("F32", "F64") else _SAFETENSORS_BYTES.get(dtype, 2))
        m = _LAYER.search(name)
        if m:
            stage = stage_of.get(int(m.group(1)))
            if stage is None:
                continue  # e.g. DeepSeek's multi-token-prediction layer, which vLLM does not load
        elif "embed" in name:
            stage = 0
        else:
            stage = len(stage_ranges) - 1
        per_stage[stage] += size / tp if len(dims) >= 2 else size  # norms and biases are replicated
    per_stage = [b + rope_cache_bytes(shape) for b in per_stage]
    how = "from the safetensors headers"
    if downcast:
        how += f", {shape.checkpoint_dtype} tensors at {served} bytes as vLLM serves them ({shape.dtype})"
    return WeightsEstimate(int(max(per_stage)), params, "as stored", how)


def safetensors_from_hub(model: str) -> int | None:
    """Exact parameter count from the hub's safetensors metadata, when online; None otherwise."""
    from llmprod.modelio import hub_offline

    if hub_offline():
        return None
    try:
        from huggingface_hub import get_safetensors_metadata

        meta = get_safetensors_metadata(model)
        return int(sum(meta.parameter_count.values()))
    except Exception:  # offline, gated, no safetensors: fall back to the architecture
        return None


