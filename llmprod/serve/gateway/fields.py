"""Every field of generated text an answer can carry, and how the output guardrails see each one.

    chat          choices[i].message (or .delta): content, reasoning_content, reasoning, refusal,
                  tool_calls[k].function.name and .arguments; choices[i].logprobs.content[j].token and its
                  top_logprobs[].token
    completions   choices[i].text; choices[i].logprobs.tokens and top_logprobs[j] (token → logprob)
    responses     responses.py: output items (message text, reasoning text and summary, function calls)

Each field of each choice is its own text: its own scanner when streamed, its own check when whole, so text
from two fields is never joined into one. A tool call's name and arguments are checked whole (a client
cannot act on half a call): a redaction that would leave the arguments invalid JSON blocks the answer
instead. Logprob tokens are redacted as their field's text was, and a top token the checks would change is
left out. Anything else that could carry generated text is refused: a request that asks for it is a 400
before the engine sees it (`refuse_unguardable`), an answer that holds it fails closed (`Unguardable`).
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from llmprod.guardrails.redaction import redacted_chars
from llmprod.guardrails.types import Guard, StreamStep
from llmprod.serve.gateway.errors import GatewayError, bad_request

TEXT_FIELDS = ("content", "reasoning_content", "reasoning", "refusal")
# Keys beside the text that carry no generated text (ids, reasons, numbers, the prompt's own tokens).
CHOICE_KEYS = frozenset({"index", "finish_reason", "stop_reason", "routed_experts", "prompt_logprobs",
                         "prompt_token_ids"})
MESSAGE_KEYS = frozenset({"role", "annotations", "audio", "function_call", "tool_call_id", "name"})
TOOL_CALL_KEYS = frozenset({"id", "type", "index"})


class Unguardable(Exception):
    """An answer holds a field the output guardrails cannot read: it is not passed on."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path

    def error(self) -> GatewayError:
        return GatewayError(502, f"the engine's answer carries `{self.path}`, which the output guardrails cannot "
                            "check; it was not passed on", "upstream_error", "unguarded_field")


def empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _asks_responses_logprobs(body: dict) -> bool:
    include = body.get("include")
    return bool(body.get("top_logprobs")) or (isinstance(include, list) and any("logprobs" in str(i) for i in include))


# (routes, whether the request asks for it, what the 400 says): answers the output guardrails could not read.
UNGUARDABLE_REQUESTS = (
    (None, lambda b: b.get("return_token_ids"),
     "`return_token_ids` returns the generated tokens as ids, which the output guardrails cannot check; leave it out"),
    (None, lambda b: b.get("return_tokens_as_token_ids"),
     "`return_tokens_as_token_ids` turns logprob tokens into ids, which the output guardrails cannot check; "
     "leave it out"),
    ("responses", lambda b: b.get("background"),
     "`background` responses are fetched later, past the output guardrails; send the request without it"),
    ("responses", lambda b: b.get("enable_response_messages"),
     "`enable_response_messages` returns the model's raw messages, which the output guardrails cannot check; "
     "leave it out"),
    ("responses", _asks_responses_logprobs,
     "logprobs on /v1/responses cannot be checked by the output guardrails; use /v1/chat/completions for logprobs"),
)


def refuse_unguardable(route: str, body: dict) -> None:
    """400 for a request whose answer would carry text the output guardrails cannot read faithfully."""
    for routes, asks, message in UNGUARDABLE_REQUESTS:
        if routes in (None, route) and asks(body):
            raise bad_request(message, "unguarded_field")


def call_function(call: Any, path: str, required: bool) -> dict:
    """A tool call's `function` ({name, arguments}: strings or null), its keys checked: anything else in the
    call could carry generated text nobody checks. `required`: a whole call has one; a streamed piece may not."""
    if not isinstance(call, dict):
        raise Unguardable(path)
    for key, value in call.items():
        if key not in TOOL_CALL_KEYS and key != "function" and not empty(value):
            raise Unguardable(f"{path}.{key}")
    function = call.get("function") if required else call.get("function") or {}
    if not isinstance(function, dict):
        raise Unguardable(f"{path}.function")
    for key, value in function.items():
        if not isinstance(value, (str, type(None))) if key in ("name", "arguments") else not empty(value):
            raise Unguardable(f"{path}.function.{key}")
    return function


def parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


async def check_tool_call(guard: Guard, name: str | None, arguments: str | None,
                          context: str) -> tuple[str | None, str | None] | None:
    """A whole tool call through the output checks: (name, arguments), redacted, or None when it is blocked.
    A name the checks would change, or arguments whose redaction breaks their JSON, block."""
    if name:
        decision = await guard.check_output(name, context)
        if decision.blocked or decision.texts[0] != name:
            return None
    if arguments:
        decision = await guard.check_output(arguments, context)
        if decision.blocked:
            return None
        redacted = decision.texts[0]
        if redacted != arguments and parses(arguments) and not parses(redacted):
            return None
        arguments = redacted
    return name, arguments


class TokenMirror:
    """Logprob entries, released as the text of their tokens is: one scanner reads the tokens as one text
    (their field), and each entry goes out once all its characters are released, redacted as they were.
    An entry whose token changed loses its top tokens (they would show what was removed); elsewhere a top
    token the deterministic checks would redact or block is left out."""

    def __init__(self, guard, scanner, chat: bool) -> None:
        self.guard = guard
        self.scanner = scanner
        self.chat = chat
        self.queue: deque[list[Any]] = deque()  # [entry, token, characters released, pieces out]
        self.shift = 0  # completions' text_offset: characters added (+) or removed (-) by redactions so far

    async def feed(self, entries: list[dict]) -> tuple[list[dict], bool]:
        """Entries (each {"token", "logprob", "top_logprobs", ...}) → those released now, and whether blocked."""
        for entry in entries:
            token = entry.get("token")
            if not isinstance(token, str):
                raise Unguardable("logprobs.token")
            self.queue.append([entry, token, 0, []])
        text = "".join(e.get("token") for e in entries)
        return self._take(await self.scanner.feed(text, tokens=len(entries)) if text else StreamStep(""))

    async def finish(self) -> tuple[list[dict], bool]:
        return self._take(await self.scanner.finish())

    def _take(self, step: StreamStep) -> tuple[list[dict], bool]:
        if step.blocked:
            self.queue.clear()
            return [], True
        source = step.text if step.source is None else step.source
        chars = None if step.source is None else redacted_chars(step.source, step.redactions)
        out, pos = [], 0
        while self.queue:
            item = self.queue[0]
            entry, token, done, pieces = item
            take = min(len(token) - done, len(source) - pos)
            if take > 0:
                pieces.append(source[pos:pos + take] if chars is None else "".join(chars[pos:pos + take]))
                item[2] = done = done + take
                pos += take
            if done < len(token):
                break
            self.queue.popleft()
            out.append(self._entry(entry, token, "".join(pieces)))
        return out, False

    def _entry(self, entry: dict, token: str, text: str) -> dict:
        changed = text != token
        entry = dict(entry, token=text)
        if "bytes" in entry and changed:
            entry["bytes"] = list(text.encode())
        top = entry.get("top_logprobs")
        if changed:
            entry["top_logprobs"] = [] if isinstance(top, list) else ({} if isinstance(top, dict) else top)
        elif isinstance(top, list):
            entry["top_logprobs"] = [alt for alt in top
                                     if not (isinstance(alt, dict) and self._changes(alt.get("token")))]
        elif isinstance(top, dict):
            entry["top_logprobs"] = {t: lp for t, lp in top.items() if not self._changes(t)}
        if "text_offset" in entry:
            entry["text_offset"] += self.shift
        self.shift += len(text) - len(token)
        return entry

    def _changes(self, token: Any) -> bool:
        if not isinstance(token, str):
            return True
        # timed with the field's scanner, which reports its checks' time when the stream ends
        found = self.guard.scan_with(token, "output", self.guard.deterministic("output"), self.scanner.timings)
        return any(f.action != "flag" for f in found)


