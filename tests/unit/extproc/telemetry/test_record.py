"""One request's telemetry as the router stage records it: exact counters, histograms, the spans'
attributes, bounded label values, the access-log fields; and nothing at all when not installed."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

import routing
from extproc import errors, telemetry
from extproc.stages.flow import Flow
from extproc.telemetry import names as n
from extproc.telemetry import record
from extproc.telemetry.install import Installed, install_worker
from extproc.telemetry.settings import TelemetrySettings
from extproc.telemetry.tracing import Span
from extproc.translate.base import Usage
from tests.unit.extproc.stages.support import chat, dep, runtime, tenant

HEADERS = {":path": "/v1/chat/completions", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


@pytest.fixture
def installed() -> Iterator[tuple[Installed, list[Span]]]:
    spans: list[Span] = []
    inst = install_worker(TelemetrySettings(), span_sink=spans.extend)
    yield inst, spans
    inst.shutdown()


USAGE = Usage(1200, 345, cached_tokens=200, reasoning_tokens=45)


def flow(model: str = "gpt", usage: Usage | None = USAGE, **kw: Any) -> Flow:
    d = dep(model)
    f = Flow(request_id="req-1", model=model, req=chat(model), chain=[d], deployment=d, usage=usage, sent_at=10.0005)
    f.head = SimpleNamespace(tenant=tenant(), priority="interactive")  # type: ignore[assignment]
    for k, v in kw.items():
        setattr(f, k, v)
    return f


def spans_of(inst: Installed, exported: list[Span]) -> dict[str, Span]:
    assert inst.spans is not None
    inst.spans.flush()
    return {s.name: s for s in exported}


def test_not_installed_records_nothing_and_costs_nothing() -> None:
    tm = telemetry.begin(HEADERS, 10.0)
    assert tm is telemetry.NOOP
    f = flow()
    telemetry.decided(tm, f)
    telemetry.chunk(tm, 10.1)
    telemetry.finish(tm, f, runtime(), 200, 10.2)
    assert telemetry.access_fields(tm, f) is None and telemetry.access_metadata(tm, f) is None


def test_an_answered_request_counts_exact_tokens_and_micro_dollars(installed: tuple[Installed, Any]) -> None:
    inst, _ = installed
    m = inst.meters
    assert m is not None
    f = flow()
    tm = telemetry.begin(HEADERS, 10.0)
    telemetry.decided(tm, f)
    telemetry.finish(tm, f, runtime(), 200, 10.25)
    telemetry.finish(tm, f, runtime(), 200, 10.5)  # idempotent
    d = f.deployment
    assert d is not None
    want_usd = routing.micro_usd(1200, 345, d.input_per_mtok, d.output_per_mtok)
    assert want_usd > 0
    assert m.requests.total(**{n.TENANT: "main", n.REQUEST_MODEL: "gpt", n.HTTP_STATUS: 200}) == 1
    assert m.tokens.total(**{n.ITOKEN_TYPE: "input"}) == 1200
    assert m.tokens.total(**{n.ITOKEN_TYPE: "output"}) == 345
    assert m.tokens.total(**{n.ITOKEN_TYPE: "cached_input"}) == 200
    assert m.tokens.total(**{n.ITOKEN_TYPE: "reasoning"}) == 45
    assert m.cost.total(**{n.PROVIDER: "openai", n.RESPONSE_MODEL: "gpt-4o-mini-2024-07-18"}) == want_usd
    ((key, (counts, total, count, lo, hi)),) = m.duration.points.items()
    assert key == ("chat", "openai", "gpt", "gpt-4o-mini-2024-07-18", "main", "openai", None)
    assert (count, total) == (1, 0.25)
    assert counts[m.duration.bounds.index(0.32)] == 1  # 0.25 s falls in (0.16, 0.32]
    assert m.overhead.points[("chat",)][1] == pytest.approx(0.0005)
    text = inst.text()
    assert "interlock_cost_micro_usd_total{" in text and f"}} {float(want_usd)}" in text
    assert 'gen_ai_client_token_usage_sum{gen_ai_operation_name="chat",gen_ai_provider_name="openai",' in text


def test_with_the_stage_spans_off_a_traced_request_is_counted_but_no_span_recorded() -> None:
    """INTERLOCK_SPANS=off: Envoy's tracer keeps its spans; the router stage records none."""
    spans: list[Span] = []
    inst = install_worker(TelemetrySettings(traces_endpoint="http://127.0.0.1:9/v1/traces", stage_spans=False),
                          span_sink=spans.extend)
    try:
        assert inst.spans is None and inst.meters is not None
        f = flow()
        tm = telemetry.begin(HEADERS, 10.0)  # a sampled traceparent
        telemetry.decided(tm, f)
        telemetry.finish(tm, f, runtime(), 200, 10.25)
        assert inst.meters.requests.total(**{n.TENANT: "main", n.REQUEST_MODEL: "gpt", n.HTTP_STATUS: 200}) == 1
        assert spans == []
    finally:
        inst.shutdown()


