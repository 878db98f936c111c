"""Sans-IO HTTP/2 and gRPC framing, the server side of one connection (RFC 9113, gRPC over HTTP/2).

Theory of operation. `Connection` is a pure state machine: no socket, no task, no clock. Its owner
feeds it what the peer sent (`receive_data`), pulls events one at a time (`next_event`; None when
it needs more bytes), answers them (`send_message`, `end_call`), and writes out what
`data_to_send()` returns after each step, closing the transport once `wants_close` is true. Frames
are parsed only as events are pulled, so what the owner sends in answer to one event goes out
before the effects of the frames behind it, in the order a socket would have seen them. Frames
the protocol answers by itself (SETTINGS and PING acknowledgements, WINDOW_UPDATE, RST_STREAM,
GOAWAY) are produced in the order their causes arrived.

    connection:  OPEN --go_away() / peer GOAWAY--> GOING_AWAY --no stream left--> wants_close
                 any --protocol error--> CLOSED (GOAWAY sent, ConnectionTerminated) --> wants_close
    stream:      OPENING --header block--> OPEN --END_STREAM--> HALF_CLOSED        (CallStarted,
                 OPEN | HALF_CLOSED --end_call()--> ENDED --trailers written--> gone InputEnded)
                 any --peer RST_STREAM--> gone (CallReset)

What it implements:
- the client preface; SETTINGS (acknowledged before any data a larger window lets out: grpc-core
  checks what it receives against the window it knows acknowledged; the peer's initial window and
  maximum frame size honoured), PING (answered), GOAWAY (both ways), RST_STREAM;
- HEADERS with CONTINUATION, padding and priority, decoded with HPACK (`hpack`); responses use
  literal fields without indexing, so the peer's decoder table is never touched;
- DATA with padding; gRPC length-prefixed messages reassembled across frames (several per frame,
  or one over many), uncompressed only (a compressed one fails the call: UNIMPLEMENTED);
- flow control both ways: a large receive window, replenished at half; sends wait in one queue
  for the peer's connection and stream windows and are split at its maximum frame size;
- malformed input is a connection error (GOAWAY with its code), never an exception.
Not implemented (no client of ours needs it): server push, compression, TLS, priorities.

Why hand-written rather than python-hyper's `h2` (measured 2026-12, one core, CPython 3.11,
`bench/bench_h2grpc.py`, median of 7 runs; a bidi stream answering each ~2 KB request message
with one ~1 KB response, feeds as Envoy sends them):
    MEASUREMENT
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import KeysView
from dataclasses import dataclass
from enum import Enum, IntEnum, IntFlag

from hpack import Decoder
from hpack.exceptions import HPACKError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
RECEIVE_WINDOW = 1 << 30  # bytes: our connection and stream receive windows
MAX_FRAME = 1 << 20  # bytes: our SETTINGS_MAX_FRAME_SIZE, the largest frame accepted
DEFAULT_WINDOW = 65535
DEFAULT_MAX_FRAME = 16384


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


class ConnectionState(Enum):
    OPEN = "open"
    GOING_AWAY = "going away"  # no new streams; open ones finish
    CLOSED = "closed"  # a protocol error, or the owner's close(): nothing more in or out


class StreamState(Enum):
    OPENING = "opening"  # its first header block is not complete yet
    OPEN = "open"
    HALF_CLOSED = "half-closed"  # the client is done sending
    ENDED = "ended"  # our trailers are queued: no more events or sends


# (lowest, highest, error) for each setting whose value is checked (RFC 9113 §6.5.2).
_SETTING_RANGES = {
    Setting.INITIAL_WINDOW_SIZE: (0, (1 << 31) - 1, ErrorCode.FLOW_CONTROL_ERROR),
    Setting.MAX_FRAME_SIZE: (DEFAULT_MAX_FRAME, (1 << 24) - 1, ErrorCode.PROTOCOL_ERROR),
}
_OUR_SETTINGS = {Setting.MAX_CONCURRENT_STREAMS: 1 << 20, Setting.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
                 Setting.MAX_FRAME_SIZE: MAX_FRAME}
# Frame types that belong to the connection (stream 0) and those that belong to a stream.
_CONNECTION_FRAMES = frozenset({FrameType.SETTINGS, FrameType.PING, FrameType.GOAWAY})
_STREAM_FRAMES = frozenset({FrameType.DATA, FrameType.HEADERS, FrameType.PRIORITY, FrameType.RST_STREAM,
                            FrameType.CONTINUATION})

# Plain ints for the per-frame path (an IntFlag operand costs a Python-level __and__).
_DATA, _HEADERS, _CONTINUATION = int(FrameType.DATA), int(FrameType.HEADERS), int(FrameType.CONTINUATION)
_END_STREAM, _END_HEADERS, _PADDED = int(Flag.END_STREAM), int(Flag.END_HEADERS), int(Flag.PADDED)
_HALF_RECEIVE_WINDOW = RECEIVE_WINDOW // 2


# -- events ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CallStarted:
    """A call's request headers (names and values decoded as latin-1; pseudo-headers included)."""

    stream_id: int
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """One complete gRPC request message (without its 5-byte prefix)."""

    stream_id: int
    message: bytes


