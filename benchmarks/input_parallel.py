"""What `input_mode: parallel` saves over `before`: TTFT through the gateway when an input model check takes G ms
and the engine's prefill P ms, the two modes side by side against the same engine, A-B-B-A.

    python benchmarks/input_parallel.py --out benchmarks/results/input-parallel-cpu.json

The engine is llmprod.testing.fake_engine (a request "slow:P" waits P seconds before its first token, as a
prefill would); the model check sleeps G ms (15 ms: Llama Guard 3 1B behind vLLM measured 15.3 ms a check on
the H200, benchmarks/results/guard-latency-h200.json), after the deterministic checks. Expected: `before` pays
G + P before the first token, `parallel` max(G, P). Reported per P: TTFT p50 of each mode over all rounds,
the saving, and its ratio to min(G, P), the most overlap can save.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class SleepingCheck:
    """A model check that takes `seconds` and allows everything: the cost of a guard model's round trip."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def build(self, config, shared):
        check = self

        class Bound:
            name = config.check

            def __init__(self) -> None:
                self.config = config

            async def check_input(self, texts):
                await asyncio.sleep(check.seconds)
                return []

            async def check_output(self, text, context):
                return []

        return Bound()


def start_gateway(engine_url: str, mode: str, guard_seconds: float):
    from llmprod.guardrails.checks.base import CheckConfig
    from llmprod.guardrails.guard import PolicyGuard
    from llmprod.guardrails.policy import Policy
    from llmprod.guardrails.registry import CHECK_TYPES
    from llmprod.serve.gateway.app import Gateway, GatewayConfig
    from llmprod.serve.metrics import GatewayMetrics
    from llmprod.serve.upstream import AiohttpUpstream, EngineState
    from llmprod.testing.servers import ThreadServer

    policy = Policy(mode, "benchmark", input=[CheckConfig("secrets", "block", "input", {}, 1),
                                              CheckConfig("injection", "block", "input", {}, 2),
                                              CheckConfig("llama_guard", "block", "input", {}, 3)], input_mode=mode)
    registry = {**CHECK_TYPES, "llama_guard": replace(CHECK_TYPES["llama_guard"],
                                                      build=SleepingCheck(guard_seconds).build)}
    metrics = GatewayMetrics()
    guard = PolicyGuard(policy, observer=metrics.guard_observer(), registry=registry)
    gateway = Gateway(EngineState(engine_url, supervised=False), GatewayConfig(models={"m": "fake"}), guard=guard, metrics=metrics,
                      upstream=AiohttpUpstream(engine_url, 60))
    return ThreadServer(gateway.app).start()


async def ttfts(url: str, prefill: float, requests: int, concurrency: int) -> list[float]:
    import httpx

    body = {"model": "m", "stream": True, "max_tokens": 8,
            "messages": [{"role": "user", "content": f"slow:{prefill}"}]}
    out: list[float] = []
    limit = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient) -> None:
        async with limit:
            started = time.perf_counter()
            async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                assert response.status_code == 200, response.status_code
                first = None
                async for line in response.aiter_lines():  # to the end: the stream is whole each time
                    if first is None and line.startswith("data: {") and '"content"' in line:
                        first = time.perf_counter() - started
                out.append(first)

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(one(client) for _ in range(requests)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--guard-ms", type=float, default=15.0)
    parser.add_argument("--prefill-ms", default="5,15,40")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--concurrency", default="1,16")
    args = parser.parse_args()

    from llmprod.testing.fake_engine import make_app
    from llmprod.testing.servers import ThreadServer

    engine = ThreadServer(make_app(tokens=8, itl=0.001)).start()
    gateways = {mode: start_gateway(engine.url, mode, args.guard_ms / 1000) for mode in ("before", "parallel")}
    rows = []
    try:
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            for prefill_ms in (float(p) for p in args.prefill_ms.split(",")):
                samples: dict[str, list[float]] = {"before": [], "parallel": []}
                asyncio.run(ttfts(gateways["parallel"].url, prefill_ms / 1000, 4, concurrency))  # warm both
                asyncio.run(ttfts(gateways["before"].url, prefill_ms / 1000, 4, concurrency))
                for r in range(args.rounds):
                    order = ("before", "parallel") if r % 2 == 0 else ("parallel", "before")  # A-B-B-A
                    for mode in order:
                        samples[mode] += asyncio.run(ttfts(gateways[mode].url, prefill_ms / 1000, args.requests,
                                                           concurrency))
                p50 = {mode: statistics.median(v) * 1000 for mode, v in samples.items()}
                saved = p50["before"] - p50["parallel"]
                bound = min(args.guard_ms, prefill_ms)
                rows.append({"concurrency": concurrency, "guard_ms": args.guard_ms, "prefill_ms": prefill_ms,
                             "ttft_p50_ms": {m: round(v, 2) for m, v in p50.items()},
                             "saved_ms": round(saved, 2), "most_overlap_can_save_ms": bound,
                             "saved_of_bound": round(saved / bound, 3), "samples": len(samples["before"])})
                print(f"c={concurrency:2d} G={args.guard_ms:.0f} P={prefill_ms:4.0f} ms: TTFT p50 before "
                      f"{p50['before']:6.2f}, parallel {p50['parallel']:6.2f} ms; saved {saved:5.2f} of at most "
                      f"{bound:.0f} ms")
    finally:
        for server in gateways.values():
            server.stop()
        engine.stop()
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "machine": platform.platform(),
                                    "python": platform.python_version(), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
