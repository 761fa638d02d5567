"""Models with a real model's shapes and random weights (the GPU measurements use them)."""

from __future__ import annotations

import json

from transformers import AutoModelForCausalLM, AutoTokenizer

from llmprod.tinymodel import build_shaped_model


def test_shaped_model_generates_only_ids_its_tokenizer_can_decode(tmp_path):
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
              "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "vocab_size": 8192, "max_position_embeddings": 256, "torch_dtype": "bfloat16"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    report = build_shaped_model(path, tmp_path / "model", dtype="float32")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert model.config.vocab_size == 8192 and report["decodable_vocab"] == len(tokenizer) < 8192
    ids = tokenizer("The module", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=24, do_sample=False, pad_token_id=0)[0, ids.shape[1]:]
    assert int(out.max()) < len(tokenizer)
    assert tokenizer.decode(out, skip_special_tokens=True).strip()
