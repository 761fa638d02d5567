"""The whole estimate: weights, KV budget, blocks, tokens, concurrency, and what would fit instead."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from llmprod.errors import InputError
from llmprod.memory.kvcache import (KVGroups, LayerSpec, cdiv, full_attention_bytes_per_token, group_layers,
                                    layer_specs, max_context, pp_layer_counts, stage_layers)
from llmprod.memory.model import (DTYPE_BYTES, ModelShape, expert_intermediate_size, experts_per_token, is_moe_layer,
                                  load_config, model_shape)
from llmprod.memory.releases import ENTRY_POINTS, NEWEST, VllmRelease, release_for
from llmprod.memory.sizes import GiB, format_bytes, gpu_memory
from llmprod.memory.weights import estimate_weights, safetensors_from_hub, safetensors_tensors, weight_format

# vLLM 0.26.0's --kv-cache-dtype values (its CacheDType), our short names for two of them, and the bytes per
# cached element estimate-memory plans with: the scaled and packed formats are served, not yet modelled here.
VLLM_KV_CACHE_DTYPES = ("auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla",
                        "turboquant_k8v4", "turboquant_4bit_nc", "turboquant_k3v4_nc", "turboquant_3bit_nc",
                        "int4_per_token_head", "int8_per_token_head", "fp8_per_token_head", "nvfp4")
KV_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16"}
KV_DTYPES = {"auto": None, "bfloat16": 2, "float16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}
# Not measurable from a config: the memory of captured CUDA graphs with vLLM's default capture sizes
# (0.44 GiB for a 1B Llama, 0.98 GiB for an 8B one with vLLM 0.26.0 on an H200).
CUDA_GRAPH_BYTES = int(1.0 * GiB)
# The profiling forward's peak, fitted to vLLM 0.26.0's "peak activation" on an H200 (tests/data/vllm-0.26.0,
# max_num_batched_tokens 8192, max_num_seqs 1024): the live tensors of one layer (residual stream and norm,
# q/k/v, the dense MLP's gate/up output and activation) count 0.56 of their size once torch.compile has fused
# them; the fused-MoE kernels' two workspaces (tokens × top-k × max(2 × expert width, hidden) and
# × max(expert width, hidden)) count in full; the sampler's warm-up over max_num_seqs rows of logits takes
# 4.7 bytes per logit on the V2 model runner, which skips top-k/top-p while profiling, and 14 on the V1 runner,
# which sorts them. Fitted on Llama-3.1-8B/3.2-1B, Qwen3-8B, Gemma-2-9B (V2) and Qwen3-30B-A3B, gpt-oss,
# Mixtral (V1): within 0.25 GiB below vLLM for each and up to 0.6 GiB above (docs/memory.md).
FUSED_FRACTION = 0.56
SAMPLER_BYTES_V2 = 4.7
SAMPLER_BYTES_V1 = 14


@dataclass(frozen=True)
class MemorySpec:
    model: str
    context: int | None = None  # vLLM's max_model_len; None: the model's length, as vLLM defaults
    batch: int = 1
    weights: str = "auto"
    group_size: int = 128
    kv_cache_dtype: str = "auto"
    gpu: str | None = None
    gpu_memory_bytes: int | None = None
    gpu_memory_utilization: float | None = None  # None: the vLLM release's default
    kv_cache_memory_bytes: int | None = None
    tp: int = 1
    pp: int = 1
    block_size: int = 16
    max_num_batched_tokens: int | None = None  # None: vLLM's default for the GPU and entry point
    max_num_seqs: int | None = None  # likewise
    entry_point: str = "serve"  # "serve" (vllm serve) or "python" (vllm.LLM): their batch defaults differ
    revision: str | None = None  # of a hub model
    vllm_version: str = NEWEST  # whose defaults apply
    vllm_version_from: str = "the newest release llmprod knows"

    def validate(self) -> None:
        for name, value in (("--max-model-len", self.context), ("--batch", self.batch),
                            ("--tensor-parallel-size", self.tp), ("--pipeline-parallel-size", self.pp),
                            ("--block-size", self.block_size), ("--max-num-batched-tokens", self.max_num_batched_tokens),
                            ("--max-num-seqs", self.max_num_seqs)):
            if value is not None and value < 1:
                raise InputError(f"{name} must be at least 1, got {value}")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise InputError(f"--gpu-memory-utilization {self.gpu_memory_utilization} must be in (0, 1]",
                             hint="leave it out for the vLLM release's default")
        if self.kv_cache_dtype not in KV_DTYPES:
            raise InputError(f"estimate-memory does not model --kv-cache-dtype {self.kv_cache_dtype} yet",
                             hint=f"plan with one of {', '.join(KV_DTYPES)}; serve passes any of vLLM's values on")
        if self.gpu and self.gpu_memory_bytes:
            raise InputError("--gpu and --gpu-memory both given", hint="give one of them")
        if self.entry_point not in ENTRY_POINTS:
            raise InputError(f"--entry-point {self.entry_point!r} is not one vLLM has",
                             hint="use serve (vllm serve, what llmprod serve starts) or python (vllm.LLM)")

    def check_memory(self) -> None:
        """After the model (the first thing to get right): something to plan against."""
        if self.kv_cache_memory_bytes is None and not (self.gpu or self.gpu_memory_bytes):
            raise InputError("no memory to plan against",
                             hint="pass --gpu NAME, --gpu-memory SIZE, or --kv-cache-memory SIZE")
        if self.gpu:
            gpu_memory(self.gpu)  # an unknown name lists the known ones


def which_vllm(version: str | None, vllm_bin: str | None) -> tuple[str, str]:
    """(release, where it came from): --vllm-version, else the vLLM on PATH or --vllm-bin, else the newest known."""
    if version:
        release_for(version)  # refuses what is not a version
        if vllm_bin:
            raise InputError("--vllm-version and --vllm-bin both given", hint="give one of them")
        return version, "--vllm-version"
    from llmprod.vllm import find_vllm, installed_version

    path = find_vllm(vllm_bin)
    if path is None:
        return NEWEST, "the newest release llmprod knows; no vllm on PATH"
    found = installed_version(path)
    if found is None:
        return NEWEST, f"the newest release llmprod knows; {path} did not say its version"
    return found, f"the vLLM at {path}"


def estimate(spec: MemorySpec) -> dict[str, Any]:
    spec.validate()
    config, directory = load_config(spec.model, spec.revision)
    shape = model_shape(config)
    limit = shape.max_position_embeddings
    if spec.context is None:
        if not limit:
            raise InputError("the model's config.json gives no max_position_embeddings",
                             hint="pass --max-model-len TOKENS")
        spec = replace(spec, context=limit)
    elif limit and spec.context > limit:
        raise InputError(f"--max-model-len {spec.context} is longer than the model's {limit} positions",
                         hint=f"use --max-model-len {limit} or less (vLLM refuses a longer one)")
    spec.check_memory()
    if shape.num_heads % spec.tp:
        raise InputError(f"--tensor-parallel-size {spec.tp} does not divide the model's {shape.num_heads} attention "
                         "heads", hint="vLLM needs the heads split evenly; try a divisor of the head count")
    kv_bytes = kv_cache_bytes(spec.kv_cache_dtype, shape)
    release, note = release_for(spec.vllm_version)
    spec, batch_from = _batch_settings(spec, release)
    result = _estimate(spec, shape, config, directory, kv_bytes, release, whatifs=True)
    result["batch_settings_from"] = batch_from
    _preflight(result, spec, shape)
    result["vllm"] = {"kv_cache_dtype": _kv_dtype_note(spec.kv_cache_dtype, shape, kv_bytes),
                      "version": spec.vllm_version, "from": spec.vllm_version_from, "defaults_of": release.version,
                      "note": note, "gpu_memory_utilization": _utilization(spec, release),
                      "dtype": shape.dtype if shape.dtype == shape.checkpoint_dtype
                      else f"{shape.dtype} (config.json says {shape.checkpoint_dtype}; vLLM downcasts it)"}
    return result


def _preflight(result: dict[str, Any], spec: MemorySpec, shape: ModelShape) -> None:
    """`loads` and `kernel`: whether the vLLM release planned for loads this weight format on the named GPU."""
    from llmprod.memory.kernels import checkpoint_format, preflight

    check = preflight(checkpoint_format(shape, spec.weights), spec.gpu, spec.vllm_version) if spec.gpu else None
    result["preflight"] = check
    result["loads"] = check["loads"] if check else None
    result["kernel"] = check["kernel"] if check else None
    if check and check["loads"] is False:
        result["reason"] = check["reason"]
    elif check and check["loads"]:
        result["reason"] += f"; loads with {check['kernel']}"


def gpu_of(spec: MemorySpec) -> tuple[str | None, int | None]:
    """(name, total bytes) of the GPU planned for, as far as the spec says."""
    if spec.gpu:
        label, total, _ = gpu_memory(spec.gpu)
        return label, total
    return None, spec.gpu_memory_bytes


def _batch_settings(spec: MemorySpec, release: VllmRelease) -> tuple[MemorySpec, dict[str, str]]:
    """--max-num-batched-tokens and --max-num-seqs: given, or vLLM's defaults for this GPU and entry point."""
    label, total = gpu_of(spec)
    tokens, seqs, why = release.batch_defaults(label, total, spec.entry_point, spec.context)
    came = {"max_num_batched_tokens": why, "max_num_seqs": why}
    if spec.max_num_batched_tokens is not None:
        tokens, came["max_num_batched_tokens"] = spec.max_num_batched_tokens, "given"
    if spec.max_num_seqs is not None:
        seqs, came["max_num_seqs"] = spec.max_num_seqs, "given"
    return replace(spec, max_num_batched_tokens=tokens, max_num_seqs=seqs), came


