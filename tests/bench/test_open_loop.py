"""Open-loop load, SLO search and the server's own view, against the known-timing server with a capacity."""

from __future__ import annotations

import csv
import statistics

import pytest

from llmprod.bench.arrivals import arrival_times
from llmprod.bench.server_metrics import level_view, parse, quantile
from llmprod.errors import InputError


def within(value: float, expected: float, tolerance: float = 0.05) -> bool:
    return abs(value - expected) <= tolerance * expected


def test_arrivals_have_the_rate_shape_and_seed_asked_for():
    gaps = lambda ts: [b - a for a, b in zip(ts, ts[1:])]  # noqa: E731
    poisson = gaps(arrival_times(8.0, 20_000, "poisson", seed=1))
    assert within(statistics.mean(poisson), 1 / 8, 0.02)
    assert within(statistics.pstdev(poisson) / statistics.mean(poisson), 1.0, 0.05)  # exponential: CV 1
    bursty = gaps(arrival_times(8.0, 20_000, "gamma", burstiness=0.25, seed=1))
    assert within(statistics.mean(bursty), 1 / 8, 0.03)
    assert within(statistics.pstdev(bursty) / statistics.mean(bursty), 2.0, 0.08)  # CV 1/sqrt(0.25)
    assert arrival_times(4.0, 5, "constant") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert arrival_times(8.0, 50, seed=3) == arrival_times(8.0, 50, seed=3) != arrival_times(8.0, 50, seed=4)
    with pytest.raises(InputError):
        arrival_times(0.0, 5)


def test_histogram_quantiles_and_differences():
    text = ("# TYPE vllm:time_to_first_token_seconds histogram\n"
            'vllm:time_to_first_token_seconds_bucket{le="0.1"} 4\n'
            'vllm:time_to_first_token_seconds_bucket{le="0.2"} 8\n'
            'vllm:time_to_first_token_seconds_bucket{le="+Inf"} 8\n'
            "vllm:time_to_first_token_seconds_count 8\nvllm:time_to_first_token_seconds_sum 1.0\n")
    after = parse(text)
    assert quantile(0.5, after["vllm:time_to_first_token_seconds"]["buckets"]) == pytest.approx(0.1)
    assert quantile(0.75, after["vllm:time_to_first_token_seconds"]["buckets"]) == pytest.approx(0.15)
    view = level_view({}, after)
    assert view["ttft_ms"]["mean"] == pytest.approx(125.0) and view["ttft_ms"]["count"] == 8
    assert level_view(after, after) is None  # nothing happened in between


def test_under_capacity_open_loop_ttft_is_the_servers(cli, timed_server):
    url = timed_server("--ttft", "0.1", "--itl", "0.01", "--tokens", "10", "--capacity", "32")
    result = cli("bench", url, "--model", "timed", "--rate", "10", "--requests", 40, "--output-tokens", 10,
                 "--input-tokens", 16, "--seed", 7, "--json")
    assert result.exit_code == 0, result.stderr
    (level,) = result.json()["levels"]
    assert level["rate"] == 10 and level["concurrency"] is None and level["errors"] == 0
    assert within(level["ttft_ms"]["p50"], 100), level["ttft_ms"]
    assert within(level["tpot_ms"]["p50"], 10), level["tpot_ms"]
    # Achieved: the 40 requests over the span of their seeded arrivals plus the last one's 0.19 s.
    span = arrival_times(10, 40, "poisson", seed=7)[-1] + 0.19
    assert within(level["requests_per_s"], 40 / span), (level["requests_per_s"], 40 / span)
    server = level["server"]
    assert server["queue_ms"]["mean"] < 2 and within(server["ttft_ms"]["mean"], 100)
    assert server["ttft_ms"]["count"] == 40  # the uncounted warm-up request fell before the first scrape


def test_above_capacity_the_queue_is_what_the_server_reports(cli, timed_server):
    # 2 slots x 0.1 s a request = 20 requests/s at most; 30/s offered for 1.5 s builds a queue.
    url = timed_server("--ttft", "0.05", "--itl", "0.01", "--tokens", "6", "--capacity", "2")
    result = cli("bench", url, "--model", "timed", "--rate", "30", "--arrival", "constant", "--requests", 45,
                 "--output-tokens", 6, "--input-tokens", 16, "--json")
    assert result.exit_code == 0, result.stderr
    (level,) = result.json()["levels"]
    server = level["server"]
    client_ttft = level["ttft_ms"]["mean"]
    assert client_ttft > 200  # queueing, far above the 50 ms of service
    # The client's TTFT is the server's queue plus its 50 ms to a first token (and the network, ~1 ms).
    assert within(client_ttft - 50, server["queue_ms"]["mean"], 0.05), (client_ttft, server["queue_ms"])
    assert within(client_ttft, server["ttft_ms"]["mean"], 0.05)
    assert level["requests_per_s"] < 22  # achieved: the capacity, not the 30 offered


