"""Splitting an upstream's server-sent events as they arrive."""

from __future__ import annotations

import asyncio
import json
import math
import random

import pytest

from llmprod.serve import sse


def event(payload: dict, end: bytes = b"\n\n") -> bytes:
    return b"data: " + json.dumps(payload).encode() + end


TEXT = [event({"choices": [{"index": 0, "text": w, "finish_reason": None}]}) for w in ("a ", "b ", "c ")]
FINISH = event({"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})
USAGE = event({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}})
DONE = b"data: [DONE]\n\n"


def collect(chunks: list[bytes]) -> list[bytes]:
    async def run():
        async def source():
            for chunk in chunks:
                yield chunk

        return [blob async for blob in sse.blobs(source())]

    return asyncio.run(run())


def test_blobs_end_on_event_boundaries_whatever_the_reads():
    stream = b"".join(TEXT + [FINISH, USAGE, DONE])
    for size in (1, 7, 50, len(stream)):
        blobs = collect([stream[i:i + size] for i in range(0, len(stream), size)])
        assert b"".join(blobs) == stream
        assert all(blob.endswith(b"\n\n") for blob in blobs)


def test_blobs_do_not_cut_an_event_after_a_leading_blank_line():
    assert collect([b"\n\ndata: a", b"bc\n\n"]) == [b"\n\n", b"data: abc\n\n"]


def test_blobs_keep_crlf_terminators_whole():
    assert collect([b"data: a\r\n\r\ndata: b\r", b"\n\r\n"]) == [b"data: a\r\n\r\n", b"data: b\r\n\r\n"]


def test_blobs_pass_on_an_unterminated_end():
    assert collect([b"data: a\n\ndata: b"]) == [b"data: a\n\n", b"data: b"]


@pytest.mark.parametrize("end", [b"\n\n", b"\r\n\r\n"])
def test_around_usage_isolates_only_the_usage_event(end):
    text = [t.replace(b"\n\n", end) for t in TEXT]
    usage, finish, done = (e.replace(b"\n\n", end) for e in (USAGE, FINISH, DONE))
    blob = b"".join(text + [finish, usage, done])
    assert sse.around_usage(blob) == [(b"".join(text + [finish]), False), (usage, True), (done, False)]


def test_around_usage_without_usage_is_the_blob():
    blob = b"".join(TEXT)
    assert sse.around_usage(blob) == [(blob, False)]
    assert sse.around_usage(b"") == [(b"", False)]


def test_around_usage_finds_every_usage_event_and_an_unterminated_one():
    # vLLM's continuous usage stats put usage in every chunk
    with_usage = [event({"choices": [{"index": 0, "text": "x"}], "usage": {"completion_tokens": i}})
                  for i in (1, 2)]
    blob = with_usage[0] + DONE + with_usage[1][:-2]
    assert sse.around_usage(blob) == [(with_usage[0], True), (DONE, False), (with_usage[1][:-2], True)]


def test_usage_inside_generated_text_is_not_usage():
    blob = event({"choices": [{"index": 0, "text": 'say "usage": {"x": 1}'}]})
    assert sse.around_usage(blob) == [(blob, False)]


def test_events_are_offsets_and_payloads():
    comment = b": keep-alive\n\n"
    multi = b"data: {\"a\":\ndata: 1}\n\n"
    blob = TEXT[0] + comment + multi + DONE + b"data: tail"
    found = sse.events(blob)
    assert [blob[start:end] for start, end, _ in found] == [TEXT[0], comment, multi, DONE, b"data: tail"]
    assert [data for _, _, data in found] == [TEXT[0][6:-2], None, b'{"a":\n1}', b"[DONE]", b"tail"]
    assert sse.events(b"") == [] and sse.events(b"\n\n") == [(0, 2, None)]


def test_events_fast_path_agrees_with_the_general_one():
    """LF-only blobs take a split-based path; it must cut and decode exactly like the terminator scan."""
    rng = random.Random(7)
    pieces = [b"data: x", b"data:y", b"data:  z", b"\n", b"\n\n", b": c", b"data: [DONE]", b"event: e", b" "]
    for _ in range(3000):
        blob = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert sse.events(blob) == sse.events_any_terminator(blob), blob


@pytest.mark.parametrize("end", [b"\r\n\r\n", b"\r\r"])
def test_events_with_carriage_returns(end):
    blob = TEXT[0].replace(b"\n\n", end) + DONE.replace(b"\n\n", end)
    assert [data for _, _, data in sse.events(blob)] == [TEXT[0][6:-2], b"[DONE]"]


def test_loads_and_encode_take_what_orjson_refuses():
    # NaN (Python's json writes it) and a lone surrogate: rejected by orjson, valid for the stdlib
    assert math.isnan(sse.loads(b'{"logprob": NaN}')["logprob"])
    lone = sse.loads(b'{"text": "\\ud83d"}')
    assert lone == {"text": "\ud83d"}
    encoded = sse.encode(lone)
    assert encoded == b'data: {"text":"\\ud83d"}\n\n' and encoded.decode()  # escaped, valid UTF-8
    big = {"text": "é", "n": 2**70}  # beyond orjson's 64-bit ints
    assert json.loads(sse.encode(big)[6:]) == big
    assert sse.encode({"text": "é"}) == 'data: {"text":"é"}\n\n'.encode()
