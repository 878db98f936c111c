"""Observability through the real Envoy (issue 13): a real Prometheus scrapes the pod's one
endpoint and evaluates every expression of the dashboard and the alert rules; token and cost
totals equal what the simulator served, exactly; an OTLP/HTTP receiver gets the ext_proc's and
Envoy's spans of each request, with the attributes of what was sent; Envoy's access log carries
the tenant, model, provider, status, tokens and cost of each request."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

import routing
from extproc.cmd.supervisor import wait_until
from tests.conftest import ROOT, free_port, free_port_run
from tests.integration.conftest import (
    PROVIDER_ENV,
    TENANT_KEY,
    Simulator,
    gateway_config,
    sha,
    start_process,
    wait_for_line,
)

pytestmark = pytest.mark.integration

CAPPED_KEY = "sk-it-capped"
PRICES = {"gpt-4o-mini": (0.15, 0.6), "claude-haiku-4-5": (1.0, 5.0), "unreachable-model": (0.1, 0.1)}
HELLO = [{"role": "user", "content": "Say hello to the gateway."}]
DASHBOARD = ROOT / "observability" / "dashboard.json"
ALERTS = ROOT / "observability" / "alerts.yaml"


@dataclass
class Otlp:
    """An OTLP/HTTP receiver (protobuf): what Envoy's tracer and the ext_proc export."""

    port: int
    spans: list[dict[str, Any]] = field(default_factory=list)
    metric_names: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def take(self, path: str, body: bytes, content_type: str) -> None:
        with self.lock:
            if path == "/v1/traces" and content_type.startswith("application/json"):  # the ext_proc's
                for rs in json.loads(body)["resourceSpans"]:
                    service = next(a["value"]["stringValue"] for a in rs["resource"]["attributes"]
                                   if a["key"] == "service.name")
                    for ss in rs["scopeSpans"]:
                        for s in ss["spans"]:
                            self.spans.append({"service": service, "name": s["name"], "trace_id": s["traceId"],
                                               "span_id": s["spanId"], "parent": s.get("parentSpanId", ""),
                                               "attributes": {a["key"]: _json_any(a["value"]) for a in s["attributes"]}})
            elif path == "/v1/traces":  # Envoy's (protobuf)
                req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                for rs in req.resource_spans:
                    service = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), "")
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            self.spans.append({"service": service, "name": s.name, "trace_id": s.trace_id.hex(),
                                               "span_id": s.span_id.hex(), "parent": s.parent_span_id.hex(),
                                               "attributes": {a.key: _any(a.value) for a in s.attributes}})
            elif path == "/v1/metrics":
                mreq = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
                for rm in mreq.resource_metrics:
                    for sm in rm.scope_metrics:
                        self.metric_names.update(m.name for m in sm.metrics)

    def of_trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]


def _json_any(v: dict[str, Any]) -> Any:
    ((kind, value),) = v.items()
    if kind == "arrayValue":
        return [_json_any(x) for x in value.get("values", [])]
    return int(value) if kind == "intValue" else value


