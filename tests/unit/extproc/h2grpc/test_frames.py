"""extproc.h2grpc.frames without sockets: client bytes in (whole, byte by byte, at every split
point), events and bytes out. Frames are read back with a 9-byte-header parser and `hpack`'s
decoder; `h2` (python-hyper), when installed, plays the client in one end-to-end exchange."""

from __future__ import annotations

import random
import struct
from typing import NamedTuple

import pytest
from hpack import Decoder, Encoder

from extproc.h2grpc import frames
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
from extproc.h2grpc.wire import (
    DEFAULT_WINDOW,
    MAX_FRAME,
    PREFACE,
    RECEIVE_WINDOW,
    ErrorCode,
    Flag,
    FrameType,
    Setting,
    Status,
    frame,
)

PATH = "/t.S/Chat"
REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", PATH), (":authority", "t"),
           ("content-type", "application/grpc"), ("te", "trailers"), ("x-tag", "a")]
DATA, HEADERS, SETTINGS, WINDOW_UPDATE = FrameType.DATA, FrameType.HEADERS, FrameType.SETTINGS, FrameType.WINDOW_UPDATE
END_STREAM, END_HEADERS, ACK = Flag.END_STREAM, Flag.END_HEADERS, Flag.ACK


class Frame(NamedTuple):
    type: int
    flags: int
    stream: int
    payload: bytes


def parse(data: bytes) -> list[Frame]:
    """The frames in `data`, which must hold whole frames only."""
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 3], "big")
        assert pos + 9 + n <= len(data), "a partial frame"
        out.append(Frame(data[pos + 3], data[pos + 4], int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF,
                         data[pos + 9:pos + 9 + n]))
        pos += 9 + n
    return out


def settings(**values: int) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", Setting[k], v) for k, v in values.items()))


def msg(body: bytes) -> bytes:
    return b"\x00" + len(body).to_bytes(4, "big") + body


def drain(conn: Connection) -> list[Event]:
    events = []
    while (e := conn.next_event()) is not None:
        events.append(e)
    return events


def feed(conn: Connection, data: bytes, step: int | None = None) -> list[Event]:
    """Feed `data` whole, or `step` bytes at a time, pulling events after each piece."""
    events: list[Event] = []
    step = step or len(data) or 1
    for i in range(0, len(data), step):
        conn.receive_data(data[i:i + step])
        events += drain(conn)
    return events


def opened(*client: bytes, **peer_settings: int) -> tuple[Connection, list[Event]]:
    """A connection past the preface, the peer's SETTINGS and `client`; our bytes so far dropped."""
    conn = Connection()
    events = feed(conn, PREFACE + settings(**peer_settings) + b"".join(client))
    conn.data_to_send()
    return conn, events


def request(enc: Encoder, sid: int = 1, *messages: bytes, end: bool = True, headers: list | None = None) -> bytes:
    block = frame(HEADERS, END_HEADERS, sid, enc.encode(headers or REQUEST))
    body = b"".join(msg(m) for m in messages)
    return block + frame(DATA, END_STREAM if end else 0, sid, body) if body or end else block


def blocks(out: list[Frame]) -> list[dict[str, str]]:
    """Decoded header blocks of HEADERS frames, in order (our blocks never index: any decoder)."""
    dec = Decoder()
    return [{str(k): str(v) for k, v in dec.decode(f.payload)} for f in out if f.type == HEADERS]


def grpc_messages(out: list[Frame], sid: int = 1) -> list[bytes]:
    body = b"".join(f.payload for f in out if f.type == DATA and f.stream == sid)
    found, pos = [], 0
    while pos < len(body):
        n = int.from_bytes(body[pos + 1:pos + 5], "big")
        found.append(body[pos + 5:pos + 5 + n])
        pos += 5 + n
    return found


# -- the connection's start ---------------------------------------------------------------------

