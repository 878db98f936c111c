"""What the renderer writes for stalls on fallback orders, per-provider admission control, the
health endpoints and the drain (issue 11, points 5, 9, 14, 15). Envoy itself accepts all of it:
`test_render.py` validates every fixture with `envoy --mode validate`; the integration tests
`test_stalls.py` and `test_health_drain.py` show what it does."""

from __future__ import annotations

import re
from typing import Any

import pytest

from extproc import metadata
from extproc.config import load_file, load_text
from extproc.envoyconf.fallback import attempt_idle_timeout
from extproc.envoyconf.providers import ADMISSION_ENABLED_KEY, ADMISSION_THRESHOLD_KEY
from extproc.envoyconf.render import LIVE_PATH, READY_PATHS, render
from tests.conftest import FIXTURES

ROUTED = """
providers:
  - {name: quick, type: openai, endpoint: "http://127.0.0.1:1", api_key_env: K,
     cluster: {idle_timeout: 8s, per_try_timeout: 2s}}
  - {name: patient, type: anthropic, endpoint: "http://127.0.0.1:2", api_key_env: K}
  - {name: middling, type: openai, endpoint: "http://127.0.0.1:3", api_key_env: K, cluster: {idle_timeout: 30s}}
models:
  - {name: a, provider: quick}
  - {name: b, provider: patient, max_output_tokens: 1024}
  - {name: c, provider: middling}
routes:
  - {name: auto, candidates: [a, b, c], policy: {kind: cheapest, max_attempts: 3}}
tenants:
  - {name: t, api_key_sha256: ["%s"]}
""" % ("0" * 64)


def _boot(cfg: Any) -> dict[str, Any]:
    return render(cfg, "/etc/interlock/envoy", static=True)["envoy.yaml"]


def _hcm(boot: dict[str, Any]) -> dict[str, Any]:
    return boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def _routes(boot: dict[str, Any]) -> list[dict[str, Any]]:
    return list(_hcm(boot)["route_config"]["virtual_hosts"][0]["routes"])


def _clusters(boot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in boot["static_resources"]["clusters"]}


def _seconds(duration: str) -> float:
    return float(duration.rstrip("s"))


def test_each_attempt_of_a_fallback_order_is_cut_at_the_shortest_idle_timeout_of_its_providers() -> None:
    """Before, the order's route took the largest (300 s), so a provider with 8 s stalled a
    client for 300 s. Envoy 1.40 has one per-try idle timeout per route: the shortest."""
    cfg = load_text(ROUTED)
    by_name = {p.name: p for p in cfg.providers}
    fallback = {r["route"]["cluster"]: r["route"] for r in _routes(_boot(cfg))
                if r.get("route", {}).get("cluster", "").startswith(metadata.AGGREGATE_PREFIX)}
    # One order per provider (it first, then the others in route order) and its prefix of two.
    assert sorted(fallback) == sorted(metadata.aggregate_name(o) for o in [
        ("quick", "patient", "middling"), ("quick", "patient"), ("patient", "quick", "middling"),
        ("patient", "quick"), ("middling", "quick", "patient"), ("middling", "quick")])
    for name, route in fallback.items():
        order = tuple(name.removeprefix(metadata.AGGREGATE_PREFIX).split("~"))
        shortest = min(by_name[p].cluster.idle_timeout for p in order)
        assert attempt_idle_timeout(order, by_name) == shortest
        assert _seconds(route["retry_policy"]["per_try_idle_timeout"]) == shortest, name
        # The stream's own idle timeout leaves every attempt its bound (it sees no bytes while
        # attempts fail over), so it never cuts a fallback short.
        assert _seconds(route["idle_timeout"]) > len(order) * shortest, name
        # The primary's first-byte timeout stays.
        assert ("per_try_timeout" in route["retry_policy"]) == (order[0] == "quick"), name
    assert _seconds(fallback["fallback~patient~quick"]["retry_policy"]["per_try_idle_timeout"]) == 8
    assert _seconds(fallback["fallback~patient~quick~middling"]["retry_policy"]["per_try_idle_timeout"]) == 8
    # Without the 8 s provider: the 30 s one bounds the 300 s one.
    no_quick = {p.name: p for p in cfg.providers if p.name != "quick"}
    assert attempt_idle_timeout(("patient", "middling"), no_quick) == 30