@dataclass(frozen=True, slots=True)
class InputEnded:
    """The client half-closed the call; `incomplete` bytes of an unfinished message were left."""

    stream_id: int
    incomplete: int


@dataclass(frozen=True, slots=True)
class CallReset:
    """The client reset a call the owner had not ended: the call is gone, sends are dropped."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class CallFailed:
    """The framing layer ended a call (its trailers carry `status`): the call is gone."""

    stream_id: int
    status: Status
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """A protocol error: GOAWAY with `error` is queued, the connection is CLOSED."""

    error: ErrorCode
    reason: str


Event = CallStarted | MessageReceived | InputEnded | CallReset | CallFailed | ConnectionTerminated


# -- encoding ----------------------------------------------------------------------------------

def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One frame: 9-byte header (length, type, flags, stream id) and payload."""
    n = len(payload)
    return bytes((n >> 16, (n >> 8) & 0xFF, n & 0xFF, ftype, flags)) + stream.to_bytes(4, "big") + payload


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
    """A literal header field without indexing, new name."""
    return b"\x00" + _hpack_length(name) + name + _hpack_length(value) + value


def _trailers(status: Status, message: str = "") -> bytes:
    block = _literal(b"grpc-status", str(int(status)).encode())
    if message:
        block += _literal(b"grpc-message", message.encode("ascii", "replace")[:200])
    return block


# `:status: 200` (static index 8) and `content-type: application/grpc` (literal, indexed name 31).
_RESPONSE_HEADERS = b"\x88" + b"\x0f\x10" + bytes((16,)) + b"application/grpc"


# -- the connection ----------------------------------------------------------------------------

class _Stream:
    __slots__ = ("id", "state", "header_block", "end_after_headers", "inbuf", "unacked", "send_window",
                 "headers_sent")

    def __init__(self, sid: int, send_window: int) -> None:
        self.id = sid
        self.state = StreamState.OPENING
        self.header_block = bytearray()
        self.end_after_headers = False
        self.inbuf = bytearray()  # the start of an incomplete gRPC message
        self.unacked = 0  # bytes received since our last WINDOW_UPDATE for the stream
        self.send_window = send_window
        self.headers_sent = False


