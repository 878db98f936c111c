"""The asyncio side of the gRPC server: one `asyncio.Protocol` per connection around the sans-IO
`frames.Connection`, the calls it dispatches to handlers, and `Server` (listen, health, stop).

Handlers. A unary handler takes the request bytes and returns the response bytes, or a
coroutine producing them. A coroutine runs inline, outside any task, until it first suspends
(then a task finishes it): code that needs `asyncio.current_task()` before that point
(`asyncio.timeout`, aiohttp's timeouts) must run in a task of its own (`ensure_future`). A stream
factory takes the call's headers and returns a `Stream`: `message(bytes)` answers one request
message (bytes or a coroutine); messages of one call are handled in order, one at a time;
`close()` runs exactly once when the call ends for any reason (answered, failed, cancelled,
connection lost). A stream with an `attach(send)` method gets, when its call starts, `send(bytes)`:
from the event loop, it sends a message of its own at once (after the answers already sent), and
returns False once the call has ended (the message is dropped). A handler's exception fails its call with INTERNAL (logged, never sent); an
unknown method gets UNIMPLEMENTED; `stop()` sends GOAWAY and waits for open calls (the grace).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine, KeysView
from typing import Any, Protocol, cast

from grpc_health.v1 import health_pb2

from extproc.h2grpc.events import (
    CallFailed,
    CallReset,
    CallStarted,
    ConnectionState,
    ConnectionTerminated,
    Event,
    InputEnded,
    MessageReceived,
)
from extproc.h2grpc.frames import Connection
from extproc.h2grpc.wire import Status

log = logging.getLogger("interlock.h2grpc")

Result = bytes | Coroutine[Any, Any, bytes]
UnaryHandler = Callable[[bytes], Result]


class Stream(Protocol):
    def message(self, data: bytes) -> Result: ...

    def close(self) -> None: ...


StreamFactory = Callable[[dict[str, str]], Stream]


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
    __slots__ = ("id", "path", "unary", "stream", "queue", "busy", "half_closed", "task", "closed")

    def __init__(self, sid: int, path: str) -> None:
        self.id = sid
        self.path = path
        self.unary: UnaryHandler | None = None
        self.stream: Stream | None = None
        self.queue: deque[bytes] = deque()
        self.busy = False
        self.half_closed = False
        self.task: asyncio.Task[None] | None = None
        self.closed = False


class _Protocol(asyncio.Protocol):
    """One client connection: bytes into `frames.Connection`, its events to the calls' handlers,
    its bytes out to the transport."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.h2 = Connection()
        self._calls: dict[int, _Call] = {}  # calls not yet ended
        self._lost = False
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            CallStarted: self._on_call_started, InputEnded: self._on_input_ended, CallReset: self._on_call_gone,
            CallFailed: self._on_call_gone, ConnectionTerminated: self._on_connection_terminated}

    @property
    def calls(self) -> KeysView[int]:
        """Stream ids of the calls still open on the connection (trailers not yet written)."""
        return self.h2.open_streams

    # -- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)
        if self.server.stopping:
            self.h2.go_away()
        self._transmit()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.server.connections.discard(self)
        self.h2.close()
        for call in list(self._calls.values()):
            self._end(call)

    def data_received(self, data: bytes) -> None:
        h2, handlers = self.h2, self._handlers
        h2.receive_data(data)
        while (event := h2.next_event()) is not None:
            if type(event) is MessageReceived:  # the common case, without a dispatch
                call = self._calls.get(event.stream_id)
                if call is not None:
                    call.queue.append(event.message)
                    if call.unary is None:
                        self._run(call)
            else:
                handlers[type(event)](event)
        self._transmit()

    def goaway(self) -> None:
        self.h2.go_away()
        self._transmit()

    def _transmit(self) -> None:
        if self.transport is None or self._lost:
            return
        h2 = self.h2
        data = h2.data_to_send()
        if data:
            self.transport.write(data)
        if h2.state is not ConnectionState.OPEN and h2.wants_close:
            self.transport.close()

    # -- events ------------------------------------------------------------------------------

    def _on_call_started(self, event: CallStarted) -> None:
        call = self._calls[event.stream_id] = _Call(event.stream_id, event.headers.get(":path", ""))
        unary = self.server.unary.get(call.path)
        factory = self.server.streams.get(call.path)
        if unary is not None:
            call.unary = unary
        elif factory is not None:
            try:
                call.stream = factory(event.headers)
                attach = getattr(call.stream, "attach", None)
                if attach is not None:
                    attach(lambda data: self._push(call, data))
            except Exception:
                log.exception("starting call %s failed", call.path)
                self._finish(call, Status.INTERNAL, "internal error")
        else:
            self._finish(call, Status.UNIMPLEMENTED, f"unknown method {call.path}")

    def _on_input_ended(self, event: InputEnded) -> None:
        call = self._calls.get(event.stream_id)
        if call is None:
            return
        call.half_closed = True
        if call.unary is not None and (len(call.queue) != 1 or event.incomplete):
            self._finish(call, Status.INTERNAL, "expected exactly one request message")
            return
        self._run(call)

    def _on_call_gone(self, event: CallReset | CallFailed) -> None:
        call = self._calls.get(event.stream_id)
        if call is not None:
            self._end(call)

    def _on_connection_terminated(self, event: ConnectionTerminated) -> None:
        log.warning("h2 connection closed: %s", event.reason)

    # -- calls -------------------------------------------------------------------------------

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
                self._finish(call, Status.INTERNAL, "internal error")
                return
            if pending is not None:
                call.busy = True
                call.task = asyncio.ensure_future(self._complete(call, _Resume(pending, blocked_on)))
                return
            assert response is not None
            self.h2.send_message(call.id, response)
        if call.half_closed and not call.queue and not call.busy and not call.closed:
            self._finish(call, Status.OK)

    async def _complete(self, call: _Call, pending: _Resume) -> None:
        try:
            response = await pending
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("call %s failed", call.path)
            self._finish(call, Status.INTERNAL, "internal error")
            self._transmit()
            return
        call.busy = False
        call.task = None
        if call.closed:
            return
        self.h2.send_message(call.id, response)
        self._run(call)
        self._transmit()

    def _push(self, call: _Call, data: bytes) -> bool:
        """A message the call's stream sends on its own (not an answer)."""
        if call.closed or self._lost:
            return False
        self.h2.send_message(call.id, data)
        self._transmit()
        return True

    def _finish(self, call: _Call, status: Status, message: str = "") -> None:
        if not call.closed:
            self.h2.end_call(call.id, status, message)
            self._end(call)

    def _end(self, call: _Call) -> None:
        """The call is over (answered, failed or cancelled): cancel its work, close its stream."""
        if call.closed:
            return
        call.closed = True
        self._calls.pop(call.id, None)
        if call.task is not None and not call.task.done():
            call.task.cancel()
        if call.stream is not None:
            try:
                call.stream.close()
            except Exception:
                log.exception("closing call %s failed", call.path)


HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class Server:
    """`unary` and `streams` map gRPC paths (`/package.Service/Method`) to handlers. It also
    answers the gRPC health check (`grpc.health.v1.Health/Check`): SERVING until `stop()`."""

    def __init__(self, unary: dict[str, UnaryHandler] | None = None,
                 streams: dict[str, StreamFactory] | None = None) -> None:
        self.unary = {HEALTH_CHECK: self._health, **(unary or {})}
        self.streams = streams or {}
        self.connections: set[_Protocol] = set()
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
            self._server = await loop.create_server(lambda: _Protocol(self), address, port, reuse_address=True)
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
