"""One request's telemetry, recorded by the router stage (`extproc.stages.router`).

The stage calls, in order: `begin` (request headers), `decided` (after routing and admission),
`chunk` (each streamed response message), `failed` (an error it renders), `finish` (the answer is
complete; idempotent), and reads `access_fields` for the last response message's dynamic
metadata (Envoy's access log). When telemetry is not installed (`install`), `begin` returns the
shared `NOOP` and every call returns at once.

Cardinality: every attribute value comes from the config (tenants, routes, models, providers) or
from a fixed set (operation, token type, status, reason, error type); a model the config does not
know is `other`. Cost is `routing.micro_usd` of the provider's reported usage at the answering
deployment's prices: the same function the rate limiter charges with. Never raises: a failure in
here is logged once and the request goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import routing
from extproc.metadata import NAMESPACE
from extproc.telemetry import names as n
from extproc.telemetry.tracing import SpanRecorder, explain, parse_traceparent

if TYPE_CHECKING:
    from extproc.runtime import Runtime
    from extproc.telemetry.meters import Meters

log = logging.getLogger("interlock.telemetry")
Flow = Any  # extproc.stages.flow.Flow: read, never imported (telemetry does not depend on the stages)


class Recorder:
    """What `install` sets up in a process: its instruments and (maybe) a tracer."""

    def __init__(self, meters: Meters | None, tracer: SpanRecorder | None, access_log: bool = True) -> None:
        self.meters = meters
        self.tracer = tracer
        self.access_log = access_log
        self.warned = False


_recorder: Recorder | None = None


def set_recorder(recorder: Recorder | None) -> None:
    global _recorder
    _recorder = recorder


def recorder() -> Recorder | None:
    return _recorder


class Request:
    """One request's telemetry state. Times are on the routing state's (monotonic) clock."""

    __slots__ = ("chosen_by", "done", "error_type", "first_at", "last_at", "operation", "rec", "route_span", "span",
                 "t0")

    def __init__(self, rec: Recorder | None, t0: float, operation: str) -> None:
        self.rec = rec
        self.t0 = t0
        self.operation = operation
        self.span: Any = None
        self.route_span: Any = None
        self.first_at = 0.0
        self.last_at = 0.0
        self.error_type: str | None = None
        self.chosen_by = "-"
        self.done = False


NOOP = Request(None, 0.0, n.CHAT)
NOOP.done = True


def begin(headers: Mapping[str, str], now: float, trace_parent: str | None = None) -> Request:
    """A request's headers reached the router stage. Its spans' parent: `trace_parent` (the
    `traceparent` of Envoy's ext_proc call: Envoy's own span, when the server hands it over),
    else the request's `traceparent` (the client's; Envoy continues the same trace)."""
    rec = _recorder
    if rec is None:
        return NOOP
    tm = Request(rec, now, n.EMBEDDINGS if headers.get(":path", "").startswith("/v1/embeddings") else n.CHAT)
    if rec.tracer is not None:
        try:
            tm.span = rec.tracer.start(tm.operation, parse_traceparent(trace_parent or headers.get("traceparent")))
            if tm.span is not None:
                tm.route_span = rec.tracer.start("interlock.route", tm.span, tm.span.start_ns)
        except Exception:  # noqa: BLE001 (telemetry never fails a request)
            _warn(rec)
    return tm


def decided(tm: Request, f: Flow, explanation: Any = None) -> None:
    """The chain is chosen and admitted (the route span ends here). `explanation`: the routing
    core's, when the caller has it."""
    if explanation is not None and tm.rec is not None:
        tm.chosen_by = str(explanation.chosen_by).split(":", 1)[0]  # "fallback: no deployment met …" → "fallback"
    span = tm.route_span
    if span is None:
        return
    try:
        if span.is_recording():
            explain(span, explanation, f.chain)
            if f.route:
                span.set_attribute(n.ROUTE, f.route)
            if f.ticket is not None:
                span.set_attribute("interlock.admission.waited_s", f.ticket.waited_s)
                span.set_attribute("interlock.admission.deployment", f.ticket.deployment_id)
            span.set_attribute("interlock.admission.outcome", "admitted")
        span.end()
        tm.route_span = None
    except Exception:  # noqa: BLE001
        _warn(tm.rec)


