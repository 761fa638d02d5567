"""Perplexity as the GPTQ and AWQ papers' evaluation code computes it, in bounded memory.

The text is tokenized once with the tokenizer's defaults and cut into windows of `seq_len` tokens;
the remainder that does not fill a window is dropped (and reported). Each window scores positions
1..seq_len-1 (every token but the first, which has no context); perplexity = exp(total NLL /
scored tokens). With a stride smaller than seq_len, windows overlap and each one scores only the
tokens it adds, with the earlier ones as context (the "sliding window" variant).

Memory: the [batch, seq, vocab] float32 logits are never materialised. The decoder's hidden states
go through the output head (in the model's dtype) a chunk of positions at a time, and only that chunk's
logits are widened to float32 for the loss, so a 262k vocabulary at seq-len 2048 costs one chunk of
logits, not 2 GiB per sequence.

Speed: on a GPU, windows are batched until a forward pass carries about PASS_TOKEN_WIDTH / hidden size
tokens (bounded by free memory). A 2,048-token pass of a 1B-parameter model leaves an H200's matmuls
short of work; a few windows per pass keep them busy, and the memory they take stays below what one
window's full float32 logits would. A wider model's pass is big enough on its own.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from llmprod.errors import InputError

# Elements of logits per chunk (32 Mi elements = 128 MiB in float32), shared by the batch.
LOGIT_CHUNK_ELEMENTS = 1 << 25
# Tokens x hidden size per forward pass with --batch-size auto on a GPU (windows of seq-len tokens each):
# 8,192 tokens at a hidden size of 2,048, proportionally fewer for wider models, whose matmuls fill the
# GPU without help. Measured on an H200 in bf16 against the plain loop: the Llama-3.2-1B shape 0.98x at
# one window a pass, 1.11x at four (0.31x the peak memory), 1.14x at eight (0.61x); the Llama-3.1-8B shape
# 0.99x at one, 1.02x at four (0.78x the memory). benchmarks/results/h200-perplexity/.
PASS_TOKEN_WIDTH = 8192 * 2048
# With --batch-size auto, a pass's activations may take at most this share of the GPU's free memory.
FREE_MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class Window:
    """Tokens [begin, end) go through the model; targets at positions [score_from, end) are scored."""

    begin: int
    end: int
    score_from: int

    @property
    def scored(self) -> int:
        return self.end - self.score_from


@dataclass(frozen=True)
class WindowPlan:
    windows: tuple[Window, ...]
    total_tokens: int
    dropped: int

    @property
    def scored(self) -> int:
        return sum(w.scored for w in self.windows)


def plan_windows(n_tokens: int, seq_len: int, stride: int | None = None) -> WindowPlan:
    """Full windows only; the tokens after the last one are dropped."""
    stride = seq_len if stride is None else stride
    if seq_len < 2:
        raise InputError("--seq-len must be at least 2", hint="a window needs one token of context")
    if not 0 < stride <= seq_len:
        raise InputError(f"--stride {stride} must be between 1 and --seq-len ({seq_len})",
                         hint="leave --stride out for non-overlapping windows")
    windows: list[Window] = []
    scored_until = 0
    begin = 0
    while begin + seq_len <= n_tokens:
        end = begin + seq_len
        # The first token of a window has no context; later windows start scoring where the last stopped.
        windows.append(Window(begin, end, max(begin + 1, scored_until)))
        scored_until = end
        begin += stride
    return WindowPlan(tuple(windows), n_tokens, n_tokens - scored_until)


@dataclass
class PerplexityResult:
    model: str
    dataset: str
    perplexity: float
    mean_nll: float
    bits_per_byte: float
    tokens: int  # scored
    windows: int
    tokens_dropped: int
    total_tokens: int
    seq_len: int
    stride: int
    batch_size: int
    seconds: float
    tokens_per_s: float  # tokens through the model per second (equal to scored, but for overlaps)
    device: str
    dtype: str
    peak_gpu_memory_bytes: int | None = None
    engine: str = "transformers"  # or the served engine that scored it (its prompt logprobs)
    engine_details: dict[str, Any] | None = None  # vLLM's start-up figures: kernels, dtype, KV cache

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressFn = Callable[[int, int], None]


def tokenize_once(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]] | None]:
    """The whole text with the tokenizer's defaults (BOS where the tokenizer adds one), and char offsets."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, return_offsets_mapping=True, verbose=False)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    return list(tokenizer(text, verbose=False)["input_ids"]), None


def scored_bytes(text: str, tokenizer, ids: Sequence[int], offsets, plan: WindowPlan) -> int:
    """UTF-8 bytes of the scored text, for bits per byte (comparable across tokenizers)."""
    total = 0
    for w in plan.windows:
        if offsets is not None:
            start = offsets[w.score_from][0]
            stop = max(offsets[i][1] for i in range(w.score_from, w.end))
            total += len(text[start:stop].encode("utf-8"))
        else:
            total += len(tokenizer.decode(ids[w.score_from:w.end]).encode("utf-8"))
    return total