def test_our_settings_and_window_go_first_and_the_peers_settings_are_acknowledged() -> None:
    conn = Connection()
    first = parse(conn.data_to_send())
    assert [f.type for f in first] == [SETTINGS, WINDOW_UPDATE]
    ours = {k: v for k, v in (struct.unpack_from(">HI", first[0].payload, i) for i in range(0, len(first[0].payload), 6))}
    assert ours[Setting.INITIAL_WINDOW_SIZE] == RECEIVE_WINDOW and ours[Setting.MAX_FRAME_SIZE] == MAX_FRAME
    assert int.from_bytes(first[1].payload, "big") == RECEIVE_WINDOW - DEFAULT_WINDOW
    assert feed(conn, PREFACE + settings(MAX_FRAME_SIZE=20000)) == []
    assert parse(conn.data_to_send()) == [Frame(SETTINGS, ACK, 0, b"")]
    assert feed(conn, frame(SETTINGS, ACK, 0)) == [] and conn.data_to_send() == b""


def test_a_ping_is_answered_with_its_payload() -> None:
    conn, _ = opened(frame(FrameType.PING, 0, 0, b"12345678"), frame(FrameType.PING, ACK, 0, b"87654321"))
    conn.receive_data(frame(FrameType.PING, 0, 0, b"abcdefgh"))
    assert drain(conn) == []
    assert parse(conn.data_to_send()) == [Frame(FrameType.PING, ACK, 0, b"abcdefgh")]


# -- calls in -----------------------------------------------------------------------------------

CHAT = PREFACE + settings() + frame(HEADERS, END_HEADERS, 1, Encoder().encode(REQUEST)) + frame(
    DATA, 0, 1, msg(b"first") + msg(b"second")[:7]) + frame(DATA, 0, 1, msg(b"second")[7:] + msg(b"x" * 300)[:3]) + frame(
    DATA, 0, 1, msg(b"x" * 300)[3:150]) + frame(DATA, END_STREAM, 1, msg(b"x" * 300)[150:] + msg(b"") + msg(b"last"))
CHAT_EVENTS = [CallStarted(1, dict(REQUEST)), MessageReceived(1, b"first"), MessageReceived(1, b"second"),
               MessageReceived(1, b"x" * 300), MessageReceived(1, b""), MessageReceived(1, b"last"), InputEnded(1, 0)]


@pytest.mark.parametrize("step", [None, 1, 2, 7, 9, 64])
def test_messages_split_across_frames_and_frames_split_across_feeds(step: int | None) -> None:
    assert feed(Connection(), CHAT, step) == CHAT_EVENTS


def test_messages_at_every_split_point() -> None:
    for at in range(len(CHAT) + 1):
        conn = Connection()
        assert feed(conn, CHAT[:at]) + feed(conn, CHAT[at:]) == CHAT_EVENTS, at


def test_headers_with_continuation_padding_and_priority() -> None:
    block = Encoder().encode(REQUEST)
    padded = bytes([4]) + struct.pack(">IB", 0, 16) + block[:10] + b"\x00" * 4
    conn, events = opened(frame(HEADERS, Flag.PADDED | Flag.PRIORITY, 3, padded),
                          frame(FrameType.CONTINUATION, 0, 3, block[10:20]),
                          frame(FrameType.CONTINUATION, END_HEADERS, 3, block[20:]),
                          frame(DATA, Flag.PADDED | END_STREAM, 3, bytes([3]) + msg(b"hi") + b"\x00" * 3))
    assert events == [CallStarted(3, dict(REQUEST)), MessageReceived(3, b"hi"), InputEnded(3, 0)]


def test_interleaved_streams_keep_their_own_messages() -> None:
    enc = Encoder()
    half = msg(b"stream-three")
    conn, events = opened(request(enc, 1, end=False), request(enc, 3, end=False), frame(DATA, 0, 1, half[:6]),
                          frame(DATA, 0, 3, half), frame(DATA, END_STREAM, 1, half[6:]))
    assert events[2:] == [MessageReceived(3, b"stream-three"), MessageReceived(1, b"stream-three"), InputEnded(1, 0)]


