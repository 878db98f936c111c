"""A small gRPC-over-HTTP/2 (h2c) server for unary methods, for the rate-limit service.

Why not grpcio: Envoy calls the rate-limit service twice per request (admission and stream done)
and grpcio's Python server costs ~200 µs of CPU per unary call on the development machine, four
times the limiter's own work. This server speaks just what a unary gRPC server needs, on one
asyncio protocol per connection, and answers a call inline when its handler does not suspend
(the memory store), so a call costs tens of microseconds.

What it implements (RFC 9113 and the gRPC HTTP/2 protocol):
- the connection preface, SETTINGS (acknowledged; the peer's initial window and maximum frame
  size honoured), PING (answered), GOAWAY, RST_STREAM (the call is dropped or cancelled);
- HEADERS with CONTINUATION, padding and priority; request headers decoded with HPACK (the
  `hpack` package) to read `:path`; responses use literal fields without indexing, so the
  peer's decoder table is never touched;
- DATA with padding, reassembled per stream; one length-prefixed, uncompressed gRPC message per
  request (a compressed one is refused with UNIMPLEMENTED);
- flow control both ways: a large receive window, replenished; sends wait for the peer's
  connection and stream windows;
- unknown methods: `grpc-status: 12` (UNIMPLEMENTED); a handler error: 13 (INTERNAL), logged.

Not implemented (not needed by Envoy's or grpcio's clients of a unary service): server push,
streaming calls, compression, TLS (the service listens on the pod's loopback or network).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, cast

from hpack import Decoder
from hpack.exceptions import HPACKError

log = logging.getLogger("interlock.limits")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
RECEIVE_WINDOW = 1 << 30
DEFAULT_WINDOW = 65535
OK, UNIMPLEMENTED, INTERNAL = 0, 12, 13

# `:status: 200` (static index 8) and `content-type: application/grpc` (literal, indexed name 31).
_RESPONSE_HEADERS = b"\x88" + b"\x0f\x10" + bytes([16]) + b"application/grpc"

# A handler takes the request message bytes and returns the response message bytes, either
# directly or as a coroutine (run inline while it does not suspend).
Handler = Callable[[bytes], "bytes | Coroutine[Any, Any, bytes]"]


def _literal(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, new name (lengths < 127, no Huffman)."""
    return b"\x00" + _len(name) + name + _len(value) + value


def _len(b: bytes) -> bytes:
    n = len(b)
    if n < 127:
        return bytes([n])
    out = bytearray([127])
    n -= 127
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _trailers(status: int, message: str = "") -> bytes:
    block = _literal(b"grpc-status", str(status).encode())
    if message:
        block += _literal(b"grpc-message", message.encode("ascii", "replace")[:200])
    return block


