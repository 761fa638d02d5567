"""An upstream that misbehaves: garbage, a stream cut mid-event, a 200 carrying an error, a stream that never
ends. The client gets a clean end or an error in OpenAI's shape within --request-timeout, and the gateway
closes its connection to the upstream."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llmprod.testing.servers import ThreadServer

EVENT = b'data: {"id": "x", "choices": [{"index": 0, "delta": {"content": "hello "}}]}\n\n'
TIMEOUT = 1.0


def misbehaving_app(state: dict):
    async def chat(request: Request):
        body = await request.json()
        mode = body["messages"][-1]["content"]
        stream = body.get("stream", False)

        async def gen():
            state["open"] += 1
            try:
                if mode == "garbage":
                    yield b"\x00\xffnot server-sent events at all\r\n\x01"
                elif mode == "mid-event":
                    yield EVENT
                    yield b'data: {"id": "x", "choices": [{"ind'
                elif mode == "error-200":
                    yield b'data: {"error": {"message": "engine overloaded", "type": "server_error", "code": 500}}\n\n'
                elif mode == "forever":
                    yield EVENT
                    await asyncio.sleep(3600)
            finally:
                state["open"] -= 1
                state["closed"] += 1

        if mode == "error-200" and not stream:
            return JSONResponse({"error": {"message": "engine overloaded", "type": "server_error", "code": 500}})
        if mode == "garbage" and not stream:
            return Response(b"\x00 not json", media_type="application/json")
        return StreamingResponse(gen(), media_type="text/event-stream")

    async def models(request):
        return JSONResponse({"object": "list", "data": [{"id": "bad", "object": "model"}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models),
                             Route("/health", lambda r: JSONResponse({}))])


@pytest.fixture
def bad_upstream():
    state = {"open": 0, "closed": 0}
    server = ThreadServer(misbehaving_app(state)).start()
    yield server.url, state
    server.stop()


def _shaped(obj: dict) -> bool:
    return isinstance(obj.get("error"), dict) and {"message", "type", "code"} <= set(obj["error"])


@pytest.mark.parametrize("mode", ["garbage", "mid-event", "error-200", "forever"])
def test_a_misbehaving_streams_ends_cleanly_or_in_an_openai_error(bad_upstream, start_gateway, mode):
    url, state = bad_upstream
    gateway_url, _ = start_gateway(url, request_timeout=TIMEOUT)
    body = {"model": "bad", "stream": True, "messages": [{"role": "user", "content": mode}]}
    started = time.monotonic()
    with httpx.stream("POST", f"{gateway_url}/v1/chat/completions", json=body, timeout=30) as response:
        lines = [line for line in response.iter_lines() if line]
        status = response.status_code
    took = time.monotonic() - started
    assert took < TIMEOUT + 2, took
    if status == 200:
        events = []
        for line in lines:
            if line.startswith("data: {"):
                try:
                    events.append(json.loads(line[6:]))
                except ValueError:
                    pass  # the engine's cut-off event, passed on as it came
        errors = [e for e in events if "error" in e]
        assert lines[-1] == "data: [DONE]" or (errors and _shaped(errors[-1])), lines
    else:
        assert _shaped(json.loads("".join(lines)))
    deadline = time.monotonic() + 5
    while state["open"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state["open"] == 0  # the gateway closed its upstream connection


@pytest.mark.parametrize("mode", ["garbage", "error-200"])
def test_a_misbehaving_answer_is_an_openai_error(bad_upstream, start_gateway, mode):
    url, _ = bad_upstream
    gateway_url, _ = start_gateway(url, request_timeout=TIMEOUT)
    response = httpx.post(f"{gateway_url}/v1/chat/completions", timeout=30,
                          json={"model": "bad", "messages": [{"role": "user", "content": mode}]})
    assert response.status_code == 502
    assert _shaped(response.json())
    if mode == "error-200":
        assert response.json()["error"]["message"] == "the engine failed: engine overloaded"