def test_spans_carry_the_request_the_decision_usage_and_cost(installed: tuple[Installed, list[Span]]) -> None:
    inst, exporter = installed
    f = flow(route="auto")
    tm = telemetry.begin(HEADERS, 10.0)
    telemetry.decided(tm, f)
    telemetry.finish(tm, f, runtime(), 200, 10.25)
    spans = spans_of(inst, exporter)
    root, route = spans["chat gpt"], spans["interlock.route"]
    assert root.trace_id == route.trace_id == 0x0af7651916cd43dd8448eb211c80319c
    assert root.parent_id == 0xb7ad6b7169203331
    assert route.parent_id == root.span_id
    a = root.attributes
    assert (a[n.OPERATION], a[n.PROVIDER], a[n.REQUEST_MODEL], a[n.TENANT], a[n.PRIORITY]) == (
        "chat", "openai", "gpt", "main", "interactive")
    assert (a[n.USAGE_INPUT], a[n.USAGE_OUTPUT], a[n.USAGE_CACHE_READ], a[n.USAGE_REASONING]) == (1200, 345, 200, 45)
    assert a["interlock.cost.micro_usd"] == routing.micro_usd(1200, 345, 0.15, 0.6)
    assert a["interlock.rate_limit.outcome"] == "not_limited"
    assert route.attributes["interlock.routing.chain"] == [dep("gpt").id]
    assert route.attributes[n.ROUTE] == "auto"


def test_explain_puts_scores_and_drops_on_the_span(installed: tuple[Installed, list[Span]]) -> None:
    inst, exporter = installed
    scores = routing.Scores(cost=1.0, latency=0.5, quality=0.9, total=0.8, cost_usd=0.000123, latency_s=1.2, ttft_s=0.3)
    ex = SimpleNamespace(chosen_by="objective", scores={"a@x": scores}, dropped={
        "b@y": SimpleNamespace(filter="health", reason="cooling down")}, constraint_failures={}, affinity_pool=())
    tm = telemetry.begin(HEADERS, 10.0)
    telemetry.decided(tm, flow(), ex)
    telemetry.finish(tm, flow(), runtime(), 200, 10.2)
    a = spans_of(inst, exporter)["interlock.route"].attributes
    assert a[n.CHOSEN_BY] == "objective"
    assert inst.meters is not None and inst.meters.decisions.total(**{n.CHOSEN_BY: "objective"}) == 1
    assert a["interlock.routing.candidates"] == ["a@x"]
    assert a["interlock.routing.scores"][0].startswith("a@x: total=0.800 cost=1.000")
    assert a["interlock.routing.dropped"] == ["b@y: health: cooling down"]


