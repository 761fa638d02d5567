"""Every field of generated text is guarded: field × streamed/whole × chat/completions/responses × block/redact.

The engine is scripted in the shapes vLLM 0.26 sends (llmprod.testing.vllm_answers): reasoning parsers,
tool-call parsers, logprobs, several choices, the Responses API's events. An e-mail address is planted in one
field, cut across three pieces; no byte the client receives may hold any of it, and the answer must be a
finished stream (or an OpenAI-shaped error) with the policy's action visible where the text was.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from llmprod.guardrails.checks.base import CheckConfig
from llmprod.guardrails.policy import Policy
from llmprod.testing import vllm_answers as vllm
from llmprod.testing.scripted import ScriptedUpstream

MODEL = "tiny"
CUT = ["write to da", "na.lee@exa", "mple.org today"]
LEAKS = ("dana.lee", "lee@exa", "@example.org")
ARGS = ['{"to": "da', 'na.lee@exa', 'mple.org", "n": 1}']

# field → (route, script or pieces, build options)
FIELDS = {
    "chat content": ("chat", [("content", CUT)], {}),
    "chat reasoning": ("chat", [("reasoning", CUT), ("content", ["fine"])], {}),
    "chat reasoning_content": ("chat", [("reasoning_content", CUT), ("content", ["fine"])], {}),
    "chat refusal": ("chat", [("refusal", CUT)], {}),
    "chat tool arguments": ("chat", [("content", ["calling"]), ("tool", ("send_mail", ARGS))], {}),
    "chat tool name": ("chat", [("tool", ("mail_dana.lee@example.org", ["{}"]))], {}),
    "chat logprobs": ("chat", [("content", CUT)], {"logprobs": True}),
    "chat n=2": ("chat", [("content", CUT)], {"n": 2}),
    "completions text": ("completions", CUT, {}),
    "completions logprobs": ("completions", CUT, {"logprobs": True}),
    "completions n=2": ("completions", CUT, {"n": 2}),
    "responses text": ("responses", [("content", CUT)], {}),
    "responses reasoning": ("responses", [("reasoning", CUT), ("content", ["fine"])], {}),
    "responses tool arguments": ("responses", [("tool", ("send_mail", ARGS))], {}),
    "responses tool name": ("responses", [("tool", ("mail_dana.lee@example.org", ["{}"]))], {}),
}
PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions", "responses": "/v1/responses"}


def policy(action: str) -> Policy:
    return Policy(action, "test", output=[CheckConfig("pii", action, "output", {}, 1)])


def engine_for(route: str, script, options: dict, streamed: bool) -> ScriptedUpstream:
    upstream = ScriptedUpstream()
    if route == "chat":
        return upstream.script(*vllm.chat_stream(script, **options)) if streamed else \
            upstream.answer(vllm.chat_whole(script, **options))
    if route == "completions":
        return upstream.script(*vllm.completion_stream(script, **options)) if streamed else \
            upstream.answer(vllm.completion_whole(script, **options))
    if streamed:
        return upstream.script(*vllm.responses_stream(script))
    return upstream.answer(vllm.responses_whole(script))


def request_body(route: str, streamed: bool, options: dict) -> dict:
    body = {"model": MODEL, "stream": streamed}
    if route == "chat":
        body["messages"] = [{"role": "user", "content": "mail dana"}]
        if options.get("logprobs"):
            body.update(logprobs=True, top_logprobs=2)
    elif route == "completions":
        body["prompt"] = "mail dana"
        if options.get("logprobs"):
            body["logprobs"] = 2
    else:
        body["input"] = "mail dana"
    if options.get("n"):
        body["n"] = options["n"]
    return body


def received(route: str, raw: bytes, streamed: bool) -> dict:
    """What the client got, field by field: {"fields": {name: text}, "ending": how it ended}."""
    fields: dict[str, str] = {}

    def add(name: str, text) -> None:
        if isinstance(text, str) and text:
            fields[name] = fields.get(name, "") + text

    if not streamed:
        data = json.loads(raw)
        if route == "responses":
            for item in data["output"]:
                for part in (item.get("content") or []) + (item.get("summary") or []):
                    add(item["type"], part.get("text"))
                add("arguments", item.get("arguments"))
            return {"fields": fields, "ending": data["status"]}
        for choice in data["choices"]:
            holder = choice["message"] if route == "chat" else choice
            for key in ("content", "reasoning", "reasoning_content", "refusal", "text"):
                add(f"{key}{choice['index']}", holder.get(key))
            for call in holder.get("tool_calls") or []:
                add("arguments", call["function"]["arguments"])
                add("name", call["function"]["name"])
            add("logprobs", "".join(e["token"] for e in (choice.get("logprobs") or {}).get("content") or [])
                if route == "chat" else "".join((choice.get("logprobs") or {}).get("tokens") or []))
        return {"fields": fields, "ending": {c["finish_reason"] for c in data["choices"]}}
    events = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: {")]
    last = raw.decode().strip().splitlines()[-1]
    if route == "responses":
        for event in events:
            kind = {"response.output_text.delta": "message", "response.reasoning_text.delta": "reasoning",
                    "response.function_call_arguments.delta": "arguments"}.get(event["type"])
            if kind:
                add(kind, event["delta"])
        return {"fields": fields, "ending": events[-1]["type"]}
    endings = set()
    for event in events:
        for choice in event.get("choices") or []:
            holder = choice.get("delta", {}) if route == "chat" else choice
            for key in ("content", "reasoning", "reasoning_content", "refusal", "text"):
                add(f"{key}{choice['index']}", holder.get(key))
            for call in holder.get("tool_calls") or []:
                add("arguments", call.get("function", {}).get("arguments"))
                add("name", call.get("function", {}).get("name"))
            logprobs = choice.get("logprobs") or {}
            add("logprobs", "".join(e["token"] for e in logprobs.get("content") or []) if route == "chat"
                else "".join(logprobs.get("tokens") or []))
            if choice.get("finish_reason"):
                endings.add(choice["finish_reason"])
    assert last == "data: [DONE]", last
    return {"fields": fields, "ending": endings}


@pytest.mark.parametrize("action", ["redact", "block"])
@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "whole"])
@pytest.mark.parametrize("field", list(FIELDS))
def test_a_planted_value_never_reaches_the_client_from_any_field(field, streamed, action, start_gateway):
    route, script, options = FIELDS[field]
    engine = engine_for(route, script, options, streamed)
    url, _ = start_gateway(upstream=engine, policy=policy(action), models={MODEL: "fake"})
    response = httpx.post(f"{url}{PATHS[route]}", json=request_body(route, streamed, options), timeout=30)
    assert response.status_code == 200, response.text
    assert not any(leak.encode() in response.content for leak in LEAKS), response.text
    got = received(route, response.content, streamed)
    blocked_ending = "incomplete" if route == "responses" and not streamed else (
        "response.incomplete" if route == "responses" else {"content_filter"})
    if action == "block" or "name" in field:  # a name the checks would change cannot be called: it blocks
        assert got["ending"] == blocked_ending, got
    else:
        assert got["ending"] != blocked_ending, got
        redacted = [text for text in got["fields"].values() if "[EMAIL]" in text]
        assert redacted, got
        if "arguments" in field:
            assert json.loads(got["fields"]["arguments"])["to"] == "[EMAIL]"
        if "n=2" in field:
            assert len(redacted) == 2  # each choice on its own
        if "logprobs" in field:
            assert "[EMAIL]" in got["fields"]["logprobs"]


def test_text_of_two_fields_is_never_joined_into_one(start_gateway):
    """Half an address in the reasoning and half in the answer is two harmless texts, not one finding."""
    script = [("reasoning", ["ask da"]), ("content", ["na.lee@example.org is the one"])]
    engine = ScriptedUpstream().script(*vllm.chat_stream(script))
    url, _ = start_gateway(upstream=engine, policy=policy("redact"), models={MODEL: "fake"})
    body = request_body("chat", True, {})
    got = received("chat", httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).content, True)
    assert got["fields"] == {"reasoning0": "ask da", "content0": "[EMAIL] is the one"}
    metrics = httpx.get(f"{url}/metrics").text
    for field in ("reasoning", "content"):
        assert f'llmprod_guardrail_output_fields_total{{field="{field}",route="chat"}} 1.0' in metrics


def test_reasoning_is_not_held_back_by_a_tool_call_or_another_choice(start_gateway):
    script = [("reasoning", ["plain ", "words ", "go ", "out"]), ("tool", ("lookup", ['{"q": ', '"x"}']))]
    engine = ScriptedUpstream().script(*vllm.chat_stream(script))
    url, _ = start_gateway(upstream=engine, policy=policy("redact"), models={MODEL: "fake"})
    lines = [json.loads(line[6:]) for line in httpx.post(
        f"{url}/v1/chat/completions", json=request_body("chat", True, {}), timeout=30).text.splitlines()
        if line.startswith("data: {")]
    reasoning = [c["choices"][0]["delta"].get("reasoning") for c in lines if c.get("choices")]
    assert [r for r in reasoning if r][:3] == ["plain ", "words ", "go "]  # each piece as it came
    calls = [c["choices"][0]["delta"]["tool_calls"] for c in lines if c.get("choices")
             and c["choices"][0]["delta"].get("tool_calls")]
    assert calls == [[{"index": 0, "id": "chatcmpl-tool-0", "type": "function",
                       "function": {"name": "lookup", "arguments": '{"q": "x"}'}}]]


def test_a_redaction_that_would_break_the_arguments_json_blocks(start_gateway):
    # The key pattern takes the quote that closes the value: redacted, the JSON would not parse.
    script = [("tool", ("login", ['{"password": "hunter2hunter2', '"}']))]
    engine = ScriptedUpstream().answer(vllm.chat_whole(script))
    policy_ = Policy("p", "test", output=[CheckConfig("secrets", "redact", "output", {}, 1)])
    url, gateway = start_gateway(upstream=engine, policy=policy_, models={MODEL: "fake"})
    import asyncio

    redacted = asyncio.run(gateway.guard.check_output('{"password": "hunter2hunter2"}', "")).texts[0]
    answer = httpx.post(f"{url}/v1/chat/completions", json=request_body("chat", False, {}), timeout=30).json()
    choice = answer["choices"][0]
    try:
        json.loads(redacted)
    except ValueError:
        assert choice["finish_reason"] == "content_filter" and "tool_calls" not in choice["message"]
    else:
        assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == json.loads(redacted)
    assert "hunter2" not in json.dumps(answer)


@pytest.mark.parametrize("streamed", [True, False])
def test_a_field_the_guard_does_not_know_is_refused_not_passed(streamed, start_gateway):
    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"audio_transcript": "mail dana.lee@example.org"},
                          "finish_reason": None}]}
    whole = vllm.chat_whole([("content", ["hi"])])
    whole["choices"][0]["message"]["audio_transcript"] = "mail dana.lee@example.org"
    engine = ScriptedUpstream()
    if streamed:
        engine.script(b"data: " + json.dumps(chunk).encode() + b"\n\n", b"data: [DONE]\n\n")
    else:
        engine.answer(whole)
    url, _ = start_gateway(upstream=engine, policy=policy("redact"), models={MODEL: "fake"})
    response = httpx.post(f"{url}/v1/chat/completions", json=request_body("chat", streamed, {}), timeout=30)
    assert b"dana.lee" not in response.content
    assert b"unguarded_field" in response.content and b"audio_transcript" in response.content
    if not streamed:
        assert response.status_code == 502


@pytest.mark.parametrize("route, extra", [
    ("chat", {"return_token_ids": True}),
    ("completions", {"return_tokens_as_token_ids": True, "logprobs": 1}),
    ("responses", {"background": True}),
    ("responses", {"enable_response_messages": True}),
    ("responses", {"include": ["message.output_text.logprobs"]}),
])
def test_request_shapes_whose_output_cannot_be_guarded_are_400s(route, extra, start_gateway):
    engine = ScriptedUpstream()
    url, _ = start_gateway(upstream=engine, policy=policy("redact"), models={MODEL: "fake"})
    body = {**request_body(route, False, {}), **extra}
    response = httpx.post(f"{url}{PATHS[route]}", json=body, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unguarded_field"
    assert engine.requests == []


def test_responses_through_the_openai_client_streamed_and_whole(start_gateway):
    script = [("reasoning", ["let me think about da", "na.lee@example.org"]), ("content", CUT)]
    engine = ScriptedUpstream().script(*vllm.responses_stream(script)).answer(vllm.responses_whole(script))
    url, _ = start_gateway(upstream=engine, policy=policy("redact"), models={MODEL: "fake"})
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    with client.responses.create(model=MODEL, input="mail dana", stream=True) as stream:
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    thinking = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert text == "write to [EMAIL] today" and thinking == "let me think about [EMAIL]"
    final = events[-1].response
    assert final.output_text == text
    assert final.output[0].content[0].text == thinking
    assert [e.sequence_number for e in events] == list(range(len(events)))
    whole = client.responses.create(model=MODEL, input="mail dana")
    assert whole.output_text == "write to [EMAIL] today"
    assert whole.output[0].content[0].text == thinking
    metrics = httpx.get(f"{url}/metrics").text
    assert 'llmprod_guardrail_output_fields_total{field="reasoning",route="responses"} 2.0' in metrics
    assert 'llmprod_requests_total{route="responses",status="200"} 2.0' in metrics
    assert 'llmprod_output_tokens_total{route="responses"} 18.0' in metrics


def test_responses_input_is_checked_like_chat(start_gateway):
    engine = ScriptedUpstream()
    blocking = Policy("in", "test", input=[CheckConfig("secrets", "block", "input", {}, 1)])
    url, _ = start_gateway(upstream=engine, policy=blocking, models={MODEL: "fake"})
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    key = "AKIAIOSFODNN7EXAMPLQ"
    for value in (f"my key {key}", [{"role": "user", "content": [{"type": "input_text", "text": key}]}],
                  [{"type": "function_call_output", "call_id": "c", "output": key}]):
        with pytest.raises(openai.BadRequestError) as err:
            client.responses.create(model=MODEL, input=value)
        assert err.value.body["code"] == "content_policy_violation"
    assert engine.requests == []


RECORDED = {  # what vLLM 0.26.0 sent on the H200 (benchmarks/h200/reasoning.sh): --reasoning-parser deepseek_r1
    "chat": "vllm-chat-reasoning.sse",
    "responses": "vllm-responses-reasoning.sse",
}


def recorded_reads(route: str) -> list[bytes]:
    from pathlib import Path

    raw = (Path(__file__).parents[2] / "data" / "vllm-0.26.0" / RECORDED[route]).read_bytes()
    return [event + b"\n\n" for event in raw.split(b"\n\n") if event.strip()]


def reasoning_sent(route: str, raw: bytes) -> tuple[str, str]:
    """(the reasoning text the deltas carried, how the stream ended)."""
    events = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: {")]
    if route == "chat":
        text = "".join(c["choices"][0]["delta"].get("reasoning") or "" for c in events if c.get("choices"))
        return text, raw.decode().strip().splitlines()[-1]
    text = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta")
    return text, events[-1]["type"]


def plant(route: str, reads: list[bytes], at: int, pieces: tuple[str, str]) -> list[bytes]:
    """The reads with pieces[0] appended to the `at`-th reasoning delta and pieces[1] put before the next."""
    out, seen = [], 0
    for read in reads:
        head, _, data = read.partition(b"data: ")
        event = json.loads(data) if data.startswith(b"{") else None
        holder = None
        if event is not None and route == "chat" and event.get("choices"):
            holder, key = event["choices"][0]["delta"], "reasoning"
        elif event is not None and event.get("type") == "response.reasoning_text.delta":
            holder, key = event, "delta"
        if holder is not None and holder.get(key):
            if seen == at:
                holder[key] += pieces[0]
            elif seen == at + 1:
                holder[key] = pieces[1] + holder[key]
            seen += 1
            read = head + b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
        out.append(read)
    return out


@pytest.mark.parametrize("route", ["chat", "responses"])
def test_real_vllm_reasoning_streams_pass_whole_and_a_planted_address_is_redacted_in_every_copy(route,
                                                                                               start_gateway):
    reads = recorded_reads(route)
    original, _ = reasoning_sent(route, b"".join(reads))
    assert len(original) > 100  # random weights: all of it is reasoning
    planted = plant(route, reads, 5, (" mail dana.lee@exa", "mple.org now "))
    expected, _ = reasoning_sent(route, b"".join(planted))
    assert "dana.lee@example.org" in expected
    engine = ScriptedUpstream().script(*reads).script(*planted)
    url, _ = start_gateway(upstream=engine, policy=policy("redact"), models={MODEL: "fake"})
    body = request_body(route, True, {})
    clean = httpx.post(f"{url}{PATHS[route]}", json=body, timeout=30).content
    text, ending = reasoning_sent(route, clean)
    assert text == original
    assert ending == ("data: [DONE]" if route == "chat" else "response.completed")
    guarded = httpx.post(f"{url}{PATHS[route]}", json=body, timeout=30).content
    assert b"dana.lee" not in guarded and b"lee@exa" not in guarded
    text, ending = reasoning_sent(route, guarded)
    assert text == expected.replace("dana.lee@example.org", "[EMAIL]")
    if route == "responses":  # the done events and response.completed carry what the deltas sent
        events = [json.loads(line[6:]) for line in guarded.decode().splitlines() if line.startswith("data: {")]
        assert events[-1]["response"]["output"][0]["content"][0]["text"] == text
        assert next(e for e in events if e["type"] == "response.reasoning_text.done")["text"] == text


KEY = "AKIAIOSFODNN7EXAMPLQ"
ASKS = [{"role": "user", "content": "go on"}]
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": json.dumps({"k": KEY})}}


@pytest.mark.parametrize("route, where", [
    ("chat", {"messages": [{"role": "user", "content": f"my key {KEY}"}]}),
    ("chat", {"messages": [{"role": "user", "content": [{"type": "text", "text": KEY}]}]}),
    ("chat", {"messages": [{"role": "system", "content": f"key {KEY}"}, *ASKS]}),
    ("chat", {"messages": [{"role": "developer", "content": [{"type": "text", "text": KEY}]}, *ASKS]}),
    ("chat", {"messages": [*ASKS, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                           {"role": "tool", "tool_call_id": "c1", "content": "done"}]}),
    ("chat", {"messages": [*ASKS, {"role": "assistant", "content": f"it is {KEY}"}, *ASKS]}),
    ("chat", {"messages": [*ASKS, {"role": "tool", "tool_call_id": "c1", "content": KEY}]}),
    ("chat", {"messages": ASKS, "tools": [{"type": "function", "function": {"name": "f", "description": KEY}}]}),
    ("completions", {"prompt": ["fine", f"key {KEY}"]}),
    ("responses", {"input": f"my key {KEY}"}),
    ("responses", {"input": "go on", "instructions": f"key {KEY}"}),
    ("responses", {"input": [{"role": "developer", "content": KEY}, *ASKS]}),
    ("responses", {"input": [{"role": "user", "content": [{"type": "input_text", "text": KEY}]}]}),
    ("responses", {"input": [*ASKS, {"type": "function_call", "call_id": "c", "name": "f",
                                     "arguments": json.dumps({"k": KEY})}]}),
    ("responses", {"input": [*ASKS, {"type": "function_call_output", "call_id": "c", "output": KEY}]}),
    ("responses", {"input": "go on", "tools": [{"type": "function", "name": "f", "description": KEY}]}),
])
def test_every_role_and_part_that_reaches_the_model_is_checked_on_the_way_in(route, where, start_gateway):
    engine = ScriptedUpstream()
    blocking = Policy("in", "test", input=[CheckConfig("secrets", "block", "input", {}, 1)])
    url, _ = start_gateway(upstream=engine, policy=blocking, models={MODEL: "fake"})
    response = httpx.post(f"{url}{PATHS[route]}", json={"model": MODEL, **where}, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "content_policy_violation"
    assert KEY not in response.text and engine.requests == []


def test_a_redacted_system_prompt_reaches_the_engine_redacted_and_model_checks_judge_the_user_turn(start_gateway):
    engine = ScriptedUpstream().answer(vllm.chat_whole([("content", ["ok"])]))
    redacting = Policy("in", "test", input=[CheckConfig("pii", "redact", "input", {}, 1)])
    url, gateway = start_gateway(upstream=engine, policy=redacting, models={MODEL: "fake"})
    body = {"model": MODEL, "messages": [{"role": "system", "content": "write to dana.lee@example.org"},
                                         {"role": "user", "content": "hello"}]}
    assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).status_code == 200
    assert engine.requests[0]["messages"][0]["content"] == "write to [EMAIL]"
    from llmprod.serve.gateway.requests import input_texts

    assert input_texts("chat", body).untrusted() == ["hello"]


def test_responses_wants_the_key_and_stored_answers_are_not_served(start_gateway):
    engine = ScriptedUpstream().answer(vllm.responses_whole([("content", ["hi"])]))
    url, _ = start_gateway(upstream=engine, policy=policy("redact"), models={MODEL: "fake"}, api_key="k1")
    body = {"model": MODEL, "input": "hello"}
    refused = httpx.post(f"{url}/v1/responses", json=body, timeout=30)
    assert refused.status_code == 401 and refused.json()["error"]["type"]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="k1", max_retries=0)
    assert client.responses.create(model=MODEL, input="hello").output_text == "hi"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_scripted")  # stored answers are not served: they were never checked
    assert 'llmprod_requests_total{route="responses",status="401"} 1.0' in httpx.get(f"{url}/metrics").text


@pytest.mark.parametrize("streamed", [True, False])
def test_answers_name_the_model_as_the_client_asked_not_as_the_engine_did(streamed, start_gateway):
    answer = vllm.chat_whole([("content", ["hi"])])
    answer["model"] = "/models/q-fp8@main"  # transformers serve adds the revision
    reads = [r.replace(b'"model":"scripted"', b'"model":"/models/q-fp8@main"')
             for r in vllm.chat_stream([("content", ["hi"])])]
    engine = ScriptedUpstream().script(*reads).answer(answer)
    url, _ = start_gateway(upstream=engine, models={"q-fp8": "/models/q-fp8"})
    body = {"model": "q-fp8", "messages": ASKS, "stream": streamed}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert b"@main" not in response.content and b"/models/" not in response.content
    assert b'"model":"q-fp8"' in response.content.replace(b" ", b"")
    assert engine.requests[-1]["model"] == "/models/q-fp8"


@pytest.mark.parametrize("route", ["chat", "responses"])
def test_each_field_streamed_gets_exactly_what_checking_it_whole_gives(route, start_gateway):
    """Randomised: reasoning and answer with PII and secrets planted, cut at random points into the engine's
    pieces; every field the client receives is its whole text checked at once, and no planted value leaks."""
    import random

    from llmprod.testing import planted

    redact_all = Policy("redact-all", "test", output=[CheckConfig("pii", "redact", "output", {}, 1),
                                                      CheckConfig("secrets", "redact", "output", {}, 2)])
    rng = random.Random(route)
    engine = ScriptedUpstream()
    cases = []
    for _ in range(8):
        thinking, thought_values = planted.document(rng, rng.choice(["prose", "code"]))
        answer, answer_values = planted.document(rng, rng.choice(["prose", "json"]))
        script = [("reasoning", planted.cut(rng, thinking)), ("content", planted.cut(rng, answer))]
        engine.script(*(vllm.chat_stream(script) if route == "chat" else vllm.responses_stream(script)))
        cases.append((thinking, answer, thought_values + answer_values))
    url, gateway = start_gateway(upstream=engine, policy=redact_all, models={MODEL: "fake"})
    for thinking, answer, values in cases:
        raw = httpx.post(f"{url}{PATHS[route]}", json=request_body(route, True, {}), timeout=30).content
        assert not any(value.encode() in raw for value in values)
        got = received(route, raw, True)["fields"]
        whole = [asyncio.run(gateway.guard.check_output(text, "mail dana")).texts[0] for text in (thinking, answer)]
        assert [got.get("reasoning0" if route == "chat" else "reasoning", ""),
                got.get("content0" if route == "chat" else "message", "")] == whole


@pytest.mark.parametrize("route, recorded", [("chat", "vllm-chat-tool-call.sse"),
                                             ("responses", "vllm-responses-tool-call.sse")])
def test_real_vllm_tool_call_streams_pass_unchanged(route, recorded, start_gateway):
    """vLLM 0.26.0's own tool-call stream (hermes parser, tool_choice required, on the H200): the call reaches
    the client as vLLM sent it, whole, and the stream ends as vLLM's did."""
    from pathlib import Path

    raw = (Path(__file__).parents[2] / "data" / "vllm-0.26.0" / recorded).read_bytes()
    reads = [event + b"\n\n" for event in raw.split(b"\n\n") if event.strip()]
    engine = ScriptedUpstream().script(*reads)
    url, _ = start_gateway(upstream=engine, policy=load_default(), models={MODEL: "fake"})
    got = httpx.post(f"{url}{PATHS[route]}", json=request_body(route, True, {}), timeout=30).content
    if route == "chat":
        sent = received("chat", raw, True)
        assert received("chat", got, True) == sent and sent["fields"] == {"arguments": "{", "name": "send_mail"}
    else:
        events = [json.loads(line[6:]) for line in got.decode().splitlines() if line.startswith("data: {")]
        done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert (done["name"], done["arguments"]) == ("send_mail", "{")
        assert events[-1]["type"] == "response.completed"
        # vLLM's response.completed re-parses the whole text: the truncated call becomes a message whose text
        # the deltas never carried. The gateway checks such a copy whole; clean, it goes out as vLLM wrote it.
        vllm_final = json.loads([line for line in raw.decode().splitlines() if line.startswith("data: {")][-1][6:])
        assert events[-1]["response"]["output"] == vllm_final["response"]["output"]
        assert events[-1]["response"]["output"][0]["type"] == "message"


def load_default():
    from llmprod.guardrails import load_policy

    return load_policy("default")
