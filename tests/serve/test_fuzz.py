"""Hostile input, generated: the gateway answers every request in OpenAI's error shape (never a 500 or a
crash, never plain text, never the key echoed), the SSE splitter survives any cut or corruption, and the
scanner finds planted PII and secrets whatever Unicode surrounds or disguises them."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmprod.guardrails import PolicyGuard, load_policy
from llmprod.serve import sse
from llmprod.testing.planted import planted

KEY = "fuzz-key-0123456789"
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-10**30, max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
FIELDS = ["model", "messages", "prompt", "max_tokens", "stream", "temperature", "stop", "n", "stream_options",
          "logprobs", "tools", "response_format", "user", "seed"]
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), json_values, max_size=6)


@pytest.fixture(scope="module")
def gateway(fake_engine):
    from llmprod.serve.gateway import Gateway, GatewayConfig
    from llmprod.serve.metrics import GatewayMetrics
    from llmprod.serve.upstream import EngineState
    from llmprod.testing.servers import ThreadServer

    metrics = GatewayMetrics()
    guard = PolicyGuard(load_policy("default"), observer=metrics.guard_observer())
    gw = Gateway(EngineState(fake_engine.url, supervised=False),
                 GatewayConfig(api_key=KEY, max_body_size=64 * 1024), guard=guard, metrics=metrics)
    server = ThreadServer(gw.app).start()
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        yield client
    server.stop()


def assert_well_formed(response: httpx.Response) -> None:
    assert response.status_code != 500 and response.status_code < 600, response.text[:300]
    assert KEY not in response.text
    if response.status_code >= 400:
        body = response.json()  # JSON, never plain text
        assert set(body["error"]) >= {"message", "type", "code"}, body
    elif response.headers["content-type"].startswith("text/event-stream"):
        assert response.text.rstrip().endswith("data: [DONE]") or '"error"' in response.text
    else:
        assert "choices" in response.json() or "error" in response.json()


@FAST
@given(body=bodies, route=st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
def test_any_json_body_gets_an_openai_shaped_answer(gateway, body, route):
    assert_well_formed(gateway.post(route, json=body, headers={"Authorization": f"Bearer {KEY}"}))


@FAST
@given(model=st.just("fake"), messages=st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "nobody", 7]), "content": json_values}),
    max_size=3), extra=st.dictionaries(st.sampled_from(FIELDS[3:]), json_values, max_size=3))
def test_nearly_valid_chat_requests(gateway, model, messages, extra):
    body = {"model": model, "messages": messages, "max_tokens": 4, **extra}
    assert_well_formed(gateway.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}))


@FAST
@given(raw=st.binary(max_size=300))
def test_any_bytes_as_a_body(gateway, raw):
    assert_well_formed(gateway.post("/v1/chat/completions", content=raw, headers={
        "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}))


@pytest.mark.parametrize("raw", [
    b'{"model": "fake", "messages": [{"role": "user", "content": "\\ud800"}]}',  # a lone surrogate
    b'{"model": "fake", "messages": [{"role": "user", "content": "\xff\xfe"}]}',  # invalid UTF-8
    b'{"model": "fake", "max_tokens": NaN, "messages": []}',
    b'{"model": "fake", "max_tokens": 1e999, "messages": [{"role": "user", "content": "x"}]}',
    b'{"model": "fake", "max_tokens": 100000000000000000000000000000, "messages": [{"role": "user", "content": "x"}]}',
    b"[" * 50_000 + b"]" * 50_000,  # deep nesting
    b'{"model": "fake", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"model": "fake", "model": "other", "messages": [{"role": "user", "content": "x"}]}',
    b"",
])
def test_known_nasty_bodies(gateway, raw):
    response = gateway.post("/v1/chat/completions", content=raw, headers={
        "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert_well_formed(response)
    assert response.status_code in (200, 400, 413), response.text[:200]


@FAST
@given(value=st.text(max_size=60) | st.builds(lambda junk: f"Bearer {KEY}{junk}", st.text(min_size=1, max_size=5)))
def test_odd_authorization_headers_are_401s(gateway, value):
    try:
        response = gateway.post("/v1/chat/completions", json={"model": "fake", "prompt": "x"},
                                headers={"Authorization": value})
    except (httpx.LocalProtocolError, UnicodeEncodeError):
        return  # a header no HTTP client can send
    if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in value):
        # Control characters are not allowed in a header: the HTTP server (uvicorn) refuses the request with
        # its own 400 before the gateway sees it, as any HTTP server does.
        assert response.status_code == 400 and KEY not in response.text
        return
    if value.strip() != f"Bearer {KEY}":
        assert response.status_code == 401
    assert_well_formed(response)


def test_duplicate_authorization_and_missing_content_type(gateway):
    headers = [("Authorization", "Bearer wrong"), ("Authorization", f"Bearer {KEY}")]
    response = gateway.post("/v1/chat/completions", json={"model": "fake", "prompt": "x", "max_tokens": 2},
                            headers=headers)
    assert response.status_code == 401  # the first one counts: a smuggled second key does not
    assert_well_formed(response)
    response = gateway.post("/v1/completions", content=b'{"model": "fake", "prompt": "x", "max_tokens": 2}',
                            headers={"Authorization": f"Bearer {KEY}"})
    assert_well_formed(response)


def test_a_chunked_body_without_length_over_the_limit_is_a_413(gateway):
    def chunks():
        yield b'{"model": "fake", "prompt": "'
        for _ in range(100):
            yield b"x" * 1024  # 100 KiB, over the 64 KiB limit, with no Content-Length
        yield b'"}'

    response = gateway.post("/v1/completions", content=chunks(), headers={
        "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert response.status_code == 413 and "Transfer-Encoding" not in response.request.headers.get("content-length", "")
    assert_well_formed(response)


def _stream(n: int) -> bytes:
    events = [sse.encode({"id": "x", "choices": [{"index": 0, "delta": {"content": f"t{i} "}}]}) for i in range(n)]
    return b"".join(events) + b"data: [DONE]\n\n"


async def _split(blob: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(blob) + 1) for c in cuts})
    pieces = [blob[a:b] for a, b in zip([0, *points], [*points, len(blob)])]

    async def source():
        for piece in pieces:
            yield piece

    return [b async for b in sse.blobs(source())]


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 12), cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_sse_splitting_at_any_point_gives_back_whole_events_in_order(n, cuts):
    blob = _stream(n)
    out = asyncio.run(_split(blob, cuts))
    assert b"".join(out) == blob
    assert all(b.endswith(b"\n\n") for b in out)
    assert [data for _, _, data in sse.events(b"".join(out))][-1] == sse.DONE


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=400), cuts=st.lists(st.integers(0, 1000), max_size=10))
def test_corrupt_streams_never_break_the_splitter(garbage, cuts):
    out = asyncio.run(_split(garbage, cuts))
    assert b"".join(out) == garbage or (not garbage.strip() and not out)
    for blob in out:
        for _, _, data in sse.events_any_terminator(blob):
            if data is not None:
                sse.has_text(data)  # never raises
                try:
                    sse.loads(data)
                except ValueError:
                    pass


ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]
HOMOGLYPH = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х"}


@pytest.fixture(scope="module")
def default_guard():
    return PolicyGuard(load_policy("default"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6), before=st.text(max_size=30), after=st.text(max_size=30),
       disguise=st.sampled_from(["none", "zero-width", "homoglyph"]))
def test_planted_pii_and_secrets_are_found_in_any_unicode(default_guard, seed, before, after, disguise):
    rng = random.Random(seed)
    kind, value = planted(rng)
    shown = value
    if disguise == "zero-width" and kind in ("email", "aws", "github"):
        at = rng.randrange(1, len(value))
        shown = value[:at] + rng.choice(ZERO_WIDTH) + value[at:]
    elif disguise == "homoglyph" and kind == "email":
        shown = "".join(HOMOGLYPH.get(ch, ch) if rng.random() < 0.3 else ch for ch in value)
    if kind == "assignment":
        shown = f'api_key = "{shown}"'  # a bare random string is a secret only where it is assigned
    text = f"{before} {shown} {after}"
    decision = asyncio.run(default_guard.check_output(text, ""))
    assert decision.findings, (kind, shown)
    if not decision.blocked:
        redacted = decision.texts[0]
        assert value not in redacted and shown not in redacted, (kind, redacted)
