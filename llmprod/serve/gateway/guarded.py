"""The relay with output guardrails: every text delta passes the guard's incremental scanner before it goes out.

Consecutive text deltas of one read are scanned together, so scanning costs per read, not per token. What
the scanner lets through unchanged goes out as the engine's own bytes (one slice of the read); held or
redacted text goes out in one chunk (the last delta's envelope). A block ends the stream with
`finish_reason: content_filter` and drops the engine's connection, which aborts the generation.
"""

from __future__ import annotations

from llmprod.guardrails.types import OutputStream
from llmprod.serve import sse
from llmprod.serve.gateway.relay import StreamRelay, set_finish, set_text


class GuardedRelay(StreamRelay):
    def __init__(self, *args, scanner: OutputStream, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.scanner = scanner

    async def batch(self, blob: bytes) -> list[bytes]:
        out: list[bytes] = []
        texts: list[str] = []
        run_start = run_end = 0  # blob[run_start:run_end]: the events the texts came in
        template: dict | None = None
        chat = self.chat

        async def flush_text() -> None:
            if not texts:
                return
            joined = "".join(texts)
            step = await self.scanner.feed(joined, tokens=len(texts))  # an event is a token (or a few)
            texts.clear()
            if step.blocked:
                out.extend(self._block(template, step.text))
            elif step.verbatim:  # the usual case: the events go out as they came
                out.append(blob[run_start:run_end])
                self.text_in_batch = True
            elif step.text:
                set_text(template, step.text, chat)
                self.text_in_batch = True
                out.append(sse.encode(template))

        for start, end, data in sse.events(blob):
            done = data is not None and data.strip() == sse.DONE
            if data is not None and not done:
                payload = sse.loads(data)
                if isinstance(payload.get("usage"), dict):
                    if not self._usage(payload):
                        continue
                else:
                    choices = payload.get("choices")
                    if choices and len(choices) == 1:  # one text delta, not the last: the common chunk
                        choice = choices[0]
                        text = sse.choice_text(choice, chat)
                        if text and not choice.get("finish_reason"):
                            if not texts:
                                run_start = start
                            texts.append(text)
                            run_end = end
                            template = payload
                            continue
            await flush_text()
            if self.stopped:
                return out
            if data is None:  # a comment or keep-alive
                out.append(blob[start:end])
            elif done:
                out.extend(await self._flush())
                out.append(blob[start:end])
            else:
                choices = payload.get("choices") or []
                finish = next((c.get("finish_reason") for c in choices if c.get("finish_reason")), None)
                out.extend(await self._event(payload, sse.chunk_text(payload, chat), finish))
                if self.stopped:
                    return out
        await flush_text()
        return out

    async def _event(self, payload: dict, text: str, finish: str | None) -> list[bytes]:
        """One event that is not a plain text delta: several choices, or the finish (which releases the rest)."""
        step = await self.scanner.feed(text) if text else None
        emit = step.text if step else ""
        if step is not None and step.blocked:
            return self._block(payload, emit)
        if finish is not None:
            tail = await self.scanner.finish()
            if tail.blocked:
                return self._block(payload, emit + tail.text)
            emit += tail.text
        if text or emit:
            set_text(payload, emit, self.chat)
        if emit:
            self.text_in_batch = True
        if emit or finish is not None or not text:
            return [sse.encode(payload)]
        return []

    async def _flush(self) -> list[bytes]:
        """At [DONE] without a finish chunk: whatever the scanner still holds back."""
        tail = await self.scanner.finish()
        if not (tail.text or tail.blocked):
            return []
        payload = {"object": "chat.completion.chunk" if self.chat else "text_completion",
                   "choices": [{"index": 0, "delta": {"content": tail.text}} if self.chat
                               else {"index": 0, "text": tail.text}]}
        if tail.blocked:
            set_finish(payload, "content_filter")
        elif tail.text:
            self.text_in_batch = True
        return [sse.encode(payload)]

    def _block(self, payload: dict, emit: str) -> list[bytes]:
        """End the stream: what was safe to send, then finish_reason content_filter, then [DONE]."""
        set_text(payload, emit, self.chat)
        set_finish(payload, "content_filter")
        payload.pop("usage", None)
        if emit:
            self.text_in_batch = True
        self.stop()
        return [sse.encode(payload), b"data: [DONE]\n\n"]

    async def close(self, completed: bool) -> None:
        await super().close(completed)
        self.scanner.close()
