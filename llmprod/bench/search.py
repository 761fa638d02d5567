"""`--find-max`: the largest load whose latency still meets SLOs (a capacity gate for CI).

A load passes when no request failed and, for every SLO given, the level's --percentile of that figure is
within it: p99 TTFT <= 500 ms means at least 99% of requests had their first token within 500 ms. The
search doubles the load from the start until a probe fails, then bisects between the last pass and the
first failure: to 10% of the rate, or to one stream of concurrency. At most MAX_PROBES probes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from llmprod.errors import InputError

SLO_FIGURES = {"ttft": "ttft_ms", "tpot": "tpot_ms", "itl": "itl_ms", "e2e": "e2e_ms"}
PERCENTILES = (50, 90, 99)
MAX_PROBES = 12
RATE_TOLERANCE = 0.10


@dataclass(frozen=True)
class SearchSpec:
    slos: dict[str, float]  # figure ("ttft_ms", ...) -> limit in ms
    percentile: int
    mode: str  # "rate" or "concurrency"
    start: float

    def verdict(self, level: dict[str, Any]) -> tuple[bool, list[str]]:
        """(passed, why not): each SLO's percentile against its limit, and failed requests."""
        misses = []
        if level["errors"]:
            misses.append(f"{level['errors']} request(s) failed")
        if not level["requests"]:
            misses.append("no request completed")
        key = f"p{self.percentile}"
        for figure, limit in self.slos.items():
            value = (level.get(figure) or {}).get(key)
            if value is None or value > limit:
                shown = "none" if value is None else f"{value:,.1f}"
                misses.append(f"{figure.removesuffix('_ms')} {key} {shown} ms > {limit:g} ms")
        return not misses, misses


def parse_slos(text: str, percentile: int) -> dict[str, float]:
    if percentile not in PERCENTILES:
        raise InputError(f"--percentile {percentile} is not one the levels report",
                         hint=f"use one of {', '.join(map(str, PERCENTILES))}")
    slos: dict[str, float] = {}
    for part in text.split(","):
        key, _, value = part.partition(":")
        key = key.strip()
        try:
            limit = float(value)
            if key not in SLO_FIGURES or limit <= 0:
                raise ValueError
        except ValueError:
            raise InputError(f"--find-max {text!r} is not a list of SLOs in ms",
                             hint="e.g. --find-max ttft:500,tpot:50 (ttft, tpot, itl or e2e)") from None
        slos[SLO_FIGURES[key]] = limit
    return slos


Measure = Callable[[Any], Awaitable[dict[str, Any]]]


async def find_max(spec: SearchSpec, measure: Measure, state) -> float | None:
    """Probe loads (each a level in state.levels), record each verdict in state.probes; the answer or None."""
    from llmprod.bench.runner import Load

    def load_of(x: float) -> Load:
        return Load(rate=x) if spec.mode == "rate" else Load(concurrency=int(x))

    async def probe(x: float) -> bool:
        level = await measure(load_of(x))
        passed, misses = spec.verdict(level)
        level["slo_met"] = passed
        state.levels.append(level)
        state.probes.append({"load": x, "passed": passed, "misses": misses})
        return passed

    x = spec.start
    if not await probe(x):
        state.answer = None
        return None
    good, bad = x, None
    while bad is None and len(state.probes) < MAX_PROBES:
        x = good * 2
        if await probe(x):
            good = x
        else:
            bad = x
    while bad is not None and len(state.probes) < MAX_PROBES and not _close(good, bad, spec.mode):
        x = (good + bad) / 2 if spec.mode == "rate" else (good + bad) // 2
        if await probe(x):
            good = x
        else:
            bad = x
    state.answer = good
    return good


def _close(good: float, bad: float, mode: str) -> bool:
    return bad - good <= 1 if mode == "concurrency" else bad <= good * (1 + RATE_TOLERANCE)