def test_unknown_models_are_other_and_gateway_refusals_are_counted_by_reason(installed: tuple[Installed, Any]) -> None:
    inst, _ = installed
    m = inst.meters
    assert m is not None
    f = flow(model="gpt", usage=None, deployment=None)
    f.model = "x" * 300  # free client input never becomes a label value
    tm = telemetry.begin(HEADERS, 10.0)
    telemetry.failed(tm, errors.NotFound("no such model"))
    telemetry.finish(tm, f, runtime(), 404, 10.01)
    assert m.requests.total(**{n.REQUEST_MODEL: "other", n.ERROR_TYPE: "not_found", n.PROVIDER_NAME: "interlock"}) == 1
    f = flow(usage=None, deployment=None, upstream_status=429)
    tm = telemetry.begin(HEADERS, 10.0)
    telemetry.finish(tm, f, runtime(), 429, 10.01)  # Envoy's rate-limit filter refused it
    tm = telemetry.begin(HEADERS, 10.0)
    telemetry.failed(tm, errors.RateLimited("shed", 1))
    telemetry.finish(tm, flow(usage=None, deployment=None), runtime(), 429, 10.01)
    assert m.refused.total(**{n.REASON: "rate_limit", n.PRIORITY: "interactive"}) == 1
    assert m.refused.total(**{n.REASON: "rate_limited"}) == 1
    assert m.tokens.values == {} and m.cost.values == {}
    labels = {v for key in m.requests.values for v in key}
    assert not any(isinstance(v, str) and len(v) > 64 for v in labels)


def test_a_fallback_is_counted_from_the_first_choice(installed: tuple[Installed, Any]) -> None:
    inst, _ = installed
    m = inst.meters
    assert m is not None
    first, second = dep("gpt"), dep("claude")
    f = flow(chain=[first, second], deployment=second, route="auto")
    tm = telemetry.begin(HEADERS, 10.0)
    telemetry.finish(tm, f, runtime(), 200, 10.3)
    assert m.fallbacks.values == {("auto", "openai", "anthropic"): 1}
    assert m.decisions.total(**{n.DEPLOYMENT: first.id}) == 1


def test_streams_record_time_to_first_chunk_and_per_chunk(installed: tuple[Installed, Any]) -> None:
    inst, _ = installed
    m = inst.meters
    assert m is not None
    tm = telemetry.begin(HEADERS, 10.0)
    for t in (10.2, 10.25, 10.3):
        telemetry.chunk(tm, t)
    telemetry.finish(tm, flow(), runtime(), 200, 10.3)
    ((_, (_, first_sum, first_count, _, _)),) = m.first_chunk.points.items()
    assert (first_count, first_sum) == (1, pytest.approx(0.2))
    assert m.per_chunk.points[("chat",)][2] == 2


def test_access_fields_for_envoys_log(installed: tuple[Installed, Any]) -> None:
    f = flow()
    tm = telemetry.begin(HEADERS, 10.0)
    assert telemetry.access_fields(tm, f) == {
        "access_tenant": "main", "access_input_tokens": "1200",
        "access_output_tokens": "345", "access_cached_tokens": "200",
        "access_cost_micro_usd": str(routing.micro_usd(1200, 345, 0.15, 0.6))}
    assert telemetry.access_metadata(tm, flow(usage=None)) is None  # a stream before its usage


def test_every_access_field_the_worker_writes_is_in_envoys_log(installed: tuple[Installed, Any]) -> None:
    """Each key costs the worker and Envoy work on every request (built, sent, merged): none is
    written that the log does not print (failed before: the provider and model were written,
    while the log prints them from the answer's headers)."""
    from extproc.envoyconf.observability import ACCESS_LOG_FORMAT

    tm = telemetry.begin(HEADERS, 10.0)
    printed = "".join(ACCESS_LOG_FORMAT.values())
    for key in telemetry.access_fields(tm, flow()) or {}:
        assert f":{key})%" in printed, key


def test_a_failure_inside_telemetry_never_reaches_the_request(installed: tuple[Installed, Any],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    tm = telemetry.begin(HEADERS, 10.0)
    broken = flow()
    broken.chain = [object()]  # type: ignore[list-item]
    telemetry.finish(tm, broken, runtime(), 200, 10.1)
    assert "telemetry failed" in caplog.text
    assert record.recorder() is not None and record.recorder().warned  # type: ignore[union-attr]


def test_envoys_call_traceparent_wins_over_the_clients(installed: tuple[Installed, list[Span]]) -> None:
    inst, exported = installed
    envoy = "00-0af7651916cd43dd8448eb211c80319c-00000000000000aa-01"
    tm = telemetry.begin(HEADERS, 10.0, envoy)
    telemetry.finish(tm, flow(), runtime(), 200, 10.1)
    assert spans_of(inst, exported)["chat gpt"].parent_id == 0xaa