def test_a_half_closed_call_reports_an_unfinished_message_and_client_trailers_end_input() -> None:
    enc = Encoder()
    conn, events = opened(request(enc, 1, end=False), frame(DATA, END_STREAM, 1, msg(b"abc")[:6]))
    assert events[1:] == [InputEnded(1, 6)]  # the 5-byte prefix and 1 of 3 bytes
    enc = Encoder()
    conn, events = opened(request(enc, 1, end=False), frame(DATA, 0, 1, msg(b"m")),
                          frame(HEADERS, END_HEADERS | END_STREAM, 1, enc.encode([("x-trailer", "1")])))
    assert events[1:] == [MessageReceived(1, b"m"), InputEnded(1, 0)]


def test_a_compressed_message_fails_its_call_with_unimplemented() -> None:
    conn, _ = opened(request(Encoder(), 1, end=False))
    events = feed(conn, frame(DATA, 0, 1, msg(b"ok") + b"\x01" + msg(b"z")[1:]))
    assert events == [CallFailed(1, Status.UNIMPLEMENTED, "compressed messages are not supported")]
    out = parse(conn.data_to_send())
    assert blocks(out) == [{":status": "200", "content-type": "application/grpc", "grpc-status": "12",
                            "grpc-message": "compressed messages are not supported"}]
    assert out[-1].flags & END_STREAM and not conn.open_streams


# -- answers out --------------------------------------------------------------------------------

def test_answers_trailers_and_the_stream_leaves_once_they_are_written() -> None:
    conn, _ = opened(request(Encoder(), 1, b"q"))
    conn.send_message(1, b"answer-1")
    conn.send_message(1, b"answer-2")
    assert list(conn.open_streams) == [1]
    conn.end_call(1, Status.OK)
    out = parse(conn.data_to_send())
    assert [(f.type, f.flags) for f in out] == [(HEADERS, END_HEADERS), (DATA, 0), (DATA, 0),
                                                  (HEADERS, END_HEADERS | END_STREAM)]
    assert blocks(out) == [{":status": "200", "content-type": "application/grpc"}, {"grpc-status": "0"}]
    assert grpc_messages(out) == [b"answer-1", b"answer-2"]
    assert not conn.open_streams
    conn.send_message(1, b"late")
    conn.end_call(1, Status.INTERNAL)
    assert conn.data_to_send() == b""


def test_a_call_ended_before_any_answer_is_trailers_only_and_its_message_is_ascii_and_short() -> None:
    conn, _ = opened(request(Encoder(), 1))
    conn.end_call(1, Status.UNIMPLEMENTED, "unknown method é " + "x" * 300)
    (only,) = parse(conn.data_to_send())
    assert only.flags == END_HEADERS | END_STREAM
    (block,) = blocks([only])
    assert block[":status"] == "200" and block["grpc-status"] == "12"
    assert block["grpc-message"].startswith("unknown method ? x") and len(block["grpc-message"]) == 200


def test_the_settings_ack_goes_before_data_a_larger_window_lets_out() -> None:
    conn, _ = opened(request(Encoder(), 1, b"q"), INITIAL_WINDOW_SIZE=10)
    conn.send_message(1, b"y" * 100)
    conn.end_call(1, Status.OK)
    out = parse(conn.data_to_send())
    assert [(f.type, len(f.payload)) for f in out] == [(HEADERS, 20), (DATA, 10)]
    conn.receive_data(settings(INITIAL_WINDOW_SIZE=1000))
    assert drain(conn) == []
    out = parse(conn.data_to_send())
    assert [(f.type, f.flags) for f in out] == [(SETTINGS, ACK), (DATA, 0), (HEADERS, END_HEADERS | END_STREAM)]
    assert len(out[1].payload) == 95


