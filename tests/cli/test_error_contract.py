"""One error contract for every failure, the parser's own included: exit 2, one line on stderr
("error: ... (how to fix)"), and under --json exactly one {"error": {...}} document on stdout."""

from __future__ import annotations

import json

import pytest

CFG = "tests/data/model-configs/meta-llama__Llama-3.1-8B-Instruct.json"

# (command words, bad arguments): a bad value for each kind of option each command takes.
CASES = [
    (["quantize", "m", "--output", "o"], ["--num-samples", "many"]),           # an integer
    (["quantize", "m", "--output", "o"], ["--scheme", "w3a9"]),                # a choice
    (["quantize", "m", "--output", "o"], ["--no-such-flag"]),                  # an unknown option
    (["quantize"], []),                                                       # a missing argument
    (["perplexity", "m"], ["--max-increase", "five"]),                          # a number
    (["perplexity", "m"], ["--device", "tpu"]),                                # a choice
    (["perplexity", "m"], ["--tensor-parallel-size", "0"]),                    # below its minimum
    (["perplexity", "m"], ["--gpu-memory-utilization", "1.5"]),                # outside its range
    (["estimate-memory", CFG, "--gpu", "H100"], ["--batch", "two"]),
    (["estimate-memory", CFG, "--gpu", "H100"], ["--max-model-len", "8kb"]),   # a token count
    (["estimate-memory", CFG, "--gpu", "H100"], ["--kv-cache-dtype", "fp3"]),
    (["estimate-memory", CFG], ["--gpu-memory", "80"]),                        # a size without its unit
    (["serve", "m"], ["--port", "70000"]),                                     # a port
    (["serve", "m"], ["--engine", "tgi"]),
    (["serve", "m"], ["--max-body-size", "4"]),
    (["serve", "m"], ["--request-timeout", "soon"]),
    (["guardrails", "scan", "f.txt"], ["--stage", "middle"]),
    (["bench", "http://127.0.0.1:9"], ["--concurrency", "1,x"]),
    (["bench", "http://127.0.0.1:9"], ["--endpoint", "embeddings"]),
    (["tiny-model", "out"], ["--steps", "zero"]),
    (["no-such-command"], []),
]


@pytest.mark.parametrize("words, bad", CASES, ids=[" ".join(w[:1] + b) or w[0] for w, b in CASES])
@pytest.mark.parametrize("json_mode", [False, True], ids=["human", "json"])
def test_every_bad_value_is_one_line_exit_2_and_one_json_document(cli, words, bad, json_mode):
    result = cli(*words, *bad, *(["--json"] if json_mode else []))
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert lines[0].endswith(")"), "the line ends with how to fix it, in parentheses"
    assert "╭" not in result.stderr and "Traceback" not in result.stderr
    if json_mode:
        doc = json.loads(result.stdout)
        assert doc["error"]["exit_code"] == 2 and doc["error"]["message"] == lines[0].removeprefix("error: ")
    else:
        assert result.stdout == ""


def test_the_parsers_words_become_ours(cli):
    result = cli("estimate-memory", CFG, "--batch", "two")
    assert result.stderr.strip() == ("error: Invalid value for '--batch': expected a whole number; got 'two' "
                                     "(see 'llmprod estimate-memory --help')")


@pytest.mark.parametrize("args", [["--max-model-len", "8k"], ["--max-model-len", "8K"], ["--context", "8192"],
                                  ["-tp", "2"], ["--tp", "2"], ["--tensor-parallel-size", "2"],
                                  ["--pipeline-parallel-size", "2"], ["-pp", "2"], ["--kv-cache-dtype", "FP8"],
                                  ["--kv-cache-dtype", "bf16"], ["--gpu-memory-utilization", "0.9"]])
def test_vllms_spellings_and_our_short_ones_are_accepted(cli, args):
    result = cli("estimate-memory", CFG, "--gpu", "H200", *args, "--json")
    assert result.exit_code == 0, result.stderr


def test_choices_are_case_insensitive(cli):
    assert "not found" in cli("quantize", "no-such-dir-x", "--scheme", "W8A8-FP8", "--output", "o").stderr
    assert "not found" in cli("serve", "no-such-dir-x", "--engine", "Transformers").stderr
