"""`llmprod perplexity`: the published method, checked against plain loops, and its CI gate."""

from __future__ import annotations

import json
import math

import pytest

from llmprod.evaluate.perplexity import Window, compute_perplexity, plan_windows, tokenize_once
from llmprod.evaluate.reference import reference_perplexity
from llmprod.errors import InputError


def test_non_overlapping_windows_drop_the_remainder():
    plan = plan_windows(10, 4)
    assert plan.windows == (Window(0, 4, 1), Window(4, 8, 5))
    assert plan.dropped == 2 and plan.scored == 6


def test_sliding_windows_score_only_new_tokens():
    plan = plan_windows(11, 4, stride=2)
    assert [(w.begin, w.end, w.score_from) for w in plan.windows] == [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
    assert plan.scored == 3 + 2 + 2 + 2 and plan.dropped == 1


@pytest.mark.parametrize("seq_len,stride", [(1, None), (8, 0), (8, 9)])
def test_impossible_windows_are_refused(seq_len, stride):
    with pytest.raises(InputError):
        plan_windows(100, seq_len, stride)


@pytest.fixture(scope="module")
def trained(trained_model_dir, eval_text_file):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trained_model_dir)
    model = AutoModelForCausalLM.from_pretrained(trained_model_dir, dtype="float32").eval()
    ids, _ = tokenize_once(tok, eval_text_file.read_text())
    return model, ids


@pytest.mark.slow
@pytest.mark.parametrize("batch_size,chunk", [(1, None), (3, 7)])
def test_agrees_with_the_plain_reference_loop(trained, batch_size, chunk):
    model, ids = trained
    plan = plan_windows(len(ids), 256)
    nll, _ = compute_perplexity(model, ids, plan, batch_size=batch_size, chunk_tokens=chunk)
    ours = math.exp(nll / plan.scored)
    ref = reference_perplexity(model, ids, 256)
    assert abs(ours - ref) / ref < 1e-4
    assert ours < 100  # the trained model, far below uniform (1024)


@pytest.mark.slow
def test_sliding_window_agrees_with_masked_labels(trained):
    import torch

    model, ids = trained
    seq_len, stride = 256, 64
    plan = plan_windows(len(ids), seq_len, stride)
    nll, _ = compute_perplexity(model, ids, plan, batch_size=2)
    # Independent formulation: the model's own loss with unscored labels set to -100 (the
    # transformers documentation's recipe for fixed-length models), weighted by the scored count.
    total, count = 0.0, 0
    with torch.inference_mode():
        for w in plan.windows:
            x = torch.tensor(ids[w.begin:w.end]).unsqueeze(0)
            labels = x.clone()
            labels[0, : w.score_from - w.begin] = -100
            loss = model(input_ids=x, labels=labels).loss
            total += float(loss) * w.scored
            count += w.scored
    assert count == plan.scored
    assert abs(nll / plan.scored - total / count) < 1e-4 * (total / count)


