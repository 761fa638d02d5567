"""/v1/responses through the gateway: the texts its input holds, and its output guarded field by field.

Streamed, the Responses API sends each text three times: as deltas, again whole in the `*.done` events of
its part and item, and again in `response.completed`. Deltas pass a scanner per field (an item's output
text, reasoning text, reasoning summary or refusal, by output and content index); every later copy of the
same text is replaced by exactly what was sent, so no copy carries text the deltas did not. A function
call's arguments are held until `response.function_call_arguments.done` and checked whole, with its name. An
event type or output item the guard does not know fails closed. A block ends the stream with
`response.incomplete` (reason `content_filter`) and drops the engine's connection.
"""

from __future__ import annotations

import copy

from llmprod.serve import sse
from llmprod.serve.gateway.errors import bad_request
from llmprod.serve.gateway.fields import Unguardable, check_tool_call, empty
from llmprod.serve.gateway.relay import StreamRelay

DELTAS = {"response.output_text.delta": "text", "response.reasoning_text.delta": "reasoning",
          "response.reasoning_summary_text.delta": "summary", "response.refusal.delta": "refusal"}
DONES = {"response.output_text.done": ("text", "text"), "response.reasoning_text.done": ("reasoning", "text"),
         "response.reasoning_summary_text.done": ("summary", "text"), "response.refusal.done": ("refusal", "refusal")}
PARTS = {"response.content_part.added", "response.content_part.done", "response.reasoning_part.added",
         "response.reasoning_part.done", "response.reasoning_summary_part.added",
         "response.reasoning_summary_part.done"}
PART_KINDS = {"output_text": ("text", "text"), "refusal": ("refusal", "refusal"),
              "reasoning_text": ("reasoning", "text"), "summary_text": ("summary", "text")}
DELTA_OF = {field: kind for kind, field in DELTAS.items()}
RESPONSE_EVENTS = {"response.created", "response.in_progress", "response.queued", "response.completed",
                   "response.incomplete", "response.failed"}


def field_key(field: str, output_index, event: dict) -> tuple:
    """(field, output index, content or summary index): one field of one output item."""
    return field, output_index, event.get("summary_index" if field == "summary" else "content_index")


def add_input_texts(body: dict, texts) -> None:
    """Every text of a Responses request that reaches the model: `instructions`, `input` (a string, or its
    items: messages of every role, function calls' arguments and results, earlier reasoning), and the
    tools' descriptions."""
    from llmprod.serve.gateway.requests import add_tool_descriptions

    if isinstance(body.get("instructions"), str):
        texts.add(body["instructions"], "system", lambda new: body.__setitem__("instructions", new))
    value = body.get("input")
    if isinstance(value, str):
        texts.add(value, "user", lambda new: body.__setitem__("input", new))
    elif not isinstance(value, list) or not value:
        raise bad_request("`input` must be a string or a non-empty list of items", "invalid_input")
    else:
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise bad_request(f"input[{i}] must be an object", "invalid_input")
            _add_item(texts, item, i)
    add_tool_descriptions(texts, body.get("tools"))


def _add_item(texts, item: dict, i: int) -> None:
    kind = item.get("type", "message")
    if kind == "message":
        role, content = item.get("role"), item.get("content")
        if not isinstance(role, str):
            raise bad_request(f"input[{i}].role must be user, assistant, system or developer", "invalid_input")
        if isinstance(content, str):
            texts.add(content, role, lambda new, m=item: m.__setitem__("content", new))
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise bad_request(f"input[{i}].content[{j}] must be an object with a `type`", "invalid_input")
                key = "refusal" if part["type"] == "refusal" else "text"
                if part["type"] in ("input_text", "text", "output_text", "refusal"):
                    if not isinstance(part.get(key), str):
                        raise bad_request(f"input[{i}].content[{j}].{key} must be a string", "invalid_input")
                    texts.add(part[key], role, lambda new, p=part, k=key: p.__setitem__(k, new))
                elif part["type"] not in ("input_image", "input_file", "input_audio"):
                    texts.unreadable = f"input[{i}].content[{j}] of type {part['type']}"
        else:
            raise bad_request(f"input[{i}].content must be a string or a list of parts", "invalid_input")
    elif kind == "function_call_output":
        if isinstance(item.get("output"), str):
            texts.add(item["output"], "tool", lambda new, m=item: m.__setitem__("output", new))
        else:
            texts.unreadable = f"input[{i}].output that is not a string"
    elif kind == "function_call":
        if isinstance(item.get("arguments"), str):
            texts.add(item["arguments"], "assistant", lambda new, m=item: m.__setitem__("arguments", new))
    elif kind == "reasoning":
        for key in ("content", "summary"):
            for part in item.get(key) or []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.add(part["text"], "assistant", lambda new, p=part: p.__setitem__("text", new))
    elif kind != "item_reference":
        texts.unreadable = f"input[{i}] of type {kind}"


