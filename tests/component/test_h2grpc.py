"""extproc.h2grpc against grpcio's own client (another HTTP/2 implementation): unary and
bidirectional calls, ordering when a handler suspends, large messages across frames and flow
control windows, errors, unknown methods, cancellation and graceful stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from extproc.h2grpc import Server


def ident(b: bytes) -> bytes:
    return b


class Echo:
    """A stream that answers each message with `<n>:<message>`, sometimes after a pause."""

    closed: list[str] = []

    def __init__(self, headers: dict[str, str]) -> None:
        self.n = 0
        self.tag = headers.get("x-tag", "")

    def message(self, data: bytes) -> Any:
        self.n += 1
        n = self.n
        if data.startswith(b"slow"):
            async def later() -> bytes:
                await asyncio.sleep(0.05)
                return f"{n}:".encode() + data
            return later()
        if data == b"boom":
            raise ValueError("a handler bug")
        if data.startswith(b"big"):
            return data * 3
        return f"{n}:".encode() + data

    def close(self) -> None:
        Echo.closed.append(self.tag)


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[Server, grpc.aio.Channel]]:
    async def slow_unary(b: bytes) -> bytes:
        await asyncio.sleep(0.01)
        return b[::-1]

    server = Server(unary={"/t.S/Unary": ident, "/t.S/Slow": slow_unary,
                           "/t.S/Fail": lambda b: (_ for _ in ()).throw(RuntimeError("secret detail"))},
                    streams={"/t.S/Chat": Echo})
    port = await server.start("127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
        ("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)])
    try:
        yield server, channel
    finally:
        await channel.close()
        await server.stop(grace=1)


def unary(channel: grpc.aio.Channel, path: str) -> Any:
    return channel.unary_unary(path, request_serializer=ident, response_deserializer=ident)


def chat(channel: grpc.aio.Channel) -> Any:
    return channel.stream_stream("/t.S/Chat", request_serializer=ident, response_deserializer=ident)


def test_unary_calls_answer_inline_and_after_suspending() -> None:
    async def main() -> None:
        async with serving() as (_, ch):
            assert await unary(ch, "/t.S/Unary")(b"hello") == b"hello"
            assert await unary(ch, "/t.S/Slow")(b"abc") == b"cba"
            answers = await asyncio.gather(*(unary(ch, "/t.S/Unary")(str(i).encode()) for i in range(200)))
            assert answers == [str(i).encode() for i in range(200)]
    asyncio.run(main())


def test_the_health_check_answers_serving() -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async def main() -> None:
        async with serving() as (_, ch):
            answer = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    asyncio.run(main())


def test_errors_and_unknown_methods_are_grpc_statuses_without_details_leaking() -> None:
    async def main() -> None:
        async with serving() as (_, ch):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await unary(ch, "/t.S/Nope")(b"x")
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await unary(ch, "/t.S/Fail")(b"x")
            assert e.value.code() == grpc.StatusCode.INTERNAL and "secret" not in (e.value.details() or "")
            # The connection is still good.
            assert await unary(ch, "/t.S/Unary")(b"ok") == b"ok"
    asyncio.run(main())


def test_a_stream_answers_each_message_in_order_even_when_a_handler_suspends() -> None:
    async def main() -> None:
        Echo.closed.clear()
        async with serving() as (_, ch):
            call = chat(ch)(metadata=(("x-tag", "ordered"),))
            for m in (b"a", b"slow-b", b"c", b"slow-d", b"e"):
                await call.write(m)
            await call.done_writing()
            got = [m async for m in call]
            assert got == [b"1:a", b"2:slow-b", b"3:c", b"4:slow-d", b"5:e"]
            assert await call.code() == grpc.StatusCode.OK
        assert Echo.closed == ["ordered"]
    asyncio.run(main())


def test_call_headers_that_change_per_call_arrive_exact() -> None:
    """grpc-core's HPACK encoder: its own headers indexed on the first call and referenced after,
    each call's metadata (a new trace context, request id) as literals; 300 calls on one
    connection, each call's headers exact."""
    seen: list[dict[str, str]] = []

    class Record(Echo):
        def __init__(self, headers: dict[str, str]) -> None:
            super().__init__(headers)
            seen.append(headers)

    async def main() -> None:
        server = Server(unary={}, streams={"/t.S/Chat": Record})
        port = await server.start("127.0.0.1", 0)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            for i in range(300):
                call = chat(ch)(metadata=(("traceparent", f"00-{i * 7919:032x}-{i:016x}-01"), ("x-tag", "same"),
                                          ("x-request-id", f"r{i}" * (i % 7)), ("x-n", str(i % 5))))
                await call.write(b"a")
                await call.done_writing()
                assert [m async for m in call] == [b"1:a"]
        await server.stop(grace=1)

    asyncio.run(main())
    assert len(seen) == 300
    for i, headers in enumerate(seen):
        assert headers[":path"] == "/t.S/Chat" and headers["x-tag"] == "same"
        assert headers["traceparent"] == f"00-{i * 7919:032x}-{i:016x}-01"
        assert headers.get("x-request-id", "") == f"r{i}" * (i % 7) and headers["x-n"] == str(i % 5)


