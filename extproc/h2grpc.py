"""A small gRPC-over-HTTP/2 (h2c) server: unary methods, and bidirectional streams that answer
each request message with exactly one response message (the ext_proc protocol).

Why not grpcio's server: every Envoy request costs the gateway four ext_proc messages and two
rate-limit calls, and grpcio's Python server spends ~100–200 µs of CPU on each, several times
the gateway's own work. This server parses frames on one asyncio protocol per connection and
runs a handler inline while it does not suspend, so a message costs tens of microseconds.

What it implements (RFC 9113 and gRPC over HTTP/2):
- the connection preface; SETTINGS (acknowledged before any data a larger window lets out; the
  peer's initial window and maximum frame size honoured), PING (answered), GOAWAY, RST_STREAM
  (the call is cancelled and closed);
- HEADERS with CONTINUATION, padding and priority, decoded with HPACK (`hpack`) for `:path`
  and the call's metadata; responses use literal fields without indexing, so the peer's
  decoder table is never touched;
- DATA with padding; gRPC length-prefixed messages reassembled across frames (several per
  frame, or one over many), uncompressed only (a compressed one fails the call);
- flow control both ways: a large receive window, replenished; sends wait for the peer's
  connection and stream windows and are split at its maximum frame size;
- a handler's exception fails the call with INTERNAL (logged, never sent); an unknown method
  gets UNIMPLEMENTED; `stop()` sends GOAWAY and waits for open calls (the grace period).

Handlers. A unary handler takes the request bytes and returns the response bytes, or a
coroutine producing them. A coroutine runs inline, outside any task, until it first suspends
(then a task finishes it): code that needs `asyncio.current_task()` before that point
(`asyncio.timeout`, aiohttp's timeouts) must run in a task of its own (`ensure_future`). A stream factory takes the call's headers and returns a `Stream`:
`message(bytes)` answers one request message (bytes or a coroutine); messages of one call are
handled in order, one at a time; `close()` runs exactly once when the call ends for any reason
(answered, failed, cancelled, connection lost).

Not implemented (no client of ours needs it): server push, server- or client-streaming calls
with other cardinalities, compression, TLS.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

from grpc_health.v1 import health_pb2
from hpack import Decoder
from hpack.exceptions import HPACKError

log = logging.getLogger("interlock.h2grpc")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
RECEIVE_WINDOW = 1 << 30
MAX_FRAME = 1 << 20  # what we accept (SETTINGS_MAX_FRAME_SIZE)
DEFAULT_WINDOW = 65535
OK, CANCELLED, UNIMPLEMENTED, INTERNAL = 0, 1, 12, 13

# `:status: 200` (static index 8) and `content-type: application/grpc` (literal, indexed name 31).
_RESPONSE_HEADERS = b"\x88" + b"\x0f\x10" + bytes([16]) + b"application/grpc"

Result = bytes | Coroutine[Any, Any, bytes]
UnaryHandler = Callable[[bytes], Result]


class Stream(Protocol):
    def message(self, data: bytes) -> Result: ...

    def close(self) -> None: ...


StreamFactory = Callable[[dict[str, str]], Stream]


def _len(b: bytes) -> bytes:
    """An HPACK string length (7-bit prefix integer), no Huffman."""
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


def _literal(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, new name."""
    return b"\x00" + _len(name) + name + _len(value) + value


def trailers(status: int, message: str = "") -> bytes:
    block = _literal(b"grpc-status", str(status).encode())
    if message:
        block += _literal(b"grpc-message", message.encode("ascii", "replace")[:200])
    return block


