"""estimate-memory as a preflight (issue #31): will vLLM load this checkpoint on this GPU, with which kernel, with
which batch defaults; tied embeddings the config leaves to the model class; both KV token figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmprod.memory.kernels import checkpoint_format, preflight, table_for, tables
from llmprod.memory.model import TIED_BY_DEFAULT, load_config, model_shape
from llmprod.memory.plan import MemorySpec, estimate
from llmprod.memory.sizes import GPUS, GiB
from llmprod.vllm import parse_startup

DATA = Path(__file__).resolve().parents[1] / "data"
RUNS = json.loads((DATA / "vllm-0.26.0" / "runs.json").read_text())["runs"]
TABLE = tables()["0.26.0"]


def shape_of(config: str):
    return model_shape(load_config(str(DATA / config))[0])


# --- the kernel table, held to vLLM's own start-up lines --------------------------------------------------------

LOGGED = [run for run in RUNS if run["config"] != "tiny"]


@pytest.mark.parametrize("run", LOGGED, ids=[r["log"].removesuffix(".log") for r in LOGGED])
def test_on_the_h200_the_table_names_the_kernel_vllm_logged(run):
    """Each recorded start on the H200: the format read from its config.json, the kernel the table picks for an
    H200, and the kernel (or MoE backend) vLLM printed are the same."""
    log = parse_startup((DATA / "vllm-0.26.0" / run["log"]).read_text())
    fmt = checkpoint_format(shape_of(run["config"]))
    check = preflight(fmt, "H200", "0.26.0")
    assert check["loads"] is True
    if log.kernels:  # "MacheteLinearKernel for CompressedTensorsWNA16"
        assert check["kernel_class"] == log.kernels[0].split(" for ")[0], (fmt, check, log.kernels)
    elif fmt == "mxfp4-moe":
        assert log.moe_backend == "TRITON Mxfp4" and check["kernel"].startswith("Triton MXFP4")
    else:
        assert fmt == "unquantized", (fmt, log.kernels)


def test_every_seen_log_exists_and_shows_that_kernel():
    """A row's `seen` is evidence: the log is in tests/data and names the row's kernel class (or MoE backend)."""
    checked = 0
    for fmt, row in TABLE["formats"].items():
        for option in row.get("cuda", []) + row.get("rocm", []):
            assert option.get("source"), (fmt, option)
            for name in option.get("seen", []):
                text = (DATA / "vllm-0.26.0" / name).read_text()
                words = option.get("class") or {"mxfp4-moe": "Mxfp4 MoE backend"}.get(fmt, "")
                if fmt != "unquantized":
                    assert words in text, (fmt, option["kernel"], name)
                checked += 1
    assert checked >= 12


@pytest.mark.parametrize("gpu", sorted(GPUS))
@pytest.mark.parametrize("fmt", sorted(TABLE["formats"]))
def test_every_format_on_every_gpu_gets_an_answer(fmt, gpu):
    check = preflight(fmt, gpu, "0.26.0")
    assert check["loads"] in (True, False) and check["reason"]
    if check["loads"]:
        assert check["kernel"] and check["weight_memory"] and check["source"]
    else:
        assert check["kernel"] is None and "does not load" in check["reason"] or "has no" in check["reason"]


@pytest.mark.parametrize("fmt,gpu,kernel", [
    ("w8a8-fp8", "A100", "Marlin FP8 (weight-only fallback)"),  # no FP8 tensor cores: weights-only, still 1 byte
    ("w8a8-fp8", "L4", "CUTLASS FP8"),
    ("w8a8-fp8", "B200", "FlashInfer FP8"),
    ("nvfp4", "H100", "Marlin NVFP4 (weight-only fallback)"),  # CUTLASS FP4 needs Blackwell
    ("nvfp4", "B200", "FlashInfer CUTLASS NVFP4"),
    ("nvfp4", "RTX5090", "CUTLASS NVFP4"),
    ("w4a16", "H100-PCIe", "Machete"),
    ("w4a16", "L4", "Marlin"),  # Machete is Hopper-only
    ("fp8-block", "H200", "DeepGEMM"),
    ("fp8-block", "A10G", "Marlin FP8 (weight-only fallback)"),
    ("mxfp4-moe", "A100", "Marlin MXFP4 MoE (weight-only)"),
    ("mxfp4-moe", "B200", "FlashInfer TRT-LLM MXFP4 MoE"),
    ("w4a16", "MI300X", "Triton W4A16"),
])
def test_the_kernel_each_gpu_gets(fmt, gpu, kernel):
    check = preflight(fmt, gpu, "0.26.0")
    assert check["loads"] and check["kernel"] == kernel, check


@pytest.mark.parametrize("fmt,gpu,nearest", [
    ("w4a8-fp8", "L4", "w4a16"),  # CUTLASS W4A8 is Hopper-only
    ("w4a8-fp8", "B200", "w4a16"),
    ("modelopt-fp8", "A100", "w8a8-fp8"),  # ModelOpt FP8 has no weight-only fallback below 8.9
])
def test_an_unsupported_pair_names_the_nearest_scheme_that_loads(fmt, gpu, nearest):
    check = preflight(fmt, gpu, "0.26.0")
    assert check["loads"] is False and check["nearest"] == nearest
    assert f"the nearest scheme that loads there is {nearest}" in check["reason"]
    assert preflight(nearest, gpu, "0.26.0")["loads"]


def test_a_later_vllm_release_uses_the_newest_table_at_or_below_it():
    assert table_for("0.27.1")[0] == "0.26.0" and table_for("0.20.0")[0] == "0.26.0"


@pytest.mark.parametrize("config,fmt", [
    ("vllm-0.26.0/llama-3.1-8b-w8a8-fp8.json", "w8a8-fp8"),
    ("vllm-0.26.0/llama-3.1-8b-fp8-block.json", "fp8-block"),
    ("vllm-0.26.0/llama-3.1-8b-w8a8-int8.json", "w8a8-int8"),
    ("vllm-0.26.0/llama-3.1-8b-nvfp4a16.json", "nvfp4a16"),
    ("vllm-0.26.0/llama-3.1-8b-gptq-w8a16.json", "w8a16"),
    ("model-configs/Qwen__Qwen3-32B-AWQ__transformers5_repr.json", "w4a16"),
    ("model-configs/Qwen__Qwen2.5-7B-Instruct-GPTQ-Int4.json", "w4a16"),
    ("model-configs/Qwen__Qwen3-30B-A3B-FP8.json", "fp8-block"),
    ("model-configs/openai__gpt-oss-120b.json", "mxfp4-moe"),
    ("model-configs/meta-llama__Llama-3.1-8B-Instruct.json", "unquantized"),
])
def test_the_format_comes_from_the_checkpoints_quantization_config(config, fmt):
    assert checkpoint_format(shape_of(config)) == fmt


# --- the gate, through the command a user runs --------------------------------------------------------------------

def test_preflight_in_json_and_exit_0_when_it_fits_and_loads(cli):
    result = cli("estimate-memory", str(DATA / "vllm-0.26.0" / "llama-3.1-8b-w8a8-fp8.json"), "--gpu", "A100",
                 "--max-model-len", "8k", "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["fits"] is True and doc["loads"] is True and doc["kernel"] == "Marlin FP8 (weight-only fallback)"
    assert "loads with Marlin FP8" in doc["reason"]
    assert "activations stay 16-bit" in doc["preflight"]["weight_memory"]


def test_a_format_the_gpu_cannot_load_is_exit_1_with_one_line_naming_the_nearest(cli, tmp_path):
    config = json.loads((DATA / "vllm-0.26.0" / "llama-3.1-8b-gptq-w4a16.json").read_text())
    group = next(iter(config["quantization_config"]["config_groups"].values()))
    group["input_activations"] = {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": True}
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = cli("estimate-memory", str(tmp_path), "--gpu", "L4", "--max-model-len", "4096")
    assert result.exit_code == 1, result.stdout + result.stderr
    line = " ".join(result.stderr.split())
    assert "does not load w4a8-fp8 on NVIDIA L4" in line and "nearest scheme that loads there is w4a16" in line
    doc = cli("estimate-memory", str(tmp_path), "--gpu", "L4", "--max-model-len", "4096", "--json")
    assert doc.exit_code == 1 and doc.json()["loads"] is False and doc.json()["kernel"] is None
    assert doc.json()["fits"] is True  # memory alone would fit: the two answers are separate


def test_without_a_named_gpu_loads_is_not_checked(cli):
    result = cli("estimate-memory", str(DATA / "vllm-0.26.0" / "llama-3.1-8b-w8a8-fp8.json"),
                 "--gpu-memory", "80GiB", "--max-model-len", "4096", "--json")
    assert result.exit_code == 0 and result.json()["loads"] is None and result.json()["preflight"] is None


# --- vLLM's batch defaults ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("gpu,entry,tokens,seqs", [
    ("H200", "serve", 8192, 1024), ("H100", "serve", 8192, 1024), ("MI300X", "serve", 8192, 1024),
    ("A100-80GB", "serve", 2048, 256),  # vLLM keeps an A100 on the small defaults
    ("L4", "serve", 2048, 256), ("RTX5090", "serve", 2048, 256),
    ("H200", "python", 16384, 1024), ("L4", "python", 8192, 256),
])
def test_max_num_batched_tokens_and_seqs_default_as_vllm_does(gpu, entry, tokens, seqs):
    r = estimate(MemorySpec(model=str(DATA / "model-configs" / "Qwen__Qwen3-8B.json"), context=8192, gpu=gpu,
                            entry_point=entry))
    assert (r["max_num_batched_tokens"], r["max_num_seqs"]) == (tokens, seqs)
    assert r["batch_settings_from"]["max_num_batched_tokens"].startswith("vLLM 0.26.0's default")


def test_a_short_max_model_len_caps_the_default_token_budget_and_a_given_one_is_kept():
    model = str(DATA / "model-configs" / "Qwen__Qwen3-8B.json")
    assert estimate(MemorySpec(model=model, context=4, gpu="L4"))["max_num_batched_tokens"] == 4 * 256
    r = estimate(MemorySpec(model=model, context=8192, gpu="L4", max_num_batched_tokens=4096))
    assert r["max_num_batched_tokens"] == 4096 and r["batch_settings_from"]["max_num_batched_tokens"] == "given"


def test_the_token_budget_moves_the_activation_and_a_sliding_windows_blocks():
    model = str(DATA / "model-configs" / "openai__gpt-oss-20b.json")
    small = estimate(MemorySpec(model=model, context=32768, gpu="H200", max_num_batched_tokens=2048))
    large = estimate(MemorySpec(model=model, context=32768, gpu="H200"))
    act = {r["item"]: r["bytes"] for r in small["budget"]}["− activation peak"]
    assert act > {r["item"]: r["bytes"] for r in large["budget"]}["− activation peak"]  # (negative: less deducted)
    assert small["blocks_per_request"] < large["blocks_per_request"]


def test_bad_entry_point_is_one_line_exit_2(cli):
    result = cli("estimate-memory", str(DATA / "model-configs" / "Qwen__Qwen3-8B.json"), "--gpu", "H100",
                 "--entry-point", "grpc")
    assert result.exit_code == 2 and "--entry-point 'grpc'" in result.stderr


# --- tied embeddings and both KV figures --------------------------------------------------------------------------

def test_tied_by_default_matches_transformers_config_classes():
    """Gemma 2's config.json does not say it ties its embeddings; transformers' Gemma2Config does. The set
    llmprod keeps is the set transformers' classes say, for every model type either knows."""
    from transformers import CONFIG_MAPPING

    for model_type in sorted(TIED_BY_DEFAULT | {"llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "phi3",
                                                 "deepseek_v2", "gpt_oss", "mixtral", "granite"}):
        if model_type in CONFIG_MAPPING:
            assert CONFIG_MAPPING[model_type]().tie_word_embeddings == (model_type in TIED_BY_DEFAULT), model_type


