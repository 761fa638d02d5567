"""Answers shaped as vLLM 0.26.0 sends them, for the gateway's tests: chat with a reasoning parser (the
delta's `reasoning`; older releases and other servers say `reasoning_content`), with a tool-call parser
(the first piece of a call carries its id, type and name, later pieces its arguments), with logprobs
(one entry per token, each with its top tokens), with several choices; completions; and the Responses API's
events (response.created ... response.completed, each text again whole in its `done` events).

The shapes follow vLLM 0.26.0's own models and serving code (DeltaMessage, ChatCompletionStreamResponse,
the Responses `emit_simple_*` builders): a chunk is serialised with exclude_unset, so `logprobs`,
`finish_reason` and `token_ids` appear as null, and a Responses stream is `event:` + `data:` lines with
no [DONE].

An answer is a script of fields, each cut into the pieces the engine sends:
    [("reasoning", ["I should ", "answer"]), ("content", ["Hello ", "there"]),
     ("tool", ("lookup", ['{"q": "', 'x"}']))]
"""

from __future__ import annotations

import json
from typing import Any

Script = list[tuple[str, Any]]
MODEL = "scripted"


def _sse(payload: dict, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + json.dumps(payload, separators=(",", ":")) + "\n\n").encode()


def _entry(token: str) -> dict:
    alt = token[::-1] or "x"
    return {"token": token, "logprob": -0.25, "bytes": list(token.encode()),
            "top_logprobs": [{"token": token, "logprob": -0.25, "bytes": list(token.encode())},
                             {"token": alt, "logprob": -2.0, "bytes": list(alt.encode())}]}