def _any(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_any(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    """The request body, whole: Envoy's OTLP exporter sends it chunked."""
    if "chunked" not in h.headers.get("transfer-encoding", "").lower():
        return h.rfile.read(int(h.headers.get("content-length", 0)))
    out = b""
    while True:
        size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            h.rfile.readline()
            return out
        out += h.rfile.read(size)
        h.rfile.readline()


@pytest.fixture(scope="module")
def otlp() -> Iterator[Otlp]:
    receiver = Otlp(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            receiver.take(self.path, _read_body(self), self.headers.get("content-type", ""))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield receiver
    server.shutdown()
    server.server_close()


@dataclass
class Pod:
    url: str
    metrics_port: int
    log: Path


@pytest.fixture(scope="module")
def pod(simulator: Simulator, otlp: Otlp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    work = tmp_path_factory.mktemp("observability")
    port, admin, extproc = free_port(), free_port(), free_port_run(2)
    cfg = gateway_config(simulator.port, port, admin, extproc, workers=2)
    for m in cfg["models"]:
        if m["name"] in PRICES:
            m["price"] = {"input_per_mtok": PRICES[m["name"]][0], "output_per_mtok": PRICES[m["name"]][1]}
        m["quality"] = 0.99 if m["name"] == "unreachable-model" else 0.5
    cfg["routes"] = [{"name": "auto", "candidates": ["unreachable-model", "gpt-4o-mini"],
                      "policy": {"kind": "best_quality"}}]
    cfg["tenants"].append({"name": "capped", "api_key_sha256": [sha(CAPPED_KEY)], "models": ["*"],
                           "priority": "interactive", "limits": [{"unit": "requests", "per": "hour", "amount": 1}]})
    path = work / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**PROVIDER_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url, "OTEL_METRIC_EXPORT_INTERVAL": "1000"}
    p = start_process(["run", "-c", str(path), "--workdir", str(work / "rendered"), "--drain-timeout", "1"],
                      work / "gateway.log", env=env)
    try:
        wait_for_line(p, "ready: ", 90)
        yield Pod(f"http://127.0.0.1:{port}", cfg["metrics"]["port"], p.log)
    finally:
        p.stop()


@dataclass
class Sent:
    """What the client saw: per request its trace id, request id, model, usage and status."""

    requests: list[dict[str, Any]] = field(default_factory=list)

    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["status"] == 200]


def _traceparent(i: int) -> tuple[str, str]:
    trace_id = f"{0x4a11ce00 + i:032x}"
    return trace_id, f"00-{trace_id}-{0xb0b0 + i:016x}-01"


def _sse_usage(text: str) -> dict[str, int]:
    usage: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
            event = json.loads(line[5:])
            u = event.get("usage") or (event.get("message") or {}).get("usage")
            if u:
                usage.update({k: v for k, v in u.items() if isinstance(v, int)})
    return usage


@pytest.fixture(scope="module")
def sent(pod: Pod, simulator: Simulator) -> Iterator[Sent]:
    # Paced tokens: a stream arrives in several messages (time per output chunk has data).
    simulator.behave("gpt-4o-mini-2024-07-18", ttft_ms=20, tokens_per_s=200)
    try:
        yield _send(pod)
    finally:
        simulator.reset()


def _send(pod: Pod) -> Sent:
    out = Sent()
    auth = {"authorization": f"Bearer {TENANT_KEY}"}
    calls: list[tuple[str, str, dict[str, Any], dict[str, str]]] = []
    for _ in range(3):
        calls.append(("openai", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO}, auth))
    for _ in range(2):
        calls.append(("openai-stream", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO, "stream": True,
                                                               "stream_options": {"include_usage": True}}, auth))
    for _ in range(2):
        calls.append(("anthropic", "/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": HELLO},
                      {"x-api-key": TENANT_KEY, "anthropic-version": "2023-06-01"}))
    for _ in range(2):
        calls.append(("openai", "/v1/chat/completions", {"model": "auto", "messages": HELLO}, auth))
    calls.append(("openai", "/v1/chat/completions", {"model": "no-such-model-" + "x" * 20, "messages": HELLO}, auth))
    for _ in range(2):
        calls.append(("openai", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO},
                      {"authorization": f"Bearer {CAPPED_KEY}"}))
    with httpx.Client(timeout=30) as c:
        for i, (kind, path, body, headers) in enumerate(calls):
            trace_id, tp = _traceparent(i)
            r = c.post(pod.url + path, json=body, headers={**headers, "traceparent": tp})
            usage: dict[str, int] = {}
            if r.status_code == 200:
                usage = _sse_usage(r.text) if kind == "openai-stream" else r.json()["usage"]
            prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
            completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens",
                                                                    usage.get("cache_read_input_tokens", 0))
            model = r.headers.get("x-interlock-model", "")
            pin, pout = PRICES.get(model, (0.0, 0.0))
            out.requests.append({"trace_id": trace_id, "traceparent": tp, "request_id": r.headers.get("x-request-id"), "kind": kind,
                                 "requested": body["model"], "model": model, "status": r.status_code,
                                 "provider": r.headers.get("x-interlock-provider"), "prompt": prompt, "cached": cached,
                                 "priority": r.headers.get("x-interlock-priority"),
                                 "completion": completion, "tenant": "capped" if CAPPED_KEY in str(headers) else "it",
                                 "micro_usd": routing.micro_usd(prompt, completion, pin, pout) if r.status_code == 200 else 0})
    statuses = [r["status"] for r in out.requests]
    assert statuses.count(200) == 10 and 404 in statuses and statuses[-1] == 429, statuses
    return out