def test_gemma_2s_tied_embeddings_are_counted_once_as_vllm_loads_them():
    log = parse_startup((DATA / "vllm-0.26.0" / "h200-dummy-gemma-2-9b.log").read_text())
    r = estimate(MemorySpec(model=str(DATA / "model-configs" / "google__gemma-2-9b.json"), gpu="H200"))
    assert abs(r["weights_bytes"] - log.weights_gib * GiB) < 0.01 * log.weights_gib * GiB  # was 1.71 GiB over


def test_both_kv_token_figures_named_for_what_they_are():
    """gpt-oss (sliding 128 : full): vLLM 0.26 logs concurrency × max_model_len, which counts every sliding
    layer's window plus the tokens in flight per request; the pool is blocks × block size per layer group."""
    log = parse_startup((DATA / "vllm-0.26.0" / "h200-dummy-gpt-oss-20b.log").read_text())
    r = estimate(MemorySpec(model=str(DATA / "model-configs" / "openai__gpt-oss-20b.json"), context=log.max_model_len,
                            kv_cache_memory_bytes=int(log.kv_cache_gib * GiB), max_num_batched_tokens=8192))
    assert r["kv_cache_tokens"] == pytest.approx(log.kv_cache_tokens, rel=0.001)
    assert r["kv_pool_tokens"] == r["num_blocks"] * 16 > r["kv_cache_tokens"]
    assert "concurrency × max model length" in r["kv_tokens_note"]
    dense = estimate(MemorySpec(model=str(DATA / "model-configs" / "Qwen__Qwen3-8B.json"), context=40960,
                                kv_cache_memory_bytes=10 * GiB))
    assert dense["kv_pool_tokens"] == pytest.approx(dense["kv_cache_tokens"], abs=16)  # one full-attention group