@pytest.mark.slow
def test_cli_reports_windows_remainder_and_bytes(cli, trained_model_dir, eval_text_file, trained):
    _, ids = trained
    result = cli("perplexity", trained_model_dir, "--dataset", eval_text_file, "--seq-len", 512, "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["windows"] == len(ids) // 512
    assert doc["tokens_dropped"] == len(ids) - doc["windows"] * 512
    assert doc["tokens"] == doc["windows"] * 511
    assert doc["seconds"] > 0 and doc["tokens_per_s"] > 0
    assert 0 < doc["bits_per_byte"] < 8
    assert math.isclose(doc["perplexity"], math.exp(doc["mean_nll"]))
    assert doc["batch_size"] == 1  # auto on a CPU: batching gains nothing there


def test_auto_batch_fills_a_pass_within_free_memory():
    from llmprod.evaluate.perplexity import batch_for

    gib = 1 << 30
    per_token = 2 * (4 * 2048 + 3 * 8192)  # a 1B Llama in bfloat16
    assert batch_for(2048, 100, 100 * gib, per_token, 2048) == 4  # 8,192 tokens a pass
    assert batch_for(512, 100, 100 * gib, per_token, 2048) == 16
    assert batch_for(2048, 2, 100 * gib, per_token, 2048) == 2  # never more windows than there are
    # Little free memory: only as many windows as half of it holds, and never fewer than one.
    assert batch_for(2048, 100, 2 * 2048 * per_token * 2, per_token, 2048) == 2
    assert batch_for(2048, 100, 1 << 20, per_token, 2048) == 1
    assert batch_for(16384, 100, 100 * gib, per_token, 2048) == 1


def test_auto_batch_gives_wider_models_fewer_windows_a_pass():
    """An 8B model's pass fills the GPU's matmuls on its own: half the tokens of a 1B's, a 70B's one window."""
    from llmprod.evaluate.perplexity import batch_for

    gib = 1 << 30
    assert batch_for(2048, 100, 100 * gib, 2 * (4 * 4096 + 3 * 14336), 4096) == 2
    assert batch_for(2048, 100, 100 * gib, 2 * (4 * 8192 + 3 * 28672), 8192) == 1
    assert batch_for(512, 100, 100 * gib, 2 * (4 * 8192 + 3 * 28672), 8192) == 4


@pytest.mark.slow
def test_max_tokens_caps_the_text(cli, trained_model_dir, eval_text_file):
    result = cli("perplexity", trained_model_dir, "--dataset", eval_text_file, "--seq-len", 256, "--max-tokens", 1000,
                 "--json")
    doc = result.json()
    assert doc["total_tokens"] == 1000 and doc["windows"] == 3 and doc["tokens_dropped"] == 232
    # 23% of the text not scored: said, with what to do about it
    assert "warning: 232 of the 1,000 tokens" in result.stderr and "a smaller --seq-len" in result.stderr


@pytest.mark.slow
def test_gate_passes_within_the_limit(cli, trained_model_dir, eval_text_file):
    result = cli("perplexity", trained_model_dir, "--baseline", trained_model_dir, "--dataset", eval_text_file,
                 "--seq-len", 512, "--max-increase", "0.01", "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["increase"] == 0 and doc["passed"] is True
    assert doc["baseline"]["perplexity"] == doc["perplexity"]


@pytest.mark.slow
def test_gate_fails_ci_past_the_limit(cli, tiny_model_dir, trained_model_dir, eval_text_file):
    # Random weights against the trained model: perplexity ~1000 against ~35.
    result = cli("perplexity", tiny_model_dir, "--baseline", trained_model_dir, "--dataset", eval_text_file,
                 "--seq-len", 512, "--max-increase", "0.05", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["passed"] is False and doc["increase"] > 10
    assert "FAIL" in result.stderr and "vs baseline" in result.stderr

    human = cli("perplexity", tiny_model_dir, "--baseline", trained_model_dir, "--dataset", eval_text_file,
                "--seq-len", 512, "--max-increase", "0.05")
    assert human.exit_code == 1
    assert "FAIL" in human.stdout and "baseline" in human.stdout


def _bad(cli, *args):
    result = cli("perplexity", *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.strip().count("\n") == 0, result.stderr
    return result.stderr


def test_missing_text_file(cli, tiny_model_dir, tmp_path):
    assert "no such file" in _bad(cli, tiny_model_dir, "--dataset", tmp_path / "nope.txt")


def test_empty_text(cli, tiny_model_dir, tmp_path):
    (tmp_path / "empty.txt").write_text("  \n\n")
    assert "no text" in _bad(cli, tiny_model_dir, "--dataset", tmp_path / "empty.txt")


def test_bad_jsonl_names_the_line(cli, tiny_model_dir, tmp_path):
    (tmp_path / "t.jsonl").write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    assert "t.jsonl line 2" in _bad(cli, tiny_model_dir, "--dataset", tmp_path / "t.jsonl")


def test_seq_len_longer_than_the_model_context(cli, tiny_model_dir, eval_text_file):
    err = _bad(cli, tiny_model_dir, "--dataset", eval_text_file, "--seq-len", 4096)
    assert "context of 2048" in err and "--seq-len 2048 or less" in err


def test_text_shorter_than_one_window(cli, tiny_model_dir, tmp_path):
    (tmp_path / "short.txt").write_text("just a few words")
    assert "fewer than one window" in _bad(cli, tiny_model_dir, "--dataset", tmp_path / "short.txt")


def test_named_dataset_while_offline_suggests_a_local_file(cli, tiny_model_dir):
    err = _bad(cli, tiny_model_dir, "--dataset", "wikitext2")
    assert "offline" in err and "local .txt, .jsonl or .md file" in err


def test_missing_model(cli, tmp_path, eval_text_file):
    assert "not found" in _bad(cli, tmp_path / "no-model", "--dataset", eval_text_file)


@pytest.mark.parametrize("value,message", [("many", "is not a number"), ("0", "must be at least 1")])
def test_bad_batch_size(cli, tiny_model_dir, eval_text_file, value, message):
    assert message in _bad(cli, tiny_model_dir, "--dataset", eval_text_file, "--batch-size", value)


def test_gate_needs_a_baseline(cli, tiny_model_dir, eval_text_file):
    assert "--max-increase needs --baseline" in _bad(cli, tiny_model_dir, "--dataset", eval_text_file,
                                                     "--max-increase", "0.05")
