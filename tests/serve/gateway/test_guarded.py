"""Guardrails in the gateway: input block / redact, output redact and block, streamed and not."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace

import httpx
import openai
import pytest

from llmprod.guardrails import load_policy
from llmprod.guardrails.checks.base import CheckConfig
from llmprod.guardrails.policy import Policy
from llmprod.guardrails.registry import CHECK_TYPES
from llmprod.guardrails.types import Decision, Finding
from llmprod.testing import scripted
from llmprod.testing.fake_engine import make_app
from llmprod.testing.fake_engine import stats as engine_stats
from llmprod.testing.scripted import ScriptedUpstream
from llmprod.testing.servers import ThreadServer, wait_until

MODEL = "tiny"


def chat(url: str, content: str, **kwargs):
    c = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    return c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}], **kwargs)


def streamed(url: str, content: str) -> tuple[str, list[dict]]:
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": content}]}
    chunks = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunks.append(json.loads(line[6:]))
    text = "".join((c["choices"][0].get("delta") or {}).get("content") or "" for c in chunks if c.get("choices"))
    return text, chunks


def test_blocked_input_is_400_without_echoing_it_and_never_sent_upstream(fake_engine, start_gateway):
    url, _ = start_gateway(fake_engine.url, policy=load_policy("default"), models={MODEL: "fake"})
    before = engine_stats(fake_engine.url)["generations"]
    secret = "AKIAIOSFODNN7EXAMPLQ"
    with pytest.raises(openai.BadRequestError) as err:
        chat(url, f"here is my key {secret}, keep it")
    body = err.value.body
    assert body["code"] == "content_policy_violation"
    assert "aws_access_key_id" in body["message"] and secret not in json.dumps(body)
    assert engine_stats(fake_engine.url)["generations"] == before
    metrics = httpx.get(f"{url}/metrics").text
    assert ('llmprod_guardrail_verdicts_total{action="block",category="aws_access_key_id",check="secrets",'
            'stage="input"} 1.0') in metrics
    assert 'llmprod_guardrail_latency_seconds_count{check="secrets",stage="input"}' in metrics


def test_redacted_input_reaches_the_engine_with_placeholders(fake_engine, start_gateway):
    url, _ = start_gateway(fake_engine.url, policy=load_policy("default"), models={MODEL: "fake"})
    answer = chat(url, "echo:write to jane.doe@example.org or call +44 20 7946 0958 today")
    sent = engine_stats(fake_engine.url)["last_body"]["messages"][-1]["content"]
    assert sent == "echo:write to [EMAIL] or call [PHONE] today"
    # The engine echoed the redacted text; the output check found nothing more to do.
    assert answer.choices[0].message.content == "write to [EMAIL] or call [PHONE] today"


def output_only(default_stage_checks=("secrets", "pii")) -> Policy:
    actions = {"secrets": "block", "pii": "redact"}
    return Policy("out", "test", output=[CheckConfig(c, actions[c], "output", {}, 1) for c in default_stage_checks])


def test_non_streamed_output_is_checked_whole(fake_engine, start_gateway):
    url, _ = start_gateway(fake_engine.url, policy=output_only(), models={MODEL: "fake"})
    answer = chat(url, "chunks:card 4111 1111 1111 1111 ok")
    assert answer.choices[0].message.content == "card [CARD] ok"
    blocked = chat(url, "chunks:token ghp_" + "a1B2" * 9 + " bye")
    assert blocked.choices[0].finish_reason == "content_filter"
    assert blocked.choices[0].message.content == ""


@pytest.mark.parametrize("pieces", [
    ["mail me at jo", "hn.smith@exa", "mple.com now"],
    ["mail me at john.smith@example.co", "m now"],
    ["m", "a", "i", "l", " ", "m", "e", " ", "a", "t", " ", *"john.smith@example.com", " ", "n", "o", "w"],
])
def test_streamed_output_redacts_across_chunk_boundaries(pieces, fake_engine, start_gateway):
    policy = Policy("p", "test", output=[CheckConfig("pii", "redact", "output", {}, 1)])
    url, _ = start_gateway(fake_engine.url, policy=policy, models={MODEL: "fake"})
    text, chunks = streamed(url, "chunks:" + "|".join(pieces))
    assert text == "mail me at [EMAIL] now"
    assert "john.smith" not in json.dumps(chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def raw_lines(url: str, model: str, content: str) -> list[str]:
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": content}]}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        return [line for line in response.iter_lines() if line]


def test_output_the_checks_let_through_goes_out_as_the_engines_own_events(start_gateway):
    words = ["plain ", "words ", "then ", "mail a@example.org ", "and ", "more ", "words"]
    reads = [scripted.chunk(w) for w in words] + [scripted.chunk("", "stop"), scripted.usage(3, 7), scripted.DONE]
    engine = ScriptedUpstream().script(*reads)
    url, _ = start_gateway(upstream=engine, policy=output_only(), models={MODEL: "fake"})
    through = raw_lines(url, MODEL, "go")
    assert through[:3] == [read.decode().strip() for read in reads[:3]]  # the engine's bytes, not re-encoded
    redacted = [json.loads(line[6:]) for line in through[3:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in redacted) == \
        "mail [EMAIL] and more words"
    assert through[-1] == "data: [DONE]"
    metrics = httpx.get(f"{url}/metrics").text
    # the checks' time over the whole stream is one observation per request, not one per chunk
    assert 'llmprod_guardrail_latency_seconds_count{check="pii",stage="output"} 1.0' in metrics


def test_streamed_output_block_ends_with_content_filter_and_cancels_upstream(start_gateway):
    engine = ThreadServer(make_app(tokens=8, itl=0.05)).start()
    try:
        url, _ = start_gateway(engine.url, policy=output_only(), models={MODEL: "fake"})
        pieces = ["safe text here. ", "the key is ", "AKIA", "IOSFODNN7EXAMPLQ", " and more"] + ["x "] * 40
        text, chunks = streamed(url, "chunks:" + "|".join(pieces))
        assert "AKIA" not in text and text.startswith("safe text here.")
        assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
        wait_until(lambda: engine_stats(engine.url)["cancelled"] == 1)
    finally:
        engine.stop()


class ControlledCheck:
    """A model check whose verdict the test sets: stands in for Llama Guard in gateway flows. One object plays
    every llama_guard entry of the policy (as one shared guard model does)."""

    def __init__(self) -> None:
        self.unsafe_after: str | None = None
        self.fail: BaseException | None = None  # every call raises it
        self.fail_on_output: BaseException | None = None  # output checks raise it
        self.calls: list[tuple[str, str]] = []

    def build(self, config, shared):
        return _Bound(self, config)


class _Bound:
    def __init__(self, check: ControlledCheck, config: CheckConfig) -> None:
        self.check, self.config, self.name = check, config, config.check
        self.every_tokens = config.options.get("every_tokens", 64)

    async def check_input(self, texts):
        self.check.calls.append(("input", texts[-1]))
        if self.check.fail is not None:
            raise self.check.fail
        return [Finding("llama_guard", "S1", 0, 0, self.config.action, 0.9)] if "bomb" in texts[-1] else []

    async def check_output(self, text, context):
        self.check.calls.append(("output", text))
        if (self.check.fail or self.check.fail_on_output) is not None:
            raise self.check.fail or self.check.fail_on_output
        if self.check.unsafe_after and self.check.unsafe_after in text:
            return [Finding("llama_guard", "S2", 0, 0, self.config.action, 0.95)]
        return []


def sandwich(check: ControlledCheck, every: int = 3) -> dict:
    """start_gateway's arguments for a policy whose llama_guard checks are `check`."""
    policy = Policy("sandwich", "test", input=[CheckConfig("llama_guard", "block", "input", {}, 1)],
                    output=[CheckConfig("llama_guard", "block", "output", {"every_tokens": every}, 2)])
    registry = {**CHECK_TYPES, "llama_guard": replace(CHECK_TYPES["llama_guard"], build=check.build)}
    return {"policy": policy, "registry": registry, "models": {MODEL: "fake"}}


