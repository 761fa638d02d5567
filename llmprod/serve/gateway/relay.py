"""Streaming an engine's answer to the client: server-sent events forwarded read by read, timed at the gateway.

Without output checks the engine's bytes go through unchanged: each read is looked at only to time it and
to find the usage chunk (counted, and dropped or stripped when the client did not ask for it). The guarded
relay (guarded.py) is this relay with the output scanner between the reads and the client.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from typing import AsyncIterator

from llmprod.guardrails.types import CheckUnavailable
from llmprod.serve import sse
from llmprod.serve.gateway.errors import GatewayError, guard_unavailable, internal_error, log_exception
from llmprod.serve.metrics import GatewayMetrics
from llmprod.serve.upstream import Stream, UpstreamTimeout, UpstreamUnreachable


class StreamRelay:
    """Forwards one engine stream to the client, timing it (TTFT, inter-token latency, end to end)."""

    def __init__(self, metrics: GatewayMetrics, route: str, response: Stream, client_wants_usage: bool,
                 arrived: float, request_id: str) -> None:
        self.metrics = metrics
        self.route = route
        self.response = response
        self.client_wants_usage = client_wants_usage
        self.arrived = arrived
        self.request_id = request_id
        self.chat = route == "chat"
        self.first_text_at: float | None = None
        self.last_text_at: float | None = None
        self.status = "200"
        self.rename = None  # bytes -> bytes: the engine's model name in the answer → the one the client asked for
        self.stopped = False  # the gateway ended the stream itself (blocked, or failed): read no further
        self.text_in_batch = False
        self.usage: dict | None = None
        # labelled once: children of a labelled metric cost a lookup and a lock per labels() call
        self.ttft = metrics.ttft.labels(route)
        self.itl = metrics.itl.labels(route)

    def _sent_text(self) -> None:
        now = time.perf_counter()
        if self.first_text_at is None:
            self.first_text_at = now
            self.ttft.observe(now - self.arrived)
        else:
            self.itl.observe(now - self.last_text_at)
        self.last_text_at = now

    async def run(self) -> AsyncIterator[bytes]:
        try:
            last = b""
            async for blob in sse.blobs(self.response.chunks()):
                if self.rename is not None:
                    blob = self.rename(blob)
                self.text_in_batch = False
                last = blob
                out = await self.batch(blob)
                if out:
                    if self.text_in_batch:
                        self._sent_text()
                    yield b"".join(out)
                if self.stopped:
                    return
            ending = _ending(last)
            if ending != "done":
                # Cut mid-event, garbage, or an error event instead of [DONE]: the client is told in OpenAI's
                # shape, never left with a stream that just stops.
                self.status = "502"
                if ending != "error":
                    # After a cut-off event, a blank line first ends it, so the error is an event of its own.
                    cut = b"" if last.endswith((b"\n\n", b"\r\n\r\n", b"\r\r")) or not last else b"\n\n"
                    yield cut + sse.encode(GatewayError(502, "the engine's stream ended without [DONE]",
                                                        "upstream_error", "upstream_stream_error").body())
        except UpstreamTimeout:
            self.status = "504"
            yield sse.encode(GatewayError(504, "the engine stopped sending within --request-timeout",
                                          "timeout", "upstream_timeout").body())
        except UpstreamUnreachable as exc:
            self.status = "502"
            yield sse.encode(GatewayError(502, f"the engine's stream broke off ({exc})",
                                          "upstream_error", "upstream_stream_error").body())
        except CheckUnavailable as exc:
            self.status = "503"
            self.stop()
            yield sse.encode(guard_unavailable(exc).body())
        except Exception as exc:  # noqa: BLE001 - a bug mid-stream: the client still gets an error in OpenAI's shape
            self.status = "500"
            self.stop()
            log_exception(self.request_id, "POST", self.route, exc)
            yield sse.encode(internal_error(self.request_id).body())

    def stop(self) -> None:
        """End the stream here: the connection to the engine is dropped, which aborts the generation."""
        self.stopped = True
        self.response.close()

    def _usage(self, payload: dict) -> bool:
        """Notes a chunk's usage; False when the chunk is to be dropped (usage only, and the client did
        not ask for it). The usage is stripped from a chunk that also carries choices, unless asked for.
        The last usage seen is counted when the stream ends: with vLLM's continuous usage stats every chunk
        carries the running totals, which must not be added up."""
        self.usage = payload["usage"]
        if not payload.get("choices"):
            return self.client_wants_usage
        if not self.client_wants_usage:
            payload.pop("usage", None)
        return True

    async def batch(self, blob: bytes) -> list[bytes]:
        """The events of one read, forwarded as they came without looking at single events, except a usage
        chunk, which is counted (and dropped or stripped if the client did not ask for it)."""
        out = []
        for piece, is_usage in sse.around_usage(blob):
            if is_usage:
                piece = self._usage_event(piece)
                if piece is None:
                    continue
            elif sse.has_text(piece):
                self.text_in_batch = True
            out.append(piece)
        return out

    def _usage_event(self, event: bytes) -> bytes | None:
        data = sse.data_of(event)
        if data is None:
            return event
        payload = sse.loads(data)
        response = payload.get("response")
        if isinstance(response, dict) and isinstance(response.get("usage"), dict):  # /v1/responses: counted only
            self.usage = response["usage"]
            return event
        if isinstance(payload.get("usage"), dict):
            if not self._usage(payload):
                return None
            if not self.client_wants_usage:
                event = sse.encode(payload)  # the usage stripped from a chunk with choices
        if sse.has_text(data):
            self.text_in_batch = True
        return event

    async def close(self, completed: bool) -> None:
        """Called once when the response ends for any reason (done, client gone, error)."""
        if completed and not self.stopped and self.response.finished():
            self.response.release()  # read to the end: the connection goes back to the pool
        else:
            self.response.close()  # client gone or stream cut: close it, which cancels the generation
        self.metrics.count_usage(self.route, self.usage)
        status = self.status if completed else "499"  # nginx's "client closed request"
        self.metrics.requests.labels(self.route, status).inc()
        if completed:
            self.metrics.e2e.labels(self.route).observe(time.perf_counter() - self.arrived)


def _ending(blob: bytes) -> str:
    """How a stream's last read ends: "done" ([DONE], or a last chunk that finishes the answer or carries its
    usage, as transformers serve ends without [DONE]), "error" (an error event the client already has), or
    "cut" (mid-event, garbage, nothing)."""
    events = sse.events_any_terminator(blob)
    data = events[-1][2] if events else None
    if data is None:
        return "cut"
    if data.strip() == sse.DONE:
        return "done"
    try:
        payload = sse.loads(data)
    except ValueError:
        return "cut"
    if not isinstance(payload, dict):
        return "cut"
    if isinstance(payload.get("error"), dict) or payload.get("type") in ("error", "response.failed"):
        return "error"
    if payload.get("type") in ("response.completed", "response.incomplete"):
        return "done"
    finished = any(isinstance(c, dict) and c.get("finish_reason") for c in payload.get("choices") or ())
    return "done" if finished or isinstance(payload.get("usage"), dict) else "cut"


@functools.lru_cache(maxsize=256)  # a gateway serves a few names: built once each, not per request
def model_renamer(engine_name: str, client_name: str):
    """bytes → bytes: `"model": "<engine name>"` (with a revision suffix such as transformers serve's "@main")
    made the name the client asked for, in every event of an answer."""
    pattern = re.compile(rb'"model":\s*"' + re.escape(json.dumps(engine_name)[1:-1].encode()) + rb'(?:@[^"\\]*)?"')
    replacement = b'"model":' + json.dumps(client_name).encode()
    return lambda blob: pattern.sub(lambda _m: replacement, blob)


def set_text(payload: dict, text: str, chat: bool) -> None:
    for i, choice in enumerate(payload.get("choices") or ()):
        value = text if i == 0 else ""
        if chat:
            choice.setdefault("delta", {})["content"] = value
        else:
            choice["text"] = value


def set_finish(payload: dict, reason: str) -> None:
    for choice in payload.get("choices") or ():
        choice["finish_reason"] = reason


class CancellingStream:
    """A streaming ASGI response that notices the client leaving at once, not at the next write.

    The body iterator runs beside a listener for `http.disconnect`; whichever ends first cancels the
    other. `on_close(completed)` always runs, which closes the engine's response: the engine sees its
    connection drop and aborts the generation.
    """

    def __init__(self, body: AsyncIterator[bytes], on_close, media_type: str, headers: dict[str, str]) -> None:
        self.body = body
        self.on_close = on_close
        self.headers = [(b"content-type", media_type.encode())] + [
            (k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope, receive, send) -> None:
        completed = False
        sender = asyncio.ensure_future(self._send_all(send))
        listener = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            done, _ = await asyncio.wait({sender, listener}, return_when=asyncio.FIRST_COMPLETED)
            if sender in done:
                sender.result()  # re-raise a failure of the body
                completed = True
        finally:
            for task in (sender, listener):
                if not task.done():
                    task.cancel()
            await asyncio.gather(sender, listener, return_exceptions=True)
            await self.on_close(completed)

    async def _send_all(self, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        try:
            async for chunk in self.body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            aclose = getattr(self.body, "aclose", None)
            if aclose is not None:
                await aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_disconnect(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
