"""What llmprod reads from vLLM the program: its release, and its start-up lines (real ones, recorded)."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from llmprod.memory.releases import NEWEST, RELEASES, release_for
from llmprod.vllm import START_MARKER, installed_version, parse_startup, refusal

LOGS = Path(__file__).resolve().parent / "data" / "vllm-0.26.0"


def script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_start_up_figures_of_a_real_run():
    log = parse_startup((LOGS / "llama-3.1-8b-bf16.log").read_text())
    assert (log.version, log.dtype, log.kv_cache_dtype, log.tensor_parallel_size) == ("0.26.0", "bfloat16", "auto", 1)
    assert (log.max_model_len, log.weights_gib, log.kv_cache_gib, log.kv_cache_tokens) == (131072, 15.0, 112.28, 919_824)
    assert (log.concurrency_context, log.max_concurrency) == (131_072, 7.02)
    assert (log.total_gib, log.gpu_memory_utilization, log.requested_gib) == (139.8, 0.92, 128.62)
    assert (log.peak_activation_gib, log.non_torch_gib, log.cuda_graph_gib) == (1.1, 0.22, 0.98)
    assert log.quantization is None and log.error is None
    assert parse_startup((LOGS / "tiny-float32-util0.3.log").read_text()).downcast == "torch.float32 to torch.bfloat16"


def test_only_the_last_start_of_an_appended_log_counts():
    first = (LOGS / "llama-3.2-1b-refused-util0.03.log").read_text()
    second = (LOGS / "llama-3.2-1b-bf16-util0.3.log").read_text()
    log = parse_startup(f"{START_MARKER} vllm engine: a\n{first}\n{START_MARKER} vllm engine: b\n{second}")
    assert log.error is None and log.kv_cache_tokens == 1_272_656


def test_a_refused_start_is_bad_input_in_vllms_words():
    log = parse_startup((LOGS / "llama-3.2-1b-refused-util0.03.log").read_text())
    assert log.error.startswith("ValueError: To serve at least one request with the model's max seq len (131072)")
    error = refusal(log, Path("vllm.log"))
    assert error is not None and error.exit_code == 2
    assert "estimated maximum model length is 37712" in error.message
    assert error.hint.startswith("serve with --max-model-len 37712 or less")
    # a crash that is not about the configuration stays a failure (exit 1), not bad input
    crash = parse_startup("(EngineCore pid=9) RuntimeError: CUDA error: an illegal memory access was encountered\n"
                          "(APIServer pid=8) RuntimeError: Engine core initialization failed. See root cause above.")
    assert crash.error.startswith("RuntimeError: CUDA error") and refusal(crash, Path("vllm.log")) is None


def test_a_pydantic_refusal_keeps_its_reason():
    text = ("(APIServer pid=1) pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig\n"
            "(APIServer pid=1)   Value error, User-specified max_model_len (200000) is greater than the derived "
            "max_model_len (max_position_embeddings=131072.0 in model's config.json).\n")
    error = refusal(parse_startup(text), Path("vllm.log"))
    assert error is not None and "User-specified max_model_len (200000)" in error.message


def test_version_from_the_environment_behind_the_script(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "vllm-0.99.1.dist-info").mkdir(parents=True)
    (site / "vllm-0.99.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.99.1\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    vllm = script(tmp_path / "bin" / "vllm", f"#!{sys.executable}\nraise SystemExit('not run: metadata is read')\n")
    assert installed_version(str(vllm)) == "0.99.1"


def test_version_from_a_wrapper_script_asks_vllm(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_VERSION", "0.26.0")
    vllm = script(tmp_path / "bin" / "vllm", f"#!/bin/sh\nexec {sys.executable} -m llmprod.testing.fake_engine \"$@\"\n")
    assert installed_version(str(vllm)) == "0.26.0"
    broken = script(tmp_path / "bin" / "broken", "#!/bin/sh\nexit 3\n")
    assert installed_version(str(broken)) is None


def test_releases_llmprod_does_not_know_use_the_nearest_known():
    assert release_for("0.26.0") == (RELEASES["0.26.0"], None)
    assert release_for("v0.26.0+cu130")[1] is None
    newer, note = release_for("0.27.2")
    assert newer.version == NEWEST and "not a release llmprod has measured" in note
    older, note = release_for("0.10.1")
    assert older.version == min(RELEASES) and note


def test_estimate_memory_plans_for_the_vllm_it_finds(cli, tmp_path, monkeypatch):
    config = str(LOGS.parent / "model-configs" / "meta-llama__Llama-3.1-8B-Instruct.json")
    monkeypatch.setenv("FAKE_VLLM_VERSION", "0.31.0")
    vllm = script(tmp_path / "bin" / "vllm", f"#!/bin/sh\nexec {sys.executable} -m llmprod.testing.fake_engine \"$@\"\n")
    found = cli("estimate-memory", config, "--gpu", "H200", "--vllm-bin", str(vllm), "--json").json()["vllm"]
    assert found["version"] == "0.31.0" and found["from"] == f"the vLLM at {vllm}"
    assert found["defaults_of"] == NEWEST and "0.31.0 is not a release" in found["note"]
    monkeypatch.setenv("PATH", str(tmp_path / "bin"), prepend=":")
    assert cli("estimate-memory", config, "--gpu", "H200", "--json").json()["vllm"]["version"] == "0.31.0"
    given = cli("estimate-memory", config, "--gpu", "H200", "--vllm-version", "0.26.0", "--json").json()["vllm"]
    assert (given["version"], given["from"], given["note"], given["gpu_memory_utilization"]) == \
        ("0.26.0", "--vllm-version", None, 0.92)


@pytest.mark.parametrize("utilization", [None, "0.5"])
def test_the_budget_says_whose_default_it_used(cli, utilization):
    config = str(LOGS.parent / "model-configs" / "meta-llama__Llama-3.1-8B-Instruct.json")
    extra = ["--gpu-memory-utilization", utilization] if utilization else []
    doc = cli("estimate-memory", config, "--gpu", "H200", "--vllm-version", "0.26.0", *extra, "--json").json()
    line = next(line for line in doc["budget"] if line["item"].startswith("× utilization"))
    assert line["item"] == f"× utilization {utilization or 0.92}"
    assert ("0.26.0's default" in line["how"]) is (utilization is None)


def test_kernels_are_read_whether_vllm_says_using_or_selected():
    from pathlib import Path

    from llmprod.vllm import read_startup

    data = Path(__file__).parent / "data" / "vllm-0.26.0"
    assert read_startup(data / "llama-3.1-8b-gptq-w4a16-4k.log").figures()["kernels"] == [
        "MacheteLinearKernel for CompressedTensorsWNA16"]
    assert read_startup(data / "llama-3.1-8b-w8a8-fp8-4k.log").figures()["kernels"] == [
        "CutlassFP8ScaledMMLinearKernel for CompressedTensorsW8A8Fp8"]
