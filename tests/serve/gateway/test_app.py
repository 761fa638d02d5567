"""The gateway against a real in-process engine on loopback, driven by the official openai client and httpx."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from llmprod.serve.upstream import EngineState
from llmprod.testing.fake_engine import make_app
from llmprod.testing.fake_engine import stats as engine_stats
from llmprod.testing.scripted import ScriptedUpstream
from llmprod.testing.servers import ThreadServer, free_port, wait_until

MODEL = "tiny"


def client(url: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


def sse_events(response: httpx.Response) -> list[dict]:
    out = []
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:]))
    return out


def test_chat_completions_models_and_metrics_through_openai_client(fake_engine, start_gateway):
    url, gateway = start_gateway(fake_engine.url, models={MODEL: "fake"})
    c = client(url)
    assert [m.id for m in c.models.list().data] == [MODEL]
    answer = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "echo"}])
    assert answer.choices[0].message.content == "echo"
    assert engine_stats(fake_engine.url)["last_body"]["model"] == "fake"  # the name the engine expects
    done = c.completions.create(model=MODEL, prompt="hello there", max_tokens=3)
    assert done.choices[0].text == "t0 t1 t2 "
    metrics = httpx.get(f"{url}/metrics").text
    assert 'llmprod_requests_total{route="chat",status="200"} 1.0' in metrics
    assert 'llmprod_output_tokens_total{route="completions"} 3.0' in metrics
    assert 'llmprod_prompt_tokens_total{route="completions"} 2.0' in metrics
    assert "llmprod_e2e_request_latency_seconds_count" in metrics


def test_streaming_is_forwarded_chunk_by_chunk_with_usage_only_when_asked(fake_engine, start_gateway):
    url, _ = start_gateway(fake_engine.url, models={MODEL: "fake"})
    c = client(url)
    stream = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "go"}], stream=True,
                                       max_tokens=5)
    chunks = list(stream)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "t0 t1 t2 t3 t4 "
    assert all(ch.usage is None for ch in chunks)  # the gateway asked the engine for usage, the client did not
    assert engine_stats(fake_engine.url)["last_body"]["stream_options"] == {"include_usage": True}

    stream = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "go"}], stream=True,
                                       max_tokens=5, stream_options={"include_usage": True})
    usage = [ch.usage for ch in stream if ch.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == 5
    metrics = httpx.get(f"{url}/metrics").text
    assert 'llmprod_output_tokens_total{route="chat"} 10.0' in metrics
    assert 'llmprod_time_to_first_token_seconds_count{route="chat"} 2.0' in metrics
    assert 'llmprod_inter_token_latency_seconds_count{route="chat"} 8.0' in metrics


def test_stream_is_not_buffered_whole(start_gateway):
    # 6 chunks 0.3 s apart upstream: the first must reach the client long before the last is generated.
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "chunks:a|b|c|d|e|f"}]}
    arrivals = []
    slow = make_slow_engine()
    try:
        url, _ = start_gateway(slow.url, models={MODEL: "fake"})
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    arrivals.append(time.monotonic())
    finally:
        slow.stop()
    assert len(arrivals) >= 6
    span = arrivals[-1] - arrivals[0]
    assert span > 0.5 * 5 * 0.3  # spread like the upstream's own pacing, not delivered at once


def make_slow_engine():
    return ThreadServer(make_app(tokens=8, itl=0.3)).start()


@pytest.mark.parametrize("headers,status", [({}, 401), ({"Authorization": "Bearer wrong"}, 401),
                                            ({"Authorization": "Basic s3cret"}, 401),
                                            ({"Authorization": "Bearer s3cret"}, 200)])
def test_api_key_on_v1_only(fake_engine, start_gateway, headers, status):
    url, _ = start_gateway(fake_engine.url, models={MODEL: "fake"}, api_key="s3cret")
    response = httpx.get(f"{url}/v1/models", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.get(f"{url}/metrics").status_code == 200


def test_openai_client_sees_authentication_error(fake_engine, start_gateway):
    url, _ = start_gateway(fake_engine.url, models={MODEL: "fake"}, api_key="s3cret")
    with pytest.raises(openai.AuthenticationError):
        client(url, "wrong").chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert client(url, "s3cret").chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "echo"}]).choices[0].message.content == "echo"


@pytest.mark.parametrize("content,status,code", [
    (b"{not json", 400, "invalid_json"),
    (b"[1, 2]", 400, "invalid_request"),
    (json.dumps({"model": MODEL}).encode(), 400, "invalid_messages"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), 400, "missing_model"),
    (json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}).encode(),
     400, "invalid_request"),
    (json.dumps({"model": "other", "messages": [{"role": "user", "content": "x"}]}).encode(), 404, "model_not_found"),
])
def test_bad_requests_get_openai_errors_and_never_reach_the_engine(fake_engine, start_gateway, content, status, code):
    url, _ = start_gateway(fake_engine.url, models={MODEL: "fake"})
    before = engine_stats(fake_engine.url)["generations"]
    response = httpx.post(f"{url}/v1/chat/completions", content=content,
                          headers={"content-type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]
    assert engine_stats(fake_engine.url)["generations"] == before


def test_body_over_the_limit_is_413(fake_engine, start_gateway):
    url, _ = start_gateway(fake_engine.url, models={MODEL: "fake"}, max_body_size=2048)
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 5000}]}
    response = httpx.post(f"{url}/v1/chat/completions", json=big)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"

    # Chunked upload with no Content-Length: counted while read.
    def chunks():
        yield json.dumps(big).encode()

    response = httpx.post(f"{url}/v1/chat/completions", content=chunks(),
                          headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_over_max_concurrency_is_429_with_retry_after(fake_engine, start_gateway):
    url, _ = start_gateway(fake_engine.url, models={MODEL: "fake"}, max_concurrency=1)
    first = {}

    def slow_request():
        first["response"] = httpx.post(f"{url}/v1/chat/completions", timeout=30,
                                       json={"model": MODEL, "messages": [{"role": "user", "content": "slow:1.5"}]})

    thread = threading.Thread(target=slow_request)
    thread.start()
    wait_until(lambda: 'llmprod_requests_in_flight 1.0' in httpx.get(f"{url}/metrics").text)
    response = httpx.post(f"{url}/v1/chat/completions", json={"model": MODEL,
                                                              "messages": [{"role": "user", "content": "echo"}]})
    thread.join()
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert first["response"].status_code == 200  # the admitted request was not dropped
    with pytest.raises(openai.RateLimitError):  # how the official client sees it
        thread = threading.Thread(target=slow_request)
        thread.start()
        try:
            wait_until(lambda: 'llmprod_requests_in_flight 1.0' in httpx.get(f"{url}/metrics").text)
            client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "echo"}])
        finally:
            thread.join()


def test_slow_upstream_is_504(fake_engine, start_gateway):
    url, _ = start_gateway(fake_engine.url, models={MODEL: "fake"}, request_timeout=0.3)
    response = httpx.post(f"{url}/v1/chat/completions", timeout=30,
                          json={"model": MODEL, "messages": [{"role": "user", "content": "slow:3"}]})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_upstream_down_is_503(start_gateway):
    url, _ = start_gateway(f"http://127.0.0.1:{free_port()}", models={MODEL: "fake"})
    response = httpx.post(f"{url}/v1/chat/completions",
                          json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "engine_unavailable"
    health = httpx.get(f"{url}/health")
    assert health.status_code == 503 and health.json()["engine"]["status"] == "down"


def test_supervised_engine_marked_down_answers_503_without_calling_it(fake_engine, start_gateway):
    state = EngineState(fake_engine.url, supervised=True)
    url, _ = start_gateway(fake_engine.url, state=state, models={MODEL: "fake"})
    state.mark_down("the engine exited (code 1) and is being restarted")
    before = engine_stats(fake_engine.url)["generations"]
    with pytest.raises(openai.InternalServerError) as err:
        client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 503 and "restarted" in str(err.value)
    assert engine_stats(fake_engine.url)["generations"] == before
    state.mark_up()
    assert client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "echo"}])


@pytest.mark.parametrize("stream", [False, True])
def test_an_engine_core_that_died_is_503_and_marks_the_engine_down(fake_engine, start_gateway, stream):
    """vLLM answers the requests in flight when its EngineCore dies with HTTP 500 (EngineDeadError), then its
    API server exits: to clients that is an engine being restarted, 503 with Retry-After."""
    state = EngineState(fake_engine.url, supervised=True)
    url, _ = start_gateway(fake_engine.url, state=state, models={MODEL: "fake"})
    body = {"model": MODEL, "stream": stream, "messages": [{"role": "system", "content": "enginedead"},
                                                            {"role": "user", "content": "hello"}]}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 503 and response.headers["retry-after"] == "2"
    error = response.json()["error"]
    assert error["code"] == "engine_unavailable" and "EngineCore encountered an issue" in error["message"]
    assert not state.up and "core died" in state.reason


def test_other_engine_errors_are_502s_with_their_message_and_the_engine_stays_up():
    """A 500 is only ever the gateway's own failure; the engine's is a bad gateway (its message kept)."""
    from llmprod.serve.gateway.errors import from_engine

    state = EngineState("http://127.0.0.1:1", supervised=True)
    error = from_engine(500, b'{"error": {"message": "CUDA error", "type": "InternalServerError", "code": 500}}', state)
    assert (error.status, error.message, state.up) == (502, "the engine failed: CUDA error", True)
    assert from_engine(400, b'{"error": {"message": "too long"}}', state).status == 400
    assert from_engine(504, b"", state).status == 504


def test_client_disconnect_cancels_the_upstream_stream(start_gateway):
    slow = ThreadServer(make_app(tokens=50, itl=0.2)).start()
    try:
        url, gateway = start_gateway(slow.url, models={MODEL: "fake"})
        body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "go"}]}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    break  # got one chunk, then hang up
        wait_until(lambda: engine_stats(slow.url)["cancelled"] == 1)
        assert engine_stats(slow.url)["completed"] == 0
        wait_until(lambda: 'llmprod_requests_in_flight 0.0' in httpx.get(f"{url}/metrics").text)
        assert 'llmprod_requests_total{route="chat",status="499"} 1.0' in httpx.get(f"{url}/metrics").text
    finally:
        slow.stop()


def test_unknown_route_is_404_in_openai_shape(fake_engine, start_gateway):
    url, _ = start_gateway(fake_engine.url, models={MODEL: "fake"})
    response = httpx.post(f"{url}/v1/embeddings", json={})
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_url"


def test_upstream_mode_passes_models_through(fake_engine, start_gateway):
    url, _ = start_gateway(fake_engine.url)  # --upstream: no model map
    assert [m.id for m in client(url).models.list().data] == ["fake"]
    answer = client(url).chat.completions.create(model="anything", messages=[{"role": "user", "content": "echo"}])
    assert answer.choices[0].message.content == "echo"
    assert engine_stats(fake_engine.url)["last_body"]["model"] == "anything"


def one_read(terminator: bytes, continuous_usage: bool) -> bytes:
    """A whole streamed answer as the engine's one write: three words, a keep-alive, the finish, the usage.
    With continuous_usage (vLLM's `continuous_usage_stats`), every chunk carries the running totals."""
    def event(payload) -> bytes:
        return b"data: " + (payload if isinstance(payload, bytes) else json.dumps(payload).encode()) + terminator

    events = []
    for i, word in enumerate(("one ", "two ", "three ")):
        chunk = {"id": "c", "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        if continuous_usage:
            chunk["usage"] = {"prompt_tokens": 4, "completion_tokens": i + 1, "total_tokens": 5 + i}
        events.append(event(chunk))
        if i == 0:
            events.append(b": keep-alive" + terminator)
    events.append(event({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    events.append(event({"id": "c", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3,
                                                             "total_tokens": 7}}))
    events.append(event(b"[DONE]"))
    return b"".join(events)


@pytest.mark.parametrize("guarded", [False, True], ids=["no-guardrails", "default-policy"])
@pytest.mark.parametrize("terminator,continuous", [(b"\n\n", False), (b"\r\n\r\n", False), (b"\n\n", True)],
                         ids=["lf", "crlf", "continuous-usage"])
def test_a_stream_packed_in_one_read_keeps_every_event_and_counts_usage_once(start_gateway, terminator, continuous,
                                                                             guarded):
    from llmprod.guardrails import load_policy

    engine = ScriptedUpstream().script(one_read(terminator, continuous)).script(one_read(terminator, continuous))
    url, _ = start_gateway(upstream=engine, policy=load_policy("default") if guarded else None, models={MODEL: "fake"})
    messages = [{"role": "user", "content": "hi"}]
    chunks = list(client(url).chat.completions.create(model=MODEL, messages=messages, stream=True))
    asked = list(client(url).chat.completions.create(model=MODEL, messages=messages, stream=True,
                                                     stream_options={"include_usage": True}))
    assert engine.requests[0]["stream_options"] == {"include_usage": True}  # the gateway always asks for usage
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two three "
    reasons = [c.choices[0].finish_reason for c in chunks]
    assert reasons[-1] == "stop" and set(reasons[:-1]) == {None}
    if not guarded:  # the events went through as they came (with a policy, held text is sent merged)
        assert len(chunks) == 4
    assert all(c.usage is None for c in chunks)  # not asked for: stripped, from every chunk
    assert [c.usage.completion_tokens for c in asked if c.usage is not None][-1] == 3
    if not continuous:
        assert [c.usage.completion_tokens for c in asked if c.usage is not None] == [3]
    assert "".join(c.choices[0].delta.content or "" for c in asked if c.choices) == "one two three "
    metrics = httpx.get(f"{url}/metrics").text
    assert 'llmprod_output_tokens_total{route="chat"} 6.0' in metrics  # 3 per request, running totals not summed
    assert 'llmprod_prompt_tokens_total{route="chat"} 8.0' in metrics


def test_cookies_the_engine_sets_are_not_sent_with_other_clients_requests(start_gateway):
    # One client pool serves every caller: a cookie jar in it would carry one caller's cookie to the next.
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    seen = []

    async def complete(request):
        seen.append(request.headers.get("cookie"))
        response = JSONResponse({"id": "c", "object": "text_completion", "choices": [
            {"index": 0, "text": "ok", "finish_reason": "stop"}]})
        response.set_cookie("session", "caller-one")
        return response

    engine = ThreadServer(Starlette(routes=[Route("/v1/completions", complete, methods=["POST"])])).start()
    try:
        # by name: aiohttp's default jar ignores cookies from IP addresses, not from host names
        url, _ = start_gateway(f"http://localhost:{engine.port}", models={MODEL: "fake"})
        for _ in range(2):
            assert client(url).completions.create(model=MODEL, prompt="hi").choices[0].text == "ok"
    finally:
        engine.stop()
    assert seen == [None, None]