def checkpoint_kv_scheme(shape: ModelShape) -> dict | None:
    """The KV cache quantization a compressed-tensors checkpoint declares (llmprod quantize --kv-cache-scheme)."""
    return (shape.quantization_config or {}).get("kv_cache_scheme")


def kv_cache_bytes(kv_cache_dtype: str, shape: ModelShape) -> int:
    """Bytes per cached element. vLLM's `auto` is the model's dtype, except for a checkpoint that declares a
    kv_cache_scheme: vLLM (0.26) then caches in FP8 with the checkpoint's calibrated scales."""
    if kv_cache_dtype == "auto" and checkpoint_kv_scheme(shape):
        return 1
    return KV_DTYPES[kv_cache_dtype] or DTYPE_BYTES.get(shape.dtype, 2)


def _kv_dtype_note(kv_cache_dtype: str, shape: ModelShape, kv_bytes: int) -> str:
    if kv_cache_dtype == "auto" and checkpoint_kv_scheme(shape):
        return "fp8 (auto: the checkpoint declares a kv_cache_scheme, with calibrated scales)"
    return kv_cache_dtype if kv_cache_dtype != "auto" else f"auto ({kv_bytes} bytes: the model's dtype)"


def _utilization(spec: MemorySpec, release: VllmRelease) -> float:
    return spec.gpu_memory_utilization if spec.gpu_memory_utilization is not None \
        else release.gpu_memory_utilization


