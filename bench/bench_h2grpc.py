#!/usr/bin/env python3
"""CPU per ext_proc message of the HTTP/2 + gRPC framing layer: `extproc.h2grpc.frames` (ours)
against the same layer built on python-hyper's `h2` (`h2.connection.H2Connection`).

Both are driven by one loop over one recorded byte stream, so the figures differ only by the
framing layer: the client is an `h2` client configured as Envoy's ext_proc client (256 MiB
windows, HPACK with Huffman and indexing), each stream is opened with its headers and first
message in one read, then one ~2 KB `ProcessingRequest` per read (request headers, request body,
response headers, response body, in turn), each answered at once with its `ProcessingResponse`
(~0.2-2 KB), and an empty END_STREAM DATA frame closes it (answered with trailers). gRPC message
reassembly is the same code in both (`streams.Stream.take_messages`). Ours is also timed with
`hpack.Decoder` in place of its own HPACK decoder (`headers.HeaderDecoder`; Envoy's later blocks
on a connection are all indexed, so ours answers them from its memory). Every run is checked
first:
an `h2` client reads the server's bytes back and must see every response and `grpc-status: 0`.

Timing: `time.process_time_ns` around one run over a fresh connection (`-m` messages), after a
warm-up run; `--reps` runs per variant, interleaved; the median is reported. Two shapes: 4
messages per stream (one HTTP request through Envoy) and 64 per stream (a long bidi stream).
`h2` is not a dependency of the gateway: `pip install h2` to run this.

Prints one line per shape and variant, and last (the 4-message shape):
    h2grpc: frames_us_per_msg=N.NN h2_us_per_msg=N.NN ratio=N.NN (with hpack's decoder: N.NN, ratio N.NN)

`--blocks` times header block decoding alone instead, ours against `hpack.Decoder`, on one
connection's blocks as Envoy's gRPC client sends them (Huffman, indexing; each decoded result
checked): the same 8 fields every call ("untraced"), and those plus a new `traceparent` each call
("traced", as with Envoy's tracing on); then the blocks Envoy sent with tracing on, captured in
tests/unit/extproc/h2grpc/envoy_traced_blocks.txt. Prints, last:
    h2grpc blocks: untraced_ours_us=N.NN untraced_hpack_us=N.NN traced_ours_us=N.NN traced_hpack_us=N.NN
                   envoy_extproc_ours_us=N.NN ... envoy_ratelimit_hpack_us=N.NN
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envoy.config.core.v3 import base_pb2  # noqa: E402
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep  # noqa: E402
from hpack import Decoder, Encoder  # noqa: E402

from extproc.h2grpc.events import (  # noqa: E402
    CallReset,
    CallStarted,
    ConnectionTerminated,
    Event,
    InputEnded,
    MessageReceived,
)
from extproc.h2grpc.frames import Connection  # noqa: E402
from extproc.h2grpc.headers import HeaderDecoder  # noqa: E402
from extproc.h2grpc.streams import Stream  # noqa: E402
from extproc.h2grpc.wire import MAX_FRAME, RECEIVE_WINDOW, ErrorCode, Status  # noqa: E402

try:
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.events import (
        ConnectionTerminated as H2Terminated,
    )
    from h2.events import (
        DataReceived,
        RemoteSettingsChanged,
        RequestReceived,
        StreamEnded,
        StreamReset,
        TrailersReceived,
        WindowUpdated,
    )
    from h2.exceptions import ProtocolError
    from h2.settings import SettingCodes
except ImportError:
    sys.exit("bench_h2grpc needs python-hyper's h2: pip install h2")

PATH = b"/envoy.service.ext_proc.v3.ExternalProcessor/Process"
Headers = list[tuple[bytes, bytes]]
ENVOY_WINDOW = 256 << 20


class Framing(Protocol):
    def receive_data(self, data: bytes) -> None: ...
    def next_event(self) -> Event | None: ...
    def data_to_send(self) -> bytes: ...
    def send_message(self, stream_id: int, message: bytes) -> None: ...
    def end_call(self, stream_id: int, status: Status, message: str = "") -> None: ...


class H2Framing:
    """`frames.Connection`'s interface on `h2.connection.H2Connection`: the same events, the same
    sends (response headers once, messages within the peer's windows, trailers after the data)."""

    def __init__(self, validate: bool = True) -> None:
        config = H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=validate,
                                 normalize_inbound_headers=validate, validate_outbound_headers=validate,
                                 normalize_outbound_headers=validate)
        self.h2 = H2Connection(config)
        self.h2.local_settings.update({SettingCodes.MAX_CONCURRENT_STREAMS: 1 << 20,
                                       SettingCodes.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
                                       SettingCodes.MAX_FRAME_SIZE: MAX_FRAME})
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(RECEIVE_WINDOW - 65535)
        self._events: deque[Event] = deque()
        self._streams: dict[int, Stream] = {}
        self._pending: dict[int, deque[tuple[bytes, Headers | None]]] = {}  # stream → [(DATA, or trailers)]
        self._headers_sent: set[int] = set()

    def receive_data(self, data: bytes) -> None:
        h2, events = self.h2, self._events
        try:
            h2_events = h2.receive_data(data)
        except ProtocolError as e:
            events.append(ConnectionTerminated(ErrorCode.PROTOCOL_ERROR, str(e)))
            return
        flush = False
        ev: Any
        for ev in h2_events:
            t = type(ev)
            if t is DataReceived:
                sid = ev.stream_id
                h2.acknowledge_received_data(ev.flow_controlled_length, sid)
                stream = self._streams.get(sid)
                if stream is None:
                    continue
                for m in stream.take_messages(ev.data) or ():
                    events.append(MessageReceived(sid, m))
            elif t is RequestReceived:
                sid = ev.stream_id
                self._streams[sid] = Stream(sid, 0)
                events.append(CallStarted(sid, {k.decode("latin-1"): v.decode("latin-1") for k, v in ev.headers}))
            elif t is StreamEnded:
                stream = self._streams.get(ev.stream_id)
                if stream is not None:
                    events.append(InputEnded(ev.stream_id, len(stream.inbuf)))
            elif t is WindowUpdated or t is RemoteSettingsChanged:
                flush = True
            elif t is StreamReset:
                self._forget(ev.stream_id)
                events.append(CallReset(ev.stream_id))
            elif t is H2Terminated:
                events.append(ConnectionTerminated(ev.error_code, "GOAWAY"))
            elif t is TrailersReceived:
                pass
        if flush:
            for sid in list(self._pending):
                self._flush(sid)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        return self.h2.data_to_send()

    def send_message(self, stream_id: int, message: bytes) -> None:
        if stream_id not in self._streams:
            return
        if stream_id not in self._headers_sent:
            self._headers_sent.add(stream_id)
            self.h2.send_headers(stream_id, [(b":status", b"200"), (b"content-type", b"application/grpc")])
        payload = b"\x00" + len(message).to_bytes(4, "big") + message
        h2 = self.h2
        if stream_id not in self._pending and len(payload) <= min(h2.local_flow_control_window(stream_id),
                                                                  h2.max_outbound_frame_size):
            h2.send_data(stream_id, payload)  # the common case: nothing waiting, windows open
            return
        self._pending.setdefault(stream_id, deque()).append((payload, None))
        self._flush(stream_id)

    def end_call(self, stream_id: int, status: Status, message: str = "") -> None:
        if stream_id not in self._streams:
            return
        trailers = [(b"grpc-status", str(int(status)).encode())]
        if message:
            trailers.append((b"grpc-message", message.encode("ascii", "replace")[:200]))
        if stream_id not in self._headers_sent:
            trailers = [(b":status", b"200"), (b"content-type", b"application/grpc"), *trailers]
        self._pending.setdefault(stream_id, deque()).append((b"", trailers))
        self._flush(stream_id)

    def _flush(self, sid: int) -> None:
        pending = self._pending.get(sid)
        h2 = self.h2
        while pending:
            payload, trailers = pending[0]
            if trailers is not None:
                h2.send_headers(sid, trailers, end_stream=True)
                self._forget(sid)
                return
            n = min(len(payload), h2.local_flow_control_window(sid), h2.max_outbound_frame_size)
            if n <= 0:
                return
            h2.send_data(sid, payload[:n])
            if n == len(payload):
                pending.popleft()
            else:
                pending[0] = (payload[n:], None)
        self._pending.pop(sid, None)

    def _forget(self, sid: int) -> None:
        self._streams.pop(sid, None)
        self._pending.pop(sid, None)
        self._headers_sent.discard(sid)


