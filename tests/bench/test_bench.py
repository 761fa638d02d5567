"""`llmprod bench` against servers whose timing is known, and against ones that cannot be benched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

TTFT, ITL, TOKENS = 0.2, 0.025, 20
E2E = TTFT + (TOKENS - 1) * ITL


def within(value: float, expected: float, tolerance: float = 0.05) -> bool:
    return abs(value - expected) <= tolerance * expected


@pytest.mark.parametrize("concurrency,requests", [(1, 6), (16, 32)])
def test_measurements_match_the_known_timing(cli, timed_server, concurrency, requests):
    url = timed_server("--ttft", str(TTFT), "--itl", str(ITL), "--tokens", str(TOKENS))
    result = cli("bench", url, "--model", "timed", "--concurrency", concurrency, "--requests", requests,
                 "--output-tokens", TOKENS, "--input-tokens", 32, "--json")
    assert result.exit_code == 0, result.stderr
    (level,) = result.json()["levels"]
    assert level["concurrency"] == concurrency and level["requests"] == requests and level["errors"] == 0
    assert level["usage_reported"] and level["output_tokens"] == requests * TOKENS
    assert within(level["ttft_ms"]["p50"], TTFT * 1000), level["ttft_ms"]
    assert within(level["tpot_ms"]["p50"], ITL * 1000), level["tpot_ms"]
    assert within(level["itl_ms"]["p50"], ITL * 1000), level["itl_ms"]
    # Every stream busy all the time: concurrency × tokens per request every E2E seconds.
    assert within(level["output_tokens_per_s"], concurrency * TOKENS / E2E), level["output_tokens_per_s"]


def test_levels_plot_and_goodput(cli, timed_server, tmp_path):
    url = timed_server("--ttft", "0.05", "--itl", "0.005", "--tokens", "10")
    plot = tmp_path / "bench.png"
    result = cli("bench", url + "/v1", "--model", "timed", "--concurrency", "1,4", "--requests", 8,
                 "--endpoint", "completions", "--plot", plot, "--goodput", "ttft:1000,tpot:1000", "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert [lv["concurrency"] for lv in doc["levels"]] == [1, 4]
    for lv in doc["levels"]:
        for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
            assert set(lv[key]) >= {"p50", "p90", "p99"}
        assert lv["goodput_fraction"] == 1.0 and lv["requests_per_s"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    strict = cli("bench", url, "--model", "timed", "--concurrency", "2", "--requests", 4, "--goodput", "ttft:1",
                 "--json").json()
    assert strict["levels"][0]["goodput_fraction"] == 0.0


def test_servers_without_usage_are_counted_by_chunks(cli, timed_server):
    url = timed_server("--no-usage", "--ttft", "0.01", "--itl", "0.002", "--tokens", "7")
    doc = cli("bench", url, "--model", "timed", "--concurrency", "2", "--requests", 4, "--json").json()
    assert doc["levels"][0]["output_tokens"] == 4 * 7 and doc["levels"][0]["usage_reported"] is False


def test_prompts_from_a_file(cli, timed_server, tmp_path):
    url = timed_server("--ttft", "0.01", "--itl", "0.002", "--tokens", "3")
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n" + json.dumps({"prompt": "x"}))
    doc = cli("bench", url, "--model", "timed", "--concurrency", "1", "--requests", 3, "--dataset", path,
              "--json").json()
    assert doc["levels"][0]["requests"] == 3


def _refused_before_any_load(cli, url, *args) -> str:
    result = cli("bench", url, "--model", "timed", "--concurrency", "1", "--requests", 2, *args)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error:")
    return result.stderr


def test_unreachable_wrong_key_not_openai(cli, timed_server, unused_port):
    assert "cannot reach" in _refused_before_any_load(cli, f"http://127.0.0.1:{unused_port}")
    keyed = timed_server("--api-key", "right")
    assert "refused the API key" in _refused_before_any_load(cli, keyed, "--api-key", "wrong")
    assert "refused the API key" in _refused_before_any_load(cli, keyed)
    assert httpx.get(f"{keyed}/stats").json()["generations"] == 0  # no load was sent
    html = timed_server("--not-openai")
    assert "OpenAI-compatible" in _refused_before_any_load(cli, html)



def test_a_model_the_server_does_not_list_is_a_warning_then_its_errors(cli, timed_server):
    url = timed_server("--model", "served-name")
    result = cli("bench", url, "--model", "other", "--concurrency", "1", "--requests", 2, "--json")
    # This server still answers (it ignores the name); a vLLM would 404 and the run would exit 1.
    assert result.exit_code == 0 and "not in the server's model list" in result.stderr


@pytest.mark.parametrize("args,message", [(["--concurrency", "1,x"], "positive integers"),
                                          (["--goodput", "latency:5"], "ttft:MS,tpot:MS"),
                                          (["--plot", "out.jpg"], ".png"), (["--requests", "0"], "at least 1")])
def test_bad_options(cli, args, message):
    result = cli("bench", "http://127.0.0.1:9", "--model", "m", *args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def default_sigint() -> None:
    # A shell that starts this suite in the background sets SIGINT to "ignore", and children inherit
    # it; Python then installs no KeyboardInterrupt handler. Ctrl-C behaviour needs the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_reports_what_was_measured(timed_server):
    url = timed_server("--ttft", "0.05", "--itl", "0.01", "--tokens", "5")
    proc = subprocess.Popen([sys.executable, "-m", "llmprod", "bench", url, "--model", "timed", "--concurrency", "2",
                             "--duration", "60", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NO_COLOR": "1"}, preexec_fn=default_sigint)
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/stats").json()["generations"] < 4:  # the probe and 3 measured: mid-level
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    doc = json.loads(stdout)
    assert doc["interrupted"] is True
    (level,) = doc["levels"]
    assert level["interrupted"] is True and level["requests"] > 0
