"""`perplexity --upstream` / `--engine vllm`: the same windows scored from prompt logprobs. vLLM cannot run
here: a fake engine answers prompt_logprobs from the real tiny model in float32, so the served path must
give the transformers path's perplexity, and what it sends, parses and refuses is checked."""

from __future__ import annotations

import stat
import sys

import httpx
import pytest

from llmprod.evaluate.perplexity import Window
from llmprod.evaluate.served import answer_nll, window_request
from llmprod.errors import OperationFailed
from llmprod.testing.fake_engine import make_app
from llmprod.testing.servers import ThreadServer


@pytest.fixture(scope="module")
def scoring_engine(trained_model_dir):
    server = ThreadServer(make_app(model=str(trained_model_dir), logprobs_model=str(trained_model_dir))).start()
    yield server
    server.stop()


def test_the_served_path_agrees_with_the_transformers_path(cli, scoring_engine, trained_model_dir, eval_text_file):
    common = ["--dataset", eval_text_file, "--seq-len", 256, "--max-tokens", 2048, "--json"]
    local = cli("perplexity", trained_model_dir, *common).json()
    served = cli("perplexity", trained_model_dir, "--upstream", f"{scoring_engine.url}/v1", "--concurrency", 3,
                 *common).json()
    assert (served["tokens"], served["windows"]) == (local["tokens"], local["windows"]) == (2040, 8)
    assert served["perplexity"] == pytest.approx(local["perplexity"], rel=1e-5)
    assert served["engine"].endswith("(--upstream)") and served["device"] == "served"
    body = httpx.get(f"{scoring_engine.url}/stats").json()["last_body"]
    assert body["max_tokens"] == 1 and body["prompt_logprobs"] == 0 and len(body["prompt"]) == 256
    assert all(isinstance(t, int) for t in body["prompt"])  # token ids: the server never retokenizes


def test_sliding_windows_score_only_what_they_add(cli, scoring_engine, trained_model_dir, eval_text_file):
    common = ["--dataset", eval_text_file, "--seq-len", 128, "--stride", 64, "--max-tokens", 1024, "--json"]
    local = cli("perplexity", trained_model_dir, *common).json()
    served = cli("perplexity", trained_model_dir, "--upstream", scoring_engine.url, *common).json()
    assert served["tokens"] == local["tokens"] and served["perplexity"] == pytest.approx(local["perplexity"], rel=1e-5)


def test_a_gate_across_two_served_models(cli, scoring_engine, trained_model_dir, eval_text_file):
    result = cli("perplexity", trained_model_dir, "--upstream", scoring_engine.url, "--baseline", trained_model_dir,
                 "--baseline-upstream", scoring_engine.url, "--dataset", eval_text_file, "--seq-len", 128,
                 "--max-tokens", 512, "--max-increase", 0.01, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["increase"] == pytest.approx(0, abs=1e-9)


def test_a_server_without_prompt_logprobs_is_a_clear_failure(cli, trained_model_dir, eval_text_file):
    plain = ThreadServer(make_app(model=str(trained_model_dir))).start()
    try:
        result = cli("perplexity", trained_model_dir, "--upstream", plain.url, "--dataset", eval_text_file,
                     "--seq-len", 128, "--max-tokens", 256)
    finally:
        plain.stop()
    assert result.exit_code == 1
    assert "came back without prompt logprobs" in result.stderr and "prompt_logprobs" in result.stderr


def test_parsing_prompt_logprobs():
    ids = [5, 6, 7, 8]
    window = Window(0, 4, 1)
    answer = {"choices": [{"prompt_logprobs": [None, {"6": {"logprob": -1.0}}, {"7": {"logprob": -2.0, "rank": 3},
                                                                                "9": {"logprob": -0.1}},
                                               {"8": -0.5}]}]}
    assert answer_nll(answer, ids, window, 0) == pytest.approx(3.5)
    assert answer_nll(answer, ids, Window(0, 4, 3), 0) == pytest.approx(0.5)  # only the positions it adds
    missing = {"choices": [{"prompt_logprobs": [None, {"6": {"logprob": -1.0}}, {"9": {"logprob": -0.1}}, None]}]}
    with pytest.raises(OperationFailed, match="position 2: no logprob for the prompt's token 7"):
        answer_nll(missing, ids, window, 0)
    assert window_request("m", ids) == {"model": "m", "prompt": ids, "max_tokens": 1, "temperature": 0.0,
                                        "prompt_logprobs": 0}


def test_engine_vllm_launches_scores_and_stops(cli, trained_model_dir, eval_text_file, tmp_path):
    script = tmp_path / "vllm"
    args_file = tmp_path / "argv.txt"
    script.write_text(f"#!/bin/sh\necho \"$@\" > {args_file}\n"
                      f"exec {sys.executable} -m llmprod.testing.fake_engine \"$@\" --logprobs-model {trained_model_dir}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    result = cli("perplexity", trained_model_dir, "--engine", "vllm", "--vllm-bin", script, "--tensor-parallel-size", 1,
                 "--dataset", eval_text_file, "--seq-len", 128, "--max-tokens", 512, "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["engine"].startswith("vllm") and doc["windows"] == 4
    argv = args_file.read_text().split()
    assert argv[:2] == ["serve", str(trained_model_dir)] and "--max-model-len" in argv
    # A window of --seq-len tokens plus the one token vLLM must generate: the fake refuses longer, as vLLM does.
    assert argv[argv.index("--max-model-len") + 1] == "129" and argv[argv.index("--tensor-parallel-size") + 1] == "1"
    from pathlib import Path

    assert not any("fake_engine" in (p / "cmdline").read_bytes().decode(errors="replace")
                   for p in Path("/proc").iterdir() if p.name.isdigit() and (p / "cmdline").exists()
                   and "--logprobs-model" in (p / "cmdline").read_bytes().decode(errors="replace"))


@pytest.mark.parametrize("args,message", [
    (["--engine", "vllm", "--upstream", "http://127.0.0.1:9"], "--engine vllm launches vLLM"),
    (["--upstream", "http://127.0.0.1:9", "--baseline", "x"], "--baseline-upstream"),
    (["--baseline-upstream", "http://127.0.0.1:9"], "goes with --upstream"),
    (["--tensor-parallel-size", "2"], "apply to --engine vllm"),
    (["--engine", "vllm", "--vllm-bin", "/nonexistent/vllm"], "not an executable"),
    (["--engine", "onnx"], "unknown --engine"),
])
def test_bad_engine_options(cli, trained_model_dir, eval_text_file, args, message):
    result = cli("perplexity", trained_model_dir, "--dataset", eval_text_file, *args)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert message in " ".join(result.stderr.split())