async def check_response(guard, data: dict, context: str, on_field=None) -> None:
    """A whole response's output items, each text on its own; a block empties the output and marks the
    response incomplete (reason content_filter). `on_field(name)`: told of each field checked."""
    relay = _Items(guard, context, on_field)
    try:
        for index, item in enumerate(data.get("output") or []):
            await relay.item(item, index)
    except _Blocked:
        data["output"] = []
        data["status"] = "incomplete"
        data["incomplete_details"] = {"reason": "content_filter"}
    finally:
        relay.close_scanners()


class _Blocked(Exception):
    pass


class _Items:
    """The fields of output items: a scanner per streamed field, and every whole copy made what was sent."""

    def __init__(self, guard, context: str, on_field=None) -> None:
        self.guard = guard
        self.context = context
        self.on_field = on_field or (lambda field: None)  # told once per field scanned (the gateway's metric)
        self.scanners: dict[tuple, object] = {}
        self.sent: dict[tuple, list[str]] = {}  # field → the text sent of it
        self.finished: set[tuple] = set()
        self.calls: dict[int, dict] = {}  # output index → {"name", "arguments": [pieces], "checked"}

    def close_scanners(self) -> None:
        for scanner in self.scanners.values():
            scanner.close()

    async def feed(self, key: tuple, text: str) -> str:
        scanner = self.scanners.get(key)
        if scanner is None:
            scanner = self.scanners[key] = self.guard.output_stream(self.context)
            self.on_field(key[0])
        step = await scanner.feed(text)
        self.sent.setdefault(key, []).append(step.text)
        if step.blocked:
            raise _Blocked(step.text)
        return step.text

    async def final(self, key: tuple, whole) -> tuple[str, str]:
        """(the field's text as sent in full, the tail released now) for a `done` copy of it. A field that
        never streamed is checked whole here."""
        if key not in self.scanners:
            if key in self.sent:
                return "".join(self.sent[key]), ""
            if not isinstance(whole, str):
                raise Unguardable("a text that is not a string")
            if not whole:
                self.sent[key] = [""]
                return "", ""
            self.on_field(key[0])
            decision = await self.guard.check_output(whole, self.context)
            if decision.blocked:
                raise _Blocked("")
            self.sent[key] = [decision.texts[0]]
            return decision.texts[0], ""
        tail = ""
        if key not in self.finished:
            self.finished.add(key)
            step = await self.scanners[key].finish()
            self.sent[key].append(step.text)
            if step.blocked:
                raise _Blocked(step.text)
            tail = step.text
        return "".join(self.sent[key]), tail

    async def call(self, index: int, item: dict | None = None) -> tuple[str | None, str | None]:
        call = self.calls.setdefault(index, {"name": None, "arguments": []})
        if item is not None and call["name"] is None:
            call["name"] = item.get("name")
        if "checked" not in call:
            self.on_field("function_call")
            arguments = "".join(call["arguments"]) or (item or {}).get("arguments") or None
            checked = await check_tool_call(self.guard, call["name"], arguments, self.context)
            if checked is None:
                raise _Blocked("")
            call["checked"] = checked
        return call["checked"]

    async def item(self, item, index: int) -> list[tuple[tuple, str]]:
        """An output item made what was sent, in place; the (field key, tail) of fields released only now."""
        if not isinstance(item, dict):
            raise Unguardable("output[]")
        kind, tails = item.get("type"), []
        if kind == "message":
            for j, part in enumerate(item.get("content") or []):
                tails += await self.part(part, index, j)
        elif kind == "reasoning":
            for j, part in enumerate(item.get("content") or []):
                tails += await self.part(part, index, j)
            for j, part in enumerate(item.get("summary") or []):
                tails += await self.part(part, index, j)  # summary parts: (summary, index, j)
            if not empty(item.get("encrypted_content")):
                raise Unguardable("output[].encrypted_content")
        elif kind == "function_call":
            name, arguments = await self.call(index, item)
            item["name"], item["arguments"] = name, arguments or ""
        else:
            raise Unguardable(f"output items of type {kind}")
        return tails

    async def part(self, part, index: int, j: int) -> list[tuple[tuple, str]]:
        if not isinstance(part, dict) or part.get("type") not in PART_KINDS:
            raise Unguardable(f"content parts of type {part.get('type') if isinstance(part, dict) else part}")
        if not empty(part.get("logprobs")) or not empty(part.get("annotations")):
            raise Unguardable("logprobs or annotations of an output part")
        field, attribute = PART_KINDS[part["type"]]
        key = (field, index, j)
        part[attribute], tail = await self.final(key, part.get(attribute))
        return [(key, tail)] if tail else []


