"""Traces: the router stage's spans, children of the trace Envoy (or the client) started.

A request gets a span `{operation} {model}` (GenAI span naming) from the moment the router stage
sees its headers until its answer is complete, with a child `interlock.route` covering the
routing decision and admission. The parent is the W3C `traceparent` the stage is handed (Envoy's
own when its tracer runs, else the client's); Envoy's tracer makes the request's span and one
span per upstream attempt, and sends its `traceparent` to the provider.

Why not the OpenTelemetry SDK's tracer here: measured on the 2-core development machine, its two
spans cost ~80 µs per request to create and ~75 µs per span to encode for OTLP (protobuf built
field by field in Python) — more than all the rest of the gateway's telemetry together, and a
third of a request's whole CPU budget. `Span` below is the SDK span's small subset the gateway
uses (`set_attribute(s)`, `update_name`, `set_status`, `is_recording`, `end`); `SpanRecorder` encodes
finished spans as OTLP/HTTP JSON (the protocol's JSON mapping: hex ids, nanosecond strings) with
orjson in a background thread, remembering the encoding of attributes that repeat: 3.5 µs per
span of the router stage's two (8.8 without that memory; 512 spans, ~1.3 KB each).

Sampling is parent-based: a parent's sampled flag is followed; a new trace is sampled when its id's
lower 64 bits fall under `ratio` (the W3C/OpenTelemetry `TraceIdRatioBased` rule, so every
process of a trace decides alike). Export: a bounded queue (`MAX_QUEUE` spans; past it spans are
dropped and counted, never waited for), flushed each second or every `BATCH` spans, POSTed with a
5 s timeout; a failed POST is dropped (logged once).
"""

from __future__ import annotations

import http.client
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson

from extproc.telemetry import names as n

log = logging.getLogger("interlock.telemetry")
MAX_QUEUE = 2048
BATCH = 512
_ID_BOUND = 1 << 64
_KIND_INTERNAL = 1
_STATUS_ERROR = 2


class Span:
    """One span being recorded; `end` hands it to its recorder (once)."""

    __slots__ = ("attributes", "end_ns", "error", "name", "parent_id", "recorder", "span_id", "start_ns", "trace_id")

    def __init__(self, recorder: SpanRecorder, name: str, trace_id: int, parent_id: int, start_ns: int) -> None:
        self.recorder = recorder
        self.name = name
        self.trace_id = trace_id
        self.span_id = random.getrandbits(64) or 1
        self.parent_id = parent_id
        self.start_ns = start_ns
        self.end_ns = 0
        self.attributes: dict[str, Any] = {}
        self.error: str | None = None

    def is_recording(self) -> bool:
        return not self.end_ns

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self.attributes.update(attributes)

    def update_name(self, name: str) -> None:
        self.name = name

    def set_status(self, error: str) -> None:
        """Mark the span failed (OTLP status ERROR) with `error` as its message."""
        self.error = error

    def end(self) -> None:
        if not self.end_ns:
            self.end_ns = time.time_ns()
            self.recorder.finished(self)


def parse_traceparent(value: str | None) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) of a W3C `traceparent` (version 00 layout); None when
    absent or malformed (then the request starts a trace of its own)."""
    if not value or len(value) < 55:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        version, trace_id, span_id, flags = int(parts[0], 16), int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if version == 255 or not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(flags & 1)


class SpanRecorder:
    """Starts spans and exports the finished ones. Thread-safe: the event loop records, one
    daemon thread exports."""

    def __init__(self, endpoint: str | None, ratio: float, resource: Mapping[str, str],
                 sink: Callable[[list[Span]], None] | None = None) -> None:
        self.endpoint = endpoint
        self.bound = int(ratio * _ID_BOUND)
        self.resource = [_kv(k, v) for k, v in resource.items()]
        self.sink = sink  # tests: receives each batch instead of a POST
        self.queue: deque[Span] = deque()
        self.dropped = 0
        self.failed = False
        self._conn: http.client.HTTPConnection | None = None  # kept open between batches
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="interlock-spans", daemon=True)
        self._thread.start()

    def start(self, name: str, parent: Span | tuple[int, int, bool] | None, start_ns: int | None = None) -> Span | None:
        """A span named `name` under `parent` (a span, or a parsed `traceparent`), or None when
        the trace is not sampled."""
        if isinstance(parent, Span):
            trace_id, parent_id = parent.trace_id, parent.span_id
        elif parent is not None:
            trace_id, parent_id, sampled = parent
            if not sampled:
                return None
        else:
            trace_id, parent_id = random.getrandbits(128) or 1, 0
            if (trace_id & (_ID_BOUND - 1)) >= self.bound:
                return None
        return Span(self, name, trace_id, parent_id, start_ns or time.time_ns())

    def finished(self, span: Span) -> None:
        if len(self.queue) >= MAX_QUEUE:
            self.dropped += 1
            return
        self.queue.append(span)
        if len(self.queue) >= BATCH:
            self._wake.set()

    def flush(self) -> None:
        """Export what is queued now (the caller's thread)."""
        batch: list[Span] = []
        while self.queue and len(batch) < BATCH * 4:
            batch.append(self.queue.popleft())
        if not batch:
            return
        if self.sink is not None:
            self.sink(batch)
            return
        if self.endpoint is None:
            return
        body = orjson.dumps(encode(batch, self.resource))
        try:
            status = self._post(body)
            if status >= 300:
                raise OSError(f"HTTP {status}")
            self.failed = False
        except (OSError, ValueError, http.client.HTTPException) as e:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if not self.failed:
                log.warning("traces: export to %s failed (%s); dropping spans until it answers", self.endpoint, e)
            self.failed = True

    def _post(self, body: bytes) -> int:
        """POST one batch on the kept connection (opened again after a failure or when the
        collector closed it): the status. A new connection per batch cost the exporter thread a
        DNS lookup and a TCP handshake each time (~5 % of a worker's CPU at full sampling)."""
        assert self.endpoint is not None
        url = urlsplit(self.endpoint)
        for attempt in (1, 2):
            conn = self._conn
            if conn is None:
                cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
                conn = self._conn = cls(url.hostname or "", url.port, timeout=5)
            try:
                conn.request("POST", url.path or "/", body=body, headers={"content-type": "application/json"})
                r = conn.getresponse()
                r.read()
                if r.will_close:
                    conn.close()
                    self._conn = None
                return r.status
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()  # the collector closed an idle kept connection: once more on a new one
                self._conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def shutdown(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=6)
        self.flush()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                while self.queue and not self._stop:
                    self.flush()
            except Exception:  # noqa: BLE001 (the exporter thread must not die)
                log.exception("traces: export failed")


def _value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, list | tuple):
        return {"arrayValue": {"values": [_value(x) for x in v]}}
    return {"stringValue": str(v)}