def test_sends_wait_for_both_windows_and_respect_the_peers_frame_size() -> None:
    conn, _ = opened(request(Encoder(), 1, b"q"), MAX_FRAME_SIZE=16384)
    big = bytes(range(256)) * 400  # 102,400 bytes: past the default 65,535-byte windows
    conn.send_message(1, big)
    conn.end_call(1, Status.OK)
    out = parse(conn.data_to_send())
    sizes = [len(f.payload) for f in out if f.type == DATA]
    assert sizes == [16384, 16384, 16384, 16383] and sum(sizes) == DEFAULT_WINDOW
    conn.receive_data(frame(WINDOW_UPDATE, 0, 1, (20_000).to_bytes(4, "big")))
    assert drain(conn) == [] and conn.data_to_send() == b""  # the connection window is spent too
    conn.receive_data(frame(WINDOW_UPDATE, 0, 0, (1 << 20).to_bytes(4, "big")))
    drain(conn)
    out += parse(conn.data_to_send())
    assert sum(len(f.payload) for f in out if f.type == DATA) == DEFAULT_WINDOW + 20_000
    conn.receive_data(frame(WINDOW_UPDATE, 0, 1, (1 << 20).to_bytes(4, "big")))
    drain(conn)
    out += parse(conn.data_to_send())
    assert grpc_messages(out) == [big] and out[-1].flags == END_HEADERS | END_STREAM
    assert not conn.open_streams


def test_our_receive_windows_are_replenished_at_half(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames, "_HALF_RECEIVE_WINDOW", 1000)
    conn, _ = opened(request(Encoder(), 1, end=False))
    chunk = frame(DATA, 0, 1, msg(b"z" * 395))  # 400 bytes of payload
    conn.receive_data(chunk * 2)
    drain(conn)
    assert conn.data_to_send() == b""
    conn.receive_data(chunk + frame(DATA, 0, 7, b"x" * 200))  # 200 more on a stream that does not exist
    drain(conn)
    assert parse(conn.data_to_send()) == [Frame(WINDOW_UPDATE, 0, 1, (1200).to_bytes(4, "big")),
                                          Frame(WINDOW_UPDATE, 0, 0, (1400).to_bytes(4, "big"))]


# -- resets and going away ----------------------------------------------------------------------

def test_a_reset_call_is_reported_and_its_queued_data_dropped() -> None:
    conn, _ = opened(request(Encoder(), 1, b"q"), INITIAL_WINDOW_SIZE=0)
    conn.send_message(1, b"blocked")
    conn.data_to_send()
    conn.receive_data(frame(FrameType.RST_STREAM, 0, 1, struct.pack(">I", 8)))
    assert drain(conn) == [CallReset(1)]
    assert not conn.open_streams
    conn.receive_data(settings(INITIAL_WINDOW_SIZE=1000))
    drain(conn)
    assert parse(conn.data_to_send()) == [Frame(SETTINGS, ACK, 0, b"")]
    conn.send_message(1, b"after")
    assert conn.data_to_send() == b""


def test_a_reset_after_our_trailers_is_not_reported() -> None:
    conn, _ = opened(request(Encoder(), 1, b"q"), INITIAL_WINDOW_SIZE=0)
    conn.send_message(1, b"held back")
    conn.end_call(1, Status.OK)
    conn.receive_data(frame(FrameType.RST_STREAM, 0, 1, struct.pack(">I", 8)))
    assert drain(conn) == [] and not conn.open_streams


