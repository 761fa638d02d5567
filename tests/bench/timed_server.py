"""An OpenAI-compatible server whose timing the tests control (run as its own process).

It waits --ttft seconds before the first token, then --itl seconds between tokens, and streams
--tokens tokens per request, so a load generator's reported TTFT, TPOT and tokens/s can be checked
against known values. With --capacity K at most K requests generate at once and the rest wait in a
first-come queue (their schedule starts when admitted), as an engine with K sequence slots would.
GET /stats tells how many generation requests arrived; GET /metrics exports the server's own timings
under vLLM's metric names (queue time, TTFT, inter-token latency, end to end), measured by its clock.

    python tests/bench/timed_server.py --port 8123 --ttft 0.2 --itl 0.025 --tokens 20 [--capacity 4] [--api-key K]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route


BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0,
           3.0, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)


def make_app(ttft: float, itl: float, tokens: int, api_key: str | None, usage: bool, model: str,
             not_openai: bool = False, capacity: int | None = None) -> Starlette:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    stats = {"generations": 0}
    registry = CollectorRegistry()
    queue_h = Histogram("vllm:request_queue_time_seconds", "queue", registry=registry, buckets=BUCKETS)
    ttft_h = Histogram("vllm:time_to_first_token_seconds", "ttft", registry=registry, buckets=BUCKETS)
    itl_h = Histogram("vllm:inter_token_latency_seconds", "itl", registry=registry, buckets=BUCKETS)
    e2e_h = Histogram("vllm:e2e_request_latency_seconds", "e2e", registry=registry, buckets=BUCKETS)
    slots = asyncio.Semaphore(capacity) if capacity else None

    def authorized(request: Request) -> bool:
        return api_key is None or request.headers.get("authorization") == f"Bearer {api_key}"

    async def models(request: Request):
        if not_openai:
            return HTMLResponse("<html>a web page, not an API</html>")
        if not authorized(request):
            return JSONResponse({"error": {"message": "bad key", "type": "auth", "code": "invalid_api_key"}}, 401)
        return JSONResponse({"object": "list", "data": [{"id": model, "object": "model"}]})

    async def generate(request: Request):
        if not authorized(request):
            return JSONResponse({"error": {"message": "bad key", "type": "auth", "code": "invalid_api_key"}}, 401)
        # The schedule starts when the request reaches the app, before the body is read: parsing and
        # response set-up under load would otherwise push every token late by the server's own cost.
        start = time.perf_counter()
        stats["generations"] += 1
        body = await request.json()
        chat = request.url.path.endswith("/chat/completions")
        n = min(tokens, int(body.get("max_tokens") or tokens))

        async def events():
            admitted = start
            if slots is not None:
                await slots.acquire()
                admitted = time.perf_counter()
            queue_h.observe(admitted - start)
            last = None
            try:
                for i in range(n):
                    # Sleep to an absolute schedule, so the known timing does not drift with overheads.
                    await asyncio.sleep(max(0.0, admitted + ttft + i * itl - time.perf_counter()))
                    now = time.perf_counter()
                    if last is None:
                        ttft_h.observe(now - start)
                    else:
                        itl_h.observe(now - last)
                    last = now
                    choice = ({"index": 0, "delta": {"content": f"t{i} "}} if chat else {"index": 0, "text": f"t{i} "})
                    yield f"data: {json.dumps({'id': 'x', 'model': model, 'choices': [choice]})}\n\n"
                if usage and (body.get("stream_options") or {}).get("include_usage"):
                    yield f"data: {json.dumps({'id': 'x', 'choices': [], 'usage': {'prompt_tokens': 5, 'completion_tokens': n, 'total_tokens': n + 5}})}\n\n"
                yield "data: [DONE]\n\n"
                e2e_h.observe(time.perf_counter() - start)
            finally:
                if slots is not None:
                    slots.release()

        return StreamingResponse(events(), media_type="text/event-stream")

    async def stats_route(request: Request):
        return JSONResponse(stats)

    async def health(request: Request):
        return JSONResponse({})

    async def metrics(request: Request):
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    return Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", generate, methods=["POST"]),
                             Route("/v1/completions", generate, methods=["POST"]), Route("/stats", stats_route),
                             Route("/metrics", metrics), Route("/health", health)])


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ttft", type=float, default=0.2)
    p.add_argument("--itl", type=float, default=0.025)
    p.add_argument("--tokens", type=int, default=20)
    p.add_argument("--api-key")
    p.add_argument("--no-usage", action="store_true")
    p.add_argument("--not-openai", action="store_true")
    p.add_argument("--model", default="timed")
    p.add_argument("--capacity", type=int, help="at most this many requests generating at once")
    a = p.parse_args()
    app = make_app(a.ttft, a.itl, a.tokens, a.api_key, not a.no_usage, a.model, a.not_openai, a.capacity)
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
