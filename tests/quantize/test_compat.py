"""The CPU workaround for llm-compressor's AWQ pin_memory: narrow, reversible, and still needed."""

from __future__ import annotations

import pytest
import torch

from llmcompressor.pipelines.cache import IntermediatesCache

from llmprod.quantize.compat import skip_pinning_without_accelerator

original = IntermediatesCache.__dict__["pin_memory"]


def _cache_with_cpu_tensor() -> IntermediatesCache:
    cache = IntermediatesCache.empty(1, torch.device("cpu"))
    cache.update(0, {"hidden_states": torch.ones(2, 3)})
    return cache


@pytest.mark.skipif(torch.accelerator.is_available(), reason="the bug only exists without an accelerator")
def test_upstream_still_fails_without_an_accelerator():
    # When this starts passing silently, llm-compressor guards the call itself: delete compat.py.
    with pytest.raises(RuntimeError, match="accelerator"):
        _cache_with_cpu_tensor().pin_memory(0)


@pytest.mark.skipif(torch.accelerator.is_available(), reason="needs a machine without an accelerator")
def test_pinning_is_skipped_only_inside_the_block():
    cache = _cache_with_cpu_tensor()
    with skip_pinning_without_accelerator() as active:
        assert active
        cache.pin_memory(0)  # no error
        assert torch.equal(cache.fetch(0)["hidden_states"], torch.ones(2, 3))
    assert IntermediatesCache.__dict__["pin_memory"] is original


def test_nothing_is_patched_when_an_accelerator_exists(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    with skip_pinning_without_accelerator() as active:
        assert not active
        assert IntermediatesCache.__dict__["pin_memory"] is original