def test_admission_control_is_per_provider_not_on_the_listener() -> None:
    cfg = load_file(str(FIXTURES / "config" / "valid" / "demo.yaml"))
    boot = _boot(cfg)
    assert not [f for f in _hcm(boot)["http_filters"] if "admission_control" in f["name"]]
    clusters = _clusters(boot)
    for p in cfg.providers:
        opts = clusters[p.cluster_name]["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        names = [f["name"] for f in opts["http_filters"]]
        # The cluster's chain replaces the router's: it keeps stripping Interlock's own headers.
        assert names == ["envoy.filters.http.admission_control", "envoy.filters.http.header_mutation",
                         "envoy.filters.http.upstream_codec"], p.name
        ac = opts["http_filters"][0]["typed_config"]
        assert ac["enabled"]["runtime_key"] == ADMISSION_ENABLED_KEY
        assert ac["sr_threshold"]["runtime_key"] == ADMISSION_THRESHOLD_KEY
        removed = {m["remove"] for m in opts["http_filters"][1]["typed_config"]["mutations"]["request_mutations"]}
        assert metadata.CLUSTER_HEADER in removed and metadata.TRANSLATED_FOR_HEADER in removed
    # Fallback orders keep the router's chain (the upstream stage translates retries).
    for name, c in clusters.items():
        if name.startswith(metadata.AGGREGATE_PREFIX):
            assert "typed_extension_protocol_options" not in c
    names = [f["name"] for f in _hcm(boot)["http_filters"]]
    router = _hcm(boot)["http_filters"][names.index("envoy.filters.http.router")]["typed_config"]
    assert router["upstream_http_filters"][0]["name"] == "interlock.upstream_stage"


@pytest.mark.parametrize("threshold,enabled", [(0.5, True), (0.0, False)])
def test_the_threshold_reaches_every_provider_through_the_runtime(threshold: float, enabled: bool) -> None:
    """Config reload re-renders the provider clusters without the rest of the config, so the
    switch and threshold live in the bootstrap's runtime layer (both are restart-only)."""
    cfg = load_text(ROUTED + f"admission: {{success_rate_threshold: {threshold}}}\n")
    layers = _boot(cfg)["layered_runtime"]["layers"]
    assert layers[0]["static_layer"] == {ADMISSION_ENABLED_KEY: enabled, ADMISSION_THRESHOLD_KEY: threshold * 100}
    assert "admin_layer" in layers[-1]


def test_the_listener_is_inbound_so_a_drain_reaches_it() -> None:
    boot = _boot(load_file(str(FIXTURES / "config" / "valid" / "demo.yaml")))
    assert boot["static_resources"]["listeners"][0]["traffic_direction"] == "INBOUND"


def test_readiness_is_answered_before_the_ext_proc_and_needs_a_worker_and_the_rate_limit_process() -> None:
    boot = _boot(load_file(str(FIXTURES / "config" / "valid" / "full.yaml")))
    first = _hcm(boot)["http_filters"][0]
    assert first["name"] == "envoy.filters.http.health_check"
    hc = first["typed_config"]
    assert hc["pass_through_mode"] is False
    regex = hc["headers"][0]["string_match"]["safe_regex"]["regex"]
    assert hc["headers"][0]["name"] == ":path"
    for path in READY_PATHS:
        assert re.fullmatch(regex, path)
    for path in ("/health/live", "/healthz", "/health/ready/x", "/v1/chat/completions"):
        assert not re.fullmatch(regex, path)
    minimum = {k: v["value"] for k, v in hc["cluster_min_healthy_percentages"].items()}
    assert minimum[metadata.RATELIMIT_CLUSTER] == 100
    workers = len(_clusters(boot)[metadata.EXTPROC_CLUSTER]["load_assignment"]["endpoints"][0]["lb_endpoints"])
    assert 0 < minimum[metadata.EXTPROC_CLUSTER] <= 100 / workers  # one healthy worker is enough
    for name in (metadata.EXTPROC_CLUSTER, metadata.RATELIMIT_CLUSTER):
        assert "grpc_health_check" in _clusters(boot)[name]["health_checks"][0], name


def test_liveness_is_a_route_envoy_answers_without_the_ext_proc() -> None:
    live = _routes(_boot(load_file(str(FIXTURES / "config" / "valid" / "demo.yaml"))))[0]
    assert live["match"] == {"path": LIVE_PATH}
    assert live["direct_response"]["status"] == 200
    assert live["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["disabled"] is True
