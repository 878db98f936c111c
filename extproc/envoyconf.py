"""Gateway config → Envoy bootstrap (static resources), as plain data.

Shape of what is rendered:
- one listener: HTTP connection manager → ext_proc (router stage) → router;
- one route: every path goes to the cluster the ext_proc names in `x-interlock-cluster`
  (the ext_proc clears the route cache when it sets it); no route timeout, so long generations
  are not cut; streams end when idle for the provider's `idle_timeout`;
- one cluster per provider (DNS, TLS with SNI for https, circuit breakers, outlier detection);
- the ext_proc cluster: HTTP/2 to every worker process, gRPC health-checked, its circuit
  breaker sized for `extproc.max_streams` (each open LLM stream holds one gRPC stream);
- replies Envoy makes itself (no healthy upstream, overflow, timeouts, body too large, ext_proc
  unavailable) are shaped by `local_reply_config` into the client API's error format.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import yaml

from extproc import metadata
from extproc.config.model import GatewayConfig, Provider

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_EXT_PROC = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_HTTP_OPTS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

_CEL = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"

# Envoy's own replies, in mapper order: (CEL condition, status to send or None to keep Envoy's,
# OpenAI error type, OpenAI code, Anthropic error type, message). `%LOCAL_REPLY_BODY%` is Envoy's
# short reason ("no healthy upstream", ...), never a secret.
_LOCAL_REPLIES: tuple[tuple[str, int | None, str, str | None, str, str], ...] = (
    ("response.code_details.startsWith('ext_proc')", 503, "api_error", "service_unavailable", "overloaded_error",
     "The gateway's request processor is unavailable; retry shortly."),
    ("response.code == 413", None, "invalid_request_error", "request_too_large", "request_too_large",
     "Request body too large."),
    ("response.code == 429", None, "rate_limit_error", "rate_limit_exceeded", "rate_limit_error",
     "%LOCAL_REPLY_BODY%"),
    ("response.code == 503", None, "api_error", "service_unavailable", "overloaded_error", "%LOCAL_REPLY_BODY%"),
    ("response.code == 504", None, "timeout_error", "upstream_timeout", "timeout_error", "%LOCAL_REPLY_BODY%"),
    ("response.code >= 500", None, "api_error", None, "api_error", "%LOCAL_REPLY_BODY%"),
    ("response.code >= 400", None, "invalid_request_error", None, "invalid_request_error", "%LOCAL_REPLY_BODY%"),
)


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s".replace(".000s", "s")


def _socket(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def worker_count(cfg: GatewayConfig) -> int:
    return cfg.extproc.workers or os.cpu_count() or 1


def _local_reply_config() -> dict[str, Any]:
    """Shape Envoy's own error replies like the client API's errors. Replies the ext_proc makes
    (details `interlock`) are already shaped and are left alone."""
    mappers = []
    for anthropic in (True, False):
        api = "request.path.startsWith('/v1/messages')"
        for cond, status, otype, code, atype, message in _LOCAL_REPLIES:
            expr = f"response.code_details != '{metadata.IMMEDIATE_DETAILS}' && {cond} && " + (
                api if anthropic else f"!{api}")
            if anthropic:
                body: dict[str, Any] = {"type": "error", "error": {"type": atype, "message": message}}
            else:
                body = {"error": {"message": message, "type": otype, "code": code}}
            mapper: dict[str, Any] = {
                "filter": {"extension_filter": {"name": "envoy.access_loggers.extension_filters.cel",
                                                "typed_config": {"@type": _CEL, "expression": expr}}},
                "body_format_override": {"json_format": body, "content_type": "application/json"},
            }
            if status is not None:
                mapper["status_code"] = status
            mappers.append(mapper)
    return {"mappers": mappers}


def _listener(cfg: GatewayConfig) -> dict[str, Any]:
    ext_proc = {
        "grpc_service": {"envoy_grpc": {"cluster_name": metadata.EXTPROC_CLUSTER},
                         "timeout": _duration(cfg.extproc.message_timeout)},
        "failure_mode_allow": False,
        "message_timeout": _duration(cfg.extproc.message_timeout),
        "processing_mode": {
            "request_header_mode": "SEND", "request_body_mode": "BUFFERED", "request_trailer_mode": "SKIP",
            "response_header_mode": "SEND", "response_body_mode": "BUFFERED", "response_trailer_mode": "SKIP",
        },
        "allow_mode_override": True,
        "mutation_rules": {"allow_all_routing": True},
        "status_on_error": {"code": "ServiceUnavailable"},
    }
    hcm = {
        "@type": _HCM,
        "stat_prefix": "interlock",
        "codec_type": "AUTO",
        "generate_request_id": True,
        "always_set_request_id_in_response": True,
        "preserve_external_request_id": False,
        "request_timeout": "0s",
        "stream_idle_timeout": _duration(max((p.cluster.idle_timeout for p in cfg.providers), default=300.0)),
        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
        "route_config": {
            "name": "interlock",
            "virtual_hosts": [{
                "name": "interlock",
                "domains": ["*"],
                "routes": [_route(p) for p in cfg.providers] + [{
                    # No cluster chosen: the ext_proc answered or failed before routing.
                    "match": {"prefix": "/"},
                    "direct_response": {"status": 404, "body": {"inline_string": "Not found."}},
                }],
            }],
        },
        "http_filters": [
            {"name": "envoy.filters.http.ext_proc", "typed_config": {"@type": _EXT_PROC, **ext_proc}},
            {"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}},
        ],
        "local_reply_config": _local_reply_config(),
    }
    return {
        "name": metadata.LISTENER_NAME,
        "address": _socket(cfg.listen.address, cfg.listen.port),
        "per_connection_buffer_limit_bytes": max(cfg.limits.max_request_bytes, cfg.limits.max_response_bytes),
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}],
    }


def _route(p: Provider) -> dict[str, Any]:
    c = p.cluster
    route: dict[str, Any] = {
        "cluster": p.cluster_name,
        "timeout": "0s",
        "idle_timeout": _duration(c.idle_timeout),
        "auto_host_rewrite": True,
    }
    if c.per_try_timeout:
        route["retry_policy"] = {"retry_on": "reset,connect-failure", "num_retries": 0,
                                 "per_try_timeout": _duration(c.per_try_timeout)}
    return {
        "match": {"prefix": "/", "headers": [{"name": metadata.CLUSTER_HEADER,
                                             "string_match": {"exact": p.cluster_name}}]},
        "route": route,
    }


def _provider_cluster(p: Provider, cfg: GatewayConfig) -> dict[str, Any]:
    ep, c = p.endpoint, p.cluster
    try:
        ipaddress.ip_address(ep.host)
        discovery = "STATIC"
    except ValueError:
        discovery = "LOGICAL_DNS"
    cluster: dict[str, Any] = {
        "name": p.cluster_name,
        "type": discovery,
        "connect_timeout": _duration(c.connect_timeout),
        "dns_lookup_family": "V4_PREFERRED",
        "per_connection_buffer_limit_bytes": cfg.limits.max_response_bytes,
        "load_assignment": {"cluster_name": p.cluster_name, "endpoints": [{"lb_endpoints": [{
            "endpoint": {"address": _socket(ep.host, ep.port), "hostname": ep.authority}}]}]},
        "circuit_breakers": {"thresholds": [{
            "priority": "DEFAULT", "max_connections": c.max_connections,
            "max_pending_requests": c.max_pending_requests, "max_requests": c.max_requests,
            "max_retries": c.max_retries}]},
        "outlier_detection": {
            "consecutive_5xx": c.outlier_detection.consecutive_5xx,
            "consecutive_gateway_failure": c.outlier_detection.consecutive_gateway_failure,
            "enforcing_consecutive_gateway_failure": 100,
            "interval": _duration(c.outlier_detection.interval),
            "base_ejection_time": _duration(c.outlier_detection.base_ejection_time),
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


def _extproc_cluster(cfg: GatewayConfig) -> dict[str, Any]:
    x = cfg.extproc
    return {
        "name": metadata.EXTPROC_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "LEAST_REQUEST",
        "load_assignment": {"cluster_name": metadata.EXTPROC_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _socket(x.address, x.port + i)}} for i in range(worker_count(cfg))]}]},
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": _HTTP_OPTS, "explicit_http_config": {"http2_protocol_options": {
                "max_concurrent_streams": 10000,
                "connection_keepalive": {"interval": "30s", "timeout": "5s"}}}}},
        "circuit_breakers": {"thresholds": [{
            "priority": "DEFAULT", "max_connections": 1024, "max_pending_requests": x.max_streams,
            "max_requests": x.max_streams, "max_retries": 3}]},
        "health_checks": [{
            "timeout": "1s", "interval": "2s", "unhealthy_threshold": 1, "healthy_threshold": 1,
            "no_traffic_interval": "2s", "grpc_health_check": {}}],
        # A worker that dies is ejected on its first refused connection, before the next
        # health check notices; it comes back when the restarted worker passes a check.
        "outlier_detection": {
            "split_external_local_origin_errors": True, "consecutive_local_origin_failure": 1,
            "enforcing_consecutive_local_origin_failure": 100, "consecutive_5xx": 1000000,
            "interval": "1s", "base_ejection_time": "2s", "max_ejection_percent": 50},
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
    }


def render(cfg: GatewayConfig) -> dict[str, Any]:
    """The whole Envoy bootstrap for `cfg`."""
    return {
        "node": {"id": "interlock", "cluster": "interlock"},
        "admin": {"address": _socket(cfg.admin.address, cfg.admin.port)},
        "static_resources": {
            "listeners": [_listener(cfg)],
            "clusters": [_extproc_cluster(cfg)] + [_provider_cluster(p, cfg) for p in cfg.providers],
        },
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {
            "overload.global_downstream_max_connections": 50000}}]},
    }


def render_yaml(cfg: GatewayConfig) -> str:
    header = "# Rendered by `interlock render`: do not edit; edit the gateway config instead.\n"
    return header + yaml.safe_dump(render(cfg), sort_keys=False, default_flow_style=False)