def test_model_check_blocks_input(fake_engine, start_gateway):
    check = ControlledCheck()
    url, _ = start_gateway(fake_engine.url, **sandwich(check))
    with pytest.raises(openai.BadRequestError) as err:
        chat(url, "how to build a bomb")
    assert "S1" in err.value.body["message"]
    assert chat(url, "echo").choices[0].message.content == "echo"
    metrics = httpx.get(f"{url}/metrics").text
    assert ('llmprod_guardrail_verdicts_total{action="block",category="S1",check="llama_guard",stage="input"} 1.0'
            in metrics)
    # each check's time once per request, and no second series for the whole policy
    assert 'llmprod_guardrail_latency_seconds_count{check="llama_guard",stage="input"} 2.0' in metrics
    assert 'check="policy"' not in metrics


def scripted_answer(*words: str, packed: bool = False) -> list[bytes]:
    """The reads of a streamed answer: one event a read, or (packed) every event in one read."""
    reads = [scripted.chunk(w) for w in words] + [scripted.chunk("", "stop"), scripted.usage(2, len(words)),
                                                  scripted.DONE]
    return [b"".join(reads)] if packed else reads


def streamed_text(url: str) -> tuple[str, list[dict]]:
    return streamed(url, "go on")


def test_model_check_on_streamed_output_every_n_tokens_and_at_the_end(start_gateway):
    check = ControlledCheck()
    words = ("a ", "b ", "c ", "d ", "e ", "f ", "g ")
    engine = ScriptedUpstream().script(*scripted_answer(*words)).script(*scripted_answer(*words))
    url, _ = start_gateway(upstream=engine, **sandwich(check, every=3))
    text, chunks = streamed_text(url)
    assert text == "a b c d e f g " and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    outputs = [t for stage, t in check.calls if stage == "output"]
    assert outputs == ["a b c ", "a b c d e f ", "a b c d e f g "]  # every 3 tokens, then the whole at the end

    check.unsafe_after = "e "
    check.calls.clear()
    text, chunks = streamed_text(url)
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert "g" not in text
    assert engine.streams[-1].closed  # the engine's connection dropped: the generation is aborted


