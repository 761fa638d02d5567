"""Server-sent events from an OpenAI-compatible upstream, split into whole events as they arrive.

The gateway forwards each event as soon as its blank-line terminator is seen: nothing is buffered
beyond one event. Parsing is lazy: most chunks only need "does it carry generated text?" and
"is it the usage chunk?", answered from the bytes without decoding JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any, AsyncIterator

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
# Non-empty generated text in a chat delta ("content") or a completion choice ("text").
_HAS_TEXT = re.compile(rb'"(?:content|text)":\s*"(?!")')
_HAS_USAGE = re.compile(rb'"usage":\s*\{')
DONE = b"[DONE]"


async def events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Yield each complete SSE event (terminator included) from a byte stream."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        start = 0
        while True:
            match = _EVENT_END.search(buffer, start)
            if match is None:
                break
            yield buffer[start:match.end()]
            start = match.end()
        buffer = buffer[start:]
    if buffer.strip():
        yield buffer  # an upstream that ended without the final blank line


def data_of(event: bytes) -> bytes | None:
    """The payload of an event's `data:` lines (joined), or None for comments / keep-alives."""
    lines = [line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(lines)


def has_text(data: bytes) -> bool:
    return _HAS_TEXT.search(data) is not None


def has_usage(data: bytes) -> bool:
    return _HAS_USAGE.search(data) is not None


def encode(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def chunk_text(payload: dict[str, Any], chat: bool) -> str:
    """The generated text of a parsed chunk (first choice; n > 1 is concatenated per choice)."""
    parts = []
    for choice in payload.get("choices") or ():
        if chat:
            delta = choice.get("delta") or {}
            text = delta.get("content")
        else:
            text = choice.get("text")
        if isinstance(text, str):
            parts.append(text)
    return "".join(parts)
