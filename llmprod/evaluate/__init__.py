"""Quality checks of a model: perplexity on a text, against a baseline, with a gate for CI."""

from __future__ import annotations

from dataclasses import dataclass

from llmprod.errors import InputError
from llmprod.evaluate.perplexity import (PerplexityResult, ProgressFn, auto_batch_size, compute_perplexity,
                                         plan_windows, scored_bytes, summarize, tokenize_once)
from llmprod.evaluate.texts import load_eval_text
from llmprod.libraryoutput import library_output
from llmprod.modelio import load_causal_lm, load_tokenizer, max_context, resolve_model


@dataclass(frozen=True)
class PerplexitySpec:
    model: str
    dataset: str
    seq_len: int = 2048
    stride: int | None = None
    max_tokens: int | None = None
    batch_size: int | None = None  # windows per forward pass; None: auto (perplexity.auto_batch_size)
    device: str = "auto"
    dtype: str = "auto"
    revision: str | None = None  # of a hub model
    engine: str = "transformers"  # or "vllm": launched, scored from its prompt logprobs, stopped
    upstream: str | None = None  # a vLLM already serving the model (its name: served_model_name or model)
    served_model_name: str | None = None
    vllm_bin: str | None = None
    tensor_parallel_size: int | None = None
    gpu_memory_utilization: float | None = None  # --engine vllm: vLLM's flag, passed on
    concurrency: int = 8  # windows in flight on a served engine
    api_key: str | None = None

    @property
    def served(self) -> bool:
        return self.engine == "vllm" or self.upstream is not None

    def validate(self) -> None:
        if self.engine not in ("transformers", "vllm"):
            raise InputError(f"unknown --engine {self.engine!r}", hint="use transformers or vllm")
        if self.upstream and self.engine == "vllm":
            raise InputError("--engine vllm launches vLLM; --upstream uses one that is serving", hint="drop one")
        if self.engine != "vllm" and (self.vllm_bin or self.tensor_parallel_size or self.gpu_memory_utilization):
            raise InputError("--vllm-bin, --tensor-parallel-size and --gpu-memory-utilization apply to --engine vllm",
                             hint="add --engine vllm")
        if self.concurrency < 1:
            raise InputError("--concurrency must be at least 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"--batch-size {self.batch_size} must be at least 1", hint="or leave it at auto")
        if self.max_tokens is not None and self.max_tokens < self.seq_len:
            raise InputError(f"--max-tokens {self.max_tokens} is smaller than --seq-len {self.seq_len}",
                             hint="raise --max-tokens or lower --seq-len so at least one window fits")
        plan_windows(self.seq_len, self.seq_len, self.stride)  # checks seq_len and stride


def measure_perplexity(spec: PerplexitySpec, on_progress: ProgressFn | None = None) -> PerplexityResult:
    """Load the model and text, check the window fits the model, and score it."""
    import torch

    spec.validate()
    if spec.served:
        return _measure_served(spec, on_progress)
    ref = resolve_model(spec.model, spec.revision)
    text = load_eval_text(spec.dataset)  # before the model: a bad file fails in milliseconds
    with library_output(False, "load"):
        tokenizer = load_tokenizer(ref)
        model = load_causal_lm(ref, spec.device, spec.dtype)
    limit = max_context(model.config)
    if limit is not None and spec.seq_len > limit:
        raise InputError(f"--seq-len {spec.seq_len} is longer than {spec.model}'s context of {limit} tokens",
                         hint=f"use --seq-len {limit} or less")
    ids, offsets, plan = _windows(spec, tokenizer, text.text)
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    batch = spec.batch_size or auto_batch_size(model, spec.seq_len, len(plan.windows))
    total_nll, seconds = compute_perplexity(model, ids, plan, batch_size=batch, on_progress=on_progress)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return _result(spec, text, tokenizer, ids, offsets, plan, total_nll, seconds, batch_size=batch,
                   device=str(device), dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
                   peak_gpu_memory_bytes=peak)


def _windows(spec: PerplexitySpec, tokenizer, text: str):
    """(ids, char offsets, window plan): the text tokenized once, capped at --max-tokens, cut into windows."""
    ids, offsets = tokenize_once(tokenizer, text)
    if spec.max_tokens is not None:
        ids, offsets = ids[: spec.max_tokens], offsets[: spec.max_tokens] if offsets else None
    plan = plan_windows(len(ids), spec.seq_len, spec.stride)
    if not plan.windows:
        raise InputError(f"the text has {len(ids)} tokens, fewer than one window of --seq-len {spec.seq_len}",
                         hint="give a longer text or lower --seq-len")
    return ids, offsets, plan


def _result(spec: PerplexitySpec, text, tokenizer, ids, offsets, plan, total_nll: float, seconds: float,
            **how) -> PerplexityResult:
    """The report of either path; `how`: batch size, device, dtype and the engine's fields."""
    n_bytes = scored_bytes(text.text, tokenizer, ids, offsets, plan)
    processed = len(plan.windows) * spec.seq_len
    return PerplexityResult(
        model=spec.model,
        dataset=text.source,
        **summarize(total_nll, plan, n_bytes),
        tokens=plan.scored,
        windows=len(plan.windows),
        tokens_dropped=plan.dropped,
        total_tokens=plan.total_tokens,
        seq_len=spec.seq_len,
        stride=spec.stride or spec.seq_len,
        seconds=round(seconds, 3),
        tokens_per_s=processed / seconds if seconds > 0 else float("inf"),
        **how,
    )


@dataclass(frozen=True)
class GateVerdict:
    increase: float
    max_increase: float | None

    @property
    def passed(self) -> bool:
        return self.max_increase is None or self.increase <= self.max_increase

    def describe(self, ppl: float, baseline: float) -> str:
        limit = "" if self.max_increase is None else f" (gate: at most {self.max_increase:+.2%})"
        verdict = "" if self.max_increase is None else (" — PASS" if self.passed else " — FAIL")
        return f"perplexity {ppl:.4f} vs baseline {baseline:.4f}: {self.increase:+.2%}{limit}{verdict}"


def gate(result: PerplexityResult, baseline: PerplexityResult, max_increase: float | None) -> GateVerdict:
    from llmprod.evaluate.perplexity import relative_increase

    if (result.tokens, result.windows) != (baseline.tokens, baseline.windows):
        # Different tokenizers score different token counts; perplexities are then not comparable.
        raise InputError(
            f"the model and the baseline scored different token counts ({result.tokens} vs {baseline.tokens}): "
            "their tokenizers differ, so their perplexities cannot be compared",
            hint="compare a quantized model with the model it was made from",
        )
    return GateVerdict(relative_increase(result.perplexity, baseline.perplexity), max_increase)


def _measure_served(spec: PerplexitySpec, on_progress: ProgressFn | None) -> PerplexityResult:
    """The same windows from a served engine's prompt logprobs (llmprod.evaluate.served)."""
    import tempfile
    from pathlib import Path

    from llmprod.evaluate.served import Served, launch_vllm, served_nll
    from llmprod.urls import server_root

    ref = resolve_model(spec.model, spec.revision)
    text = load_eval_text(spec.dataset)
    with library_output(False, "load"):
        tokenizer = load_tokenizer(ref)  # the model's own: the server is sent token ids, never text
    ids, offsets, plan = _windows(spec, tokenizer, text.text)
    engine = None
    if spec.upstream:
        root = server_root(spec.upstream, "--upstream")
        served = Served(root, spec.served_model_name or spec.model, f"{root} (--upstream)", api_key=spec.api_key)
    else:
        engine, served = launch_vllm(spec.model, spec.seq_len, spec.vllm_bin, spec.tensor_parallel_size,
                                     Path(tempfile.gettempdir()) / "llmprod",
                                     gpu_memory_utilization=spec.gpu_memory_utilization)
    try:
        total_nll, seconds = served_nll(served, ids, plan, spec.concurrency, on_progress)
    finally:
        if engine is not None:
            engine.stop()
    return _result(spec, text, tokenizer, ids, offsets, plan, total_nll, seconds, batch_size=spec.concurrency,
                   device="served", dtype=(served.details or {}).get("dtype", "as served"), engine=served.engine,
                   engine_details=served.details)
