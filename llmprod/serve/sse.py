"""Server-sent events from an OpenAI-compatible upstream, split into whole events as they arrive.

The gateway forwards each read's complete events as soon as it has them: nothing is buffered beyond an
unfinished event. Parsing is lazy: most chunks only need "does it carry generated text?" and
"is it the usage chunk?", answered from the bytes without decoding JSON. Where chunks must be decoded
(output guardrails read every text delta), orjson does it: a quarter of the stdlib's cost per chunk.
"""

from __future__ import annotations

import json
import re
from typing import Any, AsyncIterator

import orjson

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
# Non-empty generated text: a chat delta's content or reasoning, a completion choice's text, a tool call's
# arguments, a Responses event's delta.
_HAS_TEXT = re.compile(rb'"(?:content|text|reasoning|reasoning_content|arguments|delta)":\s*"(?!")')
_HAS_USAGE = re.compile(rb'"usage":\s*\{')
DONE = b"[DONE]"


async def blobs(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The complete SSE events (terminators included) of each network read, as one bytes object.

    A fast engine packs many events into one read; forwarding them as one write instead of one write
    per event saves a send, a socket write and an event-loop turn per token, and delays nothing.
    """
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        end = _after_last_end(buffer, len(buffer))
        if end:
            yield buffer[:end]
            buffer = buffer[end:]
    if buffer.strip():
        yield buffer  # an upstream that ended without the final blank line


def _after_last_end(blob: bytes, stop: int) -> int:
    """The index just past the last event terminator that ends before `stop`; 0 if there is none."""
    end = 0
    for terminator in (b"\n\n", b"\r\n\r\n", b"\r\r"):
        at = blob.rfind(terminator, 0, stop)
        if at >= 0:
            end = max(end, at + len(terminator))
    return end


def around_usage(blob: bytes) -> list[tuple[bytes, bool]]:
    """The blob cut around its usage events: (piece, is_a_usage_event) in order; the pieces join to the blob.

    A read of many events usually holds one usage chunk at most (the last but [DONE]); only that event
    needs parsing, the rest goes through as it came.
    """
    pieces: list[tuple[bytes, bool]] = []
    start = 0
    while (match := _HAS_USAGE.search(blob, start)) is not None:
        begin = max(start, _after_last_end(blob, match.start()))
        terminator = _EVENT_END.search(blob, match.end())
        end = terminator.end() if terminator else len(blob)
        if begin > start:
            pieces.append((blob[start:begin], False))
        pieces.append((blob[begin:end], True))
        start = end
    if start < len(blob) or not pieces:
        pieces.append((blob[start:], False))
    return pieces


def events(blob: bytes) -> list[tuple[int, int, bytes | None]]:
    """The events of a blob as (start, end, data): `blob[start:end]` is the event with its terminator and
    `data` its payload (None for comments and keep-alives). Offsets rather than copies, so a run of
    events can go on as one slice of the blob."""
    if b"\r" in blob:
        return events_any_terminator(blob)
    found, start = [], 0
    *whole, rest = blob.split(b"\n\n")  # LF only, the usual case: one C-speed split
    for part in whole:
        end = start + len(part) + 2
        one_line = part.startswith(b"data:") and b"\n" not in part
        found.append((start, end, part[5:].lstrip(b" ") if one_line else data_of(part)))
        start = end
    if rest.strip():  # an upstream that ended without the final blank line
        found.append((start, len(blob), data_of(rest)))
    return found


def events_any_terminator(blob: bytes) -> list[tuple[int, int, bytes | None]]:
    """`events` for any of SSE's three terminators (LF, CRLF, CR): the general case, and its reference."""
    found, start = [], 0
    while (match := _EVENT_END.search(blob, start)) is not None:
        found.append((start, match.end(), data_of(blob[start:match.end()])))
        start = match.end()
    if blob[start:].strip():
        found.append((start, len(blob), data_of(blob[start:])))
    return found


def data_of(event: bytes) -> bytes | None:
    """The payload of an event's `data:` lines (joined), or None for comments / keep-alives."""
    lines = [line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(lines)


def has_text(data: bytes) -> bool:
    return _HAS_TEXT.search(data) is not None


def loads(data: bytes) -> Any:
    """A chunk's JSON. The stdlib takes what orjson refuses but engines may send (NaN, lone surrogates)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def encode(payload: dict[str, Any]) -> bytes:
    try:
        body = orjson.dumps(payload)
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate (escaped here), an int beyond 64 bits
        body = json.dumps(payload, separators=(",", ":")).encode()
    return b"data: " + body + b"\n\n"


def choice_text(choice: dict[str, Any], chat: bool) -> str | None:
    """The generated text of one choice of a parsed chunk (a chat delta's content or a completion's text)."""
    text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
    return text if isinstance(text, str) else None


def chunk_text(payload: dict[str, Any], chat: bool) -> str:
    """The generated text of a parsed chunk (first choice; n > 1 is concatenated per choice)."""
    return "".join(text for choice in payload.get("choices") or () if (text := choice_text(choice, chat)))