class Connection:
    """One server connection. Not thread-safe; every method returns without blocking."""

    def __init__(self) -> None:
        self.state = ConnectionState.OPEN
        self._streams: dict[int, _Stream] = {}
        self._inbuf = bytearray()
        self._pos = 0  # parsed up to here in _inbuf
        self._preface_seen = False
        self._decoder = Decoder()
        self._decoder.max_allowed_table_size = 65536
        self._events: deque[Event] = deque()
        self._out = bytearray()
        self._queue: deque[list[object]] = deque()  # [stream id, is DATA, payload, flags] awaiting windows
        self._continuing: _Stream | None = None  # whose header block the next frame must continue
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = DEFAULT_MAX_FRAME
        self._send_window = DEFAULT_WINDOW
        self._unacked = 0  # bytes received since our last connection WINDOW_UPDATE
        self._on_frame = (self._on_data, self._on_headers, self._ignore, self._on_rst_stream,
                          self._on_settings, self._on_push_promise, self._on_ping, self._on_goaway,
                          self._on_window_update, self._on_continuation)
        settings = b"".join(struct.pack(">HI", k, v) for k, v in _OUR_SETTINGS.items())
        self._out += frame(FrameType.SETTINGS, 0, 0, settings)
        self._out += frame(FrameType.WINDOW_UPDATE, 0, 0, struct.pack(">I", RECEIVE_WINDOW - DEFAULT_WINDOW))

    @property
    def open_streams(self) -> KeysView[int]:
        """Streams started and not yet finished (trailers written) or reset."""
        return self._streams.keys()

    @property
    def wants_close(self) -> bool:
        """The transport should be closed once `data_to_send()` is written."""
        return self.state is ConnectionState.CLOSED or (
            self.state is ConnectionState.GOING_AWAY and not self._streams)

    # -- the owner's side ------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self.state is not ConnectionState.CLOSED:
            self._inbuf += data

    def next_event(self) -> Event | None:
        events = self._events
        while not events:
            if self.state is ConnectionState.CLOSED or not self._read_frame():
                return None
        return events.popleft()

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = bytes(out)
        out.clear()
        return data

    def send_message(self, stream_id: int, message: bytes) -> None:
        """Queue one gRPC response message (the response headers first, once). A no-op on a
        stream that is gone or ended: the client may have reset it meanwhile."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.state is StreamState.ENDED:
            return
        if not stream.headers_sent:
            stream.headers_sent = True
            self._queue.append([stream_id, False, _RESPONSE_HEADERS, _END_HEADERS])
        self._queue.append([stream_id, True, b"\x00" + len(message).to_bytes(4, "big") + message, 0])
        self._flush()

    def end_call(self, stream_id: int, status: Status, message: str = "") -> None:
        """Queue the trailers (a trailers-only response if nothing was sent); the stream leaves
        `open_streams` once they are written. Idempotent; a no-op on a stream that is gone."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.state is StreamState.ENDED:
            return
        block = _trailers(status, message)
        if not stream.headers_sent:
            block = _RESPONSE_HEADERS + block
            stream.headers_sent = True
        stream.state = StreamState.ENDED
        self._queue.append([stream_id, False, block, _END_HEADERS | _END_STREAM])
        self._flush()

    def go_away(self) -> None:
        """Refuse new streams (GOAWAY); open ones finish. Only from OPEN."""
        if self.state is ConnectionState.OPEN:
            self.state = ConnectionState.GOING_AWAY
            self._out += frame(FrameType.GOAWAY, 0, 0,
                               struct.pack(">II", max(self._streams, default=0), ErrorCode.NO_ERROR))

    def close(self) -> None:
        """The transport is gone: forget everything, ignore whatever comes after."""
        self.state = ConnectionState.CLOSED
        self._streams.clear()
        self._queue.clear()
        self._events.clear()
        self._out.clear()
        self._inbuf.clear()
        self._pos = 0

    # -- frames in -------------------------------------------------------------------------------

    def _read_frame(self) -> bool:
        """Handle one frame; False when the buffer holds no complete frame."""
        buf, pos = self._inbuf, self._pos
        if not self._preface_seen:
            if buf[:len(PREFACE)] != PREFACE[:len(buf)]:
                self._fail(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 client preface")
                return False
            if len(buf) < len(PREFACE):
                return False
            self._preface_seen = True
            pos = self._pos = len(PREFACE)
        available = len(buf) - pos
        if available >= 9:
            length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
            if length > MAX_FRAME:
                self._fail(ErrorCode.FRAME_SIZE_ERROR, f"frame of {length} bytes over the maximum")
                return False
            if available >= 9 + length:
                ftype, flags = buf[pos + 3], buf[pos + 4]
                sid = ((buf[pos + 5] & 0x7F) << 24) | (buf[pos + 6] << 16) | (buf[pos + 7] << 8) | buf[pos + 8]
                payload = bytes(buf[pos + 9:pos + 9 + length])
                self._pos = pos + 9 + length
                if self._continuing is not None and ftype != _CONTINUATION:
                    self._fail(ErrorCode.PROTOCOL_ERROR, "expected CONTINUATION")
                elif ftype <= _CONTINUATION:
                    if (sid == 0) == (ftype in _STREAM_FRAMES) or (sid != 0 and ftype in _CONNECTION_FRAMES):
                        self._fail(ErrorCode.PROTOCOL_ERROR, f"{FrameType(ftype).name} on stream {sid}")
                    else:
                        self._on_frame[ftype](flags, sid, payload)
                return True  # unknown frame types are ignored
        if pos:
            del buf[:pos]
            self._pos = 0
        if self._unacked >= _HALF_RECEIVE_WINDOW:
            self._out += frame(FrameType.WINDOW_UPDATE, 0, 0, self._unacked.to_bytes(4, "big"))
            self._unacked = 0
        return False

    def _unpad(self, payload: bytes) -> bytes | None:
        if not payload or payload[0] >= len(payload):
            self._fail(ErrorCode.PROTOCOL_ERROR, "padding longer than the frame")
            return None
        return payload[1:len(payload) - payload[0]]

    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:
        size = len(payload)
        self._unacked += size
        stream = self._streams.get(sid)
        if stream is None:
            return
        if flags & _PADDED and (payload := self._unpad(payload)) is None:  # type: ignore[assignment]
            return
        stream.unacked += size
        if stream.unacked >= _HALF_RECEIVE_WINDOW:
            self._out += frame(FrameType.WINDOW_UPDATE, 0, sid, stream.unacked.to_bytes(4, "big"))
            stream.unacked = 0
        if stream.state is not StreamState.OPEN:
            return
        inbuf = stream.inbuf
        if inbuf:
            inbuf += payload
            data: bytes | bytearray = inbuf
        else:
            data = payload
        end, pos = len(data), 0
        messages = []
        while end - pos >= 5:
            n = int.from_bytes(data[pos + 1:pos + 5], "big")
            if end - pos < 5 + n:
                break
            if data[pos] != 0:
                self._fail_call(stream, Status.UNIMPLEMENTED, "compressed messages are not supported")
                return
            messages.append(bytes(data[pos + 5:pos + 5 + n]))
            pos += 5 + n
        if inbuf:
            del inbuf[:pos]
        elif pos < end:
            inbuf += data[pos:]
        events = self._events
        for m in messages:
            events.append(MessageReceived(sid, m))
        if flags & _END_STREAM:
            stream.state = StreamState.HALF_CLOSED
            events.append(InputEnded(sid, len(inbuf)))

    def _on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        if flags & _PADDED and (payload := self._unpad(payload)) is None:  # type: ignore[assignment]
            return
        if flags & Flag.PRIORITY:
            if len(payload) < 5:
                self._fail(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for its priority")
                return
            payload = payload[5:]
        stream = self._streams.get(sid)
        if stream is None:
            stream = self._streams[sid] = _Stream(sid, self._peer_initial_window)
        stream.header_block += payload
        stream.end_after_headers = bool(flags & _END_STREAM)
        if flags & _END_HEADERS:
            self._header_block_done(stream)
        else:
            self._continuing = stream

    def _on_continuation(self, flags: int, sid: int, payload: bytes) -> None:
        stream = self._continuing
        if stream is None or stream.id != sid:
            self._fail(ErrorCode.PROTOCOL_ERROR, "unexpected CONTINUATION")
            return
        stream.header_block += payload
        if flags & _END_HEADERS:
            self._continuing = None
            self._header_block_done(stream)

    def _header_block_done(self, stream: _Stream) -> None:
        try:  # every block is decoded, even one refused, to keep the HPACK table in step
            decoded = self._decoder.decode(bytes(stream.header_block), raw=True)
        except HPACKError as e:
            self._fail(ErrorCode.COMPRESSION_ERROR, f"bad header block: {e}")
            return
        stream.header_block.clear()
        sid = stream.id
        if stream.state is StreamState.OPENING:
            if self.state is not ConnectionState.OPEN:
                del self._streams[sid]
                self._out += frame(FrameType.RST_STREAM, 0, sid, struct.pack(">I", ErrorCode.REFUSED_STREAM))
                return
            stream.state = StreamState.OPEN
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in decoded}  # type: ignore[union-attr]
            self._events.append(CallStarted(sid, headers))
        elif stream.state is not StreamState.OPEN:
            return  # trailers after END_STREAM or after our end: nothing to tell
        if stream.end_after_headers:  # the request was headers only, or these are its trailers
            stream.state = StreamState.HALF_CLOSED
            self._events.append(InputEnded(sid, len(stream.inbuf)))

    def _on_rst_stream(self, flags: int, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            self._fail(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM of the wrong size")
            return
        stream = self._streams.pop(sid, None)
        if stream is None:
            return
        if stream.state is not StreamState.ENDED:
            self._events.append(CallReset(sid))
        self._flush()

    def _on_settings(self, flags: int, sid: int, payload: bytes) -> None:
        if flags & Flag.ACK:
            return
        if len(payload) % 6:
            self._fail(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS of the wrong size")
            return
        for i in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, i)
            lowest, highest, error = _SETTING_RANGES.get(key, (0, 1 << 32, ErrorCode.NO_ERROR))
            if not lowest <= value <= highest:
                self._fail(error, f"setting {key:#x} out of range: {value}")
                return
            if key == Setting.INITIAL_WINDOW_SIZE:
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
            elif key == Setting.MAX_FRAME_SIZE:
                self._peer_max_frame = value
        self._out += frame(FrameType.SETTINGS, Flag.ACK, 0)  # before the data the new window lets out
        self._flush()

    def _on_ping(self, flags: int, sid: int, payload: bytes) -> None:
        if len(payload) != 8:
            self._fail(ErrorCode.FRAME_SIZE_ERROR, "PING of the wrong size")
        elif not flags & Flag.ACK:
            self._out += frame(FrameType.PING, Flag.ACK, 0, payload)

    def _on_goaway(self, flags: int, sid: int, payload: bytes) -> None:
        if len(payload) < 8:
            self._fail(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY too short")
        elif self.state is ConnectionState.OPEN:
            self.state = ConnectionState.GOING_AWAY

    def _on_window_update(self, flags: int, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            self._fail(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size")
            return
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if sid == 0:
            self._send_window += increment
        elif (stream := self._streams.get(sid)) is not None:
            stream.send_window += increment
        self._flush()

    def _on_push_promise(self, flags: int, sid: int, payload: bytes) -> None:
        self._fail(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client")

    def _ignore(self, flags: int, sid: int, payload: bytes) -> None:
        """PRIORITY: advice this server does not take."""

    def _fail(self, error: ErrorCode, reason: str) -> None:
        if self.state is ConnectionState.CLOSED:
            return
        self._out += frame(FrameType.GOAWAY, 0, 0, struct.pack(">II", max(self._streams, default=0), error))
        self.state = ConnectionState.CLOSED
        self._queue.clear()
        self._events.clear()
        self._events.append(ConnectionTerminated(error, reason))

    def _fail_call(self, stream: _Stream, status: Status, reason: str) -> None:
        self.end_call(stream.id, status, reason)
        self._events.append(CallFailed(stream.id, status, reason))

    # -- frames out ------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Move queued frames to the output while windows allow; a stream's frames keep their order,
        and DATA waits for WINDOW_UPDATE when a window is spent."""
        if self.state is ConnectionState.CLOSED:
            return
        queue, streams, out = self._queue, self._streams, self._out
        while queue:
            item = queue[0]
            sid, is_data, payload, flags = item
            stream = streams.get(sid)  # type: ignore[call-overload]
            if stream is None:  # reset meanwhile
                queue.popleft()
                continue
            if not is_data:
                out += frame(_HEADERS, flags, sid, payload)  # type: ignore[arg-type]
                queue.popleft()
                if flags & _END_STREAM:  # type: ignore[operator]
                    del streams[sid]  # type: ignore[arg-type]
                continue
            n = min(len(payload), self._send_window, stream.send_window, self._peer_max_frame)  # type: ignore[arg-type]
            if n <= 0:
                break
            out += frame(_DATA, 0, sid, payload[:n])  # type: ignore[arg-type, index]
            self._send_window -= n
            stream.send_window -= n
            if n == len(payload):  # type: ignore[arg-type]
                queue.popleft()
            else:
                item[2] = payload[n:]  # type: ignore[index]
