"""The vLLM defaults that decide its memory plan, release by release.

vLLM changes these between releases, so the planner takes them from the release it plans for:
`--vllm-version`, else the vLLM that `serve` would launch, else the newest release listed here. Each
entry says where its figures come from. A release that is not listed gets the nearest listed one at or
below it (or the oldest), and the estimate says so.

vLLM 0.26.0, read from its source and seen in its start-up lines on an H200 (tests/data/vllm-0.26.0):
- `--gpu-memory-utilization` defaults to 0.92 (`CacheConfig`).
- KV cache = total × utilization − weights − peak activation − non-torch memory. The CUDA graphs'
  memory is deducted only by the V1 model runner (`VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS`, on by
  default); 0.26.0 runs dense models (and the MoE architectures in `DEFAULT_V2_MODEL_RUNNER_ARCHITECTURES`)
  on the V2 runner, whose estimate is 0, so their graphs are captured after the KV cache is sized.
- `dtype auto` serves a float32 config in bfloat16 (float16 where the GPU has no bfloat16): 2 bytes.
- `--max-num-batched-tokens` and `--max-num-seqs` default by GPU and entry point (EngineArgs.get_batch_defaults):
  on a GPU of 70 GiB or more that is not an A100, 8192 tokens and 1024 sequences for `vllm serve` (16384 for the
  Python `LLM` class); elsewhere 2048 tokens (8192 for `LLM`) and 256 sequences; capped at max_num_seqs ×
  max_model_len.
- Async scheduling is on by default, so max_num_batched_tokens × (pp + 1) tokens are in flight on the V2
  runner (2 batches on V1 without pipeline parallelism): a sliding-window layer holds its window plus
  those, per request ("GPU KV cache size" is concurrency × max_model_len).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmprod.errors import InputError
from llmprod.memory.model import ModelShape
from llmprod.memory.sizes import GiB

# How vLLM is started: its OpenAI server (`vllm serve`, what llmprod serve launches) or the Python LLM class.
ENTRY_POINTS = {"serve": "vllm serve", "python": "vllm.LLM"}


@dataclass(frozen=True)
class VllmRelease:
    version: str
    gpu_memory_utilization: float
    # MoE architectures that run on the V2 model runner, as dense models do.
    v2_runner_moe_architectures: frozenset[str]
    # Memory outside torch's allocator at start-up (CUDA context, cuBLAS workspaces), one GPU.
    non_torch_bytes: int
    # The same per GPU with tensor (or pipeline) parallelism, as vLLM logs it: NCCL's buffers are set up
    # before its profiling baseline, so they do not show here.
    non_torch_bytes_parallel: int
    # get_batch_defaults: (max_num_batched_tokens, max_num_seqs) by GPU class and entry point
    batch_defaults_large: dict[str, tuple[int, int]]
    batch_defaults_small: dict[str, tuple[int, int]]
    large_gpu_bytes: int
    # The V1 runner's "Estimated CUDA graph memory" (deducted before the KV cache is sized): 0.54-0.74 GiB for the
    # MoE models measured on an H200 (tests/data/vllm-0.26.0); the largest is deducted, so the estimate errs small.
    v1_cuda_graph_bytes: int
    source: str

    def batch_defaults(self, gpu_label: str | None, gpu_bytes: int | None, entry_point: str,
                       max_model_len: int) -> tuple[int, int, str]:
        """(max_num_batched_tokens, max_num_seqs, why) as vLLM picks them when they are not given."""
        if gpu_bytes is None:
            large, why = True, "no GPU named: the defaults of a GPU of 70 GiB or more"
        elif "a100" in (gpu_label or "").lower():
            large, why = False, "an A100 gets the small-GPU defaults (vLLM: larger batches slow it down)"
        else:
            large = gpu_bytes >= self.large_gpu_bytes
            why = f"a GPU {'of' if large else 'under'} {self.large_gpu_bytes // GiB} GiB"
        tokens, seqs = (self.batch_defaults_large if large else self.batch_defaults_small)[entry_point]
        tokens = min(tokens, seqs * max_model_len)
        return tokens, seqs, f"vLLM {self.version}'s default for `{ENTRY_POINTS[entry_point]}` on {why}"

    def v2_runner(self, shape: ModelShape) -> bool:
        if not shape.is_moe:
            return True
        architectures = shape.raw.get("architectures") or []
        return any(a in self.v2_runner_moe_architectures for a in architectures)

    def deducts_cuda_graphs(self, shape: ModelShape) -> bool:
        """True when the release sizes the KV cache after setting CUDA graphs' memory aside (the V1 runner)."""
        return not self.v2_runner(shape)

    def batches_in_flight(self, shape: ModelShape, pp: int) -> int:
        """Batches scheduled but not yet settled (VllmConfig.max_concurrent_batches, async scheduling on):
        sliding-window and chunked layers keep their blocks for this many batches' tokens."""
        if self.v2_runner(shape):
            return pp + 1
        return 2 if pp <= 1 else pp


RELEASES: dict[str, VllmRelease] = {
    "0.26.0": VllmRelease(
        version="0.26.0",
        gpu_memory_utilization=0.92,
        v2_runner_moe_architectures=frozenset({
            "DeepseekV2ForCausalLM", "GraniteMoeForCausalLM", "InklingForCausalLM",
            "InklingForConditionalGeneration", "LongcatFlashNgramForCausalLM", "Qwen2MoeForCausalLM"}),
        non_torch_bytes=int(0.22 * GiB),
        # Llama-3.1-8B shape, tensor parallel 2 on two NVLink H200s (NVLS off): 0.06 and 0.07 GiB.
        non_torch_bytes_parallel=int(0.07 * GiB),
        batch_defaults_large={"serve": (8192, 1024), "python": (16384, 1024)},
        batch_defaults_small={"serve": (2048, 256), "python": (8192, 256)},
        large_gpu_bytes=70 * GiB,
        v1_cuda_graph_bytes=int(0.74 * GiB),
        source="vLLM 0.26.0's source and its start-up lines on an H200 (tests/data/vllm-0.26.0)",
    ),
}
def _key(version: str) -> tuple[int, ...]:
    """(0, 26, 0) from '0.26.0', 'v0.26.0', '0.26.0rc1', '0.26.0+cu130' or '0.26.1.dev3+g1234'."""
    m = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", version.strip())
    if not m:
        raise InputError(f"--vllm-version {version!r} is not a version", hint="write it like 0.26.0")
    return tuple(int(p or 0) for p in m.groups())


def release_for(version: str) -> tuple[VllmRelease, str | None]:
    """The listed release whose defaults apply to `version`, and a note when it is not an exact match."""
    wanted = _key(version)
    listed = sorted(RELEASES.values(), key=lambda r: _key(r.version))
    for release in listed:
        if _key(release.version) == wanted:
            return release, None
    older = [r for r in listed if _key(r.version) < wanted]
    release = older[-1] if older else listed[0]
    known = ", ".join(r.version for r in listed)
    return release, (f"vLLM {version} is not a release llmprod has measured ({known}); "
                     f"using {release.version}'s defaults")


NEWEST = max(RELEASES, key=_key)