# -- Prometheus --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(pod: Pod, sent: Sent, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("prometheus")
    rules = yaml.safe_load(ALERTS.read_text())
    (work / "rules.yaml").write_text(yaml.safe_dump({"groups": rules["spec"]["groups"]}))
    (work / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(work / "rules.yaml")],
        "scrape_configs": [{"job_name": "interlock", "static_configs": [
            {"targets": [f"127.0.0.1:{pod.metrics_port}"]}]}]}))
    port = free_port()
    proc = subprocess.Popen(["prometheus", f"--config.file={work / 'prometheus.yml'}",
                             f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                             "--log.level=warn"], stdout=(work / "prom.log").open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: _ready(url), 30, 0.2), (work / "prom.log").read_text()
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/-/ready", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def query(url: str, expr: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v1/query?query={urllib.parse.quote(expr)}", timeout=5) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def scalar(url: str, expr: str) -> float | None:
    result = query(url, expr)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_totals_equal_what_the_simulator_served(prometheus: str, sent: Sent) -> None:
    ok = sent.ok()
    want_in, want_out = sum(r["prompt"] for r in ok), sum(r["completion"] for r in ok)
    want_usd = sum(r["micro_usd"] for r in ok)
    assert want_in > 0 and want_out > 0 and want_usd > 0
    assert wait_until(lambda: scalar(prometheus, "sum(interlock_requests_total)") == len(sent.requests), 30, 0.5), \
        query(prometheus, "interlock_requests_total")
    assert scalar(prometheus, 'sum(interlock_tokens_total{interlock_token_type="input"})') == want_in
    assert scalar(prometheus, 'sum(interlock_tokens_total{interlock_token_type="output"})') == want_out
    assert scalar(prometheus, "sum(interlock_cost_micro_usd_total)") == want_usd
    assert scalar(prometheus, 'sum(gen_ai_client_token_usage_sum{gen_ai_token_type="input"})') == want_in
    # per tenant and model, from the config's names only: the unknown model is "other"
    by_model = {r["metric"]["gen_ai_request_model"]: float(r["value"][1])
                for r in query(prometheus, "sum by (gen_ai_request_model) (interlock_requests_total)")}
    assert by_model == {"gpt-4o-mini": 7, "claude-haiku-4-5": 2, "auto": 2, "other": 1}
    haiku = [r for r in ok if r["model"] == "claude-haiku-4-5"]
    assert scalar(prometheus, 'sum(interlock_cost_micro_usd_total{gen_ai_request_model="claude-haiku-4-5",'
                              'gen_ai_provider_name="anthropic"})') == sum(r["micro_usd"] for r in haiku)
    # every process of the pod answered the one scrape, and Envoy's stats are on it
    up = {r["metric"]["source"]: r["value"][1] for r in query(prometheus, "interlock_scrape_source_up")}
    assert up == {"worker-0": "1", "worker-1": "1", "ratelimit": "1", "envoy": "1"}
    assert scalar(prometheus, 'sum(interlock_ratelimit_over_limit_total)') == 1
    assert scalar(prometheus, 'sum(interlock_refused_total{interlock_reason="rate_limit",interlock_tenant="capped",'
                              'interlock_priority="interactive"})') == 1
    assert scalar(prometheus, 'sum(interlock_routing_fallbacks_total{interlock_fallback_from="nowhere",'
                              'interlock_provider="openai"})') >= 1  # type: ignore[operator]


def _dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            expr = t["expr"].replace("$__rate_interval", "1m").replace("$__range", "10m")
            out.append((panel["title"], re.sub(r"\$(tenant|model|provider)", ".*", expr)))
    return out


def test_every_dashboard_expression_returns_data(prometheus: str, sent: Sent) -> None:
    assert wait_until(lambda: scalar(prometheus, "sum(interlock_requests_total)") == len(sent.requests), 30, 0.5)
    time.sleep(2.5)  # a few more scrapes, so rates have two samples
    empty = [(title, expr) for title, expr in _dashboard_exprs() if not query(prometheus, expr)]
    assert not empty, empty


def test_alert_rules_load_and_evaluate(prometheus: str, sent: Sent) -> None:
    with urllib.request.urlopen(prometheus + "/api/v1/rules", timeout=5) as r:
        groups = json.loads(r.read())["data"]["groups"]
    rules = [rule for g in groups for rule in g["rules"]]
    names = {rule["name"] for rule in rules}
    assert {"InterlockHighErrorRatio", "InterlockProviderEjected", "InterlockShedsInteractiveTraffic",
            "InterlockWorkersRestarting", "InterlockConfigReloadFailed"} <= names
    assert wait_until(lambda: all(_rule_health(prometheus).values()), 15, 0.5), _rule_health(prometheus)


def _rule_health(url: str) -> dict[str, bool]:
    with urllib.request.urlopen(url + "/api/v1/rules", timeout=5) as r:
        groups = json.loads(r.read())["data"]["groups"]
    return {rule["name"]: rule.get("health") == "ok" for g in groups for rule in g["rules"]}


# -- traces and the access log ----------------------------------------------------------------