def _kv(key: str, value: Any) -> dict[str, Any]:
    return {"key": key, "value": _value(value)}


def _memo_kv(key: str, value: Any) -> dict[str, Any]:
    """`_kv(key, value)`, remembered for text, integers, booleans and lists of text: most
    attributes (model, tenant, route, provider, status, the routing explanation) repeat from span
    to span. The type is part of the memory's key (True == 1). Called only by `encode`."""
    cls = value.__class__
    if cls is str or cls is int or cls is bool:
        memo_key: tuple[str, type, Any] = (key, cls, value)
    elif cls is list and all(x.__class__ is str for x in value):
        memo_key = (key, cls, tuple(value))
    else:
        return _kv(key, value)
    kv = _KV_MEMO.get(memo_key)
    if kv is None:
        if len(_KV_MEMO) >= _KV_REMEMBERED:
            _KV_MEMO.clear()
        kv = _KV_MEMO[memo_key] = _kv(key, value)
    return kv


_KV_REMEMBERED = 4096
_KV_MEMO: dict[tuple[str, type, Any], dict[str, Any]] = {}


def encode(spans: Sequence[Span], resource: list[dict[str, Any]]) -> dict[str, Any]:
    """An OTLP `ExportTraceServiceRequest` in the protocol's JSON mapping. The result shares its
    attribute objects with other results: serialize it, do not change it."""
    out = []
    for s in spans:
        span: dict[str, Any] = {
            "traceId": f"{s.trace_id:032x}", "spanId": f"{s.span_id:016x}", "name": s.name, "kind": _KIND_INTERNAL,
            "startTimeUnixNano": str(s.start_ns), "endTimeUnixNano": str(s.end_ns),
            "attributes": [_memo_kv(k, v) for k, v in s.attributes.items() if v is not None]}
        if s.parent_id:
            span["parentSpanId"] = f"{s.parent_id:016x}"
        if s.error is not None:
            span["status"] = {"code": _STATUS_ERROR, "message": s.error}
        out.append(span)
    return {"resourceSpans": [{"resource": {"attributes": resource},
                               "scopeSpans": [{"scope": {"name": "interlock"}, "spans": out}]}]}


def explain(span: Any, explanation: Any, chain: Any = ()) -> None:
    """Put a routing decision's explanation on `span` (a no-op for an unsampled or absent span).

    `explanation`: a `routing.Explanation` (or None): why the primary was chosen (`chosen_by`),
    every candidate's scores, the ones dropped and why, the constraints broken. `chain`: the
    deployments to try in order (objects with `id` and `provider`). The routing core's ids come
    from the config, so the attribute values are bounded. Extend here, not at the call sites."""
    if span is None or not span.is_recording():
        return
    if chain:
        span.set_attribute("interlock.routing.chain", [d.id for d in chain])
        span.set_attribute(n.DEPLOYMENT, chain[0].id)
        span.set_attribute("interlock.routing.chosen_provider", chain[0].provider)
    if explanation is None:
        return
    span.set_attribute(n.CHOSEN_BY, explanation.chosen_by)
    scores = explanation.scores
    if scores:
        span.set_attribute("interlock.routing.candidates", list(scores))
        span.set_attribute("interlock.routing.scores", [
            f"{k}: total={s.total:.3f} cost={s.cost:.3f} latency={s.latency:.3f} quality={s.quality:.3f} "
            f"expected_usd={s.cost_usd:.6f} ttft_s={s.ttft_s:.3f}" for k, s in scores.items()])
    if explanation.dropped:
        span.set_attribute("interlock.routing.dropped", [
            f"{k}: {d.filter}: {d.reason}" for k, d in explanation.dropped.items()])
    if explanation.constraint_failures:
        span.set_attribute("interlock.routing.constraint_failures", [
            f"{k}: {'; '.join(str(c) for c in cs)}" for k, cs in explanation.constraint_failures.items()])
    if explanation.affinity_pool:
        span.set_attribute("interlock.routing.affinity_pool", list(explanation.affinity_pool))
