"""`llmprod quantize --dry-run`: the plan from config.json alone, checked against measured H200 runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LLAMA_8B = ROOT / "tests/data/model-configs/meta-llama__Llama-3.1-8B-Instruct.json"
LLAMA_70B = ROOT / "tests/data/model-configs/meta-llama__Llama-3.1-70B-Instruct.json"
RESULTS = ROOT / "benchmarks/results"


def _plan(cli, tmp_path, *args):
    result = cli("quantize", *args, "--output", tmp_path / "q", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
    return result.json()


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_memory_plan_matches_the_measured_8b_runs(cli, tmp_path, method):
    measured = json.loads((RESULTS / f"quantize-8b-{method}-h200.json").read_text())
    run = next(iter(measured["results"].values()))["runs"]["first"][0]
    cal = measured["calibration"]
    plan = _plan(cli, tmp_path, LLAMA_8B, "--method", method, "--num-samples", cal["samples"],
                 "--seq-len", cal["seq_len"])
    assert plan["calibration"]["tokens"] == cal["tokens"]
    assert plan["memory"]["host_bytes"] == pytest.approx(run["peak_rss_bytes"], rel=0.10)
    # AWQ's cached activations are the roughest term: an upper bound within 40%.
    assert plan["memory"]["gpu_bytes"] == pytest.approx(run["peak_gpu_bytes"], rel=0.10 if method == "gptq" else 0.4)
    assert plan["time"]["seconds_on_h200"] == pytest.approx(run["seconds"], rel=0.25)


def test_plan_of_a_70b_model_without_its_weights(cli, tmp_path):
    plan = _plan(cli, tmp_path, LLAMA_70B, "--scheme", "w8a8-fp8")
    assert plan["calibration"] is None and plan["modifiers"] == ["QuantizationModifier"]
    assert plan["parameters"] == pytest.approx(70.55e9, rel=0.01)
    assert plan["size_bytes_after"] == pytest.approx(plan["size_bytes_before"] * 0.52, rel=0.03)  # FP8 + 16-bit embeddings
    assert plan["memory"]["host_bytes"] > 140e9  # the bf16 weights alone; the note says what spills to disk
    assert plan["memory"]["gpu_bytes"] < 10e9  # one layer at a time
