"""AWS event-stream encoder (`application/vnd.amazon.eventstream`), as Bedrock's ConverseStream
writes it: the simulator's own, kept apart from the gateway's decoder
(`extproc.translate.eventstream`) so the oracle does not share the codec it checks.

One message on the wire (all integers big-endian):

    total length u32 | headers length u32 | prelude CRC32 (of the 8 bytes before it)
    headers: name length u8, name (UTF-8), value type u8, value
    payload (total − headers − 16 bytes)
    message CRC32 (of every byte before it, the prelude included)
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

HeaderValue = bool | int | bytes | str
MAX_HEADERS_LENGTH = 128 * 1024
MAX_PAYLOAD_LENGTH = 24 * 1024 * 1024
_MIN_MESSAGE = 16  # prelude (12) + message CRC (4)


class WireType(IntEnum):
    """Header value types as AWS's event-stream specification numbers them."""

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


_FIXED = {WireType.BYTE: struct.Struct("!b"), WireType.SHORT: struct.Struct("!h"),
          WireType.INTEGER: struct.Struct("!i"), WireType.LONG: struct.Struct("!q"),
          WireType.TIMESTAMP: struct.Struct("!q")}


@dataclass(frozen=True, slots=True)
class Typed:
    """A header value with an explicit wire type, for `encode_message` (e.g. a SHORT, a TIMESTAMP
    in milliseconds, or a 16-byte UUID)."""

    type: WireType
    value: HeaderValue


def encode_message(headers: Mapping[str, HeaderValue | Typed], payload: bytes) -> bytes:
    """One message on the wire. Header values: str → string, bytes → byte array, bool → true or
    false, int → integer (long when it does not fit 32 bits), `Typed` → its explicit type.
    Raises ValueError for values the format cannot carry."""
    parts: list[bytes] = []
    for name, value in headers.items():
        raw_name = name.encode()
        if not 0 < len(raw_name) < 256:
            raise ValueError(f"header name {name!r} must be 1 to 255 bytes")
        parts.append(bytes([len(raw_name)]) + raw_name + _encode_value(value))
    head = b"".join(parts)
    if len(head) > MAX_HEADERS_LENGTH or len(payload) > MAX_PAYLOAD_LENGTH:
        raise ValueError("headers or payload too long for one event-stream message")
    total = _MIN_MESSAGE + len(head) + len(payload)
    prelude = struct.pack("!II", total, len(head))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    body = prelude + head + payload
    return body + struct.pack("!I", zlib.crc32(body))


def _encode_value(value: HeaderValue | Typed) -> bytes:
    if isinstance(value, Typed):
        kind, raw = value.type, value.value
    elif isinstance(value, bool):
        kind, raw = (WireType.TRUE if value else WireType.FALSE), value
    elif isinstance(value, int):
        kind, raw = (WireType.INTEGER if -2**31 <= value < 2**31 else WireType.LONG), value
    elif isinstance(value, bytes):
        kind, raw = WireType.BYTE_ARRAY, value
    else:
        kind, raw = WireType.STRING, value
    tag = bytes([kind])
    if kind in (WireType.TRUE, WireType.FALSE):
        return tag
    if kind in _FIXED:
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise ValueError(f"a {kind.name} header needs an int")
        try:
            return tag + _FIXED[kind].pack(raw)
        except struct.error:
            raise ValueError(f"{raw} does not fit a {kind.name} header") from None
    data = raw.encode() if isinstance(raw, str) else raw
    if not isinstance(data, bytes):
        raise ValueError(f"a {kind.name} header needs bytes or a string")
    if kind is WireType.UUID:
        if len(data) != 16:
            raise ValueError("a UUID header needs 16 bytes")
        return tag + data
    if len(data) > 0xFFFF:
        raise ValueError("a header value must be at most 65535 bytes")
    return tag + struct.pack("!H", len(data)) + data


def event_message(event_type: str, payload: bytes, content_type: str = "application/json") -> bytes:
    """An AWS service event (`:message-type` event), as Bedrock's ConverseStream sends them."""
    return encode_message({":event-type": event_type, ":content-type": content_type,
                           ":message-type": "event"}, payload)


def exception_message(exception_type: str, payload: bytes, content_type: str = "application/json") -> bytes:
    """A modeled exception mid-stream (`:message-type` exception, e.g. `throttlingException`)."""
    return encode_message({":exception-type": exception_type, ":content-type": content_type,
                           ":message-type": "exception"}, payload)
