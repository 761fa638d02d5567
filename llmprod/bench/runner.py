"""The load itself, level by level.

Closed loop (`Load(concurrency=C)`): exactly C streaming requests in flight until the count or the time is
reached. Open loop (`Load(rate=R)`): requests sent at arrival times drawn for rate R (arrivals.py), whether
or not earlier ones have finished, optionally capped at `max_concurrency` in flight (the wait for a slot is
reported as queue time). A closed loop can never offer more than the server finishes; an open loop above
capacity makes the queue, and TTFT, grow without bound, which is what a capacity plan must see.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from llmprod.bench.arrivals import arrival_times
from llmprod.bench.client import Target, preflight, stream_one
from llmprod.bench.prompts import Prompt
from llmprod.bench.stats import Goodput, RequestResult, summarize
from llmprod.errors import InputError

# A request that has not finished by then is recorded as an error, so every level ends.
REQUEST_TIMEOUT_S = 600.0
# An open-loop level without --requests or --duration offers about this many seconds of arrivals.
OPEN_LOOP_SECONDS = 10.0


@dataclass(frozen=True)
class Load:
    concurrency: int | None = None  # closed loop
    rate: float | None = None  # open loop, requests per second

    def __str__(self) -> str:
        return f"rate {self.rate:g}/s" if self.rate is not None else f"concurrency {self.concurrency}"


@dataclass
class BenchPlan:
    target: Target
    prompts: list[Prompt]
    loads: list[Load]
    requests: int | None  # per level
    duration: float | None  # per level, seconds
    goodput: Goodput | None = None
    arrival: str = "poisson"
    burstiness: float = 1.0
    max_concurrency: int | None = None  # open loop only
    seed: int = 0
    metrics_url: str | None = None  # the server's Prometheus /metrics, scraped around each level
    search: Any = None  # search.SearchSpec: --find-max

    def requests_for(self, load: Load) -> int | None:
        if self.requests is None and self.duration is None:
            if load.rate is not None:
                return max(16, math.ceil(load.rate * OPEN_LOOP_SECONDS))
            return max(16, 4 * load.concurrency)
        return self.requests


@dataclass
class BenchState:
    """What has been measured so far: Ctrl-C reports it instead of losing it."""

    levels: list[dict[str, Any]] = field(default_factory=list)
    current: list[RequestResult] = field(default_factory=list)
    current_load: Load | None = None
    current_start: float | None = None
    probes: list[dict[str, Any]] = field(default_factory=list)  # --find-max
    answer: float | None = None  # --find-max: the largest load that met the SLOs
    server_metrics: bool | None = None  # None: not tried yet

    @property
    def current_label(self) -> str | None:
        return None if self.current_load is None else str(self.current_load)

    def partial_level(self, goodput: Goodput | None) -> dict[str, Any] | None:
        if self.current_load is None or not self.current:
            return None
        wall = max(r.end for r in self.current) - self.current_start
        return summarize(self.current_load.concurrency, list(self.current), wall, goodput, interrupted=True,
                         rate=self.current_load.rate)


async def run_bench(plan: BenchPlan, state: BenchState, on_request: Callable[[int, int | None], None],
                    warn: Callable[[str], None] = lambda message: None) -> None:
    import aiohttp

    # aiohttp sets TCP_NODELAY on its connections: a request's header and body are not held back by
    # Nagle's algorithm waiting for the server's delayed ACK (~40 ms), which would be measured as TTFT.
    connector = aiohttp.TCPConnector(limit=0)  # the load decides how many are open, not a pool limit
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, connect=10.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as client:
        models = await preflight(client, plan.target)
        if models and plan.target.model not in models:
            # Some servers list other models (transformers serve lists its cache): let the requests tell.
            warn(f"{plan.target.model!r} is not in the server's model list ({', '.join(models[:5])})")
        # One uncounted request first, as vLLM's own benchmark does: it warms the engine up (the first
        # request can take seconds), and a server that cannot answer is refused before any load.
        probe = await stream_one(client, replace(plan.target, max_tokens=min(8, plan.target.max_tokens)),
                                 plan.prompts[0])
        if not probe.ok:
            raise InputError(f"the server failed a test request: {probe.error}",
                             hint="check --model, --endpoint and the server's log")

        async def measure(load: Load) -> dict[str, Any]:
            level = await run_level(client, plan, load, state, on_request)
            if state.server_metrics is False and plan.metrics_url:
                warn(f"no Prometheus histograms at {plan.metrics_url}: only the client's view is reported")
                plan.metrics_url = None
            return level

        if plan.search is not None:
            from llmprod.bench.search import find_max

            await find_max(plan.search, measure, state)
        else:
            for load in plan.loads:
                state.levels.append(await measure(load))


async def run_level(client, plan: BenchPlan, load: Load, state: BenchState,
                    on_request: Callable[[int, int | None], None]) -> dict[str, Any]:
    from llmprod.bench import server_metrics

    total = plan.requests_for(load)
    before = await server_metrics.scrape(client, plan.metrics_url) if plan.metrics_url else None
    if load.concurrency is not None and load.rate is None:
        await _open_connections(client, plan.target, load.concurrency)
    state.current, state.current_load = [], load
    state.current_start = start = time.perf_counter()
    if load.rate is None:
        await _closed_loop(client, plan, load.concurrency, total, start, state, on_request)
    else:
        await _open_loop(client, plan, load.rate, total, start, state, on_request)
    wall = (max(r.end for r in state.current) - start) if state.current else 0.0
    level = summarize(load.concurrency if load.rate is None else plan.max_concurrency, state.current, wall,
                      plan.goodput, rate=load.rate)
    if load.rate is not None:
        level["arrival"] = plan.arrival if plan.arrival != "gamma" else f"gamma (burstiness {plan.burstiness:g})"
    if before is not None:
        after = await server_metrics.scrape(client, plan.metrics_url)
        view = server_metrics.level_view(before, after or {})
        state.server_metrics = view is not None
        if view:
            level["server"] = view
    elif plan.metrics_url:
        state.server_metrics = False
    state.current_load = None
    return level


async def _closed_loop(client, plan: BenchPlan, concurrency: int, total: int | None, start: float,
                       state: BenchState, on_request) -> None:
    deadline = start + plan.duration if plan.duration else None
    counter = itertools.count()

    async def worker() -> None:
        while True:
            i = next(counter)
            if (total is not None and i >= total) or (deadline and time.perf_counter() >= deadline):
                return
            result = await stream_one(client, plan.target, plan.prompts[i % len(plan.prompts)])
            state.current.append(result)
            on_request(len(state.current), total)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _open_loop(client, plan: BenchPlan, rate: float, total: int | None, start: float,
                     state: BenchState, on_request) -> None:
    if total is None:  # --duration alone: arrivals until it ends
        times = [t for t in arrival_times(rate, math.ceil(rate * plan.duration * 2) + 16, plan.arrival,
                                          plan.burstiness, plan.seed) if t < plan.duration]
    else:
        times = arrival_times(rate, total, plan.arrival, plan.burstiness, plan.seed)
        if plan.duration:
            times = [t for t in times if t < plan.duration]
    slots = asyncio.Semaphore(plan.max_concurrency) if plan.max_concurrency else None

    async def one(i: int) -> None:
        arrived = time.perf_counter()
        if slots is None:
            result = await stream_one(client, plan.target, plan.prompts[i % len(plan.prompts)])
        else:
            async with slots:
                queued = time.perf_counter() - arrived
                result = await stream_one(client, plan.target, plan.prompts[i % len(plan.prompts)])
                result.queued = queued
        state.current.append(result)
        on_request(len(state.current), len(times))

    tasks = []
    for i, t in enumerate(times):
        delay = start + t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)


async def _open_connections(client, target: Target, count: int) -> None:
    """Open `count` keep-alive connections before a level is timed, as a client in steady state has them.

    Otherwise the first request of every stream also pays for a TCP connection, set up while the other
    streams' requests are being sent: at 16 streams that put 5-10 ms into their TTFT.
    """
    import aiohttp

    async def get() -> None:
        try:
            async with client.get(f"{target.base_url}/models", headers=target.headers) as response:
                await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass  # the level's own requests will report what is wrong

    await asyncio.gather(*(get() for _ in range(count)))