def test_going_away_refuses_new_calls_keeps_hpack_in_step_and_closes_when_calls_are_done() -> None:
    enc = Encoder()
    conn, _ = opened(request(enc, 1, end=False))
    conn.go_away()
    assert parse(conn.data_to_send()) == [Frame(FrameType.GOAWAY, 0, 0, struct.pack(">II", 1, 0))]
    assert conn.state is ConnectionState.GOING_AWAY and not conn.wants_close
    later = [*REQUEST, ("x-new", "v" * 40)]  # indexed by the client: the refused block must still be decoded
    assert feed(conn, request(enc, 3, b"m", headers=later)) == []
    assert parse(conn.data_to_send()) == [Frame(FrameType.RST_STREAM, 0, 3, struct.pack(">I", ErrorCode.REFUSED_STREAM))]
    assert feed(conn, frame(DATA, END_STREAM, 1, msg(b"still"))) == [MessageReceived(1, b"still"), InputEnded(1, 0)]
    conn.end_call(1, Status.OK)
    assert conn.wants_close


def test_a_goaway_from_the_client_closes_once_calls_are_done() -> None:
    conn, _ = opened(request(Encoder(), 1, b"q"), frame(FrameType.GOAWAY, 0, 0, struct.pack(">II", 1, 0)))
    assert conn.state is ConnectionState.GOING_AWAY and not conn.wants_close
    conn.end_call(1, Status.OK)
    assert conn.wants_close


# -- garbage ------------------------------------------------------------------------------------

GARBAGE = {
    "an HTTP/1.1 request": (b"GET / HTTP/1.1\r\n", ErrorCode.PROTOCOL_ERROR, False),
    "a frame over our maximum": (struct.pack(">I", MAX_FRAME + 1)[1:] + b"\x00" * 6, ErrorCode.FRAME_SIZE_ERROR, True),
    "DATA on stream 0": (frame(DATA, 0, 0, b"x"), ErrorCode.PROTOCOL_ERROR, True),
    "SETTINGS on a stream": (frame(SETTINGS, 0, 1), ErrorCode.PROTOCOL_ERROR, True),
    "SETTINGS of 5 bytes": (frame(SETTINGS, 0, 0, b"\x00" * 5), ErrorCode.FRAME_SIZE_ERROR, True),
    "a frame size under 16 KiB": (settings(MAX_FRAME_SIZE=100), ErrorCode.PROTOCOL_ERROR, True),
    "a window over 2^31-1": (settings(INITIAL_WINDOW_SIZE=1 << 31), ErrorCode.FLOW_CONTROL_ERROR, True),
    "WINDOW_UPDATE of 3 bytes": (frame(WINDOW_UPDATE, 0, 0, b"\x00" * 3), ErrorCode.FRAME_SIZE_ERROR, True),
    "PING of 7 bytes": (frame(FrameType.PING, 0, 0, b"\x00" * 7), ErrorCode.FRAME_SIZE_ERROR, True),
    "RST_STREAM of 2 bytes": (frame(FrameType.RST_STREAM, 0, 1, b"\x00" * 2), ErrorCode.FRAME_SIZE_ERROR, True),
    "padding longer than the frame": (frame(HEADERS, Flag.PADDED | END_HEADERS, 1, b"\x09abc"),
                                      ErrorCode.PROTOCOL_ERROR, True),
    "an empty padded frame": (frame(HEADERS, Flag.PADDED | END_HEADERS, 1, b""), ErrorCode.PROTOCOL_ERROR, True),
    "a bad HPACK index": (frame(HEADERS, END_HEADERS, 1, b"\xff\x7f"), ErrorCode.COMPRESSION_ERROR, True),
    "CONTINUATION out of the blue": (frame(FrameType.CONTINUATION, END_HEADERS, 1, b"\x88"),
                                     ErrorCode.PROTOCOL_ERROR, True),
    "DATA inside a header block": (frame(HEADERS, 0, 1, b"\x88") + frame(DATA, 0, 1, b"x"),
                                   ErrorCode.PROTOCOL_ERROR, True),
    "PUSH_PROMISE from a client": (frame(FrameType.PUSH_PROMISE, END_HEADERS, 1, b"\x00\x00\x00\x02"),
                                   ErrorCode.PROTOCOL_ERROR, True),
}


