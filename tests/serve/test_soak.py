"""The soak with chaos (benchmarks/soak.py) for one minute: a mixed load through `llmprod serve` with its
engine killed twice; every request completes or gets an error in OpenAI's shape."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_minute_of_mixed_load_and_engine_kills_loses_nothing():
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    result = soak.run(minutes=1.0, streams=32, kill_every=20.0, seed=1)
    assert result["silently_lost"] == 0, result["lost_examples"]
    assert result["engine_kills"] == 2 and result["outcomes"].get("error 503", 0) > 0  # the restarts were seen
    assert result["outcomes"]["completed"] > 1000 and result["outcomes"]["error 429"] > 0  # the capped key
    assert result["metrics_match_clients"], (result["statuses_seen_by_clients"],
                                             result["llmprod_requests_total_by_status"])
    assert result["serve_exit_code"] == 0 and result["engine_processes_left"] == 0
    assert result["gateway_open_fds"]["growth"] <= 0.1 and result["gateway_rss_bytes"]["growth"] <= 0.05
