"""The relay with output guardrails (chat and completions): every field of generated text passes its own
incremental scanner before it goes out (fields.py lists them).

The common chunk, one choice carrying only a text delta, takes the fast path: consecutive such deltas of one
read are scanned together, so scanning costs per read, not per token, and what the scanner lets through
unchanged goes out as the engine's own bytes (one slice of the read); held or redacted text goes out in one
chunk (the last delta's envelope). Any other chunk (reasoning, tool calls, logprobs, several choices, the
finish) is taken apart field by field, each field of each choice with a scanner of its own, and re-encoded.
A tool call is held until its choice finishes and checked whole. A block ends every choice with
`finish_reason: content_filter` and drops the engine's connection, which aborts the generation.
"""

from __future__ import annotations

from llmprod.serve import sse
from llmprod.serve.gateway.fields import (CHOICE_KEYS, TEXT_FIELDS, TokenMirror, Unguardable, call_function,
                                          check_tool_call, empty, logprob_entries, to_logprobs)
from llmprod.serve.gateway.relay import StreamRelay, set_finish, set_text

# The keys of a chunk's choice that leave it a plain text delta (when its logprobs and token_ids are null).
PLAIN_CHAT = frozenset({"index", "delta", "logprobs", "finish_reason", "token_ids", "stop_reason"})
PLAIN_COMPLETIONS = frozenset({"index", "text", "logprobs", "finish_reason", "stop_reason", "token_ids",
                               "prompt_token_ids", "prompt_logprobs"})


class _Blocked(Exception):
    pass