def test_spans_match_the_requests_sent(otlp: Otlp, sent: Sent, simulator: Simulator) -> None:
    ok = sent.ok()

    def complete() -> bool:
        return all(any(s["service"] == "interlock" and s["name"].startswith("chat") for s in otlp.of_trace(r["trace_id"]))
                   and any(s["service"] == "interlock-envoy" for s in otlp.of_trace(r["trace_id"])) for r in ok)

    assert wait_until(complete, 20, 0.25), [(r["trace_id"][-2:], sorted((s["service"], s["name"]) for s in otlp.of_trace(r["trace_id"]))) for r in ok]
    for r in sent.requests:
        spans = otlp.of_trace(r["trace_id"])
        mine = [s for s in spans if s["service"] == "interlock" and s["name"] != "interlock.route"]
        if r["status"] != 200 and not mine:
            continue
        assert len(mine) == 1, spans
        a = mine[0]["attributes"]
        assert a["gen_ai.operation.name"] == "chat"
        assert a["interlock.tenant"] == r["tenant"]
        assert a["http.response.status_code"] == r["status"]
        assert a["gen_ai.request.model"] == (r["requested"] if not r["requested"].startswith("no-such") else "other")
        if r["status"] == 200:
            assert a["interlock.provider"] == r["provider"]
            assert a["gen_ai.usage.input_tokens"] == r["prompt"]
            assert a["gen_ai.usage.output_tokens"] == r["completion"]
            assert a["interlock.cost.micro_usd"] == r["micro_usd"]
            assert a["interlock.request_id"] == r["request_id"]
            route = [s for s in spans if s["name"] == "interlock.route"]
            assert len(route) == 1 and route[0]["parent"] == mine[0]["span_id"]
            assert route[0]["attributes"]["interlock.routing.chain"]
            envoy = {s["name"]: s for s in spans if s["service"] == "interlock-envoy"}
            ingress = envoy["ingress"]
            client_span = r["traceparent"].split("-")[2]
            assert ingress["parent"] == client_span  # Envoy continues the client's trace
            attempts = [s for name, s in envoy.items() if name.startswith("router ") and name.endswith(" egress")]
            assert attempts and all(a["parent"] == ingress["span_id"] for a in attempts)  # one per upstream attempt
            call = envoy["async envoy.service.ext_proc.v3.ExternalProcessor.Process egress"]
            # the router stage's span: under Envoy's span of its call to the ext_proc
            assert mine[0]["parent"] == call["span_id"]
            if r["requested"] == "auto":  # a routed decision: why it went where it went
                assert route[0]["attributes"]["interlock.routing.scores"]
                assert route[0]["attributes"]["interlock.routing.chosen_by"]
        else:
            assert a["error.type"]
    # the route's first answer came from its second candidate: two upstream attempts, each a span
    attempts = [sum(s["name"].startswith("router ") for s in otlp.of_trace(r["trace_id"]))
                for r in ok if r["requested"] == "auto"]
    assert max(attempts) >= 2, attempts
    # the provider was sent the same trace
    seen = {re.sub(r"^00-([0-9a-f]{32})-.*$", r"\1", q["headers"].get("traceparent", ""))
            for q in simulator.requests()}
    assert {r["trace_id"] for r in ok} <= seen
    pushed = {"gen_ai.client.operation.duration", "gen_ai.client.token.usage", "interlock.cost.micro_usd",
              "interlock.tokens", "interlock.requests"}
    assert wait_until(lambda: pushed <= otlp.metric_names, 10, 0.25), sorted(otlp.metric_names)


def test_access_log_lines_carry_tenant_model_provider_tokens_and_cost(pod: Pod, sent: Sent) -> None:
    def lines() -> dict[str, dict[str, Any]]:
        out = {}
        for line in pod.log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"request_id"' in line:
                entry = json.loads(line)
                out[entry["request_id"]] = entry
        return out

    assert wait_until(lambda: all(r["request_id"] in lines() for r in sent.requests), 10, 0.2)
    logged = lines()
    for r in sent.requests:
        e = logged[r["request_id"]]
        assert e["status"] == r["status"]
        if r["status"] == 200:
            assert (e["tenant"], e["model"], e["provider"]) == (r["tenant"], r["model"], r["provider"])
            assert e["route"] == ("auto" if r["requested"] == "auto" else None)
            assert e["priority"] == r["priority"] and e["priority"] in ("interactive", "default", "batch")
            assert (int(e["input_tokens"]), int(e["output_tokens"])) == (r["prompt"], r["completion"])
            assert int(e["cached_tokens"]) == r["cached"]
            assert int(e["cost_micro_usd"]) == r["micro_usd"]
        assert TENANT_KEY not in json.dumps(e) and CAPPED_KEY not in json.dumps(e)
