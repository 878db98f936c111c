"""Envoy's part: the OpenTelemetry tracer (only with an endpoint), its collector cluster and
batching, and the JSON access log — rendered into the gateway's bootstrap and accepted by Envoy."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from extproc.cmd.run import envoy_binary
from extproc.config import load_file
from extproc.envoyconf import observability
from extproc.envoyconf.render import render
from extproc.telemetry.settings import TelemetrySettings
from routing import capacity
from tests.conftest import ROOT

DEMO = ROOT / "extproc" / "cmd" / "demo" / "demo.yaml"


def hcm(bootstrap: dict) -> dict:  # type: ignore[type-arg]
    return bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def bootstrap() -> dict:  # type: ignore[type-arg]
    boot = render(load_file(str(DEMO)), "/tmp/x", static=True)["envoy.yaml"]
    h = hcm(boot)
    h.pop("tracing", None)
    h.pop("access_log", None)
    boot["static_resources"]["clusters"] = [c for c in boot["static_resources"]["clusters"]
                                            if c["name"] != observability.COLLECTOR_CLUSTER]
    return boot


def test_defaults_log_every_request_and_trace_nothing() -> None:
    boot = observability.apply(bootstrap(), TelemetrySettings())
    assert "tracing" not in hcm(boot)
    fmt = hcm(boot)["access_log"][0]["typed_config"]["log_format"]["json_format"]
    for key in ("request_id", "tenant", "model", "provider", "status", "input_tokens", "output_tokens",
                "cached_tokens", "cost_micro_usd", "trace_id"):
        assert key in fmt
    assert fmt["tenant"] == "%DYNAMIC_METADATA(interlock:access_tenant)%"
    assert fmt["path"] == "%REQ_WITHOUT_QUERY(:PATH)%"  # a key in a query string is never logged
    assert all(c["name"] != observability.COLLECTOR_CLUSTER for c in boot["static_resources"]["clusters"])


def test_off_adds_nothing() -> None:
    assert observability.apply(bootstrap(), TelemetrySettings(metrics=False, access_log=False)) == bootstrap()


def test_an_endpoint_turns_envoys_tracer_on() -> None:
    settings = TelemetrySettings(traces_endpoint="https://otel.example:4318/v1/traces", sample_ratio=0.25)
    boot = observability.apply(bootstrap(), settings)
    tracing = hcm(boot)["tracing"]
    assert tracing["random_sampling"] == {"value": 25.0}
    assert tracing["spawn_upstream_span"] is True
    cfg = tracing["provider"]["typed_config"]
    assert cfg["http_service"]["http_uri"] == {"uri": "https://otel.example:4318/v1/traces",
                                               "cluster": observability.COLLECTOR_CLUSTER, "timeout": "5s"}
    (cluster,) = [c for c in boot["static_resources"]["clusters"] if c["name"] == observability.COLLECTOR_CLUSTER]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert endpoint == {"address": "otel.example", "port_value": 4318}
    assert cluster["transport_socket"]["typed_config"]["sni"] == "otel.example"
    layer = next(x["static_layer"] for x in boot["layered_runtime"]["layers"] if "static_layer" in x)
    assert layer["tracing.opentelemetry.min_flush_spans"] == 512


def test_envoy_accepts_it(tmp_path: Path) -> None:
    boot = observability.apply(bootstrap(), TelemetrySettings(traces_endpoint="http://127.0.0.1:4318/v1/traces"))
    (tmp_path / "envoy.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(boot))))
    r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(tmp_path / "envoy.yaml"),
                        "--disable-hot-restart", "--log-level", "error"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_access_log_is_a_traffic_record_the_capacity_planner_reads() -> None:
    # A line as Envoy writes it (metadata values are strings): the planner takes its time, tokens,
    # prefix-cache hits and class, so a plan from the gateway's own log counts the cache hits.
    line = dict.fromkeys(observability.ACCESS_LOG_FORMAT)
    line.update(time="2026-12-05T09:00:01.500Z", input_tokens="1800", output_tokens="200", cached_tokens="1024",
                priority="batch", model="llama")
    assert set(line) == set(observability.ACCESS_LOG_FORMAT)  # no field the format lacks
    (r,) = capacity.parse_traffic([json.dumps(line)]).records
    assert (r.prompt_tokens, r.output_tokens, r.cached_tokens, r.priority, r.model) == (1800, 200, 1024, "batch",
                                                                                          "llama")
