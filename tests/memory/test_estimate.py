"""`llmprod estimate-memory` on real configurations, each number worked out by hand here.

vLLM v1: page = block_size × KV heads on the rank × (K + V head size) × dtype bytes per layer;
num_blocks = budget // page // layers per group; "GPU KV cache size" = num_blocks // groups × block;
concurrency = num_blocks / blocks one request of C tokens needs across the groups.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmprod.errors import ConfigError, InputError
from llmprod.memory.kvcache import pp_layer_counts
from llmprod.memory.model import model_shape
from llmprod.memory.plan import MemorySpec, estimate
from llmprod.memory.sizes import GiB, parse_size, parse_tokens

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "model-configs"


def cfg(name: str) -> str:
    return str(CONFIGS / f"{name}.json")


def plan(name: str, **kw):
    return estimate(MemorySpec(model=cfg(name), **kw))


def test_full_attention_llama_3_1_8b():
    r = plan("meta-llama__Llama-3.1-8B-Instruct", context=8192, kv_cache_memory_bytes=10 * GiB)
    # 32 layers × 8 KV heads × (128 + 128) × 2 bytes (bf16)
    assert r["kv_bytes_per_token"] == 32 * 8 * 256 * 2 == 131_072
    page = 16 * 8 * 256 * 2  # one block of one layer: 64 KiB
    assert r["page_bytes"] == page
    assert r["num_blocks"] == 10 * GiB // page // 32 == 5120
    assert r["kv_cache_tokens"] == 5120 * 16 == 81_920
    assert r["max_concurrency"] == 5120 / (8192 // 16) == 10.0
    assert r["max_context"] == 81_920  # one sequence gets every block
    assert r["parameters"] == 8_030_261_248  # the published count
    assert r["fits"] and r["max_batch"] == 10


def test_batch_and_context_answers_agree():
    r = plan("meta-llama__Llama-3.1-8B-Instruct", context=8192, batch=11, kv_cache_memory_bytes=10 * GiB)
    assert not r["fits"] and r["max_batch"] == 10
    assert r["max_context"] == 81_920 // 11 // 16 * 16  # whole blocks for each of the 11 sequences


def test_gqa_heads_are_replicated_when_tp_exceeds_them():
    r = plan("meta-llama__Llama-3.1-70B-Instruct", context=4096, tp=16, kv_cache_memory_bytes=4 * GiB)
    # 8 KV heads over 16 ranks: each rank keeps max(1, 8 // 16) = 1 head, not half of one.
    assert r["kv_heads_per_gpu"] == 1
    assert r["kv_bytes_per_token"] == 80 * 1 * 256 * 2 == 40_960
    page = 16 * 1 * 256 * 2
    assert r["num_blocks"] == 4 * GiB // page // 80 == 6553
    assert r["kv_cache_tokens"] == 6553 * 16
    assert r["max_concurrency"] == pytest.approx(6553 / 256)


def test_mla_with_pipeline_parallelism():
    r = plan("deepseek-ai__DeepSeek-V3", context=4096, pp=2, tp=8, kv_cache_memory_bytes=8 * GiB)
    # One latent of kv_lora_rank 512 + qk_rope_head_dim 64 per token and layer, on every TP rank;
    # the config's 128 KV heads are not the cache.
    assert r["kv_heads_per_gpu"] == 1
    assert r["layers_per_stage"] == [31, 30]  # 61 layers: vLLM gives the extra one to the first stage
    assert r["kv_bytes_per_token"] == 31 * 576 * 2 == 35_712
    page = 16 * 576 * 2
    assert r["num_blocks"] == 8 * GiB // page // 31 == 15_033
    assert r["kv_cache_tokens"] == 15_033 * 16
    assert r["max_concurrency"] == pytest.approx(15_033 / 256)


def test_hybrid_sliding_window_gemma_3():
    r = plan("google__gemma-3-27b-it__text_config_only", context=8192, kv_cache_memory_bytes=10 * GiB)
    # transformers' default pattern: 5 sliding (window 1024) : 1 full → 52 sliding + 10 full of 62.
    assert r["layer_types"] == {"sliding_attention (1024)": 52, "full_attention": 10}
    # vLLM groups 10 layers each: 6 sliding groups (the last padded) + 1 full group, one block pool.
    assert (r["group_size"], r["kv_cache_groups"]) == (10, 7)
    page = 16 * 16 * 256 * 2  # 16 KV heads × head_dim 128 (K and V) × bf16
    assert r["page_bytes"] == page
    assert r["num_blocks"] == 10 * GiB // page // 10 == 8192
    # per request: sliding cdiv(min(1023 + 2 × 8192, 8192), 16) + 1 = 513 blocks, full 512
    assert r["blocks_per_request"] == 6 * 513 + 512
    assert r["max_concurrency"] == pytest.approx(8192 / 3590)
    assert r["kv_cache_tokens"] == int(8192 / 3590 * 8192) == 18_693  # concurrency × C


def test_hybrid_sliding_window_bounded_by_the_scheduler_budget():
    r = plan("google__gemma-3-27b-it__text_config_only", context=32768, max_num_batched_tokens=2048,
             kv_cache_memory_bytes=10 * GiB)
    # Two batches of 2048 tokens in flight (vLLM 0.26.0's async scheduling): a sliding layer holds
    # cdiv(min(1023 + 4096, 32768), 16) + 1 = 321 blocks a request; full: 32768 / 16 = 2048.
    assert r["tokens_in_flight"] == 2 * 2048
    assert r["blocks_per_request"] == 6 * 321 + 2048


def test_gpt_oss_alternating_layers_and_mxfp4_weights():
    r = plan("openai__gpt-oss-20b", context=8192, kv_cache_memory_bytes=10 * GiB)
    assert r["layer_types"] == {"sliding_attention (128)": 12, "full_attention": 12}
    assert (r["group_size"], r["kv_cache_groups"]) == (12, 2)
    assert r["kv_bytes_per_token"] == 24 * 8 * 128 * 2
    assert r["weights_format"] == "mxfp4 (experts)"
    assert 12e9 < r["weights_bytes"] < 14.5e9  # the published checkpoint is 13.8 GB
    assert 20.5e9 < r["parameters"] < 21.5e9  # published: 20.9 B


def test_qwen25_lists_a_window_it_does_not_use():
    shape = model_shape(json.loads(Path(cfg("Qwen__Qwen2.5-7B-Instruct")).read_text()))
    assert {layer.kind for layer in shape.layers} == {"full_attention"}


def test_mistral_v03_without_window_is_full_attention():
    r = plan("mistralai__Mistral-7B-v0.3", context=4096, kv_cache_memory_bytes=GiB)
    assert r["layer_types"] == {"full_attention": 32}
    assert r["kv_bytes_per_token"] == 32 * 8 * 256 * 2


def test_gemma_2_alternates_with_the_sliding_layer_first():
    shape = model_shape(json.loads(Path(cfg("google__gemma-2-9b")).read_text()))
    assert [layer.kind for layer in shape.layers[:4]] == ["sliding_attention", "full_attention"] * 2


def test_fp8_kv_halves_the_cache_and_doubles_concurrency():
    base = plan("meta-llama__Llama-3.1-8B-Instruct", context=8192, kv_cache_memory_bytes=10 * GiB)
    fp8 = plan("meta-llama__Llama-3.1-8B-Instruct", context=8192, kv_cache_memory_bytes=10 * GiB,
               kv_cache_dtype="fp8")
    assert fp8["kv_bytes_per_token"] * 2 == base["kv_bytes_per_token"]
    assert fp8["kv_cache_tokens"] == 2 * base["kv_cache_tokens"]
    what_if = {w["change"]: w for w in base["what_if"]}
    assert what_if["--kv-cache-dtype fp8"]["kv_cache_tokens"] == fp8["kv_cache_tokens"]
    assert "--tensor-parallel-size 2" in what_if


def test_awq_checkpoint_weights_from_its_quantization_config():
    r = plan("Qwen__Qwen3-32B-AWQ__transformers5_repr", context=4096, gpu="H100")
    bf16 = plan("Qwen__Qwen3-32B-AWQ__transformers5_repr", context=4096, gpu="H100", weights="bf16")
    assert r["weights_format"] == "awq"
    # 4-bit linears with scales and zero points, embeddings in 16 bits: ~0.3 of bf16 for 32 B
    assert 0.25 < r["weights_bytes"] / bf16["weights_bytes"] < 0.35
    assert r["kv_cache_bytes"] > bf16["kv_cache_bytes"]


def test_gpu_budget_is_itemised_and_sums():
    r = plan("meta-llama__Llama-3.1-8B-Instruct", context=8192, gpu="H100")
    lines = {line["item"]: line["bytes"] for line in r["budget"]}
    usable = lines["× utilization 0.92"]  # vLLM 0.26.0's default
    deductions = sum(v for k, v in lines.items() if k.startswith("−"))
    assert r["kv_cache_bytes"] == usable + deductions
    assert -lines["− weights"] == r["weights_bytes"]


def test_paging_reserves_less_than_contiguous_allocation():
    r = plan("meta-llama__Llama-3.1-8B-Instruct", context=4096, batch=8, kv_cache_memory_bytes=10 * GiB)
    # contiguous: every sequence reserves its whole --max-model-len up front
    assert r["paging"]["contiguous_bytes"] == 8 * 4096 * 131_072
    assert r["paging"]["paged_bytes"] == 8 * (4096 // 16) * 65_536 * 32


def test_pipeline_split_matches_vllm():
    assert pp_layer_counts(61, 2) == [31, 30]
    assert pp_layer_counts(32, 3) == [11, 11, 10]
    assert pp_layer_counts(80, 4) == [20, 20, 20, 20]


@pytest.mark.parametrize("text,expected", [("80GiB", 80 * 2**30), ("80GB", 80 * 10**9), ("81920MiB", 80 * 2**30),
                                           ("1.5GiB", int(1.5 * 2**30)), ("1024B", 1024)])
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text,expected", [("8k", 8000), ("8K", 8192), ("32768", 32768), ("25.6k", 25_600),
                                           ("1m", 10**6), ("1M", 2**20)])
def test_token_counts_as_vllm_reads_them(text, expected):
    assert parse_tokens(text) == expected


@pytest.mark.parametrize("text", ["1.5K", "8kb", "0", "1.5", "eight"])
def test_token_counts_vllm_would_refuse(text):
    with pytest.raises(InputError):
        parse_tokens(text)


def test_state_space_layers_are_refused(tmp_path):
    config = {"model_type": "hybrid_test", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
              "vocab_size": 100, "max_position_embeddings": 128, "layer_types": ["linear_attention", "full_attention"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="cannot size"):
        estimate(MemorySpec(model=str(tmp_path), kv_cache_memory_bytes=GiB))


def _bad(cli, *args) -> str:
    result = cli("estimate-memory", *args)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stderr.strip().count("\n") == 0
    return result.stderr


def test_cli_bad_inputs(cli, tmp_path):
    llama = cfg("meta-llama__Llama-3.1-8B-Instruct")
    assert "H200" in _bad(cli, llama, "--gpu", "Z9000")  # unknown GPU lists the known ones
    assert "80GiB" in _bad(cli, llama, "--gpu-memory", "eighty")
    assert "no memory to plan against" in _bad(cli, llama)
    assert "131072 positions" in _bad(cli, llama, "--gpu", "H100", "--context", "200000")
    assert "131072 positions" in _bad(cli, llama, "--gpu", "H100", "--max-model-len", "200K")
    assert "does not divide" in _bad(cli, llama, "--gpu", "H100", "--tp", "3")
    assert "does not divide" in _bad(cli, llama, "--gpu", "H100", "-tp", "3")
    assert "has no unit" in _bad(cli, llama, "--gpu-memory", "80")
    assert "not a token count" in _bad(cli, llama, "--gpu", "H100", "--max-model-len", "8kb")
    assert "does not model --kv-cache-dtype nvfp4" in _bad(cli, llama, "--gpu", "H100", "--kv-cache-dtype", "NVFP4")
    assert "not one of vLLM's" in _bad(cli, llama, "--gpu", "H100", "--kv-cache-dtype", "int3")
    assert "no such file" in _bad(cli, str(tmp_path / "nope"))  # the model first, before asking for a GPU
    assert "no such file" in _bad(cli, str(tmp_path / "nope"), "--gpu", "H100")
    assert "hub" in _bad(cli, "some-org/some-model", "--gpu", "H100")  # offline, nothing cached
    (tmp_path / "config.json").write_text("{not json")
    assert "not valid JSON" in _bad(cli, str(tmp_path), "--gpu", "H100")


def test_cli_json_has_the_documented_keys(cli):
    result = cli("estimate-memory", cfg("meta-llama__Llama-3.1-8B-Instruct"), "--gpu", "L4", "--weights", "w4a16",
                 "--context", "8192", "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    for key in ("kv_bytes_per_token", "weights_bytes", "kv_cache_bytes", "kv_cache_tokens", "max_concurrency",
                "max_context", "fits"):
        assert key in doc, key
    assert doc["weights_format"] == "w4a16" and doc["fits"] is True


def test_the_planner_never_imports_torch():
    code = ("import sys; from llmprod.memory.plan import MemorySpec, estimate; "
            f"estimate(MemorySpec(model={cfg('google__gemma-3-27b-it__text_config_only')!r}, gpu='H100')); "
            "print(any(m.split('.')[0] in {'torch', 'transformers'} for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_chunked_local_attention_llama_4_pattern(tmp_path):
    # A config of our own in Llama 4's shape: transformers' default makes every 4th layer full
    # attention (no RoPE) and the others chunked local attention.
    config = {"model_type": "llama4_text", "num_hidden_layers": 8, "hidden_size": 1024, "num_attention_heads": 8,
              "num_key_value_heads": 2, "head_dim": 128, "vocab_size": 1000, "intermediate_size": 2048,
              "max_position_embeddings": 262_144, "attention_chunk_size": 8192, "torch_dtype": "bfloat16"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    r = estimate(MemorySpec(model=str(tmp_path), context=65_536, kv_cache_memory_bytes=GiB))
    assert r["layer_types"] == {"chunked_attention (8192)": 6, "full_attention": 2}
    # groups of 2 layers: 3 chunked + 1 full; page = 16 × 2 heads × 256 × 2 bytes
    assert (r["group_size"], r["kv_cache_groups"], r["page_bytes"]) == (2, 4, 16_384)
    assert r["num_blocks"] == GiB // 16_384 // 2 == 32_768
    # chunked, with two batches of 8192 tokens in flight: cdiv(min(8192 + 16384, 65536), 16) = 1536 blocks;
    # full: 65536 / 16 = 4096
    assert r["blocks_per_request"] == 3 * 1536 + 4096
    assert r["max_concurrency"] == pytest.approx(32_768 / 8704)
    assert r["kv_cache_tokens"] == int(32_768 / 8704 * 65_536)


def test_the_gate_exits_1_with_the_reason_and_keeps_the_json(cli):
    llama70 = cfg("meta-llama__Llama-3.1-70B-Instruct")
    result = cli("estimate-memory", llama70, "--gpu", "H100", "--json")
    assert result.exit_code == 1
    doc = result.json()
    assert doc["fits"] is False and doc["context"] == 131_072  # vLLM's default: the model's length
    assert doc["reason"].startswith("weights alone need 131.")
    assert result.stderr.strip() == f"error: {doc['reason']}"
    llama8 = cfg("meta-llama__Llama-3.1-8B-Instruct")
    crowded = cli("estimate-memory", llama8, "--gpu", "L4", "--max-model-len", "32k", "--batch", "8")
    assert crowded.exit_code == 1 and "KV blocks; the KV cache holds" in crowded.stderr
    fits = cli("estimate-memory", llama8, "--gpu", "H200", "--max-model-len", "8K", "--batch", "8",
               "--kv-cache-dtype", "FP8_E4M3", "--tensor-parallel-size", "2", "--json")
    assert fits.exit_code == 0, fits.stderr
    doc = fits.json()
    assert (doc["context"], doc["tp"], doc["fits"]) == (8192, 2, True) and doc["reason"].startswith("8 × 8,192")