@pytest.mark.parametrize("name", GARBAGE)
def test_garbage_is_a_connection_error_not_an_exception(name: str) -> None:
    data, error, after_preface = GARBAGE[name]
    data = (PREFACE + settings() if after_preface else b"") + data + b"\xff" * 20
    for step in (None, 1):
        conn = Connection()
        conn.data_to_send()
        events = feed(conn, data, step)
        assert [type(e) for e in events] == [ConnectionTerminated] and events[0].error == error  # type: ignore[union-attr]
        out = parse(conn.data_to_send())
        assert [f.type for f in out][-1] == FrameType.GOAWAY and out[-1].payload[4:] == struct.pack(">I", error)
        assert conn.state is ConnectionState.CLOSED and conn.wants_close
        conn.receive_data(CHAT)
        assert drain(conn) == [] and conn.data_to_send() == b""


def test_unknown_frame_types_and_priority_are_ignored() -> None:
    conn, events = opened(frame(0x42, 0xFF, 1, b"whatever"), frame(FrameType.PRIORITY, 0, 1, b"\x00" * 5),
                          request(Encoder(), 1, b"q"))
    assert [type(e) for e in events] == [CallStarted, MessageReceived, InputEnded]


def test_random_bytes_after_the_preface_never_raise() -> None:
    rng = random.Random(7)
    for _ in range(300):
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        conn = Connection()
        events = feed(conn, PREFACE + noise, rng.choice([None, 1, 5]))
        conn.data_to_send()
        assert all(not isinstance(e, ConnectionTerminated) for e in events[:-1])


def test_after_close_nothing_comes_in_or_out() -> None:
    conn, _ = opened(request(Encoder(), 1, end=False))
    conn.close()
    conn.receive_data(frame(DATA, 0, 1, msg(b"x")))
    conn.send_message(1, b"y")
    assert drain(conn) == [] and conn.data_to_send() == b"" and not conn.open_streams and conn.wants_close


# -- an independent client ----------------------------------------------------------------------

def test_h2_as_the_client_sees_a_well_formed_exchange() -> None:
    h2c = pytest.importorskip("h2.connection")
    h2cfg = pytest.importorskip("h2.config")
    h2e = pytest.importorskip("h2.events")
    client = h2c.H2Connection(h2cfg.H2Configuration(client_side=True, header_encoding="utf-8"))
    client.initiate_connection()
    client.update_settings({Setting.INITIAL_WINDOW_SIZE: 1000})
    client.send_headers(1, REQUEST)
    client.send_data(1, msg(b"a") + msg(b"b" * 5000)[:3000])
    client.send_data(1, msg(b"b" * 5000)[3000:], end_stream=True)
    server = Connection()
    server.receive_data(client.data_to_send())
    got = []
    while (e := server.next_event()) is not None:
        got.append(e)
        if isinstance(e, MessageReceived):
            server.send_message(1, e.message * 2)
        elif isinstance(e, InputEnded):
            server.end_call(1, Status.OK)
    assert [type(e) for e in got] == [CallStarted, MessageReceived, MessageReceived, InputEnded]
    body, trailers, acked = b"", {}, False
    for _ in range(100):  # the client reads, acknowledges and opens its window until the call ends
        for ev in client.receive_data(server.data_to_send()):
            if isinstance(ev, h2e.SettingsAcknowledged):
                acked = True
            elif isinstance(ev, h2e.DataReceived):
                assert acked, "data before our SETTINGS were acknowledged"
                body += ev.data
                client.acknowledge_received_data(ev.flow_controlled_length, 1)
            elif isinstance(ev, h2e.TrailersReceived):
                trailers = dict(ev.headers)
        if trailers:
            break
        server.receive_data(client.data_to_send())
        assert drain(server) == []
    assert trailers == {"grpc-status": "0"}
    assert body == msg(b"aa") + msg(b"b" * 10000)
