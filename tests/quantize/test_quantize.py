"""`llmprod quantize` on the trained tiny model: real llm-compressor and AutoAWQ runs on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from llmprod.quantize.calibration import load_calibration

# 4-bit group-128 quantization costs published 7B models a few percent of perplexity (Llama-2-7B on
# wikitext-2: 5.47 -> 5.60 with AWQ, +2.4%). A 1M-parameter model has less redundancy, so allow 10%;
# a broken quantizer (wrong packing order, wrong scales, lost zero points) costs hundreds of percent.
MAX_INCREASE = 0.10

CALIBRATION = ["--num-samples", "16", "--seq-len", "256"]  # with --dataset, for the schemes that read data
VARIANTS = {
    "gptq": ["--method", "gptq"],
    "awq": ["--method", "awq"],
    "awq-gemm": ["--method", "awq", "--format", "awq"],
    "gptq-w8": ["--recipe", "gptq-w8a16"],
    # Hopper's schemes. FP8 and NVFP4 round the weights without data; INT8 W8A8 is SmoothQuant + GPTQ.
    "w8a8-fp8": ["--scheme", "w8a8-fp8"],
    "fp8-block": ["--recipe", "fp8-block"],
    "nvfp4a16": ["--scheme", "nvfp4a16"],
    "w8a8-int8": ["--scheme", "w8a8-int8"],
    "gptq-kv-fp8": ["--method", "gptq", "--kv-cache-scheme", "fp8"],
}
DATA_FREE = {"w8a8-fp8", "fp8-block", "nvfp4a16"}


@pytest.fixture(scope="session")
def calibration_file(tmp_path_factory):
    from llmprod.tinymodel import corpus_split

    path = tmp_path_factory.mktemp("calib") / "calibration.txt"
    path.write_text(corpus_split()[0][:200_000])
    return path


@pytest.fixture(scope="module", params=list(VARIANTS))
def quantized(request, trained_model_dir, calibration_file, tmp_path_factory):
    from typer.testing import CliRunner

    from llmprod.cli.app import app

    out = tmp_path_factory.mktemp(request.param) / "model"
    data = [] if request.param in DATA_FREE else ["--dataset", str(calibration_file), *CALIBRATION]
    args = ["quantize", str(trained_model_dir), *VARIANTS[request.param], "--output", str(out), *data, "--json"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return request.param, out, json.loads(result.stdout)


@pytest.mark.slow
def test_checkpoint_is_complete_and_says_how_it_was_made(quantized):
    name, out, doc = quantized
    for key in ("output", "method", "format", "bits", "group_size", "size_bytes_before", "size_bytes_after",
                "seconds"):
        assert key in doc, key
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "tokenizer.json", "generation_config.json", "recipe.yaml", "llmprod.json",
            "README.md"} <= files
    assert any(f.endswith(".safetensors") for f in files)
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no temporary left beside it
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    manifest = json.loads((out / "llmprod.json").read_text())
    weights = qc.get("config_groups", {}).get("group_0", {}).get("weights", {})
    acts = qc.get("config_groups", {}).get("group_0", {}).get("input_activations") or {}
    if doc["format"] == "awq":
        assert (qc["quant_method"], qc["bits"], qc["group_size"], qc["version"]) == ("awq", 4, 128, "gemm")
    elif doc["scheme"] in ("w4a16", "w8a16"):
        assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
        assert (weights["num_bits"], weights["group_size"]) == (doc["bits"], 128)
        assert weights["symmetric"] is (doc["method"] == "gptq")
    elif doc["scheme"] == "w8a8-int8":  # what vLLM's INT8 W8A8 kernels load
        assert (weights["type"], weights["num_bits"], weights["strategy"]) == ("int", 8, "channel")
        assert (acts["type"], acts["num_bits"], acts["dynamic"], acts["strategy"]) == ("int", 8, True, "token")
        assert doc["smoothquant"] == 0.8 and "SmoothQuantModifier" in (out / "recipe.yaml").read_text()
    elif doc["scheme"] == "nvfp4a16":
        assert (weights["type"], weights["num_bits"], weights["group_size"], acts) == ("float", 4, 16, {})
    else:  # FP8: per channel, or 128x128 blocks; activations dynamic
        assert (weights["type"], weights["num_bits"], acts["type"], acts["dynamic"]) == ("float", 8, "float", True)
        assert weights["strategy"] == ("block" if doc["scheme"] == "fp8-block" else "channel")
    if doc["format"] != "awq":
        assert qc["quant_method"] == "compressed-tensors" and qc["ignore"] == ["lm_head"]
        assert set(doc["phases_seconds"]) == {"load", "oneshot", "save"} and doc["ranks"] is None
    if name == "gptq-kv-fp8":  # calibrated scales vLLM reads with --kv-cache-dtype fp8
        assert qc["kv_cache_scheme"]["type"] == "float" and qc["kv_cache_scheme"]["num_bits"] == 8
        from llmprod.memory.weights import safetensors_tensors

        scales = [k for k in safetensors_tensors(out) if k.endswith((".k_scale", ".v_scale"))]
        assert len(scales) == 2 * 4  # keys and values of each of the 4 layers
    if name in DATA_FREE:  # round to nearest: nothing read, and the run says so
        assert doc["calibration_read"] is False and manifest["calibration"] is None
        assert "no calibration data" in (out / "README.md").read_text().lower() or \
            "none: the weights were rounded" in (out / "README.md").read_text()
    else:
        assert manifest["calibration"]["samples"] == 16 and len(manifest["calibration"]["fingerprint"]) == 16
    assert manifest["library_versions"]["transformers"]
    assert manifest["reload_check"]["finite_logits"] is True
    # The tiny model is float32 and its 1,024 x 128 embeddings and head are a third of it and stay 32-bit.
    assert doc["size_bytes_after"] < doc["size_bytes_before"] * (0.5 if doc["bits"] == 4 else 0.6)
    card = (out / "README.md").read_text()
    assert "vllm serve" in card
    if doc["format"] != "awq":  # the card names the format config.json declares, and its Hopper kernel
        assert f"compressed-tensors ({qc['format']})" in card
        assert ("CUTLASS FP8" in card) == (doc["scheme"] == "w8a8-fp8")
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir() if p.is_file()} == \
        {p.name: "0o644" for p in out.iterdir() if p.is_file()}  # every file readable by the serving user


@pytest.mark.slow
def test_quality_stays_within_the_bound(cli, quantized, trained_model_dir, eval_text_file):
    # Also the perplexity command's check on quantized checkpoints of both formats.
    _, out, _ = quantized
    result = cli("perplexity", out, "--baseline", trained_model_dir, "--dataset", eval_text_file,
                 "--seq-len", 512, "--max-increase", MAX_INCREASE, "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = result.json()
    assert doc["perplexity"] < 100 and -0.02 < doc["increase"] <= MAX_INCREASE


@pytest.mark.slow
def test_overwrite_replaces_an_existing_output(cli, trained_model_dir, calibration_file, tmp_path):
    out = tmp_path / "q"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    result = cli("quantize", trained_model_dir, "--method", "gptq", "--output", out, "--dataset", calibration_file,
                 "--num-samples", 4, "--seq-len", 128, "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert not (out / "stale.txt").exists() and (out / "llmprod.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["q"]


@pytest.mark.slow
def test_interrupted_run_leaves_nothing_behind(trained_model_dir, calibration_file, tmp_path):
    out = tmp_path / "q"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmprod", "quantize", str(trained_model_dir), "--method", "awq", "--format", "awq",
         "--output", str(out), "--dataset", str(calibration_file), "--num-samples", "128", "--seq-len", "512"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"},
        # A background shell starts us with SIGINT ignored, which children inherit: restore the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".q.llmprod-tmp-") for p in tmp_path.iterdir()):  # writing has begun
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert list(tmp_path.iterdir()) == []


def test_calibration_is_deterministic_by_seed(tiny_model_dir, calibration_file):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    a = load_calibration(str(calibration_file), tok, 8, 128, seed=0)
    b = load_calibration(str(calibration_file), tok, 8, 128, seed=0)
    c = load_calibration(str(calibration_file), tok, 8, 128, seed=1)
    assert a == b and a.fingerprint != c.fingerprint
    assert all(len(s) == 128 and s[0] == tok.bos_token_id for s in a.samples)


def test_chat_messages_are_rendered_with_the_chat_template(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [{"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": "answer"}]}
            for i in range(5)]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    calib = load_calibration(str(path), tok, 3, 64, seed=0)
    text = tok.decode(calib.samples[0])
    assert len(calib.samples) == 3
    assert text.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>") and "<|eot_id|>" in text


@pytest.mark.slow
def test_the_gate_fails_a_checkpoint_with_broken_scales(cli, trained_model_dir, eval_text_file, tmp_path):
    """The gate MAX_INCREASE lets every scheme above through; scales off by 4x (a wrong layout or dtype would
    do the like) must not get through it."""
    import torch
    from safetensors.torch import load_file, save_file

    out = tmp_path / "fp8"
    assert cli("quantize", trained_model_dir, "--scheme", "w8a8-fp8", "--output", out).exit_code == 0
    weights = out / "model.safetensors"
    state = load_file(weights)
    broken = {k: (v * 4 if k.endswith(".weight_scale") and "mlp" in k else v) for k, v in state.items()}
    assert any(not torch.equal(broken[k], state[k]) for k in state)
    save_file(broken, weights, metadata={"format": "pt"})
    result = cli("perplexity", out, "--baseline", trained_model_dir, "--dataset", eval_text_file,
                 "--seq-len", 512, "--max-increase", MAX_INCREASE, "--json")
    assert result.exit_code == 1, result.stdout + result.stderr
    assert result.json()["increase"] > MAX_INCREASE
