"""PagedAttention's KV cache as vLLM v1 sizes it (vllm/v1/kv_cache_interface.py, core/kv_cache_utils.py).

Per layer and block: page = block_size × KV heads on this rank × (K head size + V head size) × dtype
bytes; MLA layers cache one latent (kv_lora_rank + qk_rope_head_dim) per token, the same on every
rank. Layers are grouped by spec; a hybrid model's groups are padded to one group size and share one
block pool: num_blocks = budget // page // group_size. A request of C tokens needs, per group,
cdiv(C, block) blocks for full attention, cdiv(min(window − 1 + in_flight, C), block) + 1 for a sliding
window, and cdiv(min(chunk + in_flight, C), block) for chunked attention, where in_flight is the tokens
scheduled but not yet settled: max_num_batched_tokens per batch in flight (vLLM 0.26.0 overlaps two
with async scheduling). "GPU KV cache size" is int(concurrency × C) (vLLM 0.26.0's get_kv_cache_capacity).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from llmprod.errors import ConfigError, InputError
from llmprod.memory.model import CHUNKED, FULL, SLIDING, LayerAttention, ModelShape


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class LayerSpec:
    """One layer's KV cache on one GPU (vLLM's FullAttentionSpec / SlidingWindowSpec / ...)."""

    kind: str
    window: int | None
    block_size: int
    page_bytes: int  # per block, this layer, this rank

    def max_memory_bytes(self, context: int, in_flight: int) -> int:
        return self.blocks_per_request(context, in_flight) * self.page_bytes

    def blocks_per_request(self, context: int, in_flight: int) -> int:
        if self.kind == SLIDING:
            return cdiv(min(self.window - 1 + in_flight, context), self.block_size) + 1
        if self.kind == CHUNKED:
            return cdiv(min(self.window + in_flight, context), self.block_size)
        return cdiv(context, self.block_size)


def pp_layer_counts(num_layers: int, pp: int) -> list[int]:
    """vLLM's get_pp_indices: equal shares, the remainder going to the stages before the last."""
    if pp > num_layers:
        raise InputError(f"--pp {pp} is more than the model's {num_layers} layers", hint="use a smaller --pp")
    counts = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        counts[-i] += 1
    return counts


def kv_heads_per_rank(shape: ModelShape, tp: int) -> int:
    if shape.is_mla:
        return 1  # the latent is not split by heads: every rank keeps all of it
    return max(1, shape.num_kv_heads // tp)


def layer_specs(shape: ModelShape, layers: list[LayerAttention], tp: int, block_size: int,
                kv_dtype_bytes: int) -> list[LayerSpec]:
    if shape.is_mla:
        per_token = shape.mla_latent * kv_dtype_bytes
    else:
        per_token = kv_heads_per_rank(shape, tp) * (shape.head_dim + shape.v_head_dim) * kv_dtype_bytes
    return [LayerSpec(layer.kind, layer.window, block_size, block_size * per_token) for layer in layers]


@dataclass(frozen=True)
class KVGroups:
    """The block pool: groups of equally many layers (padded) sharing `num_blocks` blocks."""

    specs: tuple[LayerSpec, ...]  # one per group
    group_size: int
    page_bytes: int

    @property
    def block_size(self) -> int:
        return min(s.block_size for s in self.specs)

    def num_blocks(self, budget_bytes: int) -> int:
        return max(0, budget_bytes // self.page_bytes // self.group_size)

    def blocks_per_request(self, context: int, in_flight: int) -> int:
        # vLLM's get_max_concurrency_for_kv_cache_config, with its group-size factors cancelled.
        need = sum(s.max_memory_bytes(context, in_flight) for s in self.specs)
        return cdiv(need, self.page_bytes)

    def max_concurrency(self, num_blocks: int, context: int, in_flight: int) -> float:
        """vLLM's "Maximum concurrency for C tokens per request: X"."""
        return num_blocks / self.blocks_per_request(context, in_flight)


def group_layers(specs: list[LayerSpec]) -> KVGroups:
    """vLLM's get_kv_cache_groups for one GPU's layers."""
    by_spec: dict[LayerSpec, int] = defaultdict(int)
    for spec in specs:
        by_spec[spec] += 1
    if len({s.page_bytes for s in by_spec}) > 1:
        raise ConfigError("this model's layers have different KV page sizes, which vLLM handles by changing "
                          "block sizes; llmprod does not model that yet",
                          hint="pass --kv-cache-memory and read vLLM's own start-up log for this model")
    page = next(iter(by_spec)).page_bytes
    if len(by_spec) == 1:
        spec, n = next(iter(by_spec.items()))
        return KVGroups((spec,), n, page)
    counts = list(by_spec.values())
    group_size = min(counts)
    if max(counts) < min(counts) * 1.5:  # vLLM pads e.g. 12 sliding + 13 full to 13 + 13
        group_size = max(counts)
    groups: list[LayerSpec] = []
    for spec, n in by_spec.items():
        groups.extend([spec] * cdiv(n, group_size))
    return KVGroups(tuple(groups), group_size, page)


def stage_layers(shape: ModelShape, pp: int) -> list[list[LayerAttention]]:
    counts = pp_layer_counts(shape.num_layers, pp)
    out, start = [], 0
    for n in counts:
        out.append(list(shape.layers[start:start + n]))
        start += n
    return out


def max_context(groups: KVGroups, specs: list[LayerSpec], budget_bytes: int, batch: int, limit: int,
                in_flight: int) -> int:
    """vLLM's estimate_max_model_len: the longest C whose KV (all layers, `batch` requests) fits."""

    def fits(context: int) -> bool:
        return batch * sum(s.max_memory_bytes(context, in_flight) for s in specs) <= budget_bytes

    if not fits(1):
        return 0
    lo, hi = 1, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def full_attention_bytes_per_token(specs: list[LayerSpec]) -> int:
    return sum(s.page_bytes // s.block_size for s in specs)


__all__ = ["FULL", "SLIDING", "CHUNKED", "KVGroups", "LayerSpec", "cdiv", "group_layers", "layer_specs",
           "max_context", "pp_layer_counts", "stage_layers", "kv_heads_per_rank", "full_attention_bytes_per_token"]
