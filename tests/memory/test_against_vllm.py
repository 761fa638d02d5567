"""`estimate-memory` against vLLM 0.26.0's own start-up lines, recorded on an H200 (tests/data/vllm-0.26.0).

Goals (issue #31): given vLLM's KV cache memory, its "GPU KV cache size" tokens and its maximum concurrency
within 0.1%; from the GPU alone, its KV cache memory within 1.5%, and never more than 0.5% above vLLM's (a plan
that promises KV cache vLLM will not have is the dangerous direction). The budget's other lines are checked at
what they are worth: the peak activation is fitted (llmprod/memory/plan.py), not read from a config.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from llmprod.memory.plan import MemorySpec, estimate
from llmprod.memory.releases import RELEASES
from llmprod.memory.sizes import GiB
from llmprod.memory.versus import compare, read_log, spec_from_log
from llmprod.vllm import parse_startup

DATA = Path(__file__).resolve().parents[1] / "data"
RUNS = json.loads((DATA / "vllm-0.26.0" / "runs.json").read_text())
COMPLETE = [run for run in RUNS["runs"] if not run.get("partial")]


def model_of(run: dict, tiny_model_dir: Path) -> str:
    return str(tiny_model_dir) if run["config"] == "tiny" else str(DATA / run["config"])


def ids(runs: list[dict]) -> list[str]:
    return [run["log"].removesuffix(".log") for run in runs]


@pytest.fixture
def planned(request, tiny_model_dir):
    run = request.param
    log = read_log(DATA / "vllm-0.26.0" / run["log"])
    spec = spec_from_log(MemorySpec(model=model_of(run, tiny_model_dir)), log)
    result = estimate(spec)
    rows = {row["figure"]: row for row in compare(spec, result, log)["rows"]}
    return run, log, spec, result, rows


def _within(predicted: float, logged: float, rel: float, logged_step: float = 0.0) -> bool:
    """`predicted` within `rel` of `logged`, which vLLM printed rounded to `logged_step`."""
    return abs(predicted - logged) <= rel * logged + logged_step / 2


@pytest.mark.parametrize("run", RUNS["runs"], ids=ids(RUNS["runs"]))
def test_given_vllms_kv_memory_tokens_and_concurrency_are_within_0_1_percent(run, tiny_model_dir):
    """Every run, the partial one too: the block arithmetic alone, from vLLM's own "Available KV cache memory"
    (printed to 0.01 GiB, which is the tolerance's floor)."""
    log = parse_startup((DATA / "vllm-0.26.0" / run["log"]).read_text())
    kv = int(log.kv_cache_gib * GiB)
    spec = MemorySpec(model=model_of(run, tiny_model_dir), context=log.max_model_len,
                      kv_cache_dtype=log.kv_cache_dtype or "auto", tp=log.tensor_parallel_size or 1,
                      pp=log.pipeline_parallel_size or 1, kv_cache_memory_bytes=kv,
                      max_num_batched_tokens=log.max_num_batched_tokens)
    r = estimate(spec)
    rounding = 0.005 * GiB / kv  # the log's two decimals of GiB, relative
    assert _within(r["kv_cache_tokens"], log.kv_cache_tokens, 0.001 + rounding), (r["kv_cache_tokens"], log)
    assert _within(r["max_concurrency"], log.max_concurrency, 0.001 + rounding, 0.01), (r["max_concurrency"], log)


@pytest.mark.parametrize("planned", COMPLETE, ids=ids(COMPLETE), indirect=True)
def test_from_the_gpu_alone_the_kv_cache_is_within_1_5_percent_and_never_0_5_percent_above(planned):
    rows = planned[-1]
    for figure in ("KV cache memory (from the GPU)", "KV cache tokens (from the GPU)",
                   "maximum concurrency (from the GPU)"):
        ratio = rows[figure]["predicted"] / rows[figure]["vllm"]
        assert 0.985 <= ratio <= 1.005, rows[figure]


@pytest.mark.parametrize("planned", COMPLETE, ids=ids(COMPLETE), indirect=True)
def test_the_budget_line_by_line(planned):
    _, log, _, result, rows = planned
    release = RELEASES["0.26.0"]
    assert result["vllm"]["gpu_memory_utilization"] == log.gpu_memory_utilization
    # (vLLM prints it in GiB to two places: 0.06 GiB per GPU with tensor parallelism is 61 MiB give or take 5)
    non_torch = rows["non-torch memory"]
    assert abs(non_torch["predicted"] - non_torch["vllm"]) <= 0.03 * GiB, non_torch
    # the V1 model runner (MoE models outside vLLM's V2 list) deducts its own CUDA graph estimate before sizing
    # the KV cache; llmprod deducts the largest seen. The V2 runner deducts nothing.
    graphs = rows["CUDA graphs deducted from the KV budget"]["predicted"]
    if log.cuda_graph_estimate_gib is not None:
        assert graphs == release.v1_cuda_graph_bytes >= log.cuda_graph_estimate_gib * GiB
    else:
        assert graphs == 0
    activation = rows["peak activation"]
    assert -0.3 * GiB <= activation["predicted"] - activation["vllm"] <= 0.6 * GiB, activation


@pytest.mark.parametrize("run", [r for r in COMPLETE if r["log"].startswith("h200-dummy")],
                         ids=ids([r for r in COMPLETE if r["log"].startswith("h200-dummy")]))
def test_the_batch_settings_are_vllms_defaults_for_the_gpu(run):
    """vLLM logs max_num_batched_tokens; estimate-memory's default for an H200 and `vllm serve` is the same."""
    log = read_log(DATA / "vllm-0.26.0" / run["log"])
    r = estimate(MemorySpec(model=str(DATA / run["config"]), context=log.max_model_len, gpu="H200"))
    assert r["max_num_batched_tokens"] == log.max_num_batched_tokens == 8192
    assert r["max_num_seqs"] == 1024


@pytest.mark.parametrize("planned", [r for r in COMPLETE if r["config"] != "tiny"],
                         ids=ids([r for r in COMPLETE if r["config"] != "tiny"]), indirect=True)
def test_weights_are_within_5_percent(planned):
    _, _, _, _, rows = planned
    assert rows["weights"]["ratio"] == pytest.approx(1, abs=0.05), rows["weights"]


@pytest.mark.parametrize("planned", [r for r in COMPLETE if r["config"] == "tiny"], ids=["tiny"], indirect=True)
def test_a_float32_config_is_sized_as_vllm_serves_it_in_bfloat16(planned):
    _, log, spec, result, _ = planned
    assert log.downcast == "torch.float32 to torch.bfloat16"
    # 4 layers × 2 KV heads × (32 + 32) × 2 bytes: bfloat16, not the config's float32 (which halved the tokens)
    assert result["kv_bytes_per_token"] == 4 * 2 * 64 * 2 == 1024
    assert "downcasts" in result["vllm"]["dtype"]
    given = estimate(replace(spec, kv_cache_memory_bytes=int(log.kv_cache_gib * GiB)))
    assert given["kv_cache_tokens"] == pytest.approx(log.kv_cache_tokens, rel=0.001)
    # the weights from the safetensors headers: float32 tensors counted at 2 bytes
    assert "as vLLM serves them" in result["weights_estimated"]


def test_a_sliding_window_model_holds_two_batches_in_flight_per_request():
    """Gemma 3 (5 sliding : 1 full): vLLM 0.26.0 keeps window − 1 + 2 × max_num_batched_tokens per sliding
    layer (async scheduling) and reports concurrency × max_model_len as its token count."""
    log = read_log(DATA / "vllm-0.26.0" / "gemma-3-27b-6-layers-eager.log")
    spec = spec_from_log(MemorySpec(model=str(DATA / "vllm-0.26.0" / "gemma-3-27b-6-layers.json")), log)
    r = estimate(replace(spec, kv_cache_memory_bytes=int(log.kv_cache_gib * GiB)))
    assert r["tokens_in_flight"] == 2 * 8192
    # per request: 5 sliding groups of cdiv(1023 + 16384, 16) + 1 = 1089 blocks, one full of 32768 / 16
    assert r["blocks_per_request"] == 5 * 1089 + 2048
    assert r["max_concurrency"] == pytest.approx(log.max_concurrency, abs=0.01)


def test_the_cli_sets_each_figure_beside_the_logs(cli):
    log = DATA / "vllm-0.26.0" / "llama-3.1-8b-fp8kv-32k.log"
    result = cli("estimate-memory", str(DATA / "model-configs" / "meta-llama__Llama-3.1-8B-Instruct.json"),
                 "--vllm-log", str(log), "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["context"] == 32768 and doc["vllm"]["version"] == "0.26.0" and doc["vllm"]["from"] == "the log"
    assert doc["vs_vllm"]["settings"]["kv_cache_dtype"] == "fp8"
    assert {row["figure"] for row in doc["vs_vllm"]["rows"]} >= {"weights", "KV cache tokens (from the GPU)"}
    table = cli("estimate-memory", str(DATA / "model-configs" / "meta-llama__Llama-3.1-8B-Instruct.json"),
                "--vllm-log", str(log))
    assert "1,839,136" in table.stdout and "beside vLLM 0.26.0" in " ".join(table.stdout.split())


@pytest.mark.parametrize("args,words", [
    (["--vllm-log", "{missing}"], "cannot read --vllm-log"),
    (["--vllm-log", "{refused}"], "no vLLM start-up figures"),
    (["--vllm-log", "{good}", "--gpu", "H100"], "drop --gpu"),
    (["--vllm-version", "latest", "--gpu", "H100"], "is not a version"),
    (["--vllm-version", "0.26.0", "--vllm-bin", "/bin/true", "--gpu", "H100"], "both given"),
])
def test_bad_vllm_inputs_are_one_line_exit_2(cli, tmp_path, args, words):
    paths = {"missing": tmp_path / "nope.log", "refused": DATA / "vllm-0.26.0" / "llama-3.2-1b-refused-util0.03.log",
             "good": DATA / "vllm-0.26.0" / "llama-3.1-8b-bf16.log"}
    args = [a.format(**paths) for a in args]
    result = cli("estimate-memory", str(DATA / "model-configs" / "meta-llama__Llama-3.1-8B-Instruct.json"), *args)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert words in " ".join(result.stderr.split()) and result.stderr.strip().count("\n") == 0


FORMAT_RUNS = [r for r in RUNS["runs"] if r["log"].endswith("-4k.log")]


@pytest.mark.parametrize("planned", FORMAT_RUNS, ids=[r["log"].removesuffix("-4k.log") for r in FORMAT_RUNS],
                         indirect=True)
def test_each_format_llmprod_writes_is_sized_within_1_percent_of_vllms_weights(planned):
    """Issue #18: bf16, GPTQ/AWQ W4A16, W8A16, FP8 (channel and block), INT8 W8A8 and NVFP4, from config.json's
    quantization_config alone (the architecture path: no safetensors here), against "Model loading took"."""
    _, _, _, result, rows = planned
    assert result["weights_estimated"].startswith("from the architecture")
    assert rows["weights"]["ratio"] == pytest.approx(1, abs=0.01), rows["weights"]


def test_a_checkpoint_with_kv_cache_scales_is_planned_with_an_fp8_cache():
    """vLLM 0.26 caches in FP8 when the checkpoint declares a kv_cache_scheme, even with --kv-cache-dtype auto."""
    config = json.loads((DATA / "vllm-0.26.0" / "llama-3.1-8b-w8a8-fp8.json").read_text())
    plain = estimate(MemorySpec(model=str(DATA / "vllm-0.26.0" / "llama-3.1-8b-w8a8-fp8.json"), context=4096,
                                kv_cache_memory_bytes=10 * GiB))
    assert plain["kv_bytes_per_token"] == 32 * 8 * 128 * 2 * 2  # bf16 keys and values
    path = Path(__import__("tempfile").mkdtemp()) / "config.json"
    config["quantization_config"]["kv_cache_scheme"] = {"num_bits": 8, "type": "float", "strategy": "tensor",
                                                         "dynamic": False, "symmetric": True}
    path.write_text(json.dumps(config))
    scaled = estimate(MemorySpec(model=str(path), context=4096, kv_cache_memory_bytes=10 * GiB))
    assert scaled["kv_bytes_per_token"] == plain["kv_bytes_per_token"] // 2
    assert scaled["kv_cache_tokens"] == pytest.approx(2 * plain["kv_cache_tokens"], rel=0.001)
    assert scaled["vllm"]["kv_cache_dtype"].startswith("fp8 (auto")