class HpackHeaders:
    """`headers.HeaderDecoder`'s interface on `hpack.Decoder`: every block decoded whole."""

    def __init__(self) -> None:
        self._decoder = Decoder()
        self._decoder.max_allowed_table_size = 65536

    def decode(self, block: bytes) -> dict[str, str]:
        return {k.decode("latin-1"): v.decode("latin-1")
                for k, v in self._decoder.decode(block, raw=True)}  # type: ignore[union-attr]


def with_hpack() -> Connection:
    conn = Connection()
    conn._decoder = HpackHeaders()  # type: ignore[assignment]  # a bench-only swap of a private part
    return conn


# -- the recorded stream ------------------------------------------------------------------------

def _headers(n: int) -> base_pb2.HeaderMap:
    hm = base_pb2.HeaderMap()
    for k, v in [(":method", "POST"), (":path", "/v1/chat/completions"), (":authority", "gateway.example.com"),
                 ("content-type", "application/json"), ("authorization", "Bearer sk-" + "k" * 48),
                 ("user-agent", "OpenAI/Python 1.99.0"), ("x-request-id", f"5d0b6c0e-7f7e-4c2a-9f0e-{n:012d}"),
                 ("traceparent", f"00-{n:032x}-{n:016x}-01"), ("accept", "application/json"),
                 ("x-stainless-lang", "python"), ("x-stainless-os", "Linux"), ("x-stainless-arch", "x64"),
                 ("x-stainless-runtime", "CPython"), ("x-stainless-package-version", "1.99.0"),
                 ("x-forwarded-for", "10.1.2.3"), ("x-forwarded-proto", "https"),
                 ("cookie", "session=" + "c" * 1400), ("content-length", "1500")]:
        hm.headers.add(key=k, raw_value=v.encode())
    return hm