class GuardedRelay(StreamRelay):
    def __init__(self, *args, guard, context: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self.context = context
        self.text_key = "content" if self.chat else "text"
        self.plain = PLAIN_CHAT if self.chat else PLAIN_COMPLETIONS
        self.scanners: dict[tuple[int, str], object] = {}  # (choice index, field) → its scanner
        self.mirrors: dict[int, TokenMirror] = {}  # choice index → its logprob tokens
        # choice index → tool call index → the call so far; a choice's entry is made when it is first seen,
        # so the keys are also every choice of the answer (the ones a block or [DONE] must finish)
        self.calls: dict[int, dict[int, dict]] = {}
        self.finished: set[int] = set()

    def scanner(self, index: int, key: str):
        scanner = self.scanners.get((index, key))
        if scanner is None:
            scanner = self.scanners[(index, key)] = self.guard.output_stream(self.context)
            self.metrics.guard_fields.labels(self.route, key).inc()
        return scanner

    def plain_text(self, choice) -> str | None:
        """The text of a choice that is a plain text delta of the answer's main field, else None."""
        if type(choice) is not dict or not choice.keys() <= self.plain or choice.get("finish_reason") \
                or choice.get("logprobs") is not None or choice.get("token_ids") is not None:
            return None
        if self.chat:
            delta = choice.get("delta")
            if type(delta) is not dict or len(delta) != 1:
                return None
            text = delta.get("content")
        else:
            text = choice.get("text")
        return text if type(text) is str and text else None

    async def batch(self, blob: bytes) -> list[bytes]:
        try:
            return await self._batch(blob)
        except Unguardable as exc:
            self.status = "502"
            self.stop()
            return [sse.encode(exc.error().body())]

    async def _batch(self, blob: bytes) -> list[bytes]:
        out: list[bytes] = []
        texts: list[str] = []
        run_start = run_end = 0  # blob[run_start:run_end]: the events the texts came in
        run_index = 0
        template: dict | None = None

        async def flush_text() -> None:
            if not texts:
                return
            step = await self.scanner(run_index, self.text_key).feed("".join(texts), tokens=len(texts))
            texts.clear()
            if step.blocked:
                set_text(template, step.text, self.chat)
                out.extend(self._block(template))
            elif step.verbatim:  # the usual case: the events go out as they came
                out.append(blob[run_start:run_end])
                self.text_in_batch = True
            elif step.text:
                set_text(template, step.text, self.chat)
                self.text_in_batch = True
                out.append(sse.encode(template))

        for start, end, data in sse.events(blob):
            done = data is not None and data.strip() == sse.DONE
            if data is not None and not done:
                payload = sse.loads(data)
                if not isinstance(payload, dict):
                    raise Unguardable("a chunk that is not a JSON object")
                if isinstance(payload.get("usage"), dict):
                    if not self._usage(payload):
                        continue
                else:
                    choices = payload.get("choices")
                    if choices and len(choices) == 1:  # one text delta, not the last: the common chunk
                        text = self.plain_text(choices[0])
                        index = choices[0].get("index", 0) if text else None
                        if text and (not texts or index == run_index):
                            if not texts:
                                run_start, run_index = start, index
                            texts.append(text)
                            run_end = end
                            template = payload
                            self.seen(index)
                            continue
            await flush_text()
            if self.stopped:
                return out
            if data is None:  # a comment or keep-alive
                out.append(blob[start:end])
            elif done:
                out.extend(await self._flush())
                if self.stopped:
                    return out
                out.append(blob[start:end])
            else:
                out.extend(await self._event(payload))
                if self.stopped:
                    return out
        await flush_text()
        return out

    def seen(self, index) -> None:
        if not isinstance(index, int) or isinstance(index, bool):
            raise Unguardable("choices[].index")
        self.calls.setdefault(index, {})

    # -- any other chunk: field by field --------------------------------------------------------------------
    async def _event(self, payload: dict) -> list[bytes]:
        choices = payload.get("choices") or []
        if not isinstance(choices, list):
            raise Unguardable("choices")
        send = not choices  # a chunk without choices (the usage) goes on as it is
        vetted: list[dict] = []
        try:
            for choice in choices:
                out, sendable = await self._choice(choice)
                vetted.append(out)
                send = send or sendable
        except _Blocked as blocked:
            payload["choices"] = vetted + [blocked.args[0]]
            return self._block(payload)
        payload["choices"] = vetted
        if not send:
            return []
        return [sse.encode(payload)]

    async def _choice(self, choice) -> tuple[dict, bool]:
        """One choice of a chunk, scanned: the choice to send (only what the checks passed: metadata and
        vetted fields) and whether it has anything to send. A block raises _Blocked with what may go out."""
        if not isinstance(choice, dict):
            raise Unguardable("choices[]")
        index = choice.get("index", 0)
        self.seen(index)
        out = {}
        for key, value in choice.items():
            if key in CHOICE_KEYS:
                out[key] = value
            elif key not in ("delta", "text", "logprobs") and not empty(value):
                raise Unguardable(f"choices[].{key}")
        source = choice.get("delta") if self.chat else {"text": choice.get("text")}
        if source is None:
            source = {}
        if not isinstance(source, dict):
            raise Unguardable("choices[].delta")
        if self.chat:
            holder = out["delta"] = {}
        else:
            holder, out["text"] = out, ""
        fed = sent = False
        for key, value in source.items():
            if key in TEXT_FIELDS or key == "text":
                if value is None or value == "":
                    holder[key] = value
                    continue
                if not isinstance(value, str):
                    raise Unguardable(f"choices[].delta.{key}")
                fed = True
                step = await self.scanner(index, key).feed(value)
                holder[key] = step.text
                sent = sent or bool(step.text)
                if step.blocked:
                    raise _Blocked(out)
            elif key == "tool_calls":
                if not empty(value):
                    fed = True
                    self._hold_calls(index, value)
            elif key == "role" and isinstance(value, str):
                holder[key] = value
            elif not empty(value):
                raise Unguardable(f"choices[].delta.{key}")
        entries = logprob_entries(choice.get("logprobs"), self.chat)
        out["logprobs"] = None
        if entries is not None:
            fed = True
            released, blocked = await self.mirror(index).feed(entries)
            if blocked:
                raise _Blocked(out)
            out["logprobs"] = to_logprobs(released, self.chat) if released else None
            sent = sent or bool(released)
        if choice.get("finish_reason"):
            await self._finish_choice(index, out, holder)
            return out, True
        if sent:
            self.text_in_batch = True
        return out, sent or not fed or bool(holder.get("role"))

    def mirror(self, index: int) -> TokenMirror:
        mirror = self.mirrors.get(index)
        if mirror is None:
            mirror = self.mirrors[index] = TokenMirror(self.guard, self.scanner(index, "logprobs"), self.chat)
        return mirror

    def _hold_calls(self, index: int, deltas) -> None:
        """Tool call pieces, kept until the choice finishes: a call is checked whole."""
        if not isinstance(deltas, list):
            raise Unguardable("choices[].delta.tool_calls")
        for delta in deltas:
            function = call_function(delta, "choices[].delta.tool_calls[]", required=False)
            if not isinstance(delta.get("index", 0), int):
                raise Unguardable("choices[].delta.tool_calls[].index")
            call = self.calls[index].setdefault(delta.get("index", 0), {"name": [], "arguments": []})
            for key in ("id", "type"):
                if delta.get(key) is not None:
                    call[key] = delta[key]
            for key in ("name", "arguments"):
                if function.get(key) is not None:
                    call[key].append(function[key])

    async def _finish_choice(self, index: int, choice: dict, holder: dict) -> None:
        """The choice's end: each of its fields releases what it held, its tool calls are checked whole."""
        self.finished.add(index)
        for (i, key), scanner in list(self.scanners.items()):
            if i != index or key == "logprobs":
                continue
            tail = await scanner.finish()
            if tail.text:
                holder[key] = (holder.get(key) or "") + tail.text
            if tail.blocked:
                raise _Blocked(choice)
        mirror = self.mirrors.get(index)
        if mirror is not None:
            released, blocked = await mirror.finish()
            if blocked:
                choice["logprobs"] = None
                raise _Blocked(choice)
            if released:
                before = logprob_entries(choice.get("logprobs"), self.chat) or []
                choice["logprobs"] = to_logprobs(before + released, self.chat)
        calls = []
        for position, call in sorted(self.calls.get(index, {}).items()):
            self.metrics.guard_fields.labels(self.route, "tool_call").inc()
            checked = await check_tool_call(self.guard, "".join(call["name"]) or None,
                                            "".join(call["arguments"]) or None, self.context)
            if checked is None:
                raise _Blocked(choice)
            function = {key: value for key, value in zip(("name", "arguments"), checked) if value is not None}
            calls.append({"index": position, **{k: call[k] for k in ("id", "type") if k in call},
                          "function": function})
        self.calls[index] = {}
        if calls:
            holder["tool_calls"] = calls
        if any(holder.get(key) for key in TEXT_FIELDS + ("text",)) or calls or choice.get("logprobs"):
            self.text_in_batch = True

    async def _flush(self) -> list[bytes]:
        """At [DONE], the choices that never finished: whatever their fields still hold."""
        payload = {"object": "chat.completion.chunk" if self.chat else "text_completion", "choices": []}
        try:
            for index in sorted(set(self.calls) - self.finished):
                choice = {"index": index, "delta": {}} if self.chat else {"index": index, "text": ""}
                await self._finish_choice(index, choice, choice["delta"] if self.chat else choice)
                if any(not empty(v) for k, v in (choice["delta"] if self.chat else choice).items()
                       if k != "index") or choice.get("logprobs"):
                    payload["choices"].append(choice)
        except _Blocked as blocked:
            payload["choices"].append(blocked.args[0])
            return self._block(payload)
        return [sse.encode(payload)] if payload["choices"] else []

    def _block(self, payload: dict) -> list[bytes]:
        """End the stream: what was safe to send, every choice finished with content_filter, then [DONE]."""
        choices = payload.setdefault("choices", [])
        present = {c.get("index", 0) for c in choices if isinstance(c, dict)}
        for index in sorted(set(self.calls) - present - self.finished):
            choices.append({"index": index, "delta": {}} if self.chat else {"index": index, "text": ""})
        set_finish(payload, "content_filter")
        payload.pop("usage", None)
        if any(c.get("delta", {}).get(k) if self.chat else c.get("text") for c in choices for k in TEXT_FIELDS):
            self.text_in_batch = True
        self.stop()
        return [sse.encode(payload), b"data: [DONE]\n\n"]

    async def close(self, completed: bool) -> None:
        await super().close(completed)
        for scanner in self.scanners.values():
            scanner.close()