def test_messages_larger_than_frames_and_windows_cross_both_ways() -> None:
    async def main() -> None:
        async with serving() as (_, ch):
            big = b"big" + bytes(range(256)) * 8192  # ~2 MB in, ~6 MB out: many frames, window updates
            call = chat(ch)()
            await call.write(big)
            await call.write(b"after")
            await call.done_writing()
            got = [m async for m in call]
            assert got[0] == big * 3 and got[1] == b"2:after"
            many = await asyncio.gather(*(unary(ch, "/t.S/Unary")(big) for _ in range(6)))
            assert all(m == big for m in many)
    asyncio.run(main())


def test_a_window_raised_by_settings_is_used_only_after_the_settings_are_acknowledged() -> None:
    """grpc-core checks received data against the initial window it knows we acknowledged: data a
    SETTINGS frame's larger window lets out must follow our ACK (it once went first, and grpcio's
    client failed the call: "frame of size ... overflows local window of 0")."""
    import struct

    from hpack import Encoder

    from extproc.h2grpc.wire import PREFACE, Flag, FrameType, frame

    async def read_frame(r: asyncio.StreamReader) -> tuple[int, int, int, bytes]:
        head = await asyncio.wait_for(r.readexactly(9), 5)
        length = int.from_bytes(head[:3], "big")
        return head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, await r.readexactly(length)

    async def main() -> None:
        server = Server(unary={"/t.S/Unary": ident})
        port = await server.start("127.0.0.1", 0)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            w.write(PREFACE + frame(FrameType.SETTINGS, 0, 0, struct.pack(">HI", 0x4, 10)))
            block = Encoder().encode([(":method", "POST"), (":scheme", "http"), (":path", "/t.S/Unary"),
                                      (":authority", "t"), ("content-type", "application/grpc"), ("te", "trailers")])
            message = b"x" * 100
            w.write(frame(FrameType.HEADERS, Flag.END_HEADERS, 1, block)
                    + frame(FrameType.DATA, Flag.END_STREAM, 1, b"\x00" + len(message).to_bytes(4, "big") + message))
            sent = 0
            while sent < 10:  # the first 10 bytes of the answer: all our window allows
                ftype, _, sid, payload = await read_frame(r)
                if ftype == FrameType.DATA and sid == 1:
                    sent += len(payload)
            assert sent == 10
            w.write(frame(FrameType.SETTINGS, 0, 0, struct.pack(">HI", 0x4, 1000)))
            order = []
            while sent < 105:
                ftype, flags, sid, payload = await read_frame(r)
                if ftype == FrameType.SETTINGS and flags & Flag.ACK:
                    order.append("ack")
                elif ftype == FrameType.DATA and sid == 1:
                    order.append("data")
                    sent += len(payload)
            assert order[0] == "ack" and "data" in order, order
        finally:
            w.close()
            await server.stop(grace=1)
    asyncio.run(main())


def test_a_handler_error_fails_only_its_call_and_closes_its_stream() -> None:
    async def main() -> None:
        Echo.closed.clear()
        async with serving() as (_, ch):
            call = chat(ch)(metadata=(("x-tag", "broken"),))
            await call.write(b"a")
            await call.write(b"boom")
            got = []
            with pytest.raises(grpc.aio.AioRpcError) as e:
                async for m in call:
                    got.append(m)
            assert got == [b"1:a"] and e.value.code() == grpc.StatusCode.INTERNAL
            ok = chat(ch)()
            await ok.write(b"x")
            await ok.done_writing()
            assert [m async for m in ok] == [b"1:x"]
        assert "broken" in Echo.closed
    asyncio.run(main())


def test_a_cancelled_call_closes_its_stream() -> None:
    async def main() -> None:
        Echo.closed.clear()
        async with serving() as (server, ch):
            call = chat(ch)(metadata=(("x-tag", "gone"),))
            await call.write(b"slow-x")
            await asyncio.sleep(0.01)
            call.cancel()  # RST_STREAM while the handler is suspended
            for _ in range(100):
                if "gone" in Echo.closed:
                    break
                await asyncio.sleep(0.01)
            assert Echo.closed == ["gone"]
            assert not any(c.calls for c in server.connections)
    asyncio.run(main())


def test_stop_lets_open_calls_finish_then_refuses_new_ones() -> None:
    async def main() -> None:
        async with serving() as (server, ch):
            pending = asyncio.ensure_future(unary(ch, "/t.S/Slow")(b"xyz"))
            await asyncio.sleep(0.002)
            await server.stop(grace=2)
            assert await pending == b"zyx"
            with pytest.raises(grpc.aio.AioRpcError):
                await unary(ch, "/t.S/Unary")(b"late", timeout=1)
    asyncio.run(main())
