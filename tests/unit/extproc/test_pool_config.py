"""`type: pool` providers: every invalid setting named by its path, and the Envoy config a pool
renders to, accepted by the real Envoy (`envoy --mode validate`)."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc.cmd.run import envoy_binary
from extproc.config import ConfigError
from extproc.config.load import validate
from extproc.config.model import PoolSettings
from extproc.envoyconf.render import render, render_files

BASE: dict[str, Any] = {
    "providers": [{"name": "gpus", "type": "pool", "endpoints": ["10.0.0.7:8000", "10.0.0.8:8000"]}],
    "models": [{"name": "llama", "provider": "gpus", "upstream_model": "meta-llama/Llama-3.1-8B-Instruct"}],
    "tenants": [{"name": "t", "api_key_sha256": ["a" * 64]}],
}


def pool_with(**settings: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    p = doc["providers"][0]
    for k, v in settings.items():
        if v is None:
            p.pop(k, None)
        else:
            p[k] = v
    return doc


def test_defaults() -> None:
    p = validate(BASE).providers[0]
    assert p.pool == PoolSettings(endpoints=("10.0.0.7:8000", "10.0.0.8:8000"))
    assert (p.pool.metrics, p.pool.scrape_interval, p.pool.picker) == ("vllm", 0.05, "load-aware")
    assert p.api_key_env is None and p.endpoint.host == "10.0.0.7"


def test_every_setting() -> None:
    p = validate(pool_with(endpoints=None, dns="vllm.inference.svc.cluster.local:8000", dns_server="10.96.0.10:53",
                           dns_refresh="2s", metrics="sglang", scrape_interval_ms=100, gpu_hour_usd=2.5,
                           api_key_env="VLLM_KEY")).providers[0]
    assert p.pool == PoolSettings(dns="vllm.inference.svc.cluster.local:8000", dns_server="10.96.0.10:53",
                                  dns_refresh=2.0, metrics="sglang", scrape_interval=0.1, gpu_hour_usd=2.5)
    assert validate(pool_with(epp="epp.inference:9002")).providers[0].pool.epp == "epp.inference:9002"  # type: ignore[union-attr]


@pytest.mark.parametrize(("settings", "problems"), [
    ({"endpoints": ["vllm-0:8000"]},
     ["providers[0].endpoints[0]: must be an IP address and port (10.0.0.7:8000); a name goes in dns"]),
    ({"endpoints": ["10.0.0.7:8000", "10.0.0.7:8000"]}, ["providers[0].endpoints[1]: duplicate endpoint 10.0.0.7:8000"]),
    ({"endpoints": []}, ["providers[0].endpoints: must list at least one ip:port"]),
    ({"endpoints": None}, ["providers[0]: needs endpoints (a list of ip:port) or dns (name:port)"]),
    ({"dns": "vllm:8000"}, ["providers[0]: endpoints and dns are exclusive: give one"]),
    ({"endpoints": None, "dns": "not a name:80"},
     ["providers[0].dns: must be a DNS name and port (vllm.inference.svc.cluster.local:8000)"]),
    ({"dns_server": "10.0.0.1:53"}, ["providers[0].dns_server: only with dns"]),
    ({"endpoints": None, "dns": "vllm:8000", "dns_server": "dns.local"},
     ["providers[0].dns_server: must be an IP address and port (10.96.0.10:53)"]),
    ({"metrics": "tgi"}, ["providers[0].metrics: must be one of: vllm, sglang"]),
    ({"scrape_interval_ms": 5}, ["providers[0].scrape_interval_ms: must be >= 10"]),
    ({"scrape_interval_ms": 0.5}, ["providers[0].scrape_interval_ms: must be an integer"]),
    ({"picker": "random"}, ["providers[0].picker: must be one of: load-aware, round-robin, least-request"]),
    ({"epp": "x", "picker": "round-robin"},
     ["providers[0].epp: must be host:port of the endpoint picker's gRPC (ext_proc) service",
      "providers[0].picker: not with epp: the external endpoint picker picks"]),
    ({"gpu_hour_usd": -1}, ["providers[0].gpu_hour_usd: must be >= 0"]),
    ({"endpoint": "http://10.0.0.7:8000"},
     ["providers[0].endpoint: not a setting of type pool: its servers are endpoints (ip:port) or dns (name:port)"]),
    ({"api_key_env": "A", "api_key_file": "/k"}, ["providers[0]: api_key_env and api_key_file are exclusive: give one"]),
    ({"region": "us-east-1"}, ["providers[0].region: not a setting of type pool (its settings: api_key_env, "
                               "api_key_file, path_prefix, headers, endpoints, dns, dns_server, dns_refresh, metrics, "
                               "scrape_interval_ms, picker, epp, gpu_hour_usd)"]),
])
def test_invalid_settings_are_named(settings: dict[str, Any], problems: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        validate(pool_with(**settings))
    assert e.value.problems == problems


def _validate(path: Path) -> None:
    out = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                          "--log-level", "error"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_pools_render_to_a_config_envoy_accepts(tmp_path: Path) -> None:
    doc = copy.deepcopy(BASE)
    doc["providers"] += [
        {"name": "dnspool", "type": "pool", "dns": "vllm.inference.svc.cluster.local:8000",
         "dns_server": "127.0.0.1:5353", "dns_refresh": "1s"},
        {"name": "picked", "type": "pool", "endpoints": ["10.0.0.9:8000"], "epp": "127.0.0.1:9002"},
        {"name": "cloud", "type": "openai", "endpoint": "https://api.openai.com", "api_key_env": "K"},
    ]
    doc["models"] += [{"name": "llama", "provider": "cloud", "upstream_model": "gpt-4o-mini"},
                      {"name": "llama-dns", "provider": "dnspool"}, {"name": "llama-epp", "provider": "picked"}]
    cfg = validate(doc)
    files = render_files(cfg, str(tmp_path), static=True)
    (tmp_path / "envoy.yaml").write_text(files["envoy.yaml"])
    _validate(tmp_path / "envoy.yaml")
    clusters = {c["name"]: c for c in render(cfg, str(tmp_path), static=True)["envoy.yaml"]["static_resources"]["clusters"]}
    gpus = clusters["provider_gpus"]
    assert gpus["type"] == "STATIC" and "lb_policy" not in gpus
    assert [e["endpoint"]["hostname"] for e in gpus["load_assignment"]["endpoints"][0]["lb_endpoints"]] == [
        "10.0.0.7:8000", "10.0.0.8:8000"]
    policy = gpus["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    assert policy["name"] == "envoy.load_balancing_policies.override_host"
    # In fallback orders, a twin steered by the metadata match (override host gets no request
    # data inside an aggregate cluster in Envoy 1.40).
    twin = clusters["provider_gpus~in-order"]
    subset = twin["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    assert subset["name"] == "envoy.load_balancing_policies.subset"
    assert subset["typed_config"]["subset_selectors"] == [{"keys": ["interlock.endpoint"]}]
    assert twin["load_assignment"]["endpoints"][0]["lb_endpoints"][1]["metadata"]["filter_metadata"] == {
        "interlock": {"provider": "gpus"}, "envoy.lb": {"interlock.endpoint": "10.0.0.8:8000"}}
    assert clusters["fallback~gpus~cloud"]["cluster_type"]["typed_config"]["clusters"] == [
        "provider_gpus~in-order", "provider_cloud"]
    assert "provider_picked~in-order" not in clusters  # in no order
    assert policy["typed_config"]["override_host_sources"] == [
        {"header": "x-gateway-destination-endpoint"},
        {"metadata": {"key": "envoy.lb", "path": [{"key": "x-gateway-destination-endpoint"}]}}]
    dns = clusters["provider_dnspool"]
    assert dns["type"] == "STRICT_DNS" and dns["dns_refresh_rate"] == "1s"
    assert dns["typed_dns_resolver_config"]["typed_config"]["resolvers"] == [
        {"socket_address": {"address": "127.0.0.1", "port_value": 5353}}]
    assert clusters["epp_picked"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": "127.0.0.1", "port_value": 9002}}
    # The pool and the per-token provider of one model share a fallback order (an aggregate).
    assert "fallback~gpus~cloud" in clusters and "fallback~cloud~gpus" in clusters
    routes = render(cfg, str(tmp_path), static=True)["envoy.yaml"]["static_resources"]["listeners"][0][
        "filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    by_cluster = {r["route"]["cluster"]: r for r in routes if "route" in r}
    assert by_cluster["provider_gpus"]["route"]["retry_policy"]["retry_on"] == "connect-failure,refused-stream,reset"
    assert by_cluster["provider_picked"]["typed_per_filter_config"]["interlock.epp"]["overrides"]["grpc_service"] == {
        "envoy_grpc": {"cluster_name": "epp_picked"}}
    assert "interlock.epp" not in by_cluster["provider_gpus"]["typed_per_filter_config"]
    assert yaml.safe_load(files["envoy.yaml"])  # what `interlock render` writes is plain YAML


def _hcm(cfg: Any, tmp_path: Path) -> dict[str, Any]:
    listener = render(cfg, str(tmp_path), static=True)["envoy.yaml"]["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]  # type: ignore[no-any-return]


def test_pool_routes_report_the_served_endpoint(tmp_path: Path) -> None:
    """The Endpoint Picker Protocol's `x-gateway-destination-endpoint-served`: the pool route adds
    the answering host's ip:port as a header, a header-to-metadata filter after every ext_proc
    filter moves it into `envoy.lb` (removing it), and the pickers receive that namespace."""
    doc = copy.deepcopy(BASE)
    doc["providers"].append({"name": "picked", "type": "pool", "endpoints": ["10.0.0.9:8000"], "epp": "127.0.0.1:9002"})
    doc["models"].append({"name": "llama-epp", "provider": "picked"})
    hcm = _hcm(validate(doc), tmp_path)
    names = [f["name"] for f in hcm["http_filters"]]
    assert names.index("interlock.pool-served") == names.index("interlock.epp") + 1
    served = hcm["http_filters"][names.index("interlock.pool-served")]
    assert "response_rules" not in served["typed_config"]  # the rule is the pool routes' alone
    routes = {r["route"]["cluster"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"] if "route" in r}
    for cluster in ("provider_gpus", "provider_picked"):
        route = routes[cluster]
        assert route["response_headers_to_add"] == [{"header": {
            "key": "x-interlock-served-endpoint", "value": "%UPSTREAM_REMOTE_ADDRESS%"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
        assert route["typed_per_filter_config"]["interlock.pool-served"]["response_rules"] == [{
            "header": "x-interlock-served-endpoint", "remove": True, "on_header_present": {
                "metadata_namespace": "envoy.lb", "key": "x-gateway-destination-endpoint-served", "type": "STRING"}}]
    epp = hcm["http_filters"][names.index("interlock.epp")]["typed_config"]["extension_config"]["typed_config"]
    assert epp["processing_mode"]["response_header_mode"] == "SEND"
    assert "envoy.lb" in epp["metadata_options"]["forwarding_namespaces"]["untyped"]
    stage = hcm["http_filters"][names.index("envoy.filters.http.ext_proc")]["typed_config"]["extension_config"]
    assert "envoy.lb" in stage["typed_config"]["metadata_options"]["forwarding_namespaces"]["untyped"]


def test_without_pools_nothing_reports_the_served_endpoint(tmp_path: Path) -> None:
    """No pool, no cost: the listener and routes are as before."""
    doc = copy.deepcopy(BASE)
    doc["providers"] = [{"name": "cloud", "type": "openai", "endpoint": "https://api.openai.com", "api_key_env": "K"}]
    doc["models"] = [{"name": "llama", "provider": "cloud"}]
    hcm = _hcm(validate(doc), tmp_path)
    assert "interlock.pool-served" not in [f["name"] for f in hcm["http_filters"]]
    stage = hcm["http_filters"][[f["name"] for f in hcm["http_filters"]].index("envoy.filters.http.ext_proc")]
    assert stage["typed_config"]["extension_config"]["typed_config"]["metadata_options"][
        "forwarding_namespaces"] == {"untyped": ["envoy.lb.subset_hint"]}
    route = next(r for r in hcm["route_config"]["virtual_hosts"][0]["routes"] if "route" in r)
    assert "response_headers_to_add" not in route


def test_the_served_endpoint_is_read_from_the_metadata_first() -> None:
    from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

    from extproc.pools.picker import served_address

    req = pb.ProcessingRequest()
    req.response_headers.SetInParent()
    req.attributes["envoy.filters.http.ext_proc"].update({"upstream.address": "10.0.0.8:8000"})
    assert served_address(req) == "10.0.0.8:8000"  # no metadata: what Envoy's attribute says
    req.metadata_context.filter_metadata["envoy.lb"].update({"x-gateway-destination-endpoint-served": "10.0.0.7:8000"})
    assert served_address(req) == "10.0.0.7:8000"
    assert served_address(pb.ProcessingRequest()) is None
