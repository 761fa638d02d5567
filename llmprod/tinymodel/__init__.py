"""A tiny Llama-architecture checkpoint built offline: for tests, benchmarks and the quickstart.

Everything is made here from the Python installation's own documentation text
(`pydoc_data.topics`): a byte-level BPE tokenizer trained with `tokenizers`, a Llama-3-style chat
template, a small GQA Llama config, and weights that are either random or trained for a few hundred
steps so that perplexity is far below uniform (quantization tests need a model whose quality can
drop). The result is a normal Hugging Face model directory that transformers, llm-compressor and
`transformers serve` load like any hub checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from llmprod.modelio import share_modes

BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
START_HEADER, END_HEADER, EOT = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, START_HEADER, END_HEADER, EOT]

# Llama-3-style turns; a system message is optional; the generation prompt opens an assistant turn.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

# The share of the corpus (by topic, sorted by name) kept out of training for evaluation.
EVAL_FRACTION = 0.1


@dataclass(frozen=True)
class TinyModelSpec:
    """Everything that determines the checkpoint; the same spec always builds the same files."""

    vocab_size: int = 1024
    hidden_size: int = 128  # every linear's input size is a multiple of 128, the usual group size
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2  # grouped-query attention, as in every current Llama
    max_position_embeddings: int = 2048
    train_steps: int = 0  # 0: random weights
    train_seq_len: int = 128
    train_batch_size: int = 16
    learning_rate: float = 3e-3
    seed: int = 0
    # Rows of the embedding and output head; 0 means the tokenizer's size. Benchmarks pad it to a
    # Llama-3-sized 128k to measure what a large vocabulary costs (the extra rows are never used).
    padded_vocab_size: int = 0

    @property
    def trained(self) -> bool:
        return self.train_steps > 0

    def fingerprint(self) -> str:
        payload = json.dumps({**{k: v for k, v in asdict(self).items() if k != "padded_vocab_size" or v},
                          "builder": BUILDER_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


# Bump when the builder's output changes for the same spec, so cached builds are not reused.
BUILDER_VERSION = 1

RANDOM = TinyModelSpec()
TRAINED = replace(RANDOM, train_steps=300)


def corpus_topics() -> list[tuple[str, str]]:
    """The documentation topics shipped with this Python, sorted by name (a stable order)."""
    from pydoc_data.topics import topics

    return sorted(topics.items())


def corpus_split() -> tuple[str, str]:
    """(training text, held-out evaluation text): disjoint topics joined by blank lines."""
    items = corpus_topics()
    n_eval = max(1, int(len(items) * EVAL_FRACTION))
    # Every tenth topic is held out, so both parts cover the whole alphabet of subjects.
    step = max(1, len(items) // n_eval)
    eval_items = items[::step][:n_eval]
    eval_keys = {k for k, _ in eval_items}
    train = "\n\n".join(v for k, v in items if k not in eval_keys)
    held_out = "\n\n".join(v for _, v in eval_items)
    return train, held_out


def build_tiny_model(
    dest: str | os.PathLike,
    spec: TinyModelSpec = RANDOM,
    *,
    on_step: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Write a complete model directory to `dest` (which must not exist or be empty).

    Returns a report: parameters, training loss and the held-out perplexity. Written to a
    temporary sibling and renamed, so an interrupted build leaves nothing at `dest`.
    """
    import torch

    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    dest.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        train_text, eval_text = corpus_split()
        tokenizer = _train_tokenizer(train_text, spec)
        model = _init_model(spec, tokenizer)
        loss = None
        if spec.trained:
            loss = _train(model, tokenizer, train_text, spec, on_step)
        eval_ppl = _quick_perplexity(model, tokenizer, eval_text, spec)
        model.eval()
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _write_generation_config(model, tmp)
        n_params = sum(p.numel() for p in model.parameters())
        report = {
            "path": str(dest),
            "spec": asdict(spec),
            "fingerprint": spec.fingerprint(),
            "parameters": n_params,
            "final_train_loss": loss,
            "held_out_perplexity": eval_ppl,
            "uniform_perplexity": float(spec.vocab_size),
            "seconds": round(time.perf_counter() - started, 2),
            "torch": torch.__version__,
        }
        (tmp / "tiny-model.json").write_text(json.dumps(report, indent=2) + "\n")
        share_modes(tmp)
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)
        return report
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cached_tiny_model(cache_dir: str | os.PathLike, spec: TinyModelSpec = RANDOM) -> Path:
    """Build once per spec into `cache_dir/<fingerprint>` and reuse it afterwards."""
    path = Path(cache_dir) / f"tiny-{spec.fingerprint()}"
    if not (path / "tiny-model.json").exists():
        shutil.rmtree(path, ignore_errors=True)
        build_tiny_model(path, spec)
    return path