def logprob_entries(logprobs: Any, chat: bool) -> list[dict] | None:
    """A choice's logprobs as entries {"token", ...}; None when it has none. Completions' parallel lists
    become one entry per token (`to_logprobs` turns them back)."""
    if empty(logprobs):
        return None
    if not isinstance(logprobs, dict):
        raise Unguardable("logprobs")
    if chat:
        for key, value in logprobs.items():
            if key != "content" and not empty(value):
                raise Unguardable(f"logprobs.{key}")
        content = logprobs.get("content")
        if content is None:
            return None
        if not isinstance(content, list) or not all(isinstance(e, dict) for e in content):
            raise Unguardable("logprobs.content")
        return content
    tokens = logprobs.get("tokens") or []
    columns = {key: logprobs.get(key) or [] for key in ("token_logprobs", "top_logprobs", "text_offset")}
    if not isinstance(tokens, list) or any(not isinstance(c, list) or (c and len(c) != len(tokens))
                                           for c in columns.values()):
        raise Unguardable("logprobs")
    return [{"token": t, **{key: c[i] for key, c in columns.items() if c}} for i, t in enumerate(tokens)]


def to_logprobs(entries: list[dict], chat: bool) -> dict:
    if chat:
        return {"content": entries}
    out: dict[str, list] = {"text_offset": [], "token_logprobs": [], "tokens": [], "top_logprobs": []}
    for entry in entries:
        out["tokens"].append(entry["token"])
        out["token_logprobs"].append(entry.get("token_logprobs"))
        out["top_logprobs"].append(entry.get("top_logprobs"))
        out["text_offset"].append(entry.get("text_offset", 0))
    return out


async def check_choice(guard: Guard, choice: dict, chat: bool, context: str, on_field=None) -> None:
    """One choice of a whole answer, every field checked on its own and redacted in place; a block anywhere
    empties the choice (no text, reasoning, tool call or logprobs) and sets finish_reason content_filter.
    `on_field(name)`: told of each field checked (the gateway's metric)."""
    on_field = on_field or (lambda field: None)
    for key, value in choice.items():
        if key not in CHOICE_KEYS and key not in ("message", "text", "logprobs") and not empty(value):
            raise Unguardable(f"choices[].{key}")
    blocked = await (_check_message(guard, choice.get("message"), context, on_field) if chat
                     else _check_text(guard, choice, "text", context, on_field))
    entries = None if blocked else logprob_entries(choice.get("logprobs"), chat)
    if entries is not None:
        on_field("logprobs")
        mirror = TokenMirror(guard, guard.output_stream(context), chat)
        try:
            out, blocked = await mirror.feed(entries)
            if not blocked:
                tail, blocked = await mirror.finish()
                choice["logprobs"] = to_logprobs(out + tail, chat)
        finally:
            mirror.scanner.close()
    if blocked:
        if chat:
            choice["message"] = {"role": (choice.get("message") or {}).get("role", "assistant"), "content": ""}
        else:
            choice["text"] = ""
        choice["logprobs"] = None
        choice["finish_reason"] = "content_filter"


async def _check_text(guard: Guard, holder: dict, key: str, context: str, on_field) -> bool:
    value = holder.get(key)
    if value is None or value == "":
        return False
    if not isinstance(value, str):
        raise Unguardable(key)
    on_field(key)
    decision = await guard.check_output(value, context)
    if decision.blocked:
        return True
    holder[key] = decision.texts[0]
    return False


async def _check_message(guard: Guard, message: Any, context: str, on_field) -> bool:
    if not isinstance(message, dict):
        raise Unguardable("choices[].message")
    for key, value in message.items():
        if key in TEXT_FIELDS:
            if await _check_text(guard, message, key, context, on_field):
                return True
        elif key == "tool_calls" and not empty(value):
            if not isinstance(value, list):
                raise Unguardable("message.tool_calls")
            for call in value:
                if await _check_call(guard, call, context, on_field):
                    return True
        elif key == "function_call" and not empty(value):
            if await _check_call(guard, {"function": value}, context, on_field):
                return True
        elif key not in MESSAGE_KEYS and not empty(value):
            raise Unguardable(f"message.{key}")
    return False


async def _check_call(guard: Guard, call: Any, context: str, on_field) -> bool:
    function = call_function(call, "message.tool_calls[]", required=True)
    on_field("tool_call")
    checked = await check_tool_call(guard, function.get("name"), function.get("arguments"), context)
    if checked is None:
        return True
    for key, value in zip(("name", "arguments"), checked):
        if value is not None:
            function[key] = value
    return False
