"""The span recorder: W3C parents, parent-based and ratio sampling, the OTLP JSON encoding, a
bounded queue that drops instead of waiting, and export that survives a dead collector."""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from extproc.telemetry import tracing
from extproc.telemetry.tracing import SpanRecorder, parse_traceparent
from tests.conftest import free_port

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(("value", "want"), [
    (TP, (0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331, True)),
    (TP[:-2] + "00", (0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331, False)),
    (None, None), ("", None), ("garbage", None),
    ("00-00000000000000000000000000000000-b7ad6b7169203331-01", None),  # all-zero trace id
    ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None),  # version 255 is invalid
    ("00-0af7651916cd43dd8448eb211c80319z-b7ad6b7169203331-01", None),
])
def test_parse_traceparent(value: str | None, want: tuple[int, int, bool] | None) -> None:
    assert parse_traceparent(value) == want


def test_sampling_follows_the_parent_and_the_ratio_for_new_traces() -> None:
    kept: list[tracing.Span] = []
    never, always = SpanRecorder(None, 0.0, {}, kept.extend), SpanRecorder(None, 1.0, {}, kept.extend)
    assert never.start("x", None) is None
    assert never.start("x", parse_traceparent(TP)) is not None  # a sampled parent wins
    assert always.start("x", parse_traceparent(TP[:-2] + "00")) is None  # so does an unsampled one
    half = SpanRecorder(None, 0.5, {}, kept.extend)
    sampled = sum(half.start("x", None) is not None for _ in range(4000))
    assert 1700 < sampled < 2300
    for r in (never, always, half):
        r.shutdown()


def test_encoding_is_otlp_json() -> None:
    out: list[tracing.Span] = []
    rec = SpanRecorder(None, 1.0, {"service.name": "interlock"}, out.extend)
    root = rec.start("chat gpt", parse_traceparent(TP))
    assert root is not None
    child = rec.start("interlock.route", root)
    assert child is not None
    child.set_attributes({"a": "x", "n": 3, "f": 0.5, "b": True, "l": ["p", "q"], "none": None})
    child.end()
    root.set_status("not_found")
    root.end()
    root.end()  # once
    rec.shutdown()
    doc = orjson.loads(orjson.dumps(tracing.encode(out, rec.resource)))
    (rs,) = doc["resourceSpans"]
    assert rs["resource"]["attributes"] == [{"key": "service.name", "value": {"stringValue": "interlock"}}]
    spans = {s["name"]: s for s in rs["scopeSpans"][0]["spans"]}
    assert len(out) == 2
    c, r = spans["interlock.route"], spans["chat gpt"]
    assert c["traceId"] == r["traceId"] == "0af7651916cd43dd8448eb211c80319c"
    assert r["parentSpanId"] == "b7ad6b7169203331" and c["parentSpanId"] == r["spanId"]
    assert c["attributes"] == [
        {"key": "a", "value": {"stringValue": "x"}}, {"key": "n", "value": {"intValue": "3"}},
        {"key": "f", "value": {"doubleValue": 0.5}}, {"key": "b", "value": {"boolValue": True}},
        {"key": "l", "value": {"arrayValue": {"values": [{"stringValue": "p"}, {"stringValue": "q"}]}}}]
    assert r["status"] == {"code": 2, "message": "not_found"}
    assert int(r["endTimeUnixNano"]) >= int(r["startTimeUnixNano"]) > 0


def test_a_full_queue_drops_spans_instead_of_waiting() -> None:
    rec = SpanRecorder(None, 1.0, {}, None)
    rec._stop = True  # the exporter thread stays out of the way
    rec._wake.set()
    for _ in range(tracing.MAX_QUEUE + 10):
        span = rec.start("x", None)
        assert span is not None
        span.end()
    assert len(rec.queue) == tracing.MAX_QUEUE and rec.dropped == 10


def test_export_posts_json_and_survives_a_dead_collector() -> None:
    got: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rec = SpanRecorder(f"http://127.0.0.1:{port}/v1/traces", 1.0, {}, None)
    span = rec.start("x", None)
    assert span is not None
    span.end()
    rec.flush()
    server.shutdown()
    server.server_close()
    assert orjson.loads(got[0])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"] == "x"
    dead = SpanRecorder(f"http://127.0.0.1:{free_port()}/v1/traces", 1.0, {}, None)
    span = dead.start("y", None)
    assert span is not None
    span.end()
    dead.flush()  # refused: logged once, dropped
    assert dead.failed
    rec.shutdown()
    dead.shutdown()


def test_encoding_remembers_attributes_without_confusing_equal_values_of_other_types() -> None:
    """True == 1 == 1.0 in Python, and a list keyed like a tuple could come back as the other's:
    each attribute encodes as its own type, the second time (remembered) as the first."""
    values = [True, 1, 1.0, "1", [1, True], [True, 1], ["a", "b"], ("a", "b")]
    for _ in range(2):
        span = tracing.Span.__new__(tracing.Span)
        span.name, span.trace_id, span.span_id, span.parent_id = "s", 1, 2, 0
        span.start_ns, span.end_ns, span.error = 1, 2, None
        span.attributes = {"k": None}
        for v in values:
            span.attributes = {"k": v}
            got = tracing.encode([span], [])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
            assert got == [{"key": "k", "value": tracing._value(v)}], v


def test_batches_go_on_one_kept_connection_and_a_restarted_collector_gets_the_next() -> None:
    """The exporter keeps its connection to the collector between batches (a new one each time
    cost a lookup and a handshake per batch), and when the collector restarts — the kept
    connection is dead — the next batch still arrives, on a new connection."""
    got: list[tuple[int, str]] = []
    open_connections: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as OTLP collectors answer

        def do_POST(self) -> None:  # noqa: N802
            open_connections.append(self.connection)
            body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
            got.append((self.client_address[1], body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"]))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    def serve(port: int) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    port = free_port()
    server = serve(port)
    rec = SpanRecorder(f"http://127.0.0.1:{port}/v1/traces", 1.0, {}, None)

    def export(name: str) -> None:
        span = rec.start(name, None)
        assert span is not None
        span.end()
        rec.flush()

    export("a")
    export("b")
    assert [n for _, n in got] == ["a", "b"] and got[0][0] == got[1][0], got  # one client port: one connection
    server.shutdown()  # the collector restarts: its connections close
    server.server_close()
    for conn in open_connections:
        with contextlib.suppress(OSError):  # closed already
            conn.shutdown(socket.SHUT_RDWR)
    server = serve(port)
    export("c")
    assert [n for _, n in got] == ["a", "b", "c"] and not rec.failed
    server.shutdown()
    server.server_close()
    rec.shutdown()
