"""How many silent and slow connections `llmprod serve` carries while serving normal traffic.

    python benchmarks/hostile_clients.py --out benchmarks/results/hostile-clients-cpu.json

`llmprod serve --upstream` (default guardrail policy) in front of the fake engine (16 tokens, 5 ms apart).
At each level N, half of N connections are opened and send nothing, the other half send a request's headers
and then its body a byte a second (a slowloris); then 48 normal streamed requests (4 at a time) measure
TTFT, beside the same requests with no hostile connection open (the reference, measured before and after).
The gateway's RSS and open file descriptors are read at each level. Trickling bodies are cut off with a
408 after 30 s; a level takes less, so all of them are open while the normal requests are measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _measure import rss_and_fds  # noqa: E402
from llmprod.testing.servers import free_port, wait_ready  # noqa: E402


async def hostile(host: str, port: int, count: int, writers: list) -> None:
    header = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 100000\r\n\r\n")
    for i in range(count):
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            break
        if i % 2:
            writer.write(header + b"{")
            await writer.drain()
        writers.append((i % 2, writer))


async def trickle(writers: list, stop: asyncio.Event) -> None:
    while not stop.is_set():
        for slow, writer in writers:
            if slow and not writer.is_closing():
                try:
                    writer.write(b" ")
                except (ConnectionError, RuntimeError):
                    pass
        await asyncio.sleep(1.0)


async def normal_ttfts(url: str, requests: int = 48, concurrency: int = 4) -> list[float]:
    import aiohttp

    body = {"model": "fake", "stream": True, "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]}
    ttfts: list[float] = []
    queue = list(range(requests))

    async def worker(session) -> None:
        while queue:
            queue.pop()
            start = time.perf_counter()
            async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                first = None
                async for line in response.content:
                    if first is None and line.startswith(b'data: {"') and b'"content"' in line:
                        first = time.perf_counter() - start
                if response.status == 200 and first is not None:
                    ttfts.append(first * 1000)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return ttfts


async def level(url: str, host: str, port: int, count: int, pid: int) -> dict:
    writers: list = []
    stop = asyncio.Event()
    opened_at = time.monotonic()
    await hostile(host, port, count, writers)
    trickling = asyncio.ensure_future(trickle(writers, stop))
    await asyncio.sleep(1.0)
    ttfts = await normal_ttfts(url)
    rss, fds = rss_and_fds(pid)
    stop.set()
    await trickling
    for _, writer in writers:
        writer.close()
    took = time.monotonic() - opened_at
    await asyncio.sleep(1.0)
    return {"hostile_connections": len(writers), "normal_requests_ok": len(ttfts),
            "ttft_ms_p50": statistics.median(ttfts) if ttfts else None,
            "ttft_ms_p90": statistics.quantiles(ttfts, n=10)[-1] if len(ttfts) > 2 else None,
            "gateway_rss_bytes": rss, "gateway_open_fds": fds, "seconds": round(took, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="0,250,1000,4000,0")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    engine_port, port = free_port(), free_port()
    engine = subprocess.Popen([sys.executable, "-m", "llmprod.testing.fake_engine", "--port", str(engine_port),
                               "--tokens", "16", "--itl", "0.005"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(f"http://127.0.0.1:{engine_port}/v1/models")
    serve = subprocess.Popen([sys.executable, "-m", "llmprod", "serve", "--upstream", f"http://127.0.0.1:{engine_port}",
                              "--port", str(port), "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        wait_ready(f"{url}/health")
        for count in [int(x) for x in args.levels.split(",")]:
            rows.append(asyncio.run(level(url, "127.0.0.1", port, count, serve.pid)))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        serve.terminate()
        engine.terminate()
        serve.wait(timeout=60)
        engine.wait(timeout=30)
    reference = [r["ttft_ms_p50"] for r in rows if r["hostile_connections"] == 0]
    doc = {"command": " ".join(["python", "benchmarks/hostile_clients.py", *sys.argv[1:]]),
           "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
           "reference_ttft_ms_p50": statistics.mean(reference) if reference else None, "levels": rows}
    for r in rows:
        if r["ttft_ms_p50"] and doc["reference_ttft_ms_p50"]:
            r["ttft_p50_vs_reference"] = round(r["ttft_ms_p50"] / doc["reference_ttft_ms_p50"], 3)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
