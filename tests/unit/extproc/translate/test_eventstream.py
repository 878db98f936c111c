"""The AWS event-stream decoder and encoder: every header type, every recorded stream fed whole,
byte by byte and split in two at every point, trailing garbage, corrupted CRCs and impossible
lengths; botocore's EventStreamBuffer is the oracle on the same bytes."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer, ParserError

from extproc.translate.eventstream import EventStreamDecoder, EventStreamError, Message
from simulator.eventstream_encode import Typed, encode_message, event_message, exception_message
from simulator.eventstream_encode import WireType as HeaderType
from tests.golden.support import GOLDEN, stream_pieces

RECORDED = sorted(GOLDEN.glob("*/*/*.eventstream"))
UUID = bytes(range(16))
EVERY_TYPE: dict[str, Any] = {
    "t": True, "f": False, "byte": Typed(HeaderType.BYTE, -7), "short": Typed(HeaderType.SHORT, -30000),
    "int": 123456, "long": 2**40, "neg-long": Typed(HeaderType.LONG, -1), "bytes": b"\x00\xff",
    "str": "ünïcödé", "empty": "", "ts": Typed(HeaderType.TIMESTAMP, 1767225600123),
    "uuid": Typed(HeaderType.UUID, UUID),
}
DECODED: dict[str, Any] = {"t": True, "f": False, "byte": -7, "short": -30000, "int": 123456, "long": 2**40, "neg-long": -1,
           "bytes": b"\x00\xff", "str": "ünïcödé", "empty": "", "ts": 1767225600123, "uuid": UUID}


def decode(*pieces: bytes) -> list[Message]:
    decoder = EventStreamDecoder()
    return [message for piece in pieces for message in decoder.feed(piece)]


def botocore_decode(raw: bytes) -> list[Message]:
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    return [Message(m.headers, m.payload) for m in buffer]


def test_every_header_type_round_trips_and_botocore_agrees() -> None:
    raw = encode_message(EVERY_TYPE, b'{"k": 1}')
    assert decode(raw) == [Message(DECODED, b'{"k": 1}')] == botocore_decode(raw)


def test_empty_message() -> None:
    raw = encode_message({}, b"")
    assert len(raw) == 16
    assert decode(raw) == [Message({}, b"")] == botocore_decode(raw)


def test_helpers_build_aws_service_messages() -> None:
    event = event_message("messageStart", b'{"role":"assistant"}')
    error = exception_message("throttlingException", b'{"message":"slow"}')
    assert decode(event + error) == [
        Message({":event-type": "messageStart", ":content-type": "application/json", ":message-type": "event"},
                b'{"role":"assistant"}'),
        Message({":exception-type": "throttlingException", ":content-type": "application/json",
                 ":message-type": "exception"}, b'{"message":"slow"}')]


def test_recorded_streams_exist() -> None:
    assert len(RECORDED) >= 5


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_recorded_stream_split_anywhere(path: Path) -> None:
    raw = path.read_bytes()
    whole = decode(raw)
    assert whole == botocore_decode(raw)
    assert whole
    for pieces in stream_pieces(raw):
        assert decode(*pieces) == whole


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_trailing_partial_message_is_pending(path: Path) -> None:
    raw = path.read_bytes()
    decoder = EventStreamDecoder()
    assert decoder.feed(raw + raw[:11]) == decode(raw)
    assert decoder.pending
    decoder = EventStreamDecoder()
    decoder.feed(raw)
    assert not decoder.pending


@pytest.mark.parametrize("garbage", [b"\x00" * 12, b"HTTP/1.1 500 Internal Server Error\r\n\r\n", b"\xff" * 40])
def test_trailing_garbage_fails_after_the_good_messages(garbage: bytes) -> None:
    raw = encode_message({":event-type": "a"}, b"1") + encode_message({":event-type": "b"}, b"2")
    good = decode(raw)
    with pytest.raises(EventStreamError) as info:
        EventStreamDecoder().feed(raw + garbage)
    assert info.value.messages == good
    seen: list[Message] = []
    decoder = EventStreamDecoder()
    with pytest.raises(EventStreamError):
        for i in range(len(raw + garbage)):
            seen += decoder.feed((raw + garbage)[i:i + 1])
    assert seen == good
    with pytest.raises(EventStreamError, match="CRC"):
        decoder.feed(b"")


def _with_crc(prelude8: bytes) -> bytes:
    return prelude8 + struct.pack("!I", zlib.crc32(prelude8))


MESSAGE = encode_message({":event-type": "contentBlockDelta", "n": 5}, b'{"delta":{"text":"hi"}}')
CORRUPT = [
    ("prelude crc", MESSAGE[:8] + bytes([MESSAGE[8] ^ 1]) + MESSAGE[9:], "prelude CRC mismatch"),
    ("total length", bytes([MESSAGE[0] ^ 0x10]) + MESSAGE[1:], "prelude CRC mismatch"),
    ("payload byte", MESSAGE[:-6] + bytes([MESSAGE[-6] ^ 1]) + MESSAGE[-5:], "message CRC mismatch"),
    ("header byte", MESSAGE[:14] + bytes([MESSAGE[14] ^ 1]) + MESSAGE[15:], "message CRC mismatch"),
    ("message crc", MESSAGE[:-1] + bytes([MESSAGE[-1] ^ 1]), "message CRC mismatch"),
]


@pytest.mark.parametrize(("name", "raw", "reason"), CORRUPT, ids=[c[0] for c in CORRUPT])
def test_corrupted_crcs(name: str, raw: bytes, reason: str) -> None:
    for pieces in ([raw], [raw[i:i + 1] for i in range(len(raw))]):
        with pytest.raises(EventStreamError, match=reason):
            decode(*pieces)
    with pytest.raises(ParserError):
        botocore_decode(raw)


def _frame(headers: bytes, payload: bytes = b"") -> bytes:
    """A message with correct CRCs around arbitrary header bytes."""
    body = _with_crc(struct.pack("!II", 16 + len(headers) + len(payload), len(headers))) + headers + payload
    return body + struct.pack("!I", zlib.crc32(body))


ABSURD = [
    ("headers too long", _with_crc(struct.pack("!II", 200 * 1024, 129 * 1024)), "headers length"),
    ("payload too long", _with_crc(struct.pack("!II", 25 * 1024 * 1024, 0)), "payload length"),
    ("total shorter than its parts", _with_crc(struct.pack("!II", 20, 10)), "shorter"),
    ("total shorter than a prelude", _with_crc(struct.pack("!II", 3, 0)), "shorter"),
    ("unknown header type", _frame(b"\x01a\x0a"), "unknown value type 10"),
    ("header past its section", _frame(b"\x01a\x07\x00\x09abc"), "past the end"),
    ("name past its section", _frame(b"\x09ab"), "past the end"),
    ("missing value type", _frame(b"\x01a"), "no value type"),
    ("duplicate header", _frame(b"\x01a\x00\x01a\x01"), "duplicate header 'a'"),
    ("name not utf-8", _frame(b"\x01\xff\x00"), "not UTF-8"),
    ("string not utf-8", _frame(b"\x01a\x07\x00\x01\xff"), "not UTF-8"),
    ("uuid cut short", _frame(b"\x01a\x09" + b"\x00" * 15), "past the end"),
]


@pytest.mark.parametrize(("name", "raw", "reason"), ABSURD, ids=[c[0] for c in ABSURD])
def test_absurd_lengths_and_bad_headers(name: str, raw: bytes, reason: str) -> None:
    decoder = EventStreamDecoder()
    with pytest.raises(EventStreamError, match=reason):
        decoder.feed(raw + b"\x00" * 64)
    with pytest.raises(EventStreamError, match=reason):
        decoder.feed(MESSAGE)


def test_prelude_errors_are_found_before_the_body_arrives() -> None:
    with pytest.raises(EventStreamError, match="payload length"):
        EventStreamDecoder().feed(_with_crc(struct.pack("!II", 25 * 1024 * 1024, 0)))


ENCODE_ERRORS = [
    ({"": "x"}, "header name"),
    ({"n" * 256: "x"}, "header name"),
    ({"v": "x" * 65536}, "65535"),
    ({"v": Typed(HeaderType.BYTE, 200)}, "does not fit"),
    ({"v": Typed(HeaderType.SHORT, "1")}, "needs an int"),
    ({"v": Typed(HeaderType.UUID, b"short")}, "16 bytes"),
    ({"v": Typed(HeaderType.BYTE_ARRAY, 5)}, "needs bytes"),
]


@pytest.mark.parametrize(("headers", "reason"), ENCODE_ERRORS, ids=[e[1] for e in ENCODE_ERRORS])
def test_encoder_refuses_what_the_format_cannot_carry(headers: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        encode_message(headers, b"")  # type: ignore[arg-type]


def test_int_header_widths() -> None:
    assert decode(encode_message({"a": 2**31 - 1, "b": -(2**31), "c": 2**31}, b""))[0].headers == {
        "a": 2**31 - 1, "b": -(2**31), "c": 2**31}
    assert encode_message({"a": 1}, b"")[12 + 2] == HeaderType.INTEGER
    assert encode_message({"a": 2**31}, b"")[12 + 2] == HeaderType.LONG
