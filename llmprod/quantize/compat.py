"""Narrow workarounds for upstream bugs, each with the condition under which it can be deleted.

llm-compressor 0.14.0.1, AWQ on a machine with no accelerator: `_apply_smoothing` pins the cached
activations (`IntermediatesCache.pin_memory`) to speed up host→device copies, and torch's
`Tensor.pin_memory()` raises "Cannot access accelerator device when none is available". Pinning is
only an optimisation for copies to an accelerator, so with none there is nothing to pin: the
workaround makes `pin_memory` a no-op, only while no accelerator exists, only during `oneshot`.
With a GPU nothing is patched. Delete once llm-compressor guards the call itself
(tests/quantize/test_compat.py fails on the version where that happens).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


def pin_memory_needs_workaround() -> bool:
    import torch

    try:
        from llmcompressor.pipelines.cache import IntermediatesCache
    except ImportError:
        return False
    return hasattr(IntermediatesCache, "pin_memory") and not torch.accelerator.is_available()


@contextmanager
def skip_pinning_without_accelerator() -> Iterator[bool]:
    """Yields whether the workaround is active."""
    if not pin_memory_needs_workaround():
        yield False
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.__dict__["pin_memory"]

    def pin_memory(self, batch_index: int, input_names: list[str] | None = None) -> None:
        return None  # nothing to pin for: there is no accelerator to copy to

    IntermediatesCache.pin_memory = pin_memory
    try:
        yield True
    finally:
        IntermediatesCache.pin_memory = original
