"""Keep exactly `concurrency` streaming requests in flight until the count or the time is reached."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from llmprod.bench.client import Target, preflight, stream_one
from llmprod.bench.prompts import Prompt
from llmprod.bench.stats import Goodput, RequestResult, summarize
from llmprod.errors import InputError

# A request that has not finished by then is recorded as an error, so every level ends.
REQUEST_TIMEOUT_S = 600.0


@dataclass
class BenchPlan:
    target: Target
    prompts: list[Prompt]
    concurrency: list[int]
    requests: int | None  # per level
    duration: float | None  # per level, seconds
    goodput: Goodput | None = None

    def requests_for(self, concurrency: int) -> int | None:
        if self.requests is None and self.duration is None:
            return max(16, 4 * concurrency)
        return self.requests


@dataclass
class BenchState:
    """What has been measured so far: Ctrl-C reports it instead of losing it."""

    levels: list[dict[str, Any]] = field(default_factory=list)
    current: list[RequestResult] = field(default_factory=list)
    current_concurrency: int | None = None
    current_start: float | None = None

    def partial_level(self, goodput: Goodput | None) -> dict[str, Any] | None:
        if self.current_concurrency is None or not self.current:
            return None
        wall = max(r.end for r in self.current) - self.current_start
        return summarize(self.current_concurrency, list(self.current), wall, goodput, interrupted=True)


async def run_bench(plan: BenchPlan, state: BenchState, on_request: Callable[[int, int | None], None],
                    warn: Callable[[str], None] = lambda message: None) -> None:
    import aiohttp

    # aiohttp sets TCP_NODELAY on its connections: a request's header and body are not held back by
    # Nagle's algorithm waiting for the server's delayed ACK (~40 ms), which would be measured as TTFT.
    connector = aiohttp.TCPConnector(limit=max(plan.concurrency) + 4)
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
        for concurrency in plan.concurrency:
            total = plan.requests_for(concurrency)
            await _open_connections(client, plan.target, concurrency)
            state.current, state.current_concurrency = [], concurrency
            state.current_start = start = time.perf_counter()
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
            wall = (max(r.end for r in state.current) - start) if state.current else 0.0
            state.levels.append(summarize(concurrency, state.current, wall, plan.goodput))
            state.current_concurrency = None


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
