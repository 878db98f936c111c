"""Per provider: its Envoy cluster (DNS or static address, TLS with SNI and SAN check for https,
HTTP/2 when the provider negotiates it, circuit breakers, outlier detection, the host metadata the
upstream stage reads) and its route (matched on `x-interlock-cluster`; no route timeout, so long
generations are not cut; the provider's idle timeout; an optional per-try timeout)."""

from __future__ import annotations

import ipaddress
from typing import Any

from extproc import metadata
from extproc.config.model import Limits, Provider
from extproc.envoyconf.fallback import host_metadata

_HTTP_OPTS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


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
        "auto_host_rewrite": True,
    }
    if c.per_try_timeout:
        route["retry_policy"] = {"retry_on": "reset,connect-failure", "num_retries": 0,
                                 "per_try_timeout": duration(c.per_try_timeout)}
    return {
        "match": {"prefix": "/", "headers": [{"name": metadata.CLUSTER_HEADER,
                                             "string_match": {"exact": p.cluster_name}}]},
        "route": route,
    }


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
        cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": _HTTP_OPTS, "auto_config": {"http2_protocol_options": {}, "http_protocol_options": {}}}}
    else:
        cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": _HTTP_OPTS, "explicit_http_config": {"http_protocol_options": {}}}}
    return cluster
