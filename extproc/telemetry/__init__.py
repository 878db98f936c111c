"""Observability: OpenTelemetry GenAI metrics, Interlock's own (exact tokens, micro-dollar cost,
routing, refusals, overhead), traces, and the pod's one Prometheus scrape.

    settings     TelemetrySettings from the OTEL_* environment
    names        metric / attribute names (GenAI semantic conventions + Interlock's)
    meters       the instruments (exact counters read asynchronously; SDK histograms)
    tracing      tracer provider, W3C parent context, `explain` (a routing decision on a span)
    record       one request's telemetry: begin → decided → chunk* → failed? → finish
    exposition   per-process text on a Unix socket; the supervisor's merged scrape
    install      set a process up (`install_worker`)

The request path calls only `record`'s functions (re-exported here); they never raise.
"""

from extproc.telemetry.record import (
    NOOP,
    Request,
    access_fields,
    access_metadata,
    begin,
    chunk,
    decided,
    failed,
    finish,
)
from extproc.telemetry.settings import TelemetrySettings
from extproc.telemetry.tracing import explain

__all__ = ["NOOP", "Request", "TelemetrySettings", "access_fields", "access_metadata", "begin", "chunk", "decided", "explain", "failed",
           "finish"]
