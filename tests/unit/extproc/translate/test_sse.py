"""The SSE decoder and encoder: grammar tables, and every recorded stream fed whole, byte by byte,
split in two at every point, and followed by trailing garbage."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai._streaming import SSEDecoder as OpenAISSEDecoder

from extproc.translate.sse import DONE, Event, SSEDecoder, encode_event
from tests.golden.support import GOLDEN

RECORDED = sorted(GOLDEN.glob("*/*/*.sse"))


def decode(*pieces: bytes) -> list[Event]:
    decoder = SSEDecoder()
    return [event for piece in pieces for event in decoder.feed(piece)]


GRAMMAR = [
    ("lf", b"data: a\n\n", [Event("a")]),
    ("crlf", b"data: a\r\n\r\n", [Event("a")]),
    ("cr", b"data: a\r\r", [Event("a")]),
    ("mixed endings", b"data: a\r\ndata: b\rdata: c\n\r\n", [Event("a\nb\nc")]),
    ("no space after colon", b"data:a\n\n", [Event("a")]),
    ("only one space removed", b"data:  a\n\n", [Event(" a")]),
    ("multi-line data", b"data: {\ndata: \"k\": 1\ndata: }\n\n", [Event('{\n"k": 1\n}')]),
    ("event name", b"event: message_start\ndata: {}\n\n", [Event("{}", "message_start")]),
    ("event name resets per event", b"event: x\ndata: 1\n\ndata: 2\n\n", [Event("1", "x"), Event("2")]),
    ("comment", b": keep-alive\ndata: a\n\n", [Event("a")]),
    ("comment only", b": ping\n\n", []),
    ("id and retry ignored", b"id: 7\nretry: 1000\ndata: a\n\n", [Event("a")]),
    ("unknown field ignored", b"foo: bar\ndata: a\n\n", [Event("a")]),
    ("field without colon", b"data\n\n", [Event("")]),
    ("empty data dispatches", b"data:\n\n", [Event("")]),
    ("empty event name is the default", b"event:\ndata: a\n\n", [Event("a")]),
    ("event without data is not dispatched", b"event: x\n\n", []),
    ("blank lines between events", b"\n\ndata: a\n\n\n\ndata: b\n\n", [Event("a"), Event("b")]),
    ("colon in value", b"data: a: b\n\n", [Event("a: b")]),
    ("utf-8", "data: こんにちは\n\n".encode(), [Event("こんにちは")]),
    ("bom", b"\xef\xbb\xbfdata: a\n\n", [Event("a")]),
    ("invalid utf-8 replaced", b"data: \xff\n\n", [Event("\ufffd")]),
    ("unterminated event dropped", b"data: a\n\ndata: b\n", [Event("a")]),
    ("done sentinel", DONE, [Event("[DONE]")]),
]


@pytest.mark.parametrize(("name", "raw", "events"), GRAMMAR, ids=[g[0] for g in GRAMMAR])
def test_grammar(name: str, raw: bytes, events: list[Event]) -> None:
    assert decode(raw) == events
    assert decode(*[raw[i:i + 1] for i in range(len(raw))]) == events
    for i in range(1, len(raw)):
        assert decode(raw[:i], raw[i:]) == events, i


def test_cr_then_lf_in_next_chunk_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\r") == [Event("a")]
    assert decoder.feed(b"\ndata: b\r\n\r\n") == [Event("b")]


def test_split_inside_multibyte_character() -> None:
    raw = "data: é€😀\n\n".encode()
    for i in range(1, len(raw)):
        assert decode(raw[:i], raw[i:]) == [Event("é€😀")]


def test_empty_feeds_change_nothing() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n\n") == [Event("a")]
    assert not decoder.pending


def test_pending_reports_a_cut_off_event() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: a\n\ndata: {\"partial")
    assert decoder.pending
    decoder = SSEDecoder()
    decoder.feed(b"event: x\n")
    assert decoder.pending


@pytest.mark.parametrize(("data", "event"), [
    ("{}", None), ("{\"a\": 1}", "message_start"), ("", None), ("two\nlines", None), ("cr\r\nlf", "x"),
    ("ünïcode", None),
])
def test_encode_round_trips(data: str, event: str | None) -> None:
    expected = Event(data.replace("\r\n", "\n"), event)
    assert decode(encode_event(data, event)) == [expected]
    assert decode(encode_event(data.encode(), event)) == [expected]


def test_encode_wire_format() -> None:
    assert encode_event(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert encode_event("x", "ping") == b"event: ping\ndata: x\n\n"


def _reference(raw: bytes) -> list[Event]:
    return [Event(e.data, e.event) for e in OpenAISSEDecoder().iter_bytes(iter([raw]))]


def test_recorded_streams_exist() -> None:
    assert len(RECORDED) >= 10


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: str(p.relative_to(GOLDEN)))
def test_recorded_stream_split_anywhere(path: Path) -> None:
    raw = path.read_bytes()
    whole = decode(raw)
    assert whole, "no events"
    if not path.parent.name.endswith("truncated"):
        assert whole == _reference(raw)
    assert decode(*[raw[i:i + 1] for i in range(len(raw))]) == whole
    for i in range(1, len(raw)):
        assert decode(raw[:i], raw[i:]) == whole, i


@pytest.mark.parametrize("garbage", [b"data: {\"type\":\"mess", b"event: x\r\ndata: 1", b"\xe3\x81", b": c"])
@pytest.mark.parametrize("path", RECORDED, ids=lambda p: str(p.relative_to(GOLDEN)))
def test_recorded_stream_with_trailing_garbage(path: Path, garbage: bytes) -> None:
    raw = path.read_bytes()
    decoder = SSEDecoder()
    events = decoder.feed(raw + garbage)
    assert events == decode(raw)
    assert decoder.pending or garbage == b": c"
