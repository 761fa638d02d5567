"""What a generation request holds: its JSON body (bounded), the fields the gateway checks, and the texts the
input guardrails see, with a way to write redacted versions back."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Callable

from llmprod.serve.gateway.errors import GatewayError, bad_request


# The whole body must arrive within this many seconds of the request's headers: a client that sends it a
# byte at a time (or never) is answered 408 instead of holding a connection and a task for ever.
BODY_TIMEOUT_S = 30.0


async def read_json(request, limit: int, timeout: float | None = None) -> dict:
    """The body as a JSON object; 413 past `limit` bytes (declared or streamed), 408 when it has not all
    arrived within `timeout` seconds, 400 when it is not JSON."""
    timeout = BODY_TIMEOUT_S if timeout is None else timeout
    declared = request.headers.get("content-length")
    too_large = GatewayError(413, f"the request body is larger than --max-body-size ({limit} bytes)",
                             "invalid_request_error", "request_too_large")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        raise GatewayError(408, f"the request body did not arrive within {timeout:g} s", "invalid_request_error",
                           "request_timeout") from None
    raw = b"".join(chunks)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}", "invalid_json") from None
    except RecursionError:
        raise bad_request("the request body is nested too deeply to read", "invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    if _SURROGATE_ESCAPE.search(raw) and not _valid_unicode(body):
        # JSON lets "\ud800" through, but a lone surrogate is no character: no engine or regex can take it.
        raise bad_request("the request body holds a lone UTF-16 surrogate (an escape like \\ud800 without its "
                          "pair): send valid Unicode", "invalid_unicode")
    return body


# A \uD800-\uDFFF escape: the only way a lone surrogate gets into decoded JSON. Rare, so the body is walked
# only when the raw bytes hold one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _valid_unicode(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def check_fields(body: dict, models: dict[str, str] | None) -> None:
    """`model` (mapped to the name the engine expects when the gateway knows its models), `stream`, `max_tokens`."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("`model` is required (a string; GET /v1/models lists them)", "missing_model")
    if models is not None:
        if model not in models:
            raise GatewayError(404, f"model {model!r} is not served here; available: {', '.join(models)}",
                               "invalid_request_error", "model_not_found")
        body["model"] = models[model]
    if "stream" in body and not isinstance(body["stream"], bool):
        raise bad_request("`stream` must be true or false")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise bad_request("`max_tokens` must be a positive integer")


class InputTexts:
    """The checkable texts of a request, and how to write redacted versions back."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.roles: list[str] = []
        self.opaque = False  # a prompt of token ids: nothing a text check can read
        self.unreadable: str | None = None  # a part of the input no text check can read, named
        self._setters: list[Callable[[str], None]] = []

    def add(self, text: str, role: str, setter: Callable[[str], None]) -> None:
        self.values.append(text)
        self.roles.append(role)
        self._setters.append(setter)

    def write_back(self, texts: list[str]) -> None:
        for setter, old, new in zip(self._setters, self.values, texts):
            if old != new:
                setter(new)
        self.values = list(texts)

    def untrusted(self) -> list[str]:
        """The user and tool turns: what the model checks judge (deterministic checks see every text)."""
        return [t for t, r in zip(self.values, self.roles) if r in ("user", "tool")]

    def user_context(self) -> str:
        """The last user turn: what an answer is judged against."""
        users = [t for t, r in zip(self.values, self.roles) if r == "user"]
        return users[-1] if users else ""


def input_texts(route: str, body: dict) -> InputTexts:
    """Validate the request's text fields and collect every text that reaches the model, with its role.

    Chat: every message's text, whatever its role (the client sends the system prompt and earlier assistant
    turns too, so a check they skipped could be stepped around), assistant tool calls' arguments, and the
    tools' descriptions. Completions: the prompt. Responses: responses.add_input_texts.
    """
    texts = InputTexts()
    if route == "responses":
        from llmprod.serve.gateway.responses import add_input_texts

        add_input_texts(body, texts)
        return texts
    if route == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("`messages` must be a non-empty list of {role, content} objects", "invalid_messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise bad_request(f"messages[{i}] must be an object with a `role`", "invalid_messages")
            role, content = message["role"], message.get("content")
            if isinstance(content, str):
                texts.add(content, role, lambda new, m=message: m.__setitem__("content", new))
            elif isinstance(content, list):
                for j, part in enumerate(content):
                    # Every part is checked: a text part the guardrails could not read must not reach the engine.
                    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                        raise bad_request(f"messages[{i}].content[{j}] must be an object with a `type`",
                                          "invalid_messages")
                    if part["type"] == "text":
                        if not isinstance(part.get("text"), str):
                            raise bad_request(f"messages[{i}].content[{j}].text must be a string", "invalid_messages")
                        texts.add(part["text"], role, lambda new, p=part: p.__setitem__("text", new))
                    elif part["type"] not in ("image_url", "input_audio", "video_url", "file"):
                        texts.unreadable = f"messages[{i}].content[{j}] of type {part['type']}"
            elif content is not None or role in ("user", "tool"):
                raise bad_request(f"messages[{i}].content must be a string or a list of parts ({role} messages "
                                  "carry content)", "invalid_messages")
            for key in ("reasoning", "reasoning_content"):  # an earlier turn's reasoning, sent back
                if isinstance(message.get(key), str):
                    texts.add(message[key], role, lambda new, m=message, k=key: m.__setitem__(k, new))
            add_call_arguments(texts, message.get("tool_calls"), role)
        add_tool_descriptions(texts, body.get("tools"))
        return texts
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        texts.add(prompt, "user", lambda new: body.__setitem__("prompt", new))
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        for i, item in enumerate(prompt):
            texts.add(item, "user", lambda new, i=i: prompt.__setitem__(i, new))
    elif isinstance(prompt, list) and prompt and all(isinstance(p, (int, list)) for p in prompt):
        texts.opaque = True  # token ids
    else:
        raise bad_request("`prompt` must be a string or a list of strings", "invalid_prompt")
    return texts


def add_call_arguments(texts: InputTexts, calls, role: str) -> None:
    """The arguments of tool calls an earlier turn made, as the client sends them back."""
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            texts.add(function["arguments"], role, lambda new, f=function: f.__setitem__("arguments", new))


def add_tool_descriptions(texts: InputTexts, tools) -> None:
    """The descriptions of the tools offered: the chat template puts them in the prompt."""
    for tool in tools if isinstance(tools, list) else ():
        holder = tool.get("function", tool) if isinstance(tool, dict) else None
        if isinstance(holder, dict) and isinstance(holder.get("description"), str):
            texts.add(holder["description"], "tools", lambda new, h=holder: h.__setitem__("description", new))
