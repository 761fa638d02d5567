"""The offline tiny models the other tests (and the quickstart) stand on."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from llmprod.tinymodel import RANDOM, build_tiny_model, corpus_split


def test_corpus_split_is_disjoint_and_stable():
    train, held_out = corpus_split()
    assert len(train) > 5 * len(held_out) > 0
    assert held_out not in train
    assert corpus_split() == (train, held_out)


def test_random_model_is_a_complete_loadable_checkpoint(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    for name in ["config.json", "model.safetensors", "tokenizer.json", "generation_config.json"]:
        assert (tiny_model_dir / name).is_file(), name
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_key_value_heads"] < config["num_attention_heads"]  # GQA, like real Llamas
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    chat = tok.apply_chat_template([{"role": "user", "content": "hello"}], add_generation_prompt=True,
                                   tokenize=False)
    assert chat.startswith("<|begin_of_text|><|start_header_id|>user")
    assert chat.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    ids = tok("def f(x): return x", return_tensors="pt").input_ids
    assert ids[0, 0].item() == tok.bos_token_id
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all()
    assert GenerationConfig.from_pretrained(tiny_model_dir).eos_token_id == tok.eos_token_id


def test_random_build_is_deterministic(tmp_path, tiny_model_dir):
    build_tiny_model(tmp_path / "again", RANDOM)
    digest = lambda p: hashlib.sha256((p / "model.safetensors").read_bytes()).hexdigest()  # noqa: E731
    assert digest(tmp_path / "again") == digest(tiny_model_dir)
    assert (tmp_path / "again" / "tokenizer.json").read_text() == (tiny_model_dir / "tokenizer.json").read_text()


def test_build_refuses_a_non_empty_destination_and_leaves_no_temporary(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep").write_text("mine")
    with pytest.raises(FileExistsError):
        build_tiny_model(tmp_path / "m", RANDOM)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert (tmp_path / "m" / "keep").read_text() == "mine"


@pytest.mark.slow
def test_trained_model_is_far_better_than_uniform(trained_model_dir):
    report = json.loads((trained_model_dir / "tiny-model.json").read_text())
    assert math.isfinite(report["held_out_perplexity"])
    # Uniform over the vocabulary is 1024; a model that learned nothing sits there.
    assert report["held_out_perplexity"] < report["uniform_perplexity"] / 10