def conversation(n: int) -> tuple[list[bytes], list[bytes]]:
    """One Envoy request's four ProcessingRequests (~2 KB each) and their ProcessingResponses."""
    body = (b'{"model":"gpt-5-mini","stream":false,"messages":[{"role":"system","content":"You are terse."},'
            b'{"role":"user","content":"') + b"lorem ipsum " * 150 + b'"}]}'
    reqs = [
        ep.ProcessingRequest(request_headers=ep.HttpHeaders(headers=_headers(n))),
        ep.ProcessingRequest(request_body=ep.HttpBody(body=body[:1900], end_of_stream=True)),
        ep.ProcessingRequest(response_headers=ep.HttpHeaders(headers=_headers(n + 1))),
        ep.ProcessingRequest(response_body=ep.HttpBody(body=body[:1950], end_of_stream=True)),
    ]
    requests = [r.SerializeToString() for r in reqs]
    set_headers = [base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, raw_value=v.encode()))
                   for k, v in [("x-interlock-route", "gpt-5-mini@openai#0"), ("x-interlock-tenant", "acme"),
                                (":path", "/v1/chat/completions"), ("authorization", "Bearer up-" + "u" * 40),
                                ("x-interlock-attempt", "1"), ("x-interlock-request-id", f"r-{n:08d}")]]
    headers_answer = ep.CommonResponse(header_mutation=ep.HeaderMutation(set_headers=set_headers))
    responses = [
        ep.ProcessingResponse(request_headers=ep.HeadersResponse(response=headers_answer)),
        ep.ProcessingResponse(request_body=ep.BodyResponse(response=ep.CommonResponse(
            body_mutation=ep.BodyMutation(body=body[:1800])))),
        ep.ProcessingResponse(response_headers=ep.HeadersResponse()),
        ep.ProcessingResponse(response_body=ep.BodyResponse(response=ep.CommonResponse(
            body_mutation=ep.BodyMutation(body=body[:1200])))),
    ]
    return requests, [r.SerializeToString() for r in responses]


def _client() -> H2Connection:
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.local_settings.update({SettingCodes.INITIAL_WINDOW_SIZE: ENVOY_WINDOW})
    client.initiate_connection()
    client.increment_flow_control_window(ENVOY_WINDOW - 65535)
    client.receive_data(Connection().data_to_send())  # the server's SETTINGS and window, acknowledged
    return client