def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return bytes([(n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF, ftype, flags]) + struct.pack(">I", stream) + payload


class _Stream:
    __slots__ = ("id", "path", "data", "headers_done", "header_block", "send_window", "task")

    def __init__(self, sid: int, window: int) -> None:
        self.id = sid
        self.path = b""
        self.data = bytearray()
        self.headers_done = False
        self.header_block = bytearray()
        self.send_window = window
        self.task: asyncio.Task[None] | None = None


class H2Connection(asyncio.Protocol):
    """One client connection. Frames are parsed as bytes arrive; answers are written in order of
    completion, within the peer's flow-control windows."""

    def __init__(self, server: UnaryServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.preface_seen = False
        self.decoder = Decoder()
        self.streams: dict[int, _Stream] = {}
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = 16384
        self.send_window = DEFAULT_WINDOW
        self.received = 0
        self.pending: deque[tuple[int, bytes, bytes]] = deque()  # (stream, message, trailers block)
        self.continuing: _Stream | None = None
        self.closed = False

    # -- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)
        settings = struct.pack(">HI", 0x3, 1 << 20) + struct.pack(">HI", 0x4, RECEIVE_WINDOW)
        self.transport.write(frame(SETTINGS, 0, 0, settings)
                        + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", RECEIVE_WINDOW - DEFAULT_WINDOW)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for s in self.streams.values():
            if s.task is not None:
                s.task.cancel()
        self.streams.clear()

    def _fail(self, error: int, why: str) -> None:
        log.warning("rate limit connection closed: %s", why)
        if self.transport is not None and not self.closed:
            last = max(self.streams, default=0)
            self.transport.write(frame(GOAWAY, 0, 0, struct.pack(">II", last, error)))
            self.transport.close()
        self.closed = True

    # -- frames ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.preface_seen:
            if len(buf) < len(PREFACE):
                return
            if bytes(buf[:len(PREFACE)]) != PREFACE:
                self._fail(1, "not an HTTP/2 client preface")
                return
            del buf[:len(PREFACE)]
            self.preface_seen = True
        pos = 0
        end = len(buf)
        while end - pos >= 9 and not self.closed:
            length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
            if end - pos < 9 + length:
                break
            ftype, flags = buf[pos + 3], buf[pos + 4]
            sid = struct.unpack_from(">I", buf, pos + 5)[0] & 0x7FFFFFFF
            payload = bytes(buf[pos + 9:pos + 9 + length])
            pos += 9 + length
            self._frame(ftype, flags, sid, payload)
        del buf[:pos]
        if self.received >= RECEIVE_WINDOW // 2 and self.transport is not None and not self.closed:
            self.transport.write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.received)))
            self.received = 0

    def _frame(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if self.continuing is not None and ftype != CONTINUATION:
            self._fail(1, "expected CONTINUATION")
            return
        if ftype == DATA:
            self.received += len(payload)
            s = self.streams.get(sid)
            if flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            if s is not None:
                s.data += payload
                if flags & END_STREAM:
                    self._dispatch(s)
        elif ftype == HEADERS:
            if flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            s = self.streams.get(sid)
            if s is None:
                s = self.streams[sid] = _Stream(sid, self.peer_initial_window)
            s.header_block += payload
            if flags & END_HEADERS:
                self._headers_done(s, bool(flags & END_STREAM))
            else:
                self.continuing = s
                s.task = None
                s.headers_done = bool(flags & END_STREAM)  # remembered until END_HEADERS
        elif ftype == CONTINUATION:
            s = self.continuing
            if s is None or s.id != sid:
                self._fail(1, "unexpected CONTINUATION")
                return
            s.header_block += payload
            if flags & END_HEADERS:
                self.continuing = None
                self._headers_done(s, s.headers_done)
        elif ftype == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
                assert self.transport is not None
                self.transport.write(frame(SETTINGS, ACK, 0))
        elif ftype == PING:
            if not flags & ACK and self.transport is not None:
                self.transport.write(frame(PING, ACK, 0, payload))
        elif ftype == WINDOW_UPDATE:
            inc = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
            if sid == 0:
                self.send_window += inc
            elif sid in self.streams:
                self.streams[sid].send_window += inc
            self._flush()
        elif ftype == RST_STREAM:
            s = self.streams.pop(sid, None)
            if s is not None and s.task is not None:
                s.task.cancel()
        elif ftype == GOAWAY and self.transport is not None and not self.streams:
            self.transport.close()
        # PRIORITY, PUSH_PROMISE (never sent by clients) and unknown types are ignored.

    def _settings(self, payload: bytes) -> None:
        for i in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, i)
            if key == 0x4:
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for s in self.streams.values():
                    s.send_window += delta
            elif key == 0x5:
                self.peer_max_frame = value
        self._flush()

    def _headers_done(self, s: _Stream, end_stream: bool) -> None:
        try:
            headers = self.decoder.decode(bytes(s.header_block), raw=True)
        except HPACKError as e:
            self._fail(9, f"bad header block: {e}")  # COMPRESSION_ERROR
            return
        s.header_block = bytearray()
        s.headers_done = True
        for name, value in headers:
            if name == b":path":
                s.path = value
        if end_stream:
            self._dispatch(s)

    # -- calls -------------------------------------------------------------------------------

    def _dispatch(self, s: _Stream) -> None:
        handler = self.server.methods.get(s.path.decode("latin-1"))
        if handler is None:
            self._respond(s.id, None, _trailers(UNIMPLEMENTED, f"unknown method {s.path.decode('latin-1')}"))
            return
        data = bytes(s.data)
        if len(data) < 5 or data[0] != 0 or int.from_bytes(data[1:5], "big") != len(data) - 5:
            self._respond(s.id, None, _trailers(UNIMPLEMENTED if data[:1] == b"\x01" else INTERNAL,
                                                "expected one uncompressed gRPC message"))
            return
        try:
            result = handler(data[5:])
            if not isinstance(result, bytes):
                try:
                    blocked_on = result.send(None)
                except StopIteration as done:
                    result = done.value
                else:  # it suspended: finish it as a task, from where it stopped
                    s.task = asyncio.ensure_future(self._finish(s.id, _Resume(result, blocked_on)))
                    return
        except Exception:
            log.exception("rate limit call %s failed", s.path.decode("latin-1"))
            self._respond(s.id, None, _trailers(INTERNAL, "internal error"))
            return
        self._respond(s.id, result, _trailers(OK))

    async def _finish(self, sid: int, started: _Resume) -> None:
        try:
            result = await started
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("rate limit call failed")
            self._respond(sid, None, _trailers(INTERNAL, "internal error"))
            return
        self._respond(sid, result, _trailers(OK))

    def _respond(self, sid: int, message: bytes | None, trailers: bytes) -> None:
        if self.closed or self.transport is None or sid not in self.streams:
            return
        body = b"" if message is None else b"\x00" + len(message).to_bytes(4, "big") + message
        self.pending.append((sid, body, trailers))
        self._flush()

    def _flush(self) -> None:
        out = []
        while self.pending:
            sid, body, trailers = self.pending[0]
            s = self.streams.get(sid)
            if s is None:
                self.pending.popleft()
                continue
            if body and (len(body) > self.send_window or len(body) > s.send_window
                         or len(body) > self.peer_max_frame):
                if len(body) > self.peer_max_frame and len(body) <= min(self.send_window, s.send_window):
                    # Rare: a message over one frame; split it.
                    self.pending.popleft()
                    out.append(frame(HEADERS, END_HEADERS, sid, _RESPONSE_HEADERS))
                    for i in range(0, len(body), self.peer_max_frame):
                        out.append(frame(DATA, 0, sid, body[i:i + self.peer_max_frame]))
                    self.send_window -= len(body)
                    out.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, trailers))
                    del self.streams[sid]
                    continue
                break  # wait for WINDOW_UPDATE
            self.pending.popleft()
            if body:
                out.append(frame(HEADERS, END_HEADERS, sid, _RESPONSE_HEADERS))
                out.append(frame(DATA, 0, sid, body))
                self.send_window -= len(body)
                out.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, trailers))
            else:  # trailers-only response
                out.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, _RESPONSE_HEADERS + trailers))
            del self.streams[sid]
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


