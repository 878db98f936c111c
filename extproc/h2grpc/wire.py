"""HTTP/2 and gRPC wire constants and encoders (RFC 9113, HPACK RFC 7541, gRPC over HTTP/2):
the codes as enums, one frame's bytes, and the header blocks this server sends. Pure functions."""

from __future__ import annotations

from enum import Enum, IntEnum, IntFlag

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
RECEIVE_WINDOW = 1 << 30  # bytes: our connection and stream receive windows
MAX_FRAME = 1 << 20  # bytes: our SETTINGS_MAX_FRAME_SIZE, the largest frame accepted
DEFAULT_WINDOW = 65535  # bytes: a window before SETTINGS say otherwise
DEFAULT_MAX_FRAME = 16384  # bytes: the peer's maximum frame size before its SETTINGS


class FrameType(IntEnum):
    DATA = 0
    HEADERS = 1
    PRIORITY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PUSH_PROMISE = 5
    PING = 6
    GOAWAY = 7
    WINDOW_UPDATE = 8
    CONTINUATION = 9


class Flag(IntFlag):
    END_STREAM = 0x1  # DATA, HEADERS
    ACK = 0x1  # SETTINGS, PING
    END_HEADERS = 0x4
    PADDED = 0x8
    PRIORITY = 0x20


class Setting(IntEnum):
    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6


class ErrorCode(IntEnum):
    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    COMPRESSION_ERROR = 0x9


class Status(IntEnum):
    """The gRPC status codes this server sends."""

    OK = 0
    CANCELLED = 1
    UNIMPLEMENTED = 12
    INTERNAL = 13


class FrameScope(Enum):
    CONNECTION = "stream 0 only"
    STREAM = "a stream only"
    EITHER = "either"


# Where each frame type may appear, indexed by type (RFC 9113 §6).
FRAME_SCOPE = (FrameScope.STREAM, FrameScope.STREAM, FrameScope.STREAM, FrameScope.STREAM, FrameScope.CONNECTION,
               FrameScope.STREAM, FrameScope.CONNECTION, FrameScope.CONNECTION, FrameScope.EITHER, FrameScope.STREAM)
# (lowest, highest, error) of each setting whose value is checked (RFC 9113 §6.5.2).
SETTING_RANGES = {
    Setting.ENABLE_PUSH: (0, 1, ErrorCode.PROTOCOL_ERROR),
    Setting.INITIAL_WINDOW_SIZE: (0, (1 << 31) - 1, ErrorCode.FLOW_CONTROL_ERROR),
    Setting.MAX_FRAME_SIZE: (DEFAULT_MAX_FRAME, (1 << 24) - 1, ErrorCode.PROTOCOL_ERROR),
}
# What this server announces in its first SETTINGS frame.
SERVER_SETTINGS = {Setting.MAX_CONCURRENT_STREAMS: 1 << 20, Setting.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
                   Setting.MAX_FRAME_SIZE: MAX_FRAME}


def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One frame: the 9-byte header (length, type, flags, stream id), then `payload`."""
    return frame_header(len(payload), ftype, flags, stream) + payload


def frame_header(length: int, ftype: int, flags: int, stream: int) -> bytes:
    return bytes((length >> 16, (length >> 8) & 0xFF, length & 0xFF, ftype, flags)) + stream.to_bytes(4, "big")


def _hpack_length(b: bytes) -> bytes:
    """An HPACK string length (7-bit prefix integer), no Huffman."""
    n = len(b)
    if n < 127:
        return bytes((n,))
    out = bytearray((127,))
    n -= 127
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, new name: the peer's decoder table is untouched."""
    return b"\x00" + _hpack_length(name) + name + _hpack_length(value) + value


# `:status: 200` (static index 8) and `content-type: application/grpc` (literal, indexed name 31).
RESPONSE_HEADERS = b"\x88" + b"\x0f\x10" + bytes((16,)) + b"application/grpc"


def trailers(status: Status, message: str = "") -> bytes:
    """The header block ending a call: `grpc-status`, and `grpc-message` (ASCII, ≤ 200 bytes)."""
    block = _literal(b"grpc-status", str(int(status)).encode())
    if message:
        block += _literal(b"grpc-message", message.encode("ascii", "replace")[:200])
    return block


def grpc_message(message: bytes) -> bytes:
    """A length-prefixed, uncompressed gRPC message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message