def test_a_capped_open_loop_reports_its_own_queue(cli, timed_server):
    url = timed_server("--ttft", "0.05", "--itl", "0.01", "--tokens", "6")
    doc = cli("bench", url, "--model", "timed", "--rate", "40", "--arrival", "constant", "--max-concurrency", 2,
              "--requests", 30, "--output-tokens", 6, "--no-server-metrics", "--json").json()
    (level,) = doc["levels"]
    assert level["concurrency"] == 2 and "server" not in level
    assert level["queue_ms"]["p99"] > 100 and within(level["ttft_ms"]["p50"], 50, 0.1)


def test_find_max_searches_the_capacity_and_writes_every_output(cli, timed_server, tmp_path):
    # 4 slots x 0.1 s = 40 requests/s; a p90 TTFT of 150 ms allows a little queueing below that.
    url = timed_server("--ttft", "0.05", "--itl", "0.01", "--tokens", "6", "--capacity", "4")
    files = {"plot": tmp_path / "s.png", "csv": tmp_path / "s.csv", "report": tmp_path / "s.html"}
    result = cli("bench", url, "--model", "timed", "--find-max", "ttft:150", "--percentile", 90, "--rate", "5",
                 "--duration", 1.5, "--output-tokens", 6, "--input-tokens", 16,
                 *[a for k, v in files.items() for a in (f"--{k}", v)], "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    search = doc["search"]
    assert search["mode"] == "rate" and search["slos_ms"] == {"ttft": 150} and search["percentile"] == 90
    # Short probes see only the start of an overload (the queue grows with time): up to 1.25x the capacity.
    assert 20 <= search["answer"] <= 50, search
    loads = [p["load"] for p in search["probes"]]
    assert loads[:3] == [5, 10, 20] and len(loads) <= 12
    assert all(p["passed"] == (p["load"] <= search["answer"]) for p in search["probes"])
    assert [lv["rate"] for lv in doc["levels"]] == sorted(loads)
    assert files["plot"].read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(files["csv"].open()))
    assert len(rows) == len(loads) and {"rate", "ttft_p90_ms", "server_queue_mean_ms"} <= set(rows[0])
    page = files["report"].read_text()
    assert "data:image/png;base64," in page and "Largest load that met them" in page


def test_find_max_fails_ci_when_even_the_lowest_load_misses(cli, timed_server):
    url = timed_server("--ttft", "0.05", "--itl", "0.01", "--tokens", "4")
    result = cli("bench", url, "--model", "timed", "--find-max", "ttft:10", "--concurrency", "auto",
                 "--requests", 4, "--output-tokens", 4, "--json")
    assert result.exit_code == 1
    doc = result.json()  # still exactly one JSON document
    assert doc["search"]["answer"] is None and doc["search"]["mode"] == "concurrency"
    assert "even the lowest load (concurrency 1) misses the SLOs: ttft p99" in result.stderr


@pytest.mark.parametrize("args,message", [
    (["--rate", "2", "--concurrency", "4"], "--rate and --concurrency both given"),
    (["--rate", "0,2"], "not a list of positive requests per second"),
    (["--concurrency", "auto"], "--concurrency auto is what --find-max searches"),
    (["--max-concurrency", "4"], "--max-concurrency caps an open loop"),
    (["--rate", "2", "--burstiness", "0.5"], "add --arrival gamma"),
    (["--arrival", "gamma"], "give --rate with them"),
    (["--rate", "2", "--arrival", "gamma", "--burstiness", "0"], "not positive"),
    (["--find-max", "ttft:fast"], "not a list of SLOs"),
    (["--find-max", "ttft:500", "--percentile", "95"], "--percentile 95"),
    (["--csv", "out.txt"], "should end in .csv"),
    (["--report", "out.png"], "should end in .html"),
])
def test_bad_open_loop_options(cli, args, message):
    result = cli("bench", "http://127.0.0.1:9", "--model", "m", *args)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert message in " ".join(result.stderr.split()) and result.stderr.strip().count("\n") == 0
