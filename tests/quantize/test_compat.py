"""Workarounds for llm-compressor bugs (llmprod/quantize/compat.py): narrow, reversible, still needed."""

from __future__ import annotations

import contextlib
import gc
import weakref

import pytest
import torch

from llmcompressor.pipelines.cache import IntermediatesCache

from llmprod.quantize.compat import forget_traced_namespaces, skip_pinning_without_accelerator

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


def _model_after_tracing(workaround: bool) -> weakref.ref:
    """llm-compressor's autowrapping of a Llama forward, as its sequential pipeline does it; the model
    is then dropped. Returns a weak reference: alive means something still holds the model."""
    import transformers
    from llmcompressor.pipelines.sequential.ast_helpers import autowrap_forwards

    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, vocab_size=64)
    model = transformers.LlamaForCausalLM(config)
    ref = weakref.ref(model)
    with forget_traced_namespaces() if workaround else contextlib.nullcontext():
        with autowrap_forwards([model, model.model], []):
            pass
    del model
    gc.collect()
    return ref


def test_upstream_still_keeps_the_traced_model():
    # When this fails, llm-compressor or torch.fx no longer leak the namespace: delete the workaround.
    assert _model_after_tracing(workaround=False)() is not None


def test_the_model_is_freed_after_tracing():
    assert _model_after_tracing(workaround=True)() is None


def test_module_level_fx_wraps_are_kept():
    from torch.fx import _symbolic_trace

    registry = _symbolic_trace._wrapped_fns_to_patch
    module_key = (id(_symbolic_trace.__dict__), "llmprod_test_fn")
    exec_namespace = {"__name__": _symbolic_trace.__name__}
    with forget_traced_namespaces():
        registry[module_key] = _symbolic_trace.__dict__
        registry[(id(exec_namespace), "llmprod_test_fn")] = exec_namespace
    try:
        assert module_key in registry
        assert (id(exec_namespace), "llmprod_test_fn") not in registry
    finally:
        registry.pop(module_key, None)


# scheme → the checkpoint of that scheme whose vLLM 0.26.0 start-up on an H200 is recorded in tests/data
RECORDED = {"w4a16": "gptq-w4a16", "w8a16": "gptq-w8a16", "w8a8-fp8": "w8a8-fp8", "fp8-block": "fp8-block",
            "w8a8-int8": "w8a8-int8", "nvfp4a16": "nvfp4a16"}


@pytest.mark.parametrize("scheme", list(RECORDED))
def test_the_model_cards_format_and_kernel_are_what_vllm_logged(scheme):
    """The card says the format config.json declares and the kernel vLLM picked on Hopper, not a guess."""
    import json
    import re
    from pathlib import Path

    from llmprod.quantize.spec import SCHEMES
    from llmprod.vllm import parse_startup

    data = Path(__file__).parents[1] / "data" / "vllm-0.26.0"
    info = SCHEMES[scheme]
    config = json.loads((data / f"llama-3.1-8b-{RECORDED[scheme]}.json").read_text())
    assert config["quantization_config"]["format"] == info.stored_as
    log = parse_startup((data / f"llama-3.1-8b-{RECORDED[scheme]}-4k.log").read_text())
    kernel = re.search(r"\((\w+)\)", info.hopper_kernel).group(1)
    assert any(k.startswith(kernel + " ") for k in log.kernels), log.kernels
