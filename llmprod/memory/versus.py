"""An estimate beside what vLLM logged when it started: the same settings, figure by figure.

`estimate-memory MODEL --vllm-log LOG` reads the run's settings from its start-up lines (max_model_len,
KV cache dtype, tensor/pipeline parallel size, memory utilization, the GPU's memory, the release), plans
with them, and sets each predicted figure beside vLLM's: weights, the budget's lines, the KV cache memory,
its tokens and the concurrency, both from the GPU alone and given vLLM's own KV cache memory (which
isolates the block arithmetic from the budget's estimates).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from llmprod.errors import InputError
from llmprod.memory.plan import KV_DTYPES, MemorySpec, estimate
from llmprod.memory.sizes import GiB
from llmprod.vllm import StartupLog, parse_startup

_NEEDED = ("max_model_len", "kv_cache_gib", "kv_cache_tokens", "total_gib", "gpu_memory_utilization")


def read_log(path: Path) -> StartupLog:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read --vllm-log {path}: {exc.strerror}", hint="give the path of vLLM's output") from None
    log = parse_startup(text)
    missing = [name for name in _NEEDED if getattr(log, name) is None]
    if missing:
        raise InputError(f"--vllm-log {path} has no vLLM start-up figures ({', '.join(missing)} missing)",
                         hint="give the output of a `vllm serve` that got past 'GPU KV cache size' (vLLM 0.26 wording)")
    return log


def spec_from_log(spec: MemorySpec, log: StartupLog) -> MemorySpec:
    if spec.gpu or spec.gpu_memory_bytes or spec.kv_cache_memory_bytes is not None:
        raise InputError("--vllm-log gives the GPU's memory and vLLM's KV cache budget",
                         hint="drop --gpu, --gpu-memory and --kv-cache-memory")
    kv = log.kv_cache_dtype or "auto"
    if kv not in KV_DTYPES:
        raise InputError(f"the log's kv_cache_dtype {kv!r} is not one llmprod plans",
                         hint=f"estimate-memory plans {', '.join(KV_DTYPES)}")
    return replace(spec, context=log.max_model_len, kv_cache_dtype=kv, tp=log.tensor_parallel_size or 1,
                   pp=log.pipeline_parallel_size or 1, gpu_memory_utilization=log.gpu_memory_utilization,
                   gpu_memory_bytes=int(log.total_gib * GiB), vllm_version=log.version or spec.vllm_version,
                   max_num_batched_tokens=spec.max_num_batched_tokens or log.max_num_batched_tokens,
                   vllm_version_from="the log" if log.version else spec.vllm_version_from)


def compare(spec: MemorySpec, result: dict[str, Any], log: StartupLog) -> dict[str, Any]:
    """Rows of (figure, predicted, vLLM's, predicted / vLLM's) for a result planned with spec_from_log()."""
    given = estimate(replace(spec, kv_cache_memory_bytes=int(log.kv_cache_gib * GiB)))
    budget = {line["item"]: -line["bytes"] for line in result["budget"]}
    rows = [
        ("weights", "bytes", result["weights_bytes"], _bytes(log.weights_gib)),
        ("peak activation", "bytes", budget.get("− activation peak"), _bytes(log.peak_activation_gib)),
        ("non-torch memory", "bytes", budget.get("− non-torch memory"), _bytes(log.non_torch_gib)),
        ("CUDA graphs deducted from the KV budget", "bytes", budget.get("− CUDA graphs"), None),
        ("KV cache memory (from the GPU)", "bytes", result["kv_cache_bytes"], _bytes(log.kv_cache_gib)),
        ("KV cache tokens (from the GPU)", "tokens", result["kv_cache_tokens"], log.kv_cache_tokens),
        ("maximum concurrency (from the GPU)", "x", result["max_concurrency"], log.max_concurrency),
        ("KV cache tokens (given vLLM's KV memory)", "tokens", given["kv_cache_tokens"], log.kv_cache_tokens),
        ("maximum concurrency (given vLLM's KV memory)", "x", given["max_concurrency"], log.max_concurrency),
    ]
    return {
        "settings": {"max_model_len": spec.context, "kv_cache_dtype": spec.kv_cache_dtype, "tp": spec.tp,
                     "pp": spec.pp, "gpu_memory_utilization": spec.gpu_memory_utilization,
                     "gpu_memory_gib": log.total_gib, "vllm": log.version},
        "cuda_graph_bytes_logged": _bytes(log.cuda_graph_gib),
        "kernels": log.kernels,
        "rows": [{"figure": name, "unit": unit, "predicted": p, "vllm": v,
                  "ratio": round(p / v, 4) if p is not None and v else None} for name, unit, p, v in rows],
    }


def _bytes(gib: float | None) -> int | None:
    return None if gib is None else int(gib * GiB)


def estimate_against_log(spec: MemorySpec, path: Path) -> dict[str, Any]:
    """The estimate under the logged run's settings, with `vs_vllm` setting it beside the log's figures."""
    log = read_log(path)
    spec = spec_from_log(spec, log)
    result = estimate(spec)
    result["vs_vllm"] = {"log": str(path), **compare(spec, result, log)}
    return result