def _estimate(spec: MemorySpec, shape: ModelShape, config: dict, directory, kv_bytes: int, release: VllmRelease,
              *, whatifs: bool) -> dict[str, Any]:
    stages = stage_layers(shape, spec.pp)
    counts = pp_layer_counts(shape.num_layers, spec.pp)
    starts = [sum(counts[:i]) for i in range(len(counts))]
    ranges = [range(s, s + n) for s, n in zip(starts, counts)]

    fmt = weight_format(spec.weights, shape, spec.group_size)
    tensors = safetensors_tensors(directory) if spec.weights == "auto" else None
    weights = estimate_weights(shape, fmt, spec.tp, ranges, tensors)
    weights_how = weights.how
    weights_bytes = weights.bytes_per_gpu
    if tensors is None:
        exact = _exact_parameters(spec.model, directory)
        if exact:  # scale the architecture's estimate to the checkpoint's exact parameter count
            weights_bytes = int(weights_bytes * exact / weights.parameters)
            weights_how = "architecture, scaled to the exact parameter count in the safetensors metadata"

    # Plan every stage; report the one with the least room per request (the largest, in practice).
    plans = []
    for layers, layer_range in zip(stages, ranges):
        specs = layer_specs(shape, layers, spec.tp, spec.block_size, kv_bytes)
        plans.append((specs, group_layers(specs)))
    specs, groups = max(plans, key=lambda p: sum(s.page_bytes for s in p[0]))

    budget, budget_lines, usable = _kv_budget(spec, shape, weights_bytes, release)
    in_flight = release.batches_in_flight(shape, spec.pp) * spec.max_num_batched_tokens
    num_blocks = groups.num_blocks(budget)
    concurrency = groups.max_concurrency(num_blocks, spec.context, in_flight)
    kv_tokens = int(concurrency * spec.context)  # vLLM's "GPU KV cache size": every request at C tokens
    per_request_blocks = groups.blocks_per_request(spec.context, in_flight)
    pool_tokens = num_blocks * groups.block_size  # every group holds num_blocks blocks of block_size tokens
    longest = max_context(groups, specs, budget, spec.batch, shape.max_position_embeddings or spec.context,
                          in_flight)
    per_token = full_attention_bytes_per_token(specs)
    result: dict[str, Any] = {
        "model": spec.model,
        "model_type": shape.model_type,
        "layers": shape.num_layers,
        "layer_types": _layer_summary(shape),
        "kv_heads_per_gpu": 1 if shape.is_mla else max(1, shape.num_kv_heads // spec.tp),
        "kv_bytes_per_token": per_token,
        "kv_bytes_per_token_per_layer": per_token // max(1, len(specs)),
        "weights_format": fmt.name,
        "weights_bytes": weights_bytes,
        "weights_estimated": weights_how,
        "parameters": weights.parameters,
        "kv_cache_bytes": budget,
        "budget": budget_lines,
        "block_size": spec.block_size,
        "page_bytes": groups.page_bytes,
        "kv_cache_groups": len(groups.specs),
        "group_size": groups.group_size,
        "num_blocks": num_blocks,
        "kv_cache_tokens": kv_tokens,
        "kv_pool_tokens": pool_tokens,
        "kv_tokens_note": (f"GPU KV cache size as vLLM {release.version} logs it: concurrency × max model length, "
                           "so a sliding-window layer's window and the tokens in flight count against it; the pool "
                           f"itself is {num_blocks:,} blocks × {groups.block_size} tokens per layer group "
                           f"({pool_tokens:,} tokens), the figure older vLLM releases logged"),
        "max_num_batched_tokens": spec.max_num_batched_tokens,
        "max_num_seqs": spec.max_num_seqs,
        "blocks_per_request": per_request_blocks,
        "context": spec.context,
        "batch": spec.batch,
        "max_concurrency": concurrency,
        "max_batch": int(math.floor(concurrency)),
        "max_context": longest,
        "fits": budget > 0 and concurrency >= spec.batch,
        "reason": _reason(spec, budget, usable, weights_bytes, concurrency, per_request_blocks, num_blocks),
        "tp": spec.tp,
        "pp": spec.pp,
        "layers_per_stage": counts,
        "tokens_in_flight": in_flight,
        "paging": _paging(spec, shape, specs, groups, in_flight),
    }
    if whatifs:
        result["what_if"] = _what_ifs(spec, shape, config, directory, kv_bytes, release)
    return result


def _exact_parameters(model: str, directory) -> int | None:
    if directory is not None:
        tensors = safetensors_tensors(directory)
        if tensors:
            return sum(math.prod(dims) for _, dims in tensors.values())
        return None
    return safetensors_from_hub(model)


def _kv_budget(spec: MemorySpec, shape: ModelShape, weights_bytes: int,
               release: VllmRelease) -> tuple[int, list[dict[str, Any]]]:
    if spec.kv_cache_memory_bytes is not None:
        return spec.kv_cache_memory_bytes, [{"item": "KV cache (--kv-cache-memory)", "bytes": spec.kv_cache_memory_bytes,
                                             "how": "given, per GPU, as vLLM's flag of the same name"}], None
    if spec.gpu:
        label, total, source = gpu_memory(spec.gpu)
    else:
        label, total, source = "--gpu-memory", spec.gpu_memory_bytes, "given (vLLM sees the total CUDA reports)"
    utilization = _utilization(spec, release)
    usable = int(total * utilization)
    activation = _activation_peak(spec, shape, release)
    one_gpu = spec.tp * spec.pp == 1
    non_torch = release.non_torch_bytes if one_gpu else release.non_torch_bytes_parallel
    graphs = release.v1_cuda_graph_bytes if release.deducts_cuda_graphs(shape) else 0
    default = "" if spec.gpu_memory_utilization is not None else f" (vLLM {release.version}'s default)"
    lines = [
        {"item": f"GPU memory ({label})", "bytes": total, "how": source},
        {"item": f"× utilization {utilization}", "bytes": usable, "how": f"what vLLM may use{default}"},
        {"item": "− weights", "bytes": -weights_bytes, "how": "see weights"},
        {"item": "− activation peak", "bytes": -activation,
         "how": f"profiling forward of {spec.max_num_batched_tokens:,} tokens"
                + (" (fused-MoE workspaces included)" if shape.is_moe else "")
                + f", sampler warm-up of {spec.max_num_seqs:,} sequences' logits"
                + (" (V1 runner: sorted for top-k/top-p)" if not release.v2_runner(shape) else "")},
        {"item": "− non-torch memory", "bytes": -non_torch,
         "how": f"CUDA context and cuBLAS workspaces, as measured with vLLM {release.version}"
                + ("" if one_gpu else " per GPU with tensor parallelism (NCCL's buffers come before its baseline)")},
        {"item": "− CUDA graphs", "bytes": -graphs,
         "how": f"the V1 model runner's own estimate, deducted before the KV cache (0.54-0.74 GiB measured "
                f"with vLLM {release.version}; 0 with --enforce-eager)" if graphs else
         f"not deducted: vLLM {release.version} captures this model's graphs after sizing the KV cache "
         f"(about {CUDA_GRAPH_BYTES / GiB:.0f} GiB more than the utilization share)"},
    ]
    budget = usable - weights_bytes - activation - non_torch - graphs
    lines.append({"item": "= KV cache", "bytes": max(0, budget),
                  "how": "what vLLM gives the block pool" if budget > 0 else
                  f"none: the lines above leave {format_bytes(-budget)} too little"})
    return max(0, budget), lines, usable


def _reason(spec: MemorySpec, budget: int, usable: int | None, weights: int, concurrency: float,
            per_request_blocks: int, num_blocks: int) -> str:
    """One line: why it fits or not, in the figures that decide it."""
    if usable is not None and weights > usable:
        return (f"weights alone need {format_bytes(weights)} of the {format_bytes(usable)} budget "
                f"(GPU memory × utilization) on each GPU")
    if budget <= 0:
        return (f"weights ({format_bytes(weights)}) and vLLM's overhead leave no KV cache in the "
                f"{format_bytes(usable or 0)} budget on each GPU")
    need = f"{spec.batch} × {spec.context:,} tokens"
    if concurrency < spec.batch:
        return (f"{need} need {spec.batch * per_request_blocks:,} KV blocks; the KV cache holds {num_blocks:,} "
                f"(concurrency {concurrency:.2f}x at {spec.context:,} tokens)")
    return f"{need} fit: concurrency {concurrency:.2f}x at {spec.context:,} tokens"


def _activation_peak(spec: MemorySpec, shape: ModelShape, release: VllmRelease) -> int:
    """vLLM's profiling run: one forward of max_num_batched_tokens tokens, then the sampler's warm-up over
    max_num_seqs sequences (see FUSED_FRACTION)."""
    cfg, tokens, tp = shape.raw, spec.max_num_batched_tokens, spec.tp
    dtype = DTYPE_BYTES.get(shape.dtype, 2)
    qkv = (shape.num_heads + 2 * shape.num_kv_heads) * shape.head_dim
    attention = 4 * shape.hidden_size + qkv // tp
    mlp = 0.0
    if any(not is_moe_layer(cfg, i) for i in range(shape.num_layers)):
        mlp = FUSED_FRACTION * 3 * (cfg.get("intermediate_size") or 4 * shape.hidden_size) // tp
    if shape.is_moe:
        width = expert_intermediate_size(cfg) // tp
        workspaces = experts_per_token(cfg) * (max(width, shape.hidden_size) + max(2 * width, shape.hidden_size))
        mlp = max(mlp, workspaces)
    forward = tokens * dtype * (FUSED_FRACTION * attention + mlp)
    per_logit = SAMPLER_BYTES_V2 if release.v2_runner(shape) else SAMPLER_BYTES_V1
    sampler = spec.max_num_seqs * shape.vocab_size * per_logit
    return int(forward + sampler)


def _layer_summary(shape: ModelShape) -> dict[str, int]:
    summary: dict[str, int] = {}
    for layer in shape.layers:
        key = layer.kind if layer.window is None else f"{layer.kind} ({layer.window})"
        summary[key] = summary.get(key, 0) + 1
    if shape.is_mla:
        summary = {f"MLA {k}": v for k, v in summary.items()}
    return summary


def _paging(spec: MemorySpec, shape: ModelShape, specs: list[LayerSpec], groups: KVGroups,
            in_flight: int) -> dict[str, Any]:
    """PagedAttention against reserving every sequence's full context contiguously, for this load."""
    per_token_full = full_attention_bytes_per_token(specs)
    contiguous = spec.batch * spec.context * per_token_full
    paged = spec.batch * groups.blocks_per_request(spec.context, in_flight) * groups.page_bytes * groups.group_size
    return {
        "contiguous_bytes": contiguous,
        "paged_bytes": paged,
        "saved_bytes": contiguous - paged,
        "how": f"contiguous: {spec.batch} × {spec.context} tokens × {per_token_full} B reserved up front; "
               f"paged: blocks of {spec.block_size} tokens for {spec.context} tokens each, sliding layers "
               "keeping only their window",
    }


def _what_ifs(spec: MemorySpec, shape: ModelShape, config: dict, directory, kv_bytes: int,
              release: VllmRelease) -> list[dict[str, Any]]:
    options = []
    if kv_bytes > 1:
        options.append(("--kv-cache-dtype fp8", replace(spec, kv_cache_dtype="fp8"), 1))
    next_tp = spec.tp * 2
    if shape.num_heads % next_tp == 0:
        options.append((f"--tensor-parallel-size {next_tp}", replace(spec, tp=next_tp), kv_bytes))
    out = []
    for label, alt, alt_kv in options:
        r = _estimate(alt, shape, config, directory, alt_kv, release, whatifs=False)
        out.append({"change": label, "kv_cache_tokens": r["kv_cache_tokens"], "max_concurrency": r["max_concurrency"],
                    "max_context": r["max_context"], "fits": r["fits"], "weights_bytes": r["weights_bytes"]})
    return out


__all__ = ["MemorySpec", "estimate", "cdiv"]
