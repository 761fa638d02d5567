"""An `Upstream` whose answers a test writes down (as httpx's MockTransport is for httpx): each streamed answer
arrives in exactly the reads given, so a test of how the gateway handles one read of many events, or events
cut across reads, cannot flake because a busy machine merged or split them on the network."""

from __future__ import annotations

import asyncio
import json
import time
from typing import AsyncIterator

from llmprod.serve.upstream import Answer, Health


def chunk(text: str, finish: str | None = None, chat: bool = True) -> bytes:
    """One SSE event of a streamed chat (or completions) answer."""
    choice = ({"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish} if chat
              else {"index": 0, "text": text, "finish_reason": finish})
    return b"data: " + json.dumps({"id": "scripted", "object": "chat.completion.chunk", "choices": [choice]}).encode() \
        + b"\n\n"


def usage(prompt: int, completion: int) -> bytes:
    body = {"id": "scripted", "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                                       "total_tokens": prompt + completion}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


class ScriptedStream:
    def __init__(self, reads: list[bytes]) -> None:
        self.status = 200
        self.reads = reads
        self.sent = 0
        self.closed = False  # dropped by the gateway (a client gone, a block): the generation is aborted
        self.released = False

    async def chunks(self) -> AsyncIterator[bytes]:
        for read in self.reads:
            if self.closed:
                return
            self.sent += 1
            yield read

    async def read(self) -> bytes:
        return b"".join(self.reads)

    def finished(self) -> bool:
        return self.sent == len(self.reads)

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


class ScriptedUpstream:
    """Streams answer with the scripts queued by `script(*reads)`, one per request, in order; whole answers
    (POST without `stream`) with the bodies queued by `answer(body)`; the payloads the gateway sent are kept
    in `requests`."""

    def __init__(self, base_url: str = "http://scripted.invalid", delay: float = 0.0) -> None:
        self.base_url = base_url
        self.scripts: list[list[bytes]] = []
        self.answers: list[dict] = []
        self.streams: list[ScriptedStream] = []
        self.requests: list[dict] = []
        self.delay = delay  # seconds before a generation answers (its prefill), during which it can be cancelled
        self.started: list[float] = []  # time.perf_counter() when each generation request arrived
        self.cancelled = 0  # generation requests the gateway cancelled before they answered

    async def _prefill(self, payload: dict) -> None:
        self.requests.append(payload)
        self.started.append(time.perf_counter())
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    def script(self, *reads: bytes) -> "ScriptedUpstream":
        self.scripts.append(list(reads))
        return self

    def answer(self, body: dict) -> "ScriptedUpstream":
        self.answers.append(body)
        return self

    async def call(self, method: str, path: str, payload: dict | None = None, headers: dict | None = None,
                   timeout: float | None = None) -> Answer:
        if method == "POST" and self.answers:
            await self._prefill(payload or {})
            return Answer(200, json.dumps(self.answers.pop(0)).encode(), "application/json")
        self.requests.append(payload or {})
        return Answer(200, json.dumps({"object": "list", "data": [{"id": "scripted", "object": "model"}]}).encode(),
                      "application/json")

    async def stream(self, path: str, payload: dict) -> ScriptedStream:
        await self._prefill(payload)
        self.streams.append(ScriptedStream(self.scripts.pop(0)))
        return self.streams[-1]

    async def health(self, timeout: float = 5.0) -> Health:
        return Health(True)

    async def close(self) -> None:
        pass
