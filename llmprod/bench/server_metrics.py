"""The server's own view of a level: its Prometheus histograms, scraped before and after, differenced.

vLLM exports `vllm:time_to_first_token_seconds`, `vllm:inter_token_latency_seconds`,
`vllm:e2e_request_latency_seconds` and `vllm:request_queue_time_seconds`; llmprod's gateway exports the
`llmprod_*` counterparts of the first three. The difference of two scrapes is the level's own histogram:
its mean is exact (sum / count), its percentiles are interpolated within the buckets, as Prometheus'
histogram_quantile does. Set beside the client's figures, the gap is the network and the client.
"""

from __future__ import annotations

from typing import Any

# figure -> metric names, first found wins (vLLM before llmprod: behind `llmprod serve`, the gateway's
# /metrics is what answers, and it has only llmprod_*).
HISTOGRAMS = {
    "ttft_ms": ("vllm:time_to_first_token_seconds", "llmprod_time_to_first_token_seconds"),
    "itl_ms": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds",
               "llmprod_inter_token_latency_seconds"),
    "e2e_ms": ("vllm:e2e_request_latency_seconds", "llmprod_e2e_request_latency_seconds"),
    "queue_ms": ("vllm:request_queue_time_seconds",),
}

Scrape = dict[str, dict[str, Any]]  # metric name -> {"buckets": {le: count}, "count": n, "sum": s}


def parse(text: str) -> Scrape:
    """Histograms from Prometheus' text format, summed over their labels (one model, one engine)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        h = out.setdefault(family.name, {"buckets": {}, "count": 0.0, "sum": 0.0})
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                h["buckets"][le] = h["buckets"].get(le, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                h["count"] += sample.value
            elif sample.name.endswith("_sum"):
                h["sum"] += sample.value
    return out


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """histogram_quantile over cumulative buckets {upper bound: count}."""
    edges = sorted(buckets)
    if not edges or buckets[edges[-1]] <= 0:
        return None
    rank = q * buckets[edges[-1]]
    lower, below = 0.0, 0.0
    for le in edges:
        count = buckets[le]
        if count >= rank:
            if le == float("inf"):
                return lower  # past the last finite bound: the best a histogram can say
            return lower + (le - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = le, count
    return lower


def level_view(before: Scrape, after: Scrape) -> dict[str, Any] | None:
    """The level's server-side figures in ms (mean and p50/p90/p99), or None when nothing known was exported."""
    view: dict[str, Any] = {}
    for figure, names in HISTOGRAMS.items():
        name = next((n for n in names if n in after), None)
        if name is None:
            continue
        a, b = after[name], before.get(name, {"buckets": {}, "count": 0.0, "sum": 0.0})
        count = a["count"] - b["count"]
        if count <= 0:
            continue
        delta = {le: a["buckets"][le] - b["buckets"].get(le, 0.0) for le in a["buckets"]}
        stats = {f"p{int(q * 100)}": _ms(quantile(q, delta)) for q in (0.5, 0.9, 0.99)}
        stats["mean"] = (a["sum"] - b["sum"]) / count * 1000
        stats["count"] = int(count)
        stats["metric"] = name
        view[figure] = stats
    return view or None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


async def scrape(client, url: str) -> Scrape | None:
    """GET url (the server's /metrics); None when there is none or it is not Prometheus text."""
    import asyncio

    import aiohttp

    try:
        async with client.get(url, timeout=aiohttp.ClientTimeout(total=10.0)) as response:
            if response.status != 200:
                return None
            text = await response.text()
    except (aiohttp.ClientError, asyncio.TimeoutError, UnicodeDecodeError):
        return None
    try:
        return parse(text)
    except ValueError:
        return None
