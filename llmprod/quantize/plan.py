"""`llmprod quantize --dry-run`: what a run would do and need, from config.json alone (no weights loaded).

Memory, from how llm-compressor runs (checked against the measured H200 runs in benchmarks/results/):
- host: the source model in its dtype (loaded on the CPU; `auto_offload` spills what does not fit to
  disk), the compressed copy `save_pretrained` builds, and the calibration activations of one layer;
- GPU (the sequential pipeline onloads one decoder layer at a time): the embeddings and head, one
  layer, its calibration activations, and the method's state: GPTQ's Hessians (in_features² fp32 per
  Linear), AWQ's cached activations (the roughest term: about ±50%); RTN only the layer.
Time scales the measured 8B runs on one H200 by parameters and calibration tokens; on a CPU expect
hours for billions of parameters.
"""

from __future__ import annotations

import os
from typing import Any

from llmprod.quantize.recipes import recipe_dict
from llmprod.quantize.spec import QuantizeSpec

GiB = 1024**3
# Measured on one H200 (benchmarks/results/quantize-8b-*-h200.json, h200-formats/): a Llama-3.1-8B shape,
# 32 samples x 512 tokens. Seconds of the algorithm itself, and of loading + saving + the reload check.
REFERENCE_PARAMETERS = 8.03e9
REFERENCE_TOKENS = 16384
METHOD_SECONDS = {"gptq": 47.0, "awq": 92.0, "rtn": 18.0}  # rtn: FP8/NVFP4, benchmarks/results/h200-formats
SMOOTHQUANT_SECONDS = 20.0
IO_SECONDS = 15.0
# Share of a method's time that grows with the calibration tokens (the rest: quantizing the weights).
TOKEN_SHARE = {"gptq": 0.5, "awq": 0.7, "rtn": 0.0}
DDP_EFFICIENCY = 0.9  # of the calibration share, per extra GPU


def plan(spec: QuantizeSpec) -> dict[str, Any]:
    from llmprod.memory.model import DTYPE_BYTES, decoder_layer_params, load_config, model_shape, parameter_count
    from llmprod.memory.weights import estimate_weights, weight_format

    config, _ = load_config(spec.model, spec.revision)
    shape = model_shape(config)
    s = spec.settings
    params = parameter_count(shape)
    dtype_bytes = DTYPE_BYTES.get(shape.checkpoint_dtype, 2)
    before = params * dtype_bytes
    stages = [range(shape.num_layers)]
    after = estimate_weights(shape, weight_format(s.scheme, shape, s.group_size or 128), 1, stages, None).bytes_per_gpu
    tokens = spec.num_samples * spec.seq_len if s.needs_data else 0

    layer = max(decoder_layer_params(shape, i).total for i in range(shape.num_layers))
    embed = shape.vocab_size * shape.hidden_size * (1 if shape.tie_word_embeddings else 2)
    inter = int(shape.raw.get("intermediate_size") or 4 * shape.hidden_size)
    per_sample = spec.seq_len * inter * 2 * 4 if s.needs_data else 0  # one sample through the MLP, bf16
    if s.method == "gptq":
        state = 4 * (3 * shape.hidden_size**2 + (shape.num_heads * shape.head_dim) ** 2 + 2 * shape.hidden_size**2
                     + inter**2)
    elif s.method == "awq":
        state = tokens // max(spec.gpus, 1) * inter * 2 * 4
    else:
        state = 0
    gpu = (embed + layer) * 2 + state + per_sample
    host = before + after + tokens * shape.hidden_size * 2 * 2 + GiB // 2
    ram = _host_memory()
    host_note = "fits in this host's memory" if ram and host <= ram else (
        f"more than this host's {ram / GiB:.0f} GiB: the rest is offloaded to disk (slower)" if ram else "")

    scale = params / REFERENCE_PARAMETERS
    share = TOKEN_SHARE[s.method]
    token_factor = tokens / REFERENCE_TOKENS if tokens else 0.0
    calibration = METHOD_SECONDS[s.method] * share * token_factor / (1 + DDP_EFFICIENCY * (spec.gpus - 1))
    seconds = scale * (METHOD_SECONDS[s.method] * (1 - share) + calibration + IO_SECONDS
                       + (SMOOTHQUANT_SECONDS * token_factor if s.smoothquant is not None else 0))
    recipe = recipe_dict(spec)
    modifiers = list(recipe["quant_stage"]["quant_modifiers"])
    return {
        "dry_run": True,
        "model": spec.model,
        "output": str(spec.output),
        "parameters": params,
        "layers": shape.num_layers,
        "method": s.method,
        "scheme": s.scheme,
        "compressed_tensors_scheme": spec.scheme_name(),
        "weights": s.info.weights,
        "activations": s.info.activations or "16-bit",
        "kv_cache_scheme": s.kv_cache,
        "modifiers": modifiers,
        "recipe": recipe,
        "gpus": spec.gpus,
        "calibration": ({"dataset": spec.dataset, "samples": spec.num_samples, "seq_len": spec.seq_len,
                         "tokens": tokens} if s.needs_data else None),
        "size_bytes_before": int(before),
        "size_bytes_after": int(after),
        "memory": {"host_bytes": int(host), "gpu_bytes": int(gpu), "host_memory_bytes": ram, "host_note": host_note},
        "time": {"seconds_on_h200": round(seconds, 1),
                 "note": f"about {_duration(seconds)} on an H200 (scaled from measured 8B runs); far longer on a CPU"},
    }


def _host_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
