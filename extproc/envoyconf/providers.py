"""Per provider: its Envoy cluster (DNS or static address, TLS with SNI and SAN check for https,
HTTP/2 when the provider negotiates it, circuit breakers, outlier detection, the host metadata the
upstream stage reads, its own admission control) and its route (matched on `x-interlock-cluster`;
no route timeout, so long generations are not cut; the provider's idle timeout; an optional
per-try timeout)."""

from __future__ import annotations

import ipaddress
from typing import Any

from extproc import metadata
from extproc.config.model import Limits, Provider
from extproc.envoyconf.fallback import host_metadata, upstream_tail

_HTTP_OPTS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_ADMISSION = "type.googleapis.com/envoy.extensions.filters.http.admission_control.v3.AdmissionControl"

# Admission control's switch and threshold are Envoy runtime values: the bootstrap's static
# runtime layer sets them from `admission.success_rate_threshold` (`render.admission_runtime`),
# so the provider clusters, which config reload renders without the rest of the config, carry
# them unchanged. Off unless that layer turns it on.
ADMISSION_ENABLED_KEY = "interlock.admission_control.enabled"
ADMISSION_THRESHOLD_KEY = "interlock.admission_control.sr_threshold"


def duration(seconds: float) -> str:
    return f"{seconds:.3f}s".replace(".000s", "s")


def socket_address(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def provider_route(p: Provider) -> dict[str, Any]:
    c = p.cluster
    route: dict[str, Any] = {
        "cluster": p.cluster_name,
        "timeout": "0s",
        "idle_timeout": duration(c.idle_timeout),
        # A literal host (not auto_host_rewrite): Envoy then records the original host before the
        # upstream filters run, so they can remove it (see fallback.upstream_tail).
        "host_rewrite_literal": p.endpoint.authority,
    }
    if c.per_try_timeout:
        route["retry_policy"] = {"retry_on": "reset,connect-failure", "num_retries": 0,
                                 "per_try_timeout": duration(c.per_try_timeout)}
    return {
        "match": {"prefix": "/", "headers": [{"name": metadata.CLUSTER_HEADER,
                                             "string_match": {"exact": p.cluster_name}}]},
        "route": route,
    }


def admission_control() -> dict[str, Any]:
    """Envoy's admission control for one provider: it sheds (503, which the router stage answers
    as that provider being overloaded) a share of the requests to this provider when its own
    success rate over 30 s falls below the threshold. Only its 5xx count as failures; it acts
    from 20 req/s averaged over that window (600 requests in one Envoy worker thread's window);
    at most 80 % shed.

    It sits in the provider cluster's upstream filter chain, so each provider has its own window
    (a filter on the listener has one window for all providers: one failing provider shed every
    other provider's traffic). Envoy builds an attempt's upstream filter chain from the route's
    cluster, so it applies to requests routed to this provider alone, not to the attempts of a
    fallback order (an aggregate cluster): those fail over to the next provider instead, and
    outlier detection and the router stage's cool-down keep the failing one out of first place."""
    return {"name": "envoy.filters.http.admission_control", "typed_config": {
        "@type": _ADMISSION,
        "enabled": {"default_value": False, "runtime_key": ADMISSION_ENABLED_KEY},
        "sampling_window": "30s",
        "sr_threshold": {"default_value": {"value": 50.0}, "runtime_key": ADMISSION_THRESHOLD_KEY},
        "aggression": {"default_value": 1.5, "runtime_key": "interlock.admission_control.aggression"},
        "rps_threshold": {"default_value": 20, "runtime_key": "interlock.admission_control.rps_threshold"},
        "max_rejection_probability": {"default_value": {"value": 80.0},
                                      "runtime_key": "interlock.admission_control.max_rejection_probability"},
        # A 4xx (429 included) is the client's problem or a provider limit, which the router
        # stage steers around: not a failure.
        "success_criteria": {"http_criteria": {"http_success_status": [{"start": 100, "end": 500}]}},
    }}


def provider_cluster(p: Provider, limits: Limits) -> dict[str, Any]:
    ep, c = p.endpoint, p.cluster
    try:
        ipaddress.ip_address(ep.host)
        discovery = "STATIC"
    except ValueError:
        discovery = "LOGICAL_DNS"
    cluster: dict[str, Any] = {
        "name": p.cluster_name,
        "type": discovery,
        "connect_timeout": duration(c.connect_timeout),
        "dns_lookup_family": "V4_PREFERRED",
        "per_connection_buffer_limit_bytes": limits.max_response_bytes,
        "load_assignment": {"cluster_name": p.cluster_name, "endpoints": [{"lb_endpoints": [{
            "endpoint": {"address": socket_address(ep.host, ep.port), "hostname": ep.authority},
            "metadata": host_metadata(p)}]}]},
        "circuit_breakers": {"thresholds": [{
            "priority": "DEFAULT", "max_connections": c.max_connections,
            "max_pending_requests": c.max_pending_requests, "max_requests": c.max_requests,
            "max_retries": c.max_retries}]},
        "outlier_detection": {
            "consecutive_5xx": c.outlier_detection.consecutive_5xx,
            "consecutive_gateway_failure": c.outlier_detection.consecutive_gateway_failure,
            "enforcing_consecutive_gateway_failure": 100,
            "interval": duration(c.outlier_detection.interval),
            "base_ejection_time": duration(c.outlier_detection.base_ejection_time),
            "max_ejection_percent": c.outlier_detection.max_ejection_percent,
        },
    }
    if ep.tls:
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": _TLS, "sni": ep.host,
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "validation_context": {"trusted_ca": {"filename": CA_BUNDLE},
                                       "match_typed_subject_alt_names": [{
                                           "san_type": "DNS", "matcher": {"exact": ep.host}}]}}}}
        protocol: dict[str, Any] = {"auto_config": {"http2_protocol_options": {}, "http_protocol_options": {}}}
    else:
        protocol = {"explicit_http_config": {"http_protocol_options": {}}}
    # A cluster's own upstream filters replace the router's (the upstream stage, which requests
    # routed to one provider never need: the router stage translated them for it). Whatever must
    # run on every upstream request belongs in `upstream_tail`, which both chains end with.
    cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": _HTTP_OPTS, **protocol, "http_filters": [admission_control(), *upstream_tail()]}}
    return cluster
