"""Narrow workarounds for upstream bugs, each with the condition under which it can be deleted.

1. llm-compressor 0.14.0.1, AWQ on a machine with no accelerator: `_apply_smoothing` pins the cached
activations (`IntermediatesCache.pin_memory`) to speed up host→device copies, and torch's
`Tensor.pin_memory()` raises "Cannot access accelerator device when none is available". Pinning is
only an optimisation for copies to an accelerator, so with none there is nothing to pin: the
workaround makes `pin_memory` a no-op, only while no accelerator exists, only during `oneshot`.
With a GPU nothing is patched. Delete once llm-compressor guards the call itself
(tests/quantize/test_compat.py fails on the version where that happens).

2. llm-compressor 0.14.0.1 with torch 2.11-2.13, the sequential pipeline keeps the model alive after
`oneshot` returns. To trace a forward it recompiles the source with `exec` in a copy of the defining
module's globals that also holds `self` (the model); the recompiled code calls `torch.fx.wrap`, and
torch.fx records the caller's globals in its module-level `_wrapped_fns_to_patch` for good. The
quantized model (after `save_pretrained`, its packed weights: about the checkpoint's size) then stays
in host memory through the reload check and for the rest of the process. The workaround removes,
after `oneshot`, only the entries it added whose namespace is not a module's own `__dict__` (those
exec copies); module-level `@torch.fx.wrap` registrations stay. Delete once
`test_upstream_still_keeps_the_traced_model` fails.
"""

from __future__ import annotations

import sys
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


def _fx_wrap_registry() -> dict | None:
    try:
        from torch.fx import _symbolic_trace
    except ImportError:
        return None
    registry = getattr(_symbolic_trace, "_wrapped_fns_to_patch", None)
    return registry if isinstance(registry, dict) else None


def _is_module_namespace(namespace: dict) -> bool:
    module = sys.modules.get(namespace.get("__name__", ""))
    return module is not None and getattr(module, "__dict__", None) is namespace


@contextmanager
def forget_traced_namespaces() -> Iterator[None]:
    """Drop the exec namespaces that torch.fx.wrap registered inside the block (see 2. above)."""
    registry = _fx_wrap_registry()
    before = set(registry) if registry is not None else set()
    try:
        yield
    finally:
        if registry is not None:
            for key in [k for k, ns in registry.items() if k not in before and not _is_module_namespace(ns)]:
                del registry[key]