class ResponsesRelay(StreamRelay):
    """A Responses stream with the output checks between the engine and the client."""

    def __init__(self, *args, guard, context: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        fields = self.metrics.guard_fields
        self.items = _Items(guard, context, lambda field: fields.labels(self.route, field).inc())
        self.latest: dict = {"object": "response", "output": []}  # the latest response object seen
        self.done_items: dict[int, dict] = {}  # output index → the item as sent in its output_item.done
        self.sequence = 0

    async def batch(self, blob: bytes) -> list[bytes]:
        out: list[bytes] = []
        try:
            for start, end, data in sse.events(blob):
                if data is None:
                    out.append(blob[start:end])
                    continue
                if data.strip() == sse.DONE:
                    out.append(blob[start:end])
                    continue
                payload = sse.loads(data)
                if not isinstance(payload, dict):
                    raise Unguardable("an event that is not a JSON object")
                out.extend(self._encode(e) for e in await self._event(payload))
        except _Blocked as blocked:
            out.extend(self._encode(e) for e in self._block(blocked.args[0]))
        except Unguardable as exc:
            self.status = "502"
            self.stop()
            out.append(sse.encode(exc.error().body()))
        return out

    def _encode(self, event: dict) -> bytes:
        if "sequence_number" in event:
            event["sequence_number"] = self.sequence
            self.sequence += 1
        kind = event.get("type", "message")
        return f"event: {kind}\n".encode() + sse.encode(event)

    async def _event(self, event: dict) -> list[dict]:
        kind = event.get("type")
        if kind in DELTAS:
            key = field_key(DELTAS[kind], event.get("output_index"), event)
            if not isinstance(event.get("delta"), str) or not empty(event.get("logprobs")):
                raise Unguardable(f"{kind} without a text delta, or with logprobs")
            try:
                event["delta"] = await self.items.feed(key, event["delta"])
            except _Blocked as blocked:
                raise _Blocked((event, blocked.args[0])) from None
            if event["delta"]:
                self.text_in_batch = True
                return [event]
            return []
        if kind in DONES:
            field, attribute = DONES[kind]
            key = field_key(field, event.get("output_index"), event)
            event[attribute], tail = await self._final(key, event.get(attribute), event)
            return self._tail(key, event, tail) + [event]
        if kind in PARTS:
            return await self._part(event)
        if kind == "response.function_call_arguments.delta":
            if not isinstance(event.get("delta"), str):
                raise Unguardable(kind)
            self.items.calls.setdefault(event.get("output_index"), {"name": None, "arguments": []})[
                "arguments"].append(event["delta"])
            return []
        if kind == "response.function_call_arguments.done":
            name, arguments = await self.items.call(event.get("output_index"), {"name": event.get("name"),
                                                                                "arguments": event.get("arguments")})
            event["arguments"] = arguments or ""
            if event.get("name") is not None:
                event["name"] = name
            delta = {"type": "response.function_call_arguments.delta", "sequence_number": 0,
                     "item_id": event.get("item_id"), "output_index": event.get("output_index"),
                     "delta": arguments or ""}
            self.text_in_batch = True
            return [delta, event]
        if kind in ("response.output_item.added", "response.output_item.done"):
            return await self._item_event(event)
        if kind in RESPONSE_EVENTS:
            return await self._response_event(event)
        if kind == "error":
            return [event]
        raise Unguardable(f"events of type {kind}")

    async def _final(self, key: tuple, whole, event: dict) -> tuple[str, str]:
        try:
            return await self.items.final(key, whole)
        except _Blocked as blocked:
            raise _Blocked((self._delta_for(key, event), blocked.args[0])) from None

    def _delta_for(self, key: tuple, event: dict, text: str = "") -> dict:
        """A delta event of one field (what a tail or the safe part of a block goes out as)."""
        field, output_index, index = key
        return {"type": DELTA_OF[field], "sequence_number": 0, "item_id": event.get("item_id"),
                "output_index": output_index, "summary_index" if field == "summary" else "content_index": index,
                "delta": text}

    def _tail(self, key: tuple, event: dict, tail: str) -> list[dict]:
        """Text a field released only at its end, as a delta before the event that ends it."""
        if not tail:
            return []
        self.text_in_batch = True
        return [self._delta_for(key, event, tail)]

    async def _part(self, event: dict) -> list[dict]:
        part = event.get("part")
        if not isinstance(part, dict) or part.get("type") not in PART_KINDS:
            raise Unguardable(f"{event.get('type')} with a part the guard does not know")
        field, attribute = PART_KINDS[part["type"]]
        if event["type"].endswith(".added"):
            if not empty(part.get(attribute)):
                raise Unguardable(f"{event['type']} that already carries text")
            return [event]
        key = field_key(field, event.get("output_index"), event)
        try:
            tails = await self.items.part(part, key[1], key[2])
        except _Blocked as blocked:
            raise _Blocked((self._delta_for(key, event), blocked.args[0])) from None
        return [delta for k, tail in tails for delta in self._tail(k, event, tail)] + [event]

    async def _item_event(self, event: dict) -> list[dict]:
        item, index = event.get("item"), event.get("output_index")
        if event["type"] == "response.output_item.added":
            if isinstance(item, dict) and item.get("type") == "function_call":
                self.items.calls.setdefault(index, {"name": None, "arguments": []})["name"] = item.get("name")
                # announced before its arguments: the name must pass unchanged on its own
                if await check_tool_call(self.items.guard, item.get("name"), None, self.items.context) is None:
                    raise _Blocked((None, ""))
                if not empty(item.get("arguments")):
                    raise Unguardable("a function call announced with its arguments")
                return [event]
            if not isinstance(item, dict) or item.get("type") not in ("message", "reasoning"):
                raise Unguardable(f"output items of type {item.get('type') if isinstance(item, dict) else item}")
            for key in ("content", "summary"):
                if any(not empty((p or {}).get("text")) for p in item.get(key) or []):
                    raise Unguardable("an output item announced with its text")
            return [event]
        try:
            tails = await self.items.item(item, index)
        except _Blocked as blocked:
            raise _Blocked((None, blocked.args[0])) from None
        self.done_items[index] = copy.deepcopy(item)
        return [delta for key, tail in tails for delta in self._tail(key, event, tail)] + [event]

    async def _response_event(self, event: dict) -> list[dict]:
        response = event.get("response")
        if not isinstance(response, dict):
            raise Unguardable(f"{event.get('type')} without a response")
        for index, item in enumerate(response.get("output") or []):
            try:
                await self.items.item(item, index)
            except _Blocked as blocked:
                raise _Blocked((None, blocked.args[0])) from None
        for key in ("output_text", "input_messages", "output_messages"):
            if not empty(response.get(key)):
                raise Unguardable(f"response.{key}")
        self.latest = response
        if isinstance(response.get("usage"), dict):
            self.usage = response["usage"]
        return [event]

    def _block(self, what) -> list[dict]:
        """The safe part of the field that blocked, then `response.incomplete`; the engine is dropped."""
        delta, safe = what if isinstance(what, tuple) else (None, what)
        events = []
        if delta is not None and safe:
            delta["delta"] = safe
            events.append(delta)
            self.text_in_batch = True
        response = dict(self.latest, status="incomplete", incomplete_details={"reason": "content_filter"},
                        output=[self.done_items[i] for i in sorted(self.done_items)])
        response.pop("usage", None)
        events.append({"type": "response.incomplete", "sequence_number": 0, "response": response})
        self.stop()
        return events

    async def close(self, completed: bool) -> None:
        await super().close(completed)
        self.items.close_scanners()