def _output_head(model):
    """(decoder, head, postprocess) when the model splits cleanly; None to fall back to full logits."""
    head = model.get_output_embeddings()
    decoder = getattr(model, "base_model", None)
    if head is None or decoder is None or decoder is model:
        return None
    cfg = model.config
    softcap = getattr(cfg, "final_logit_softcapping", None)  # Gemma 2/3
    scale = getattr(cfg, "logit_scale", None)  # Cohere multiplies
    divide = getattr(cfg, "logits_scaling", None)  # Granite divides

    def post(logits):
        if scale is not None:
            logits = logits * scale
        if divide is not None:
            logits = logits / divide
        if softcap is not None:
            logits = (logits / softcap).tanh() * softcap
        return logits

    return decoder, head, post


def window_nll(model, input_ids, score_masks, chunk_tokens: int | None = None, first_scored: int = 0):
    """Summed NLL (float64) over the scored targets of a batch of equal-length windows.

    input_ids: [B, L] long; score_masks: [B, L-1] bool, True where target position t+1 is scored;
    first_scored: no target before this index is scored in any window (known on the host, so
    skipping chunks needs no device sync).
    """
    import torch

    split = _output_head(model)
    batch, length = input_ids.shape
    targets = input_ids[:, 1:]
    if split is None:  # unknown head: full logits, still scored in float32
        logits = model(input_ids=input_ids).logits[:, :-1].float()
        return _masked_nll(logits, targets, score_masks)
    decoder, head, post = split
    hidden = decoder(input_ids=input_ids).last_hidden_state[:, :-1]
    vocab = head.weight.shape[0] if hasattr(head, "weight") else model.config.vocab_size
    chunk = chunk_tokens or max(16, LOGIT_CHUNK_ELEMENTS // max(1, batch * vocab))
    total = torch.zeros((), dtype=torch.float64, device=input_ids.device)
    for p in range(0, length - 1, chunk):
        if p + chunk <= first_scored:
            continue  # context only, as in the sliding-window variant's overlap
        logits = post(head(hidden[:, p:p + chunk]).float())
        total += _masked_nll(logits, targets[:, p:p + chunk], score_masks[:, p:p + chunk])
        del logits
    return total


def _masked_nll(logits, targets, mask):
    """Summed float64 NLL of the masked positions. Flat [N, vocab] rows: cross-entropy over a
    transposed [B, vocab, T] view walks the vocabulary with a stride and runs ~4x slower on CPU."""
    import torch

    vocab = logits.shape[-1]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), reduction="none")
    return (nll.double() * mask.reshape(-1)).sum()


def activation_bytes_per_token(text_config, dtype_bytes: int) -> int:
    """A decoder layer's largest set of live activations per token during inference (the MLP's: the
    residual, its normed copy, gate, up, and their product), plus the final hidden state."""
    hidden = int(getattr(text_config, "hidden_size", 0) or 0)
    inter = int(getattr(text_config, "intermediate_size", 0) or 4 * hidden)
    return dtype_bytes * (4 * hidden + 3 * inter)


def auto_batch_size(model, seq_len: int, n_windows: int) -> int:
    """Windows per pass for --batch-size auto: 1 on a CPU (batching gains nothing there), else batch_for
    the GPU's free memory."""
    import torch

    param = next(model.parameters())
    if param.device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(param.device)
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return batch_for(seq_len, n_windows, free, activation_bytes_per_token(text, param.element_size()),
                     int(getattr(text, "hidden_size", 0) or 0))


def batch_for(seq_len: int, n_windows: int, free_bytes: int, bytes_per_token: int, hidden_size: int) -> int:
    """About PASS_TOKEN_WIDTH / hidden_size tokens a pass, fewer where FREE_MEMORY_SHARE of the free memory
    cannot hold their activations; at least one window, at most all of them."""
    batch = max(1, PASS_TOKEN_WIDTH // max(1, hidden_size) // seq_len)
    if bytes_per_token > 0:
        batch = min(batch, int(free_bytes * FREE_MEMORY_SHARE // (seq_len * bytes_per_token)))
    return max(1, min(batch, n_windows))


def compute_perplexity(
    model,
    ids: Sequence[int],
    plan: WindowPlan,
    *,
    batch_size: int = 1,
    on_progress: ProgressFn | None = None,
    chunk_tokens: int | None = None,
) -> tuple[float, float]:
    """(total NLL in nats, seconds) over the plan's windows."""
    import torch

    device = next(model.parameters()).device
    all_ids = torch.tensor(ids, dtype=torch.long)
    seq_len = plan.windows[0].end - plan.windows[0].begin
    positions = torch.arange(1, seq_len)
    total = 0.0
    started = time.perf_counter()
    done = 0
    with torch.inference_mode():
        for b in range(0, len(plan.windows), batch_size):
            group = plan.windows[b:b + batch_size]
            input_ids = torch.stack([all_ids[w.begin:w.end] for w in group]).to(device)
            masks = torch.stack([(w.begin + positions) >= w.score_from for w in group]).to(device)
            first = min(w.score_from - w.begin for w in group) - 1
            total += float(window_nll(model, input_ids, masks, chunk_tokens, first))
            done += len(group) * seq_len
            if on_progress is not None:
                on_progress(done, len(plan.windows) * seq_len)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return total, time.perf_counter() - started


def summarize(total_nll: float, plan: WindowPlan, n_bytes: int) -> dict[str, float]:
    mean = total_nll / plan.scored
    return {
        "perplexity": math.exp(mean),
        "mean_nll": mean,
        "bits_per_byte": total_nll / math.log(2) / n_bytes if n_bytes else float("nan"),
    }


def relative_increase(value: float, baseline: float) -> float:
    return (value - baseline) / baseline
