"""Input model checks in parallel with the prefill (issue #32, `input_mode: parallel`, the default): the request
goes upstream as soon as the deterministic checks pass, nothing of the answer leaves the gateway before the
model checks' verdict, and a block cancels the engine's request and answers 400. `input_mode: before` keeps
the request from the engine until every check has passed."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import replace

import httpx
import pytest

from llmprod.errors import ConfigError
from llmprod.guardrails.checks.base import CheckConfig
from llmprod.guardrails.policy import Policy, load_policy
from llmprod.guardrails.registry import CHECK_TYPES
from llmprod.guardrails.types import Finding
from llmprod.testing import scripted
from llmprod.testing.scripted import ScriptedUpstream

MODEL = "tiny"


class SlowGuardModel:
    """A model check whose verdict takes `delay` seconds: it blocks a text with "bomb" in it, or raises `fail`."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.fail: BaseException | None = None
        self.finished: list[float] = []

    def build(self, config, shared):
        return _Bound(self, config)


class _Bound:
    def __init__(self, model: SlowGuardModel, config: CheckConfig) -> None:
        self.model, self.config, self.name = model, config, config.check

    async def check_input(self, texts):
        await asyncio.sleep(self.model.delay)
        self.model.finished.append(time.perf_counter())
        if self.model.fail is not None:
            raise self.model.fail
        return [Finding("llama_guard", "S1", 0, 0, self.config.action, 0.9)] if "bomb" in texts[-1] else []

    async def check_output(self, text, context):
        return []


def gateway_args(model: SlowGuardModel, mode: str = "parallel") -> dict:
    policy = Policy("parallel", "test", input=[CheckConfig("secrets", "block", "input", {}, 1),
                                               CheckConfig("llama_guard", "block", "input", {}, 2)],
                    input_mode=mode)
    registry = {**CHECK_TYPES, "llama_guard": replace(CHECK_TYPES["llama_guard"], build=model.build)}
    return {"policy": policy, "registry": registry, "models": {MODEL: "fake"}}


def answer(*words: str) -> list[bytes]:
    return ([scripted.chunk(w) for w in words]
            + [scripted.chunk("", "stop"), scripted.usage(3, len(words)), scripted.DONE])


def whole(text: str) -> dict:
    return {"id": "x", "object": "chat.completion", "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def post(url: str, content: str, stream: bool) -> tuple[int, bytes]:
    body = {"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": content}]}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
        return response.status_code, response.read()


@pytest.mark.parametrize("seed", range(12))
def test_a_block_cancels_the_engines_request_and_no_byte_of_its_answer_reaches_the_client(start_gateway, seed):
    """Randomised over where the verdict lands against the engine's answer: before its first token, or after
    the engine had answered (its stream open, its whole answer back)."""
    rng = random.Random(seed)
    model = SlowGuardModel(delay=rng.choice([0.0, 0.005, 0.02, 0.06]))
    engine = ScriptedUpstream(delay=rng.choice([0.0, 0.005, 0.02, 0.06]))
    stream = rng.random() < 0.5
    if stream:
        engine.script(*answer("LEAKED ", "words "))
    else:
        engine.answer(whole("LEAKED words"))
    url, _ = start_gateway(upstream=engine, **gateway_args(model))
    status, body = post(url, "how to build a bomb", stream)
    assert status == 400, body
    error = json.loads(body)["error"]
    assert error["code"] == "content_policy_violation" and "S1" in error["message"]
    assert b"LEAKED" not in body and b"data:" not in body
    assert len(engine.requests) == 1  # it did go upstream, in parallel with the check
    if engine.streams:  # the engine had answered: its stream was closed unread, which aborts the generation
        assert engine.streams[-1].closed and engine.streams[-1].sent == 0
    elif stream or engine.cancelled:
        assert engine.cancelled == 1  # still in its prefill: the request was cancelled
    metrics = httpx.get(f"{url}/metrics").text
    assert 'llmprod_guardrail_input_cancelled_total{route="chat"} 1.0' in metrics


def test_the_request_goes_upstream_before_the_verdict_and_the_answer_after_it(start_gateway):
    model = SlowGuardModel(delay=0.05)
    engine = ScriptedUpstream(delay=0.05).script(*answer("fine ", "words ")).answer(whole("fine words"))
    url, _ = start_gateway(upstream=engine, **gateway_args(model))
    for stream in (True, False):
        status, body = post(url, "a harmless question", stream)
        assert status == 200 and b"fine" in body
    # ordering, not durations: each engine request began before its model check had finished
    assert all(start < done for start, done in zip(engine.started, model.finished))


def test_input_mode_before_keeps_the_prompt_from_the_engine_until_every_check_passed(start_gateway):
    model = SlowGuardModel(delay=0.02)
    engine = ScriptedUpstream().script(*answer("fine ")).answer(whole("fine"))
    url, _ = start_gateway(upstream=engine, **gateway_args(model, mode="before"))
    for stream in (True, False):
        status, _ = post(url, "how to build a bomb", stream)
        assert status == 400
    assert engine.requests == []  # a blocked prompt never reached the engine
    status, _ = post(url, "a harmless question", True)
    assert status == 200 and engine.started[0] > model.finished[-1]


def test_a_deterministic_block_never_reaches_the_engine_in_either_mode(start_gateway):
    for mode in ("parallel", "before"):
        model = SlowGuardModel()
        engine = ScriptedUpstream().script(*answer("x "))
        url, _ = start_gateway(upstream=engine, **gateway_args(model, mode))
        status, _ = post(url, "my key AKIAZ7Q3XK2M4N5P6R8T", True)
        assert status == 400 and engine.requests == [] and model.finished == []


@pytest.mark.parametrize("stream", [True, False])
def test_a_guard_that_fails_mid_request_fails_closed_and_cancels_the_engine(start_gateway, stream):
    model = SlowGuardModel(delay=0.02)
    model.fail = ConnectionError("guard engine gone")
    engine = ScriptedUpstream(delay=0.05)
    engine.script(*answer("LEAKED ")) if stream else engine.answer(whole("LEAKED"))
    url, _ = start_gateway(upstream=engine, **gateway_args(model))
    status, body = post(url, "a question", stream)
    assert status == 503 and json.loads(body)["error"]["code"] == "guardrail_unavailable" and b"LEAKED" not in body
    assert engine.cancelled == 1
    model.fail = None  # the guard is back: so is the service
    engine.script(*answer("fine ")) if stream else engine.answer(whole("fine"))
    assert post(url, "a question", stream)[0] == 200


def test_input_mode_is_checked_when_the_policy_loads(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\ninput_mode: sideways\ninput:\n  - check: secrets\n")
    with pytest.raises(ConfigError, match="line 2: input_mode 'sideways' is not one of parallel, before"):
        load_policy(path)
    path.write_text("name: p\ninput_mode: before\ninput:\n  - check: secrets\n")
    assert load_policy(path).input_mode == "before"
    assert load_policy("sandwich").input_mode == "parallel"