def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return bytes([(n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF, ftype, flags]) + struct.pack(">I", stream) + payload


def _run_inline(result: Result) -> tuple[bytes | None, Coroutine[Any, Any, bytes] | None, Any]:
    """(response, None, None) when `result` completed without suspending; else (None, the
    coroutine, what it is blocked on) to finish in a task."""
    if isinstance(result, bytes):
        return result, None, None
    try:
        blocked_on = result.send(None)
    except StopIteration as done:
        return cast(bytes, done.value), None, None
    return None, result, blocked_on


class _Resume:
    """Awaitable that continues a coroutine which already ran up to its first suspension, where
    it yielded `blocked_on` (the future it waits for): that is yielded to the task first."""

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


class _Call:
    __slots__ = ("id", "path", "headers", "header_block", "end_after_headers", "inbuf", "recv", "send_window",
                 "unary", "stream", "queue", "busy", "half_closed", "headers_sent", "task", "closed")

    def __init__(self, sid: int, window: int) -> None:
        self.id = sid
        self.path = ""
        self.headers: dict[str, str] = {}
        self.header_block = bytearray()
        self.end_after_headers = False
        self.inbuf = bytearray()
        self.recv = 0
        self.send_window = window
        self.unary: UnaryHandler | None = None
        self.stream: Stream | None = None
        self.queue: deque[bytes] = deque()
        self.busy = False
        self.half_closed = False
        self.headers_sent = False
        self.task: asyncio.Task[None] | None = None
        self.closed = False


class Connection(asyncio.Protocol):
    """One client connection: frames in, calls dispatched, frames out within flow control."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.preface_seen = False
        self.decoder = Decoder()
        self.decoder.max_allowed_table_size = 65536
        self.calls: dict[int, _Call] = {}
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = 16384
        self.send_window = DEFAULT_WINDOW
        self.received = 0
        self.out: deque[list[Any]] = deque()  # [stream id, is_data, payload, flags]
        self.continuing: _Call | None = None
        self.closed = False
        self.going_away = False

    # -- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)
        settings = (struct.pack(">HI", 0x3, 1 << 20) + struct.pack(">HI", 0x4, RECEIVE_WINDOW)
                    + struct.pack(">HI", 0x5, MAX_FRAME))
        self.transport.write(frame(SETTINGS, 0, 0, settings)
                             + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", RECEIVE_WINDOW - DEFAULT_WINDOW)))
        if self.server.stopping:
            self.goaway()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for call in list(self.calls.values()):
            self._end(call)
        self.calls.clear()
        self.out.clear()

    def goaway(self) -> None:
        if self.transport is not None and not self.closed and not self.going_away:
            self.going_away = True
            self.transport.write(frame(GOAWAY, 0, 0, struct.pack(">II", max(self.calls, default=0), 0)))
            if not self.calls:
                self.transport.close()

    def _fail(self, error: int, why: str) -> None:
        log.warning("h2 connection closed: %s", why)
        if self.transport is not None and not self.closed:
            self.transport.write(frame(GOAWAY, 0, 0, struct.pack(">II", max(self.calls, default=0), error)))
            self.transport.close()
        self.closed = True

    # -- frames in ---------------------------------------------------------------------------

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
        pos, end = 0, len(buf)
        while end - pos >= 9 and not self.closed:
            length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
            if length > MAX_FRAME:
                self._fail(6, f"frame of {length} bytes over the maximum")  # FRAME_SIZE_ERROR
                return
            if end - pos < 9 + length:
                break
            ftype, flags = buf[pos + 3], buf[pos + 4]
            sid = ((buf[pos + 5] & 0x7F) << 24) | (buf[pos + 6] << 16) | (buf[pos + 7] << 8) | buf[pos + 8]
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
            call = self.calls.get(sid)
            if call is None:
                return
            if flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            call.recv += len(payload)
            if call.recv >= RECEIVE_WINDOW // 2 and self.transport is not None:
                self.transport.write(frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", call.recv)))
                call.recv = 0
            call.inbuf += payload
            self._messages(call, bool(flags & END_STREAM))
        elif ftype == HEADERS:
            if flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            call = self.calls.get(sid)
            if call is None:
                if self.going_away:
                    self.transport.write(frame(RST_STREAM, 0, sid, struct.pack(">I", 7)))  # type: ignore[union-attr]
                    return
                call = self.calls[sid] = _Call(sid, self.peer_initial_window)
            call.header_block += payload
            call.end_after_headers = bool(flags & END_STREAM)
            if flags & END_HEADERS:
                self._headers(call)
            else:
                self.continuing = call
        elif ftype == CONTINUATION:
            call = self.continuing
            if call is None or call.id != sid:
                self._fail(1, "unexpected CONTINUATION")
                return
            call.header_block += payload
            if flags & END_HEADERS:
                self.continuing = None
                self._headers(call)
        elif ftype == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
                if self.transport is not None:
                    # The ACK before any data a larger window lets out: the peer (grpc-core does)
                    # checks what it receives against the window it knows acknowledged.
                    self.transport.write(frame(SETTINGS, ACK, 0))
                self._flush()
        elif ftype == PING:
            if not flags & ACK and self.transport is not None:
                self.transport.write(frame(PING, ACK, 0, payload))
        elif ftype == WINDOW_UPDATE:
            inc = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
            if sid == 0:
                self.send_window += inc
            elif sid in self.calls:
                self.calls[sid].send_window += inc
            self._flush()
        elif ftype == RST_STREAM:
            call = self.calls.pop(sid, None)
            if call is not None:
                self._end(call)
                self._flush()
        elif ftype == GOAWAY:
            self.going_away = True
            if self.transport is not None and not self.calls:
                self.transport.close()
        # PRIORITY, PUSH_PROMISE (never sent by clients) and unknown frame types are ignored.

    def _settings(self, payload: bytes) -> None:
        for i in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, i)
            if key == 0x4:
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for call in self.calls.values():
                    call.send_window += delta
            elif key == 0x5:
                self.peer_max_frame = value

    def _headers(self, call: _Call) -> None:
        try:
            decoded = self.decoder.decode(bytes(call.header_block), raw=True)
        except HPACKError as e:
            self._fail(9, f"bad header block: {e}")  # COMPRESSION_ERROR
            return
        call.header_block = bytearray()
        if call.path:  # a second header block: the client's trailers (gRPC clients send none)
            if call.end_after_headers:
                self._messages(call, True)
            return
        call.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in decoded}
        call.path = call.headers.get(":path", "")
        unary = self.server.unary.get(call.path)
        factory = self.server.streams.get(call.path)
        if unary is not None:
            call.unary = unary
        elif factory is not None:
            try:
                call.stream = factory(call.headers)
            except Exception:
                log.exception("starting call %s failed", call.path)
                self._finish(call, INTERNAL, "internal error")
                return
        else:
            self._finish(call, UNIMPLEMENTED, f"unknown method {call.path}")
            return
        if call.end_after_headers:
            self._messages(call, True)

    # -- calls -------------------------------------------------------------------------------

    def _messages(self, call: _Call, end_stream: bool) -> None:
        buf = call.inbuf
        while len(buf) >= 5:
            n = int.from_bytes(buf[1:5], "big")
            if len(buf) < 5 + n:
                break
            if buf[0] != 0:
                self._finish(call, UNIMPLEMENTED, "compressed messages are not supported")
                return
            call.queue.append(bytes(buf[5:5 + n]))
            del buf[:5 + n]
        if end_stream:
            call.half_closed = True
        if call.unary is not None:
            if call.half_closed:
                if len(call.queue) != 1 or buf:
                    self._finish(call, INTERNAL, "expected exactly one request message")
                    return
                self._run(call)
            return
        self._run(call)

    def _run(self, call: _Call) -> None:
        """Answer queued messages in order while none suspends; end the call once the client
        half-closed and everything is answered."""
        while call.queue and not call.busy and not call.closed:
            data = call.queue.popleft()
            try:
                handler = call.unary if call.unary is not None else call.stream.message  # type: ignore[union-attr]
                response, pending, blocked_on = _run_inline(handler(data))
            except Exception:
                log.exception("call %s failed", call.path)
                self._finish(call, INTERNAL, "internal error")
                return
            if pending is not None:
                call.busy = True
                call.task = asyncio.ensure_future(self._complete(call, _Resume(pending, blocked_on)))
                return
            assert response is not None
            self._send_message(call, response)
        if call.half_closed and not call.queue and not call.busy and not call.closed:
            self._finish(call, OK)

    async def _complete(self, call: _Call, pending: _Resume) -> None:
        try:
            response = await pending
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("call %s failed", call.path)
            self._finish(call, INTERNAL, "internal error")
            return
        call.busy = False
        call.task = None
        if call.closed:
            return
        self._send_message(call, response)
        self._run(call)

    def _end(self, call: _Call) -> None:
        """The call is over (answered, failed or cancelled): cancel its work, close its stream."""
        if call.closed:
            return
        call.closed = True
        if call.task is not None and not call.task.done():
            call.task.cancel()
        if call.stream is not None:
            try:
                call.stream.close()
            except Exception:
                log.exception("closing call %s failed", call.path)

    # -- frames out --------------------------------------------------------------------------

    def _send_message(self, call: _Call, message: bytes) -> None:
        if not call.headers_sent:
            call.headers_sent = True
            self.out.append([call.id, False, _RESPONSE_HEADERS, END_HEADERS])
        self.out.append([call.id, True, b"\x00" + len(message).to_bytes(4, "big") + message, 0])
        self._flush()

    def _finish(self, call: _Call, status: int, message: str = "") -> None:
        if call.closed:
            return
        block = trailers(status, message)
        if not call.headers_sent:
            block = _RESPONSE_HEADERS + block  # trailers-only response
            call.headers_sent = True
        self.out.append([call.id, False, block, END_HEADERS | END_STREAM])
        self._end(call)
        self._flush()  # the call leaves `calls` once its trailers are written (after its data)

    def _flush(self) -> None:
        if self.transport is None or self.closed:
            return
        chunks: list[bytes] = []
        out = self.out
        while out:
            item = out[0]
            sid, is_data, payload, flags = item
            if not is_data:
                chunks.append(frame(HEADERS, flags, sid, payload))
                out.popleft()
                if flags & END_STREAM:
                    self.calls.pop(sid, None)
                continue
            call = self.calls.get(sid)
            if call is None:  # reset meanwhile
                out.popleft()
                continue
            n = min(len(payload), self.send_window, call.send_window, self.peer_max_frame)
            if n <= 0:
                break  # wait for WINDOW_UPDATE
            chunks.append(frame(DATA, 0, sid, payload[:n]))
            self.send_window -= n
            call.send_window -= n
            if n == len(payload):
                out.popleft()
            else:
                item[2] = payload[n:]
        if chunks:
            self.transport.write(b"".join(chunks))
        if self.going_away and not self.calls:
            self.transport.close()


HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class Server:
    """`unary` and `streams` map gRPC paths (`/package.Service/Method`) to handlers. It also
    answers the gRPC health check (`grpc.health.v1.Health/Check`): SERVING until `stop()`."""

    def __init__(self, unary: dict[str, UnaryHandler] | None = None,
                 streams: dict[str, StreamFactory] | None = None) -> None:
        self.unary = {HEALTH_CHECK: self._health, **(unary or {})}
        self.streams = streams or {}
        self.connections: set[Connection] = set()
        self.stopping = False
        self._server: asyncio.AbstractServer | None = None

    def _health(self, data: bytes) -> bytes:
        status = health_pb2.HealthCheckResponse.NOT_SERVING if self.stopping else health_pb2.HealthCheckResponse.SERVING
        return bytes(health_pb2.HealthCheckResponse(status=status).SerializeToString())

    async def start(self, address: str, port: int) -> int:
        """Listen; returns the bound port (`port` 0: a free one). Raises OSError ("cannot listen on
        address:port: why")."""
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: Connection(self), address, port, reuse_address=True)
        except OSError as e:
            raise OSError(f"cannot listen on {address}:{port}: {e.strerror or e}") from None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, tell clients to go away, let open calls finish for `grace` seconds."""
        if self._server is None:
            return
        self.stopping = True
        self._server.close()
        for c in list(self.connections):
            c.goaway()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(c.calls for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.close()
        await self._server.wait_closed()