def recording(streams: int, per_stream: int) -> tuple[list[bytes], dict[bytes, bytes], H2Connection]:
    """The reads the server gets, the answer to each request message, and the client that sent
    them (it reads the server's bytes back to check them)."""
    client = _client()
    reads, answers = [client.data_to_send()], dict[bytes, bytes]()
    for s in range(streams):
        sid = 2 * s + 1
        requests, responses = conversation(s)
        answers.update(zip(requests, responses, strict=True))
        client.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"), (b":path", PATH),
                                  (b":authority", b"interlock_extproc"), (b"content-type", b"application/grpc"),
                                  (b"te", b"trailers"), (b"grpc-timeout", b"200m"), (b"x-envoy-internal", b"true"),
                                  (b"x-envoy-expected-rq-timeout-ms", b"200")])
        for i in range(per_stream):
            m = requests[i % 4]
            client.send_data(sid, b"\x00" + len(m).to_bytes(4, "big") + m)
            reads.append(client.data_to_send())
        client.send_data(sid, b"", end_stream=True)
        reads.append(client.data_to_send())
    reads[1] = reads[0] + reads[1]
    return reads[1:], answers, client


# -- the driver ---------------------------------------------------------------------------------

def drive(conn: Framing, reads: list[bytes], answers: dict[bytes, bytes]) -> Iterator[bytes]:
    """Feed each read, answer each event, yield what the server writes after each read."""
    yield conn.data_to_send()
    for data in reads:
        conn.receive_data(data)
        while (e := conn.next_event()) is not None:
            t = type(e)
            if t is MessageReceived:
                conn.send_message(e.stream_id, answers[e.message])  # type: ignore[union-attr]
            elif t is InputEnded:
                conn.end_call(e.stream_id, Status.OK)  # type: ignore[union-attr]
            elif t is ConnectionTerminated:
                raise RuntimeError(f"connection failed: {e}")
        yield conn.data_to_send()


def check(make: Callable[[], Framing], streams: int, per_stream: int) -> None:
    from h2.events import DataReceived as ClientData
    from h2.events import TrailersReceived as ClientTrailers
    reads, answers, client = recording(streams, per_stream)
    body: dict[int, bytes] = {}
    ended = 0
    for out in drive(make(), reads, answers):
        for ev in client.receive_data(out):
            if isinstance(ev, ClientData):
                body[ev.stream_id] = body.get(ev.stream_id, b"") + ev.data
            elif isinstance(ev, ClientTrailers):
                assert dict(ev.headers)[b"grpc-status"] == b"0", ev.headers
                ended += 1
    assert ended == streams, ended
    for s in range(streams):
        requests, responses = conversation(s)
        want = b"".join(b"\x00" + len(r).to_bytes(4, "big") + r for r in (responses * per_stream)[:per_stream])
        assert body[2 * s + 1] == want, s


def timed(make: Callable[[], Framing], reads: list[bytes], answers: dict[bytes, bytes]) -> int:
    gc.collect()
    t0 = time.process_time_ns()
    for _ in drive(make(), reads, answers):
        pass
    return time.process_time_ns() - t0


# -- header blocks alone --------------------------------------------------------------------------

ENVOY_CALL = [(":method", "POST"), (":scheme", "http"), (":path", PATH.decode()), (":authority", "interlock_extproc"),
              ("te", "trailers"), ("content-type", "application/grpc"), ("x-envoy-internal", "true"),
              ("x-forwarded-for", "10.1.2.3")]


def header_blocks(n: int, traced: bool) -> list[bytes]:
    """`n` calls' header blocks on one connection as Envoy's gRPC client sends them (Huffman,
    indexing): the same fields each call, and with `traced` a new `traceparent` in each."""
    enc = Encoder()
    return [enc.encode(call_headers(i, traced), huffman=True) for i in range(n)]


def call_headers(i: int, traced: bool) -> list[tuple[str, str]]:
    return ENVOY_CALL + ([("traceparent", f"00-{i * 7919 + 1:032x}-{i + 1:016x}-01")] if traced else [])


