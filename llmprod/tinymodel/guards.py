"""Tiny guard models with the real architectures, built offline: a Llama Guard-shaped causal LM and a
Prompt Guard-shaped (DeBERTa-v2) classifier. Random weights: their verdicts mean nothing, but every path
that runs a real guard model (loading, the prompt format, P("unsafe") from logits or from a server's
logprobs, windows of 512 tokens) runs on them, in-process or served by vLLM.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from llmprod.modelio import share_modes

# Llama Guard answers "safe" or "unsafe" as single tokens of its vocabulary (ids 19193 and 39257 in Llama 3's).
VERDICT_TOKENS = ["unsafe", "safe"]


def _write_atomically(dest: Path, write) -> dict:
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        report = write(tmp)
        (tmp / "tiny-model.json").write_text(json.dumps({**report, "path": str(dest)}, indent=2) + "\n")
        share_modes(tmp)
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)
        return {**report, "path": str(dest)}
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_tiny_llama_guard(dest: str | os.PathLike, seed: int = 0, config_json: str | os.PathLike | None = None,
                           dtype: str = "float32") -> dict:
    """A Llama-architecture causal LM whose tokenizer has Llama 3's special tokens and "safe"/"unsafe" as
    single tokens, so it takes Meta's Llama Guard 3 prompt unchanged. `config_json`: a real model's shapes
    (Llama-3.2-1B's for a Llama Guard 3 1B, to measure what one costs), built on the GPU when there is one."""
    import torch

    from llmprod.tinymodel import RANDOM, _init_model, _train_tokenizer, _write_generation_config, corpus_split

    def write(tmp: Path) -> dict:
        tokenizer = _train_tokenizer(corpus_split()[0], RANDOM)
        tokenizer.add_tokens(VERDICT_TOKENS)
        torch.manual_seed(seed)
        if config_json is None:
            model = _init_model(RANDOM, tokenizer)
        else:
            from transformers import AutoConfig, AutoModelForCausalLM

            raw = {k: v for k, v in json.loads(Path(config_json).read_text()).items() if not k.startswith("_")}
            (tmp / "config.json").write_text(json.dumps(raw))
            config = AutoConfig.from_pretrained(tmp)
            with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
                model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
        _make_verdicts_likely(model, tokenizer)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _write_generation_config(model, tmp)
        return {"kind": "llama-guard", "parameters": sum(p.numel() for p in model.parameters()),
                "shapes": str(config_json or "tiny"), "weights": "random",
                "verdict_tokens": {t: tokenizer.convert_tokens_to_ids(t) for t in VERDICT_TOKENS}}

    return _write_atomically(dest, write)


def _make_verdicts_likely(model, tokenizer) -> None:
    """Raise the "safe" and "unsafe" rows of the output head so that, right after a Llama Guard prompt, they are
    the two likeliest first tokens (as in a real guard): P("unsafe") is then a few tenths, varies from text to
    text by more than bfloat16's rounding (vLLM serves it in bfloat16), and is among the top logprobs a server
    returns. Random weights elsewhere, so the verdicts mean nothing."""
    import torch

    from llmprod.guardrails.checks.llama_guard import ANSWER_PREFIX, FORMATS, build_llama_guard_prompt

    fmt = FORMATS["llama-guard-3-8b"]
    prompts = [build_llama_guard_prompt(fmt, text) + ANSWER_PREFIX for text in ("hello", "how do I bake bread?")]
    device = model.lm_head.weight.device
    with torch.no_grad():
        states = torch.stack([
            model.model(input_ids=tokenizer(p, add_special_tokens=False, return_tensors="pt").input_ids.to(device))
            .last_hidden_state[0, -1].float() for p in prompts])
        hidden, apart = states.mean(0), states[0] - states[1]
        head = model.lm_head.weight
        top = float((head.float() @ hidden).max())
        for token, above, spread in (("unsafe", 6.0, 2.0), ("safe", 6.5, 0.0)):
            index = tokenizer.convert_tokens_to_ids(token)
            row = head[index].float()
            row += (top + above - row @ hidden) * hidden / (hidden @ hidden)
            # and "unsafe" varies with what the hidden state says about the text (a spread of about one
            # logit between the two reference texts), so that texts get visibly different scores
            row += spread * apart / (apart @ apart)
            head[index] = row.to(head.dtype)


def build_tiny_prompt_guard(dest: str | os.PathLike, seed: int = 0) -> dict:
    """A DeBERTa-v2 sequence classifier (Prompt Guard 2's architecture) with two labels, named backwards on
    purpose: Prompt Guard's index 1 is "malicious" whatever the checkpoint's label names say."""
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    from llmprod.tinymodel import RANDOM, _train_tokenizer, corpus_split

    def write(tmp: Path) -> dict:
        tokenizer = _train_tokenizer(corpus_split()[0], RANDOM)
        config = DebertaV2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=512, num_labels=2,
                                 initializer_range=0.2,  # scores spread over (0, 1), not all near 0.5
                                 pad_token_id=tokenizer.pad_token_id or 0, id2label={0: "MALICIOUS", 1: "BENIGN"},
                                 label2id={"MALICIOUS": 0, "BENIGN": 1})
        torch.manual_seed(seed)
        model = DebertaV2ForSequenceClassification(config)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        return {"kind": "prompt-guard", "parameters": sum(p.numel() for p in model.parameters()), "weights": "random"}

    return _write_atomically(dest, write)


def cached(cache_dir: str | os.PathLike, kind: str) -> Path:
    """Build once into `cache_dir/tiny-<kind>` and reuse it afterwards."""
    build = {"llama-guard": build_tiny_llama_guard, "prompt-guard": build_tiny_prompt_guard}[kind]
    path = Path(cache_dir) / f"tiny-{kind}-v1"
    if not (path / "tiny-model.json").exists():
        shutil.rmtree(path, ignore_errors=True)
        build(path)
    return path