def test_every_tokens_counts_tokens_when_one_read_packs_many_events(start_gateway):
    check = ControlledCheck()
    words = [f"w{i} " for i in range(10)]
    engine = ScriptedUpstream().script(*scripted_answer(*words, packed=True))
    url, _ = start_gateway(upstream=engine, **sandwich(check, every=4))
    text, _ = streamed_text(url)
    assert text == "".join(words)
    outputs = [t for stage, t in check.calls if stage == "output"]
    # One read holds all ten tokens: a check as soon as it arrives (10 >= 4), then the final one. Counted by
    # reads, "every 4" would have meant "never before the end".
    assert outputs == ["".join(words), "".join(words)]


def test_a_check_that_fails_fails_closed(fake_engine, start_gateway):
    check = ControlledCheck()
    url, _ = start_gateway(fake_engine.url, **sandwich(check, every=2))
    check.fail = ConnectionError("the guard endpoint went away")
    before = engine_stats(fake_engine.url)["generations"]
    with pytest.raises(openai.InternalServerError) as err:
        chat(url, "hello")
    assert err.value.status_code == 503 and err.value.body["code"] == "guardrail_unavailable"
    assert err.value.response.headers["retry-after"] == "5"
    assert engine_stats(fake_engine.url)["generations"] == before  # never sent upstream unchecked

    # Mid-stream: the input passes, the first output check (after two tokens) fails: an error event ends it.
    check.fail = None
    check.fail_on_output = RuntimeError("out of memory")
    engine = ScriptedUpstream().script(*scripted_answer("a ", "b ", "c ", "d ", "e "))
    url, _ = start_gateway(upstream=engine, **sandwich(check, every=2))
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "go on"}]}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
        lines = list(response.iter_lines())
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert events[-1]["error"]["code"] == "guardrail_unavailable"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))
    assert text == "a " and engine.streams[0].closed  # what came before the check; the engine dropped
    metrics = httpx.get(f"{url}/metrics").text
    assert 'llmprod_guardrail_errors_total{check="llama_guard",stage="output"} 1.0' in metrics
    assert 'llmprod_requests_total{route="chat",status="503"} 1.0' in metrics


class BrokenGuard:
    """A Guard whose input check has a bug: the gateway must still answer in OpenAI's shape."""

    name = "broken"
    has_input_checks = True
    has_output_checks = False

    def describe(self):
        return ["broken"]

    async def check_input(self, texts, model_texts=None) -> Decision:
        raise KeyError(f"no such field in {texts[-1]}")


def test_an_unexpected_exception_is_a_json_500_logged_by_request_id_without_the_text(fake_engine, start_gateway,
                                                                                    caplog):
    url, _ = start_gateway(fake_engine.url, guard=BrokenGuard(), models={MODEL: "fake"})
    secret = "my card is 4111 1111 1111 1111"
    with caplog.at_level(logging.ERROR, logger="llmprod.gateway"):
        with pytest.raises(openai.InternalServerError) as err:
            chat(url, secret)
    assert err.value.status_code == 500
    assert err.value.body["type"] == "server_error" and err.value.body["code"] == "internal_error"
    request_id = err.value.response.headers["x-request-id"]
    assert request_id in err.value.body["message"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"request {request_id}" in logged and "KeyError" in logged
    assert "4111" not in logged and "card" not in logged
    metrics = httpx.get(f"{url}/metrics").text
    assert 'llmprod_requests_total{route="chat",status="500"} 1.0' in metrics


@pytest.fixture(scope="module")
def fast_engine():
    with ThreadServer(make_app(itl=0.0)) as server:
        yield server


@pytest.mark.parametrize("kind", ["prose", "runs", "code", "json"])
def test_planted_pii_and_secrets_never_reach_the_client_however_the_engine_cuts_them(fast_engine, start_gateway,
                                                                                     kind):
    import random

    from llmprod.testing import planted

    redact_all = Policy("redact-all", "test", output=[CheckConfig("pii", "redact", "output", {}, 1),
                                                      CheckConfig("secrets", "redact", "output", {}, 2)])
    url, gateway = start_gateway(fast_engine.url, policy=redact_all, models={MODEL: "fake"})
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    rng = random.Random(kind)
    for _ in range(12):
        text, values = planted.document(rng, kind)
        script = [{"role": "system", "content": "chunks:" + "|".join(planted.cut(rng, text))},
                  {"role": "user", "content": "go on"}]
        stream = client.chat.completions.create(model=MODEL, messages=script, stream=True)
        received = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert not any(value in received for value in values), (text, received)
        # exactly what checking the whole answer at once gives
        assert received == asyncio.run(gateway.guard.check_output(text, "go on")).texts[0]