def blocks_bench(n: int, reps: int) -> None:
    decoders: dict[str, Callable[[], Any]] = {"ours": lambda: HeaderDecoder(65536), "hpack": HpackHeaders}
    print(f"python {sys.version.split()[0]}; {reps} runs of {n} header blocks per variant; CPU us per block, "
          f"median (min-max)")
    line = []
    for traced in (False, True):
        blocks = header_blocks(n, traced)
        want = [dict(call_headers(i, traced)) for i in range(n)]
        for make in decoders.values():
            decoder = make()
            assert [decoder.decode(b) for b in blocks] == want
        samples: dict[str, list[float]] = {name: [] for name in decoders}
        for _ in range(reps):
            for name, make in decoders.items():
                decode = make().decode
                gc.collect()
                t0 = time.process_time_ns()
                for b in blocks:
                    decode(b)
                samples[name].append((time.process_time_ns() - t0) / 1000 / n)
        shape = "traced" if traced else "untraced"
        for name in decoders:
            med = statistics.median(samples[name])
            print(f"{shape:>8} {name:>6}: {med:6.2f} us/block ({min(samples[name]):.2f}-{max(samples[name]):.2f})")
            line.append(f"{shape}_{name}_us={med:.2f}")
    captured = Path(__file__).resolve().parent.parent / "tests/unit/extproc/h2grpc/envoy_traced_blocks.txt"
    connections: dict[str, list[bytes]] = {}
    for text in captured.read_text().splitlines():
        if text in ("# extproc", "# ratelimit"):
            connections[text[2:]] = []
        elif not text.startswith("#"):
            connections[list(connections)[-1]].append(bytes.fromhex(text))
    for server, blocks in connections.items():  # each replayed on a fresh decoder, so few blocks
        for name, make in decoders.items():
            runs = []
            for _ in range(max(reps, n // len(blocks))):
                decode = make().decode
                t0 = time.process_time_ns()
                for b in blocks:
                    decode(b)
                runs.append((time.process_time_ns() - t0) / 1000 / len(blocks))
            med = statistics.median(runs)
            print(f"Envoy's traced {server} blocks (tests/unit/extproc/h2grpc/envoy_traced_blocks.txt) "
                  f"{name:>6}: {med:6.2f} us/block")
            line.append(f"envoy_{server}_{name}_us={med:.2f}")
    print("h2grpc blocks: " + " ".join(line))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", type=int, default=8192, help="request messages per run")
    ap.add_argument("--reps", type=int, default=7, help="timed runs per variant and shape (median reported)")
    ap.add_argument("--blocks", action="store_true",
                    help="time header block decoding alone (ours, hpack's), untraced and traced, instead")
    args = ap.parse_args()
    if args.blocks:
        blocks_bench(args.m, args.reps)
        return
    variants: list[tuple[str, Callable[[], Framing]]] = [
        ("frames (ours)", Connection), ("frames, hpack decoder", with_hpack), ("h2", H2Framing),
        ("h2, validation off", lambda: H2Framing(validate=False))]
    print(f"python {sys.version.split()[0]}, h2 {__import__('h2').__version__}; {args.reps} runs of "
          f"{args.m} messages per variant; CPU us per ext_proc message, median (min-max)")
    headline: dict[str, float] = {}
    for per_stream in (4, 64):
        streams = args.m // per_stream
        for _, make in variants:
            check(make, min(streams, 50), per_stream)
        reads, answers, _ = recording(streams, per_stream)
        samples: dict[str, list[float]] = {name: [] for name, _ in variants}
        for _, make in variants:
            timed(make, reads, answers)  # warm-up
        for _ in range(args.reps):
            for name, make in variants:
                samples[name].append(timed(make, reads, answers) / 1000 / (streams * per_stream))
        ours = statistics.median(samples["frames (ours)"])
        for name, _ in variants:
            med = statistics.median(samples[name])
            print(f"{per_stream:3d} msgs/stream  {name:>24}: {med:6.2f} us/msg ({min(samples[name]):.2f}-"
                  f"{max(samples[name]):.2f})  x{med / ours:.2f}")
            if per_stream == 4:
                headline[name] = med
    a, b, c = headline["frames (ours)"], headline["h2"], headline["frames, hpack decoder"]
    print(f"h2grpc: frames_us_per_msg={a:.2f} h2_us_per_msg={b:.2f} ratio={b / a:.2f} "
          f"(with hpack's decoder: {c:.2f}, ratio {b / c:.2f})")


if __name__ == "__main__":
    main()