def chunk(tm: Request, now: float) -> None:
    """A streamed response message reached the router stage."""
    if tm.rec is None:
        return
    if not tm.first_at:
        tm.first_at = now
    else:
        m = tm.rec.meters
        if m is not None:
            try:
                m.per_chunk.record((tm.operation,), now - tm.last_at)
            except Exception:  # noqa: BLE001
                _warn(tm.rec)
    tm.last_at = now


def failed(tm: Request, err: BaseException) -> None:
    """The stage renders `err` for the client: its class names the error (`error.type`)."""
    if tm.rec is not None and tm.error_type is None:
        tm.error_type = error_type(err)


def error_type(err: BaseException) -> str:
    name = type(err).__name__
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))


def finish(tm: Request, f: Flow, rt: Runtime, status: int, now: float) -> None:
    """The answer is complete: record it (once)."""
    if tm.done or tm.rec is None:
        return
    tm.done = True
    try:
        _finish(tm, tm.rec, f, rt, status, now)
    except Exception:  # noqa: BLE001
        _warn(tm.rec)


def _finish(tm: Request, rec: Recorder, f: Flow, rt: Runtime, status: int, now: float) -> None:
    head, d, usage = f.head, f.deployment, f.usage
    tenant = head.tenant.name if head is not None else n.UNAUTHENTICATED
    requested = f.model if f.model is not None and (f.model in rt.deployments or f.model in rt.routes) else (
        n.OTHER if f.model is not None else "")
    if d is not None:
        provider_type = n.PROVIDER_NAMES.get(d.target.provider_type, d.target.provider_type)
        provider, response_model = d.provider, d.target.upstream_model
    else:
        provider_type = provider = n.GATEWAY
        response_model = ""
    err = tm.error_type if status >= 400 else None
    if status >= 400 and err is None:
        err = "rate_limit" if d is None and status == 429 else str(status)
    route = f.route or ""
    key = (tenant, route, requested, response_model, provider_type, provider, tm.operation)
    micro = 0
    if usage is not None and d is not None:
        micro = routing.micro_usd(usage.prompt_tokens, usage.completion_tokens, d.input_per_mtok, d.output_per_mtok)
    m = rec.meters
    if m is not None:
        m.requests.add((*key, status, err or ""))
        model = (tm.operation, provider_type, requested, response_model)
        m.duration.record((*model, tenant, provider, err), now - tm.t0)
        if usage is not None and d is not None:
            tokens = m.tokens
            tokens.add((*key, "input"), usage.prompt_tokens)
            tokens.add((*key, "output"), usage.completion_tokens)
            if usage.cached_tokens:
                tokens.add((*key, "cached_input"), usage.cached_tokens)
            if usage.cache_creation_tokens:
                tokens.add((*key, "cache_creation_input"), usage.cache_creation_tokens)
            if usage.reasoning_tokens:
                tokens.add((*key, "reasoning"), usage.reasoning_tokens)
            m.cost.add(key, micro)
            m.token_usage.record((*model, "input"), usage.prompt_tokens)
            m.token_usage.record((*model, "output"), usage.completion_tokens)
        if f.chain:
            first = f.chain[0]
            m.decisions.add((route, first.id, first.provider, tm.chosen_by))
            if d is not None and d.provider != first.provider:
                m.fallbacks.add((route, first.provider, d.provider))
        if f.sent_at:
            waited = f.ticket.waited_s if f.ticket is not None else 0.0
            m.overhead.record((tm.operation,), max(0.0, f.sent_at - tm.t0 - waited))
        if tm.first_at:
            m.first_chunk.record(model, tm.first_at - tm.t0)
        if d is None and status in (429, 503, 504):
            m.refused.add((tenant, head.priority if head is not None else "", err or "", status))
    span = tm.span
    if span is not None:
        if tm.route_span is not None:  # refused before the decision was complete
            tm.route_span.set_attribute("interlock.admission.outcome", err or str(status))
            tm.route_span.end()
            tm.route_span = None
        if span.is_recording():
            limited = bool(head is not None and head.tenant.limits)
            span.update_name(f"{tm.operation} {requested}" if requested else tm.operation)
            attrs2: dict[str, Any] = {
                n.OPERATION: tm.operation, n.PROVIDER: provider_type, n.REQUEST_MODEL: requested or None,
                n.RESPONSE_MODEL: response_model or None, n.TENANT: tenant, n.ROUTE: f.route,
                n.PROVIDER_NAME: provider, n.HTTP_STATUS: status, n.ERROR_TYPE: err,
                "interlock.request_id": f.request_id or None,
                "interlock.rate_limit.outcome": (("over_limit" if err == "rate_limit" else "within_limit")
                                                 if limited else "not_limited"),
                "interlock.attempt.deployment": d.id if d is not None else None,
            }
            if head is not None:
                attrs2[n.PRIORITY] = head.priority
            if f.req is not None:
                attrs2[n.REQUEST_STREAM] = f.req.stream
                if f.req.max_output_tokens is not None:
                    attrs2[n.REQUEST_MAX_TOKENS] = f.req.max_output_tokens
            if usage is not None and d is not None:
                attrs2.update({n.USAGE_INPUT: usage.prompt_tokens, n.USAGE_OUTPUT: usage.completion_tokens,
                               n.USAGE_CACHE_READ: usage.cached_tokens, n.USAGE_REASONING: usage.reasoning_tokens,
                               n.USAGE_CACHE_CREATION: usage.cache_creation_tokens, "interlock.cost.micro_usd": micro})
            if tm.first_at:
                attrs2["gen_ai.response.time_to_first_chunk"] = tm.first_at - tm.t0
            span.set_attributes({k: v for k, v in attrs2.items() if v is not None})
            if err is not None:
                span.set_status(err)
        span.end()