class _Resume:
    """Awaitable that continues a coroutine which already ran up to its first suspension, where
    it yielded `blocked_on` (the future it waits for): that future is yielded to the task first."""

    def __init__(self, coro: Coroutine[Any, Any, bytes], blocked_on: Any) -> None:
        self.coro = coro
        self.blocked_on = blocked_on

    def __await__(self) -> Any:
        coro = self.coro
        to_yield = self.blocked_on
        while True:
            try:
                value = yield to_yield
            except BaseException as e:  # cancellation and errors go into the coroutine
                try:
                    to_yield = coro.throw(e)
                except StopIteration as done:
                    return done.value
                continue
            try:
                to_yield = coro.send(value)
            except StopIteration as done:
                return done.value


class UnaryServer:
    """`methods` maps a gRPC path (`/package.Service/Method`) to its handler."""

    def __init__(self, methods: dict[str, Handler]) -> None:
        self.methods = methods
        self.connections: set[H2Connection] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, address: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: H2Connection(self), address, port, reuse_address=True)
        sock = self._server.sockets[0]
        return int(sock.getsockname()[1])

    async def stop(self, grace: float = 2.0) -> None:
        if self._server is None:
            return
        self._server.close()
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.write(frame(GOAWAY, 0, 0, struct.pack(">II", 0x7FFFFFFF, 0)))
        deadline = asyncio.get_running_loop().time() + grace
        while any(c.streams for c in self.connections) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.close()
        await self._server.wait_closed()

