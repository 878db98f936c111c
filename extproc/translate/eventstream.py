"""AWS event-stream framing (`application/vnd.amazon.eventstream`): an incremental decoder.
(The encoder is the simulator's, `simulator.eventstream_encode`, written apart so the oracle does
not share the codec it checks.)

One message on the wire (all integers big-endian):

    total length u32 | headers length u32 | prelude CRC32 (of the 8 bytes before it)
    headers: name length u8, name (UTF-8), value type u8, value
    payload (total − headers − 16 bytes)
    message CRC32 (of every byte before it, the prelude included)

Header value types: 0 true, 1 false (no bytes), 2 byte (i8), 3 short (i16), 4 integer (i32),
5 long (i64), 6 byte array (u16 length + bytes), 7 string (u16 length + UTF-8), 8 timestamp (i64
milliseconds since the epoch), 9 UUID (16 bytes). Decoded values are what botocore's parser
gives: bool, int (types 2–5 and 8), bytes (6 and 9) or str (7).

Decoder theory of operation (sans-IO, like h11): `feed` appends to an explicit buffer and cuts
whole messages off its front:

    buffer ──≥ 12 bytes──▶ prelude (lengths checked, CRC checked) ──≥ total bytes──▶ Message

Chunks may split a message anywhere; an incomplete message stays buffered (`pending`). A CRC
mismatch, impossible lengths, an unknown header type, a duplicate header or a header running
past its section raise `EventStreamError` (carrying the messages completed before the bad
bytes); the decoder is then broken and every later `feed` raises the same reason again. Lifetime: one decoder per stream; not thread-safe.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

HeaderValue = bool | int | bytes | str

_PRELUDE = struct.Struct("!III")
_PRELUDE_LEN = 12
_MIN_MESSAGE = _PRELUDE_LEN + 4
MAX_HEADERS_LENGTH = 128 * 1024
MAX_PAYLOAD_LENGTH = 24 * 1024 * 1024


class HeaderType(IntEnum):
    TRUE = 0
    FALSE = 1
    BYTE = 2
    SHORT = 3
    INTEGER = 4
    LONG = 5
    BYTE_ARRAY = 6
    STRING = 7
    TIMESTAMP = 8
    UUID = 9


_FIXED = {HeaderType.BYTE: struct.Struct("!b"), HeaderType.SHORT: struct.Struct("!h"),
          HeaderType.INTEGER: struct.Struct("!i"), HeaderType.LONG: struct.Struct("!q"),
          HeaderType.TIMESTAMP: struct.Struct("!q")}


class EventStreamError(Exception):
    """The bytes are not a valid AWS event stream. `messages` holds the messages the failing
    `feed` call completed before the bad bytes, so a caller sees the same messages however the
    stream was split."""

    def __init__(self, reason: str, messages: list[Message] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.messages = messages or []


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded event-stream message."""

    headers: dict[str, HeaderValue]
    payload: bytes


class EventStreamDecoder:
    """Incremental decoder: `feed(bytes) -> list[Message]` (see the module docstring)."""

    __slots__ = ("_buffer", "_error", "_total")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._total: int | None = None
        self._error: EventStreamError | None = None

    @property
    def pending(self) -> bool:
        """True when bytes of an unfinished message are held."""
        return bool(self._buffer)

    def feed(self, chunk: bytes) -> list[Message]:
        """Take the next bytes of the stream; return the messages they complete, in order."""
        if self._error is not None:
            raise EventStreamError(self._error.reason)
        self._buffer += chunk
        messages: list[Message] = []
        try:
            while True:
                if self._total is None:
                    if len(self._buffer) < _PRELUDE_LEN:
                        break
                    self._total = _check_prelude(self._buffer)
                if len(self._buffer) < self._total:
                    break
                messages.append(_decode(bytes(self._buffer[:self._total])))
                del self._buffer[:self._total]
                self._total = None
        except EventStreamError as err:
            self._error = EventStreamError(err.reason, messages)
            raise self._error from None
        return messages


def _check_prelude(buffer: bytearray) -> int:
    total, headers_length, crc = _PRELUDE.unpack_from(buffer)
    computed = zlib.crc32(buffer[:8])
    if crc != computed:
        raise EventStreamError(f"prelude CRC mismatch: expected {crc:#010x}, computed {computed:#010x}")
    if headers_length > MAX_HEADERS_LENGTH:
        raise EventStreamError(f"headers length {headers_length} exceeds {MAX_HEADERS_LENGTH}")
    if total < _MIN_MESSAGE + headers_length:
        raise EventStreamError(f"total length {total} is shorter than its prelude, headers and CRC")
    if total - headers_length - _MIN_MESSAGE > MAX_PAYLOAD_LENGTH:
        raise EventStreamError(f"payload length {total - headers_length - _MIN_MESSAGE} exceeds {MAX_PAYLOAD_LENGTH}")
    return int(total)


def _decode(raw: bytes) -> Message:
    headers_end = _PRELUDE_LEN + _PRELUDE.unpack_from(raw)[1]
    (crc,) = struct.unpack_from("!I", raw, len(raw) - 4)
    computed = zlib.crc32(raw[:-4])
    if crc != computed:
        raise EventStreamError(f"message CRC mismatch: expected {crc:#010x}, computed {computed:#010x}")
    return Message(_headers(raw, _PRELUDE_LEN, headers_end), raw[headers_end:-4])


def _headers(raw: bytes, pos: int, end: int) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    while pos < end:
        name_len = raw[pos]
        name = _text(_take(raw, pos + 1, name_len, end), "header name")
        pos += 1 + name_len
        if pos >= end:
            raise EventStreamError(f"header {name!r} has no value type")
        try:
            kind = HeaderType(raw[pos])
        except ValueError:
            raise EventStreamError(f"header {name!r} has unknown value type {raw[pos]}") from None
        pos += 1
        value: HeaderValue
        if kind in (HeaderType.TRUE, HeaderType.FALSE):
            value = kind is HeaderType.TRUE
        elif kind in _FIXED:
            fmt = _FIXED[kind]
            value = fmt.unpack(_take(raw, pos, fmt.size, end))[0]
            pos += fmt.size
        elif kind is HeaderType.UUID:
            value = _take(raw, pos, 16, end)
            pos += 16
        else:
            (length,) = struct.unpack("!H", _take(raw, pos, 2, end))
            data = _take(raw, pos + 2, length, end)
            value = _text(data, f"header {name!r}") if kind is HeaderType.STRING else data
            pos += 2 + length
        if name in headers:
            raise EventStreamError(f"duplicate header {name!r}")
        headers[name] = value
    return headers


def _take(raw: bytes, pos: int, size: int, end: int) -> bytes:
    if pos + size > end:
        raise EventStreamError("a header runs past the end of the headers section")
    return raw[pos:pos + size]


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise EventStreamError(f"{what} is not UTF-8") from None