def access_fields(tm: Request, f: Flow) -> dict[str, str] | None:
    """What Envoy's access log reads from the `interlock` dynamic-metadata namespace (`access_*`
    keys: the rate limiter's keys are left alone) for the last response message; None when the
    access log is off (or telemetry not installed)."""
    if tm.rec is None or not tm.rec.access_log:
        return None
    d, usage = f.deployment, f.usage
    out = {"access_tenant": f.head.tenant.name if f.head is not None else "-"}
    # The provider and model are the log's from the answer's headers (`x-interlock-*`).
    if d is not None and usage is not None:
        out["access_input_tokens"] = str(usage.prompt_tokens)
        out["access_output_tokens"] = str(usage.completion_tokens)
        out["access_cached_tokens"] = str(usage.cached_tokens)  # capacity planning counts prefix-cache hits
        out["access_cost_micro_usd"] = str(routing.micro_usd(
            usage.prompt_tokens, usage.completion_tokens, d.input_per_mtok, d.output_per_mtok))
    return out


def _warn(rec: Recorder | None) -> None:
    if rec is not None and not rec.warned:
        rec.warned = True
        log.exception("telemetry failed (the request goes on; logged once per process)")


def access_metadata(tm: Request, f: Flow) -> dict[str, dict[str, str]] | None:
    """`access_fields` as a response's dynamic metadata, once the usage is known (None before:
    a stream's messages carry nothing until its usage arrives)."""
    if f.usage is None:
        return None
    fields = access_fields(tm, f)
    return {NAMESPACE: fields} if fields else None