def _train_tokenizer(text: str, spec: TinyModelSpec):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_chunks(text), trainer=trainer, length=None)
    bos_id = tok.token_to_id(BOS)
    # Like Llama 3: BOS is prepended to every encoded text, nothing appended.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOT,
        pad_token=PAD,
        additional_special_tokens=[EOS, START_HEADER, END_HEADER],
        model_max_length=spec.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _chunks(text: str, size: int = 4096):
    for i in range(0, len(text), size):
        yield text[i : i + size]


def _init_model(spec: TinyModelSpec, tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=max(len(tokenizer), spec.padded_vocab_size),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config)
    return model


def _token_stream(tokenizer, text: str):
    import torch

    # The backend tokenizer, not __call__: no "longer than the model's maximum" warning for a corpus.
    ids = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids
    return torch.tensor(ids, dtype=torch.long)


def _train(model, tokenizer, text: str, spec: TinyModelSpec, on_step) -> float:
    import torch

    ids = _token_stream(tokenizer, text)
    gen = torch.Generator().manual_seed(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=0.01)
    warmup = max(1, spec.train_steps // 10)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to 10%
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, spec.train_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    n = spec.train_seq_len
    loss_value = float("nan")
    for step in range(spec.train_steps):
        starts = torch.randint(0, len(ids) - n - 1, (spec.train_batch_size,), generator=gen)
        batch = torch.stack([ids[s : s + n] for s in starts.tolist()])
        out = model(input_ids=batch, labels=batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_value = float(out.loss.detach())
        if on_step is not None:
            on_step(step + 1, spec.train_steps, loss_value)
    model.eval()
    return loss_value


def _quick_perplexity(model, tokenizer, text: str, spec: TinyModelSpec, windows: int = 8) -> float:
    """A sanity number for the report (the real measurement is `llmprod perplexity`)."""
    import torch

    ids = _token_stream(tokenizer, text)
    n = spec.train_seq_len * 2
    total, count = 0.0, 0
    with torch.no_grad():
        for w in range(min(windows, len(ids) // n)):
            chunk = ids[w * n : (w + 1) * n].unsqueeze(0)
            out = model(input_ids=chunk, labels=chunk)
            total += float(out.loss) * (n - 1)
            count += n - 1
    return math.exp(total / count) if count else float("nan")


def _write_generation_config(model, path: Path) -> None:
    from transformers import GenerationConfig

    cfg = model.config
    GenerationConfig(
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
        pad_token_id=cfg.pad_token_id,
        do_sample=False,
        max_new_tokens=64,
    ).save_pretrained(path)


def build_shaped_model(config_json: str | os.PathLike, dest: str | os.PathLike, dtype: str = "bfloat16") -> dict:
    """A model with a real model's shapes (its config.json) and random weights, plus the tiny tokenizer.

    For speed and memory measurements only: its perplexity means nothing. The tokenizer is the tiny
    one (its ids are a subset of the real vocabulary), so every tool that needs one works offline.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    dest = Path(dest)
    raw = json.loads(Path(config_json).read_text())
    raw = {k: v for k, v in raw.items() if not k.startswith("_")}
    tmp_cfg = Path(tempfile.mkdtemp())
    (tmp_cfg / "config.json").write_text(json.dumps(raw))
    config = AutoConfig.from_pretrained(tmp_cfg)
    shutil.rmtree(tmp_cfg, ignore_errors=True)
    tokenizer = _train_tokenizer(corpus_split()[0], RANDOM)
    torch.manual_seed(0)
    # Random initialisation of billions of 16-bit weights takes minutes on a CPU and seconds on a GPU.
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    # Output rows past the tiny tokenizer's vocabulary are zeroed: their ids decode to nothing, and a served
    # model that picks them streams empty text. Random logits of the real rows beat zero, so generation
    # stays within ids the tokenizer can decode; shapes, speed and memory are unchanged.
    with torch.no_grad():
        model.get_output_embeddings().weight[len(tokenizer):] = 0
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    _write_generation_config(model, dest)
    report = {"path": str(dest), "config": str(config_json), "parameters": sum(p.numel() for p in model.parameters()),
              "dtype": dtype, "weights": "random", "decodable_vocab": len(tokenizer)}
    (dest / "tiny-model.json").write_text(json.dumps(report, indent=2) + "\n")
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the caller measures GPU memory next
    return report
