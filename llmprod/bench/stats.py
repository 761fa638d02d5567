"""Per-request timings and per-level summaries (percentiles by linear interpolation, as numpy's default)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass
class RequestResult:
    ok: bool
    start: float  # perf_counter seconds
    end: float
    first_token: float | None = None
    token_times: list[float] = field(default_factory=list)  # arrival of each chunk that carried text
    output_tokens: int = 0
    prompt_tokens: int | None = None
    usage_reported: bool = False
    error: str | None = None
    queued: float | None = None  # open loop with --max-concurrency: seconds from its arrival to being sent

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.start

    @property
    def e2e(self) -> float:
        return self.end - self.start

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first: (e2e − TTFT) / (tokens − 1)."""
        if self.first_token is None or self.output_tokens < 2:
            return None
        return (self.end - self.first_token) / (self.output_tokens - 1)

    @property
    def itls(self) -> list[float]:
        return [b - a for a, b in zip(self.token_times, self.token_times[1:])]


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def _ms(values: Sequence[float]) -> dict[str, float | None]:
    out = {}
    for q in (50, 90, 99):
        p = percentile(values, q)
        out[f"p{q}"] = None if p is None else p * 1000
    out["mean"] = sum(values) / len(values) * 1000 if values else None
    return out


@dataclass(frozen=True)
class Goodput:
    """SLOs a request must meet to count as 'good' (vLLM's goodput): TTFT and TPOT in milliseconds."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None

    def met_by(self, r: RequestResult) -> bool:
        if not r.ok:
            return False
        if self.ttft_ms is not None and (r.ttft is None or r.ttft * 1000 > self.ttft_ms):
            return False
        if self.tpot_ms is not None and r.tpot is not None and r.tpot * 1000 > self.tpot_ms:
            return False
        return True


def summarize(concurrency: int | None, results: list[RequestResult], wall: float, goodput: Goodput | None,
              interrupted: bool = False, rate: float | None = None) -> dict[str, Any]:
    """One level. Closed loop: `concurrency` streams. Open loop: `rate` offered requests/s, `concurrency`
    the --max-concurrency cap (None: none); `requests_per_s` is always the achieved rate."""
    ok = [r for r in results if r.ok]
    out_tokens = sum(r.output_tokens for r in ok)
    level: dict[str, Any] = {"rate": rate} if rate is not None else {}
    level.update({
        "concurrency": concurrency,
        "requests": len(ok),
        "errors": len(results) - len(ok),
        "seconds": wall,
        "ttft_ms": _ms([r.ttft for r in ok if r.ttft is not None]),
        "tpot_ms": _ms([r.tpot for r in ok if r.tpot is not None]),
        "itl_ms": _ms([gap for r in ok for gap in r.itls]),
        "e2e_ms": _ms([r.e2e for r in ok]),
        "output_tokens": out_tokens,
        "output_tokens_per_s": out_tokens / wall if wall > 0 else 0.0,
        "requests_per_s": len(ok) / wall if wall > 0 else 0.0,
        "usage_reported": all(r.usage_reported for r in ok) if ok else False,
    })
    queued = [r.queued for r in results if r.queued is not None]
    if queued:
        level["queue_ms"] = _ms(queued)
    if goodput is not None:
        good = sum(1 for r in results if goodput.met_by(r))
        level["goodput_requests_per_s"] = good / wall if wall > 0 else 0.0
        level["goodput_fraction"] = good / len(results) if results else 0.0
    errors = sorted({r.error for r in results if r.error})
    if errors:
        level["error_messages"] = errors[:5]
    if interrupted:
        level["interrupted"] = True
    return level