def chat_stream(script: Script, n: int = 1, logprobs: bool = False) -> list[bytes]:
    """The reads of a streamed chat answer: every choice gets the same script."""
    def chunk(index: int, delta: dict, finish: str | None = None, entries: list | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": {"content": entries} if entries else None,
                  "finish_reason": finish, "token_ids": None}
        if finish:
            choice["stop_reason"] = None
        return _sse({"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
                     "choices": [choice]})

    reads = [chunk(i, {"role": "assistant", "content": ""}) for i in range(n)]
    tools = 0
    for field, pieces in script:
        if field == "tool":
            name, arguments = pieces
            for i in range(n):
                reads.append(chunk(i, {"content": None, "tool_calls": [{
                    "id": f"chatcmpl-tool-{tools}", "type": "function", "index": tools, "function": {"name": name}}]}))
            for piece in arguments:
                for i in range(n):
                    reads.append(chunk(i, {"content": None, "tool_calls": [{
                        "index": tools, "function": {"arguments": piece}}]}))
            tools += 1
            continue
        for piece in pieces:
            for i in range(n):
                reads.append(chunk(i, {field: piece}, entries=[_entry(piece)] if logprobs else None))
    for i in range(n):
        reads.append(chunk(i, {"content": ""}, "tool_calls" if tools else "stop"))
    reads.append(_sse({"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
                       "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}}))
    return reads + [b"data: [DONE]\n\n"]


def chat_whole(script: Script, n: int = 1, logprobs: bool = False) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None, "annotations": None,
                               "audio": None, "function_call": None, "tool_calls": [], "reasoning": None}
    entries = []
    for field, pieces in script:
        if field == "tool":
            name, arguments = pieces
            message["tool_calls"].append({"id": f"chatcmpl-tool-{len(message['tool_calls'])}", "type": "function",
                                          "function": {"name": name, "arguments": "".join(arguments)}})
        else:
            message[field] = (message.get(field) or "") + "".join(pieces)
            entries += [_entry(p) for p in pieces]
    choices = [{"index": i, "message": json.loads(json.dumps(message)),
                "logprobs": {"content": json.loads(json.dumps(entries))} if logprobs else None,
                "finish_reason": "tool_calls" if message["tool_calls"] else "stop", "stop_reason": None,
                "token_ids": None} for i in range(n)]
    return {"id": "chatcmpl-scripted", "object": "chat.completion", "created": 1, "model": MODEL,
            "choices": choices, "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}}


def _completion_logprobs(pieces: list[str]) -> dict:
    offsets, at = [], 0
    for piece in pieces:
        offsets.append(at)
        at += len(piece)
    return {"text_offset": offsets, "token_logprobs": [-0.25] * len(pieces), "tokens": list(pieces),
            "top_logprobs": [{p: -0.25, (p[::-1] or "x"): -2.0} for p in pieces]}


def completion_stream(pieces: list[str], n: int = 1, logprobs: bool = False) -> list[bytes]:
    def chunk(index: int, text: str, finish: str | None = None) -> bytes:
        choice = {"index": index, "text": text, "logprobs": _completion_logprobs([text]) if logprobs and text
                  else None, "finish_reason": finish, "stop_reason": None}
        return _sse({"id": "cmpl-scripted", "object": "text_completion", "created": 1, "model": MODEL,
                     "choices": [choice]})

    reads = [chunk(i, piece) for piece in pieces for i in range(n)]
    reads += [chunk(i, "", "stop") for i in range(n)]
    reads.append(_sse({"id": "cmpl-scripted", "object": "text_completion", "created": 1, "model": MODEL,
                       "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}}))
    return reads + [b"data: [DONE]\n\n"]


def completion_whole(pieces: list[str], n: int = 1, logprobs: bool = False) -> dict:
    choices = [{"index": i, "text": "".join(pieces), "logprobs": _completion_logprobs(pieces) if logprobs else None,
                "finish_reason": "stop", "stop_reason": None, "prompt_logprobs": None} for i in range(n)]
    return {"id": "cmpl-scripted", "object": "text_completion", "created": 1, "model": MODEL, "choices": choices,
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}}


# -- the Responses API -------------------------------------------------------------------------------------
def _response(status: str, output: list) -> dict:
    return {"id": "resp_scripted", "created_at": 1, "incomplete_details": None, "instructions": None,
            "metadata": None, "model": MODEL, "object": "response", "output": output, "parallel_tool_calls": True,
            "temperature": 1.0, "tool_choice": "auto", "tools": [], "top_p": 1.0, "background": False,
            "max_output_tokens": 64, "max_tool_calls": None, "previous_response_id": None, "prompt": None,
            "reasoning": None, "service_tier": "auto", "status": status, "text": None, "top_logprobs": None,
            "truncation": "disabled",
            "usage": {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 9,
                      "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 14}
            if status == "completed" else None, "user": None}


def _items(script: Script) -> list[dict]:
    items = []
    for index, (field, pieces) in enumerate(script):
        if field == "tool":
            name, arguments = pieces
            items.append({"type": "function_call", "id": f"fc_{index}", "call_id": f"call_{index}", "name": name,
                          "arguments": "".join(arguments), "status": "completed"})
        elif field == "reasoning":
            items.append({"type": "reasoning", "id": f"rs_{index}", "summary": [], "status": "completed",
                          "content": [{"type": "reasoning_text", "text": "".join(pieces)}]})
        else:
            items.append({"type": "message", "id": f"msg_{index}", "role": "assistant", "status": "completed",
                          "content": [{"type": "output_text", "text": "".join(pieces), "annotations": []}]})
    return items


def responses_whole(script: Script) -> dict:
    return _response("completed", _items(script))


def responses_stream(script: Script) -> list[bytes]:
    """A streamed response in the events (and order) vLLM's simple (non-harmony) processor sends."""
    events: list[dict] = [{"type": "response.created", "response": _response("in_progress", [])},
                          {"type": "response.in_progress", "response": _response("in_progress", [])}]
    for index, ((field, pieces), item) in enumerate(zip(script, _items(script))):
        base = {"output_index": index, "item_id": item["id"]}
        if field == "tool":
            name, arguments = pieces
            events.append({"type": "response.output_item.added", "output_index": index,
                           "item": dict(item, arguments="", status="in_progress")})
            events += [{"type": "response.function_call_arguments.delta", **base, "delta": p} for p in arguments]
            events.append({"type": "response.function_call_arguments.done", **base,
                           "arguments": "".join(arguments), "name": name})
        else:
            reasoning = field == "reasoning"
            part = {"type": "reasoning_text", "text": ""} if reasoning else \
                {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            added = dict(item, status="in_progress", **({"content": []} if not reasoning else {"content": None}))
            part_event = "response.reasoning_part" if reasoning else "response.content_part"
            kind = "response.reasoning_text" if reasoning else "response.output_text"
            events.append({"type": "response.output_item.added", "output_index": index, "item": added})
            events.append({"type": f"{part_event}.added", **base, "content_index": 0, "part": part})
            for piece in pieces:
                delta = {"type": f"{kind}.delta", **base, "content_index": 0, "delta": piece}
                if not reasoning:
                    delta["logprobs"] = []
                events.append(delta)
            text = "".join(pieces)
            done = {"type": f"{kind}.done", **base, "content_index": 0, "text": text}
            if not reasoning:
                done["logprobs"] = []
            events.append(done)
            events.append({"type": f"{part_event}.done", **base, "content_index": 0,
                           "part": dict(part, text=text)})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append({"type": "response.completed", "response": _response("completed", _items(script))})
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return [_sse(e, e["type"]) for e in events]
