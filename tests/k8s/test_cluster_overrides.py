"""Operators tune a provider's Envoy cluster: every `providers[].cluster` knob, and any other
Cluster field through the typed `cluster.envoy` override, merged at render time and validated by
the real Envoy."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from extproc.cmd.run import envoy_binary
from extproc.config import ConfigError, validate
from extproc.envoyconf.render import render, render_files, write_files

HTTP = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
OVERRIDE: dict[str, Any] = {
    "cluster_type": {"name": "envoy.clusters.dns", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster",
        "dns_refresh_rate": "30s", "respect_dns_ttl": True, "all_addresses_in_single_endpoint": True}},
    "upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 60, "keepalive_interval": 10}},
    "typed_extension_protocol_options": {HTTP: {"explicit_http_config": {"http2_protocol_options": {
        "connection_keepalive": {"interval": "30s", "timeout": "5s"}}}}},
    "transport_socket": {"typed_config": {"common_tls_context": {"validation_context": {
        "trusted_ca": {"filename": "/etc/ssl/certs/ca-certificates.crt"}}}}},
}


def config(cluster: dict[str, Any]) -> dict[str, Any]:
    return {"providers": [{"name": "openai", "type": "openai", "api_key_env": "K", "cluster": cluster}],
            "models": [{"name": "m", "provider": "openai"}], "tenants": []}


def envoy_validate(cfg: Any, out: Path) -> subprocess.CompletedProcess[str]:
    write_files(out, render_files(cfg, str(out), static=True))
    return subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(out / "envoy.yaml")],
                          capture_output=True, text=True, timeout=60)


def provider_cluster(cfg: Any) -> dict[str, Any]:
    [cluster] = [c for c in render(cfg, "/x", static=True)["envoy.yaml"]["static_resources"]["clusters"]
                 if c["name"].endswith("openai")]
    return dict(cluster)


def test_every_knob_and_the_override_reach_envoy(tmp_path: Path) -> None:
    cfg = validate(config({
        "connect_timeout": "2s", "max_requests": 10, "max_pending_requests": 11, "max_connections": 12,
        "max_retries": 1, "per_try_timeout": "60s", "idle_timeout": "90s",
        "outlier_detection": {"consecutive_5xx": 7, "consecutive_gateway_failure": 2, "interval": "3s",
                              "base_ejection_time": "15s", "max_ejection_percent": 50},
        "envoy": OVERRIDE}))
    c = provider_cluster(cfg)
    assert c["connect_timeout"] == "2s"
    assert c["circuit_breakers"]["thresholds"][0] | {"priority": "DEFAULT"} == {
        "priority": "DEFAULT", "max_connections": 12, "max_pending_requests": 11, "max_requests": 10, "max_retries": 1}
    assert c["outlier_detection"]["consecutive_5xx"] == 7 and c["outlier_detection"]["base_ejection_time"] == "15s"
    assert "type" not in c and c["cluster_type"] == OVERRIDE["cluster_type"]  # a oneof: replaced
    assert c["upstream_connection_options"] == OVERRIDE["upstream_connection_options"]
    http = c["typed_extension_protocol_options"][HTTP]
    # explicit_http_config is a oneof member with auto_config: the rendered one is replaced ...
    assert "auto_config" not in http and "connection_keepalive" in str(http["explicit_http_config"])
    # ... and what the override does not name stays: the upstream filters, SNI and SAN checks.
    assert [f["name"] for f in http["http_filters"]][0] == "envoy.filters.http.admission_control"
    tls = c["transport_socket"]["typed_config"]
    assert tls["sni"] == "api.openai.com"
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"] == {
        "filename": "/etc/ssl/certs/ca-certificates.crt"}
    assert tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
    out = envoy_validate(cfg, tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_envoy_refuses_a_bad_value(tmp_path: Path) -> None:
    """Values are Envoy's to check: a negative duration passes the field check, not Envoy."""
    cfg = validate(config({"envoy": {"upstream_connection_options": {"tcp_keepalive": {"keepalive_time": -5}}}}))
    out = envoy_validate(cfg, tmp_path)
    assert out.returncode != 0 and "keepalive_time" in out.stdout + out.stderr


@pytest.mark.parametrize(("override", "problem"), [
    ({"dns_refresh_rte": "30s"},
     "providers[0].cluster.envoy.dns_refresh_rte: not a field of envoy.config.cluster.v3.Cluster"),
    ({"upstream_connection_options": {"tcp_keepalive": {"keepalive_tme": 1}}},
     "providers[0].cluster.envoy.upstream_connection_options.tcp_keepalive.keepalive_tme: "
     "not a field of envoy.config.core.v3.TcpKeepalive"),
    ({"typed_extension_protocol_options": {HTTP: {"explicit_http_confg": {}}}},
     f"providers[0].cluster.envoy.typed_extension_protocol_options.{HTTP}.explicit_http_confg: "
     f"not a field of {HTTP}"),
    ({"load_assignment": {}}, "providers[0].cluster.envoy.load_assignment: cannot be overridden"),
    ({"dns_refresh_rate": "30s"}, "providers[0].cluster.envoy.dns_refresh_rate: deprecated by Envoy"),
    ({"cluster_type": {"name": "envoy.clusters.dns", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster", "dns_refresh_rat": "1s"}}},
     "providers[0].cluster.envoy.cluster_type.typed_config.dns_refresh_rat: not a field of "
     "envoy.extensions.clusters.dns.v3.DnsCluster"),
    ({"connect_timeout": "1s"}, "providers[0].cluster.envoy.connect_timeout: cannot be overridden "
                                "(use cluster.connect_timeout)"),
    ({"typed_extension_protocol_options": {HTTP: {"http_filters": []}}},
     f"providers[0].cluster.envoy.typed_extension_protocol_options.{HTTP}.http_filters: cannot be overridden"),
    ([1, 2], "providers[0].cluster.envoy: must be a mapping of Envoy Cluster fields"),
])
def test_a_wrong_override_is_a_config_error_with_its_path(override: Any, problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        validate(config({"envoy": override}))
    assert any(p.startswith(problem) for p in e.value.problems), e.value.problems
