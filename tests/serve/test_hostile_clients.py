"""Slow and silent clients cannot starve the others: a body that trickles in holds no generation slot and
is cut off with a 408 in OpenAI's shape."""

from __future__ import annotations

import json
import socket
import time

import openai

from llmprod.serve.gateway import requests as gateway_requests


def _open_slow_request(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 200\r\n\r\n{")  # one byte of a 200-byte body, then nothing
    return sock


def test_a_trickling_body_holds_no_slot_and_gets_a_408(fake_engine, start_gateway, monkeypatch):
    monkeypatch.setattr(gateway_requests, "BODY_TIMEOUT_S", 1.5)
    url, _ = start_gateway(fake_engine.url, max_concurrency=1, models={"m": "fake"})
    slow = [_open_slow_request(url) for _ in range(5)]
    time.sleep(0.2)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    started = time.monotonic()
    answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert answer.choices[0].message.content and time.monotonic() - started < 1.0  # the one slot was free
    for sock in slow:
        sock.settimeout(10)
        raw = b""
        while b"\r\n\r\n" not in raw or not raw.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), head
        assert json.loads(body)["error"]["code"] == "request_timeout"
        sock.close()
