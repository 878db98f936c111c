"""Gateway config → Envoy configuration files, as plain data.

Files (`render_files`): `envoy.yaml` (bootstrap: listener, ext_proc cluster, admin), `cds.yaml`
(one cluster per provider) and `rds.yaml` (the route configuration). The last two are Envoy
file-based dynamic resources: rewriting them (atomically, by rename) changes the providers of a
running Envoy without a restart, which is how config reload adds a provider. `static=True`
puts everything into one static bootstrap instead (for `envoy --mode validate` of every resource).

Shape of what is rendered:
- one listener: HTTP connection manager → ext_proc (router stage) → rate limit (our
  RateLimitService, `extproc.limits`) → admission control → router;
- one route: every path goes to the cluster the ext_proc names in `x-interlock-cluster`
  (the ext_proc clears the route cache when it sets it); no route timeout, so long generations
  are not cut; streams end when idle for the provider's `idle_timeout`;
- one cluster per provider (DNS, TLS with SNI for https, circuit breakers, outlier detection);
- the ext_proc cluster: HTTP/2 to every worker process, gRPC health-checked, its circuit
  breaker sized for `extproc.max_streams` (each open LLM stream holds one gRPC stream);
- the rate-limit cluster: HTTP/2 to the pod's one rate-limit process;
- replies Envoy makes itself (no healthy upstream, overflow, timeouts, body too large, ext_proc
  unavailable, rate limited, overloaded, shed by admission control) are shaped by
  `local_reply_config` into the client API's error format;
- last lines of defence: `admission_control` sheds when the upstream success rate collapses,
  and the overload manager refuses new requests near the heap limit (and caps connections).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from extproc import errors, metadata
from extproc.config.model import GatewayConfig, Limits, Provider
from extproc.envoyconf.fallback import aggregate_cluster, aggregate_route, upstream_filters
from extproc.envoyconf.orders import provider_orders
from extproc.envoyconf.providers import duration as _duration
from extproc.envoyconf.providers import provider_cluster, provider_route
from extproc.envoyconf.providers import socket_address as _socket
from extproc.limits.scheme import envoy_rate_limits

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_EXT_PROC = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_HTTP_OPTS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

_EARLY_MUTATION = ("type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3."
                   "HeaderMutation")
_MAX_CONNECTIONS = ("type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
                    "DownstreamConnectionsConfig")
_CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
_ROUTE_CONFIG = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ROUTE_CONFIG = "interlock"
_CEL = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"
_RATELIMIT = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"
_ADMISSION = "type.googleapis.com/envoy.extensions.filters.http.admission_control.v3.AdmissionControl"
_FIXED_HEAP = "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig"

# Envoy's own replies, in mapper order: (CEL condition, status to send or None to keep Envoy's,
# OpenAI error type, OpenAI code, Anthropic error type, message). `%LOCAL_REPLY_BODY%` is Envoy's
# short reason ("no healthy upstream", ...), never a secret.
_LOCAL_REPLIES: tuple[tuple[str, int | None, str, str | None, str, str], ...] = (
    ("response.code_details.startsWith('ext_proc')", 503, "api_error", "service_unavailable", "overloaded_error",
     "The gateway's request processor is unavailable; retry shortly."),
    ("response.code_details == 'request_rate_limited'", 429, "rate_limit_error", "rate_limit_exceeded",
     "rate_limit_error", "Rate limit exceeded for this API key; retry after the number of seconds in Retry-After."),
    ("response.code_details == 'overload'", 503, "api_error", "service_unavailable", "overloaded_error",
     "The gateway is overloaded; retry shortly."),
    ("response.code_details == 'denied_by_admission_control'", 503, "api_error", "service_unavailable",
     "overloaded_error", "The providers behind this gateway are failing; the gateway is shedding load."),
    ("response.code == 413", None, "invalid_request_error", "request_too_large", "request_too_large",
     "Request body too large."),
    ("response.code == 429", None, "rate_limit_error", "rate_limit_exceeded", "rate_limit_error",
     "%LOCAL_REPLY_BODY%"),
    ("response.code == 503", None, "api_error", "service_unavailable", "overloaded_error", "%LOCAL_REPLY_BODY%"),
    ("response.code == 504", None, "timeout_error", "upstream_timeout", "timeout_error", "%LOCAL_REPLY_BODY%"),
    ("response.code >= 500", None, "api_error", None, "api_error", "%LOCAL_REPLY_BODY%"),
    ("response.code >= 400", None, "invalid_request_error", None, "invalid_request_error", "%LOCAL_REPLY_BODY%"),
)


def worker_count(cfg: GatewayConfig) -> int:
    return cfg.extproc.workers or os.cpu_count() or 1


def _local_reply_config() -> dict[str, Any]:
    """Shape Envoy's own error replies like the client API's errors. Replies the ext_proc makes
    (details `interlock`) are already shaped and are left alone."""
    mappers = []
    for anthropic in (True, False):
        # The router stage rewrites the path for the provider (an OpenAI client's request to an
        # Anthropic model goes upstream as /v1/messages), so it names the client's API in a
        # request header (never sent upstream); before that, the path is still the client's.
        h = metadata.CLIENT_API_HEADER
        api = (f"(('{h}' in request.headers) ? request.headers['{h}'] == '{errors.ANTHROPIC}' : "
               "request.path.startsWith('/v1/messages'))")
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
                # Every answer names who made it; here Envoy did, before any provider.
                "headers_to_add": [
                    {"header": {"key": metadata.PROVIDER_HEADER, "value": metadata.GATEWAY_PROVIDER},
                     "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
                    {"header": {"key": metadata.MODEL_HEADER, "value": "-"},
                     "append_action": "ADD_IF_ABSENT"}],
            }
            if status is not None:
                mapper["status_code"] = status
            mappers.append(mapper)
    return {"mappers": mappers}


def route_config(providers: Iterable[Provider], orders: Iterable[tuple[str, ...]] = ()) -> dict[str, Any]:
    """One route per provider and per fallback order, chosen by the cluster header the router
    stage sets."""
    providers = list(providers)
    by_name = {p.name: p for p in providers}
    fallback = [aggregate_route(o, by_name, _duration) for o in orders]
    return {
        "name": ROUTE_CONFIG,
        "virtual_hosts": [{
            "name": "interlock",
            "domains": ["*"],
            "include_attempt_count_in_response": True,
            "routes": [provider_route(p) for p in providers] + fallback + [{
                # No cluster chosen: the ext_proc answered or failed before routing.
                "match": {"prefix": "/"},
                "direct_response": {"status": 404, "body": {"inline_string": "Not found."}},
            }],
        }],
    }


def _listener(cfg: GatewayConfig, rds: dict[str, Any]) -> dict[str, Any]:
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
        # allow_envoy: the router stage sets x-envoy-upstream-rq-timeout-ms from the deadline.
        "mutation_rules": {"allow_all_routing": True, "allow_envoy": True},
        "status_on_error": {"code": "ServiceUnavailable"},
        # Who answered (the attempt that succeeded) is read per response.
        "response_attributes": ["xds.upstream_host_metadata"],
        # The original request travels to the upstream stage in this namespace.
        "metadata_options": {"receiving_namespaces": {"untyped": [metadata.NAMESPACE]}},
    }
    hcm = {
        "@type": _HCM,
        "stat_prefix": "interlock",
        "codec_type": "AUTO",
        "generate_request_id": True,
        "always_set_request_id_in_response": True,
        "preserve_external_request_id": False,
        "request_timeout": "0s",
        "stream_idle_timeout": "300s",  # each provider route sets its own idle_timeout
        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
        # A client must never pick the cluster itself: the header is the ext_proc's to set.
        "early_header_mutation_extensions": [{
            "name": "envoy.http.early_header_mutation.header_mutation",
            "typed_config": {"@type": _EARLY_MUTATION, "mutations": [{"remove": metadata.CLUSTER_HEADER}]}}],
        "http_filters": [
            {"name": "envoy.filters.http.ext_proc", "typed_config": {"@type": _EXT_PROC, **ext_proc}},
            *_limit_filters(cfg),
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": _ROUTER, "upstream_http_filters": upstream_filters(cfg.extproc, _duration)}},
        ],
        "local_reply_config": _local_reply_config(),
        **rds,
    }
    return {
        "name": metadata.LISTENER_NAME,
        "address": _socket(cfg.listen.address, cfg.listen.port),
        "per_connection_buffer_limit_bytes": max(cfg.limits.max_request_bytes, cfg.limits.max_response_bytes),
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}],
    }


def _limit_filters(cfg: GatewayConfig) -> list[dict[str, Any]]:
    """The rate-limit filter (descriptors from what the router stage wrote in dynamic metadata;
    no descriptor, no call) and admission control (Envoy's own, on upstream 5xx: a last line)."""
    rl = cfg.rate_limit
    out: list[dict[str, Any]] = [{"name": "envoy.filters.http.ratelimit", "typed_config": {
        "@type": _RATELIMIT,
        "domain": metadata.RATELIMIT_DOMAIN,
        "timeout": _duration(rl.timeout),
        "failure_mode_deny": rl.failure_mode == "closed",
        "rate_limit_service": {"grpc_service": {"envoy_grpc": {"cluster_name": metadata.RATELIMIT_CLUSTER}},
                               "transport_api_version": "V3"},
        "rate_limits": envoy_rate_limits(metadata.NAMESPACE),
    }}]
    sr = cfg.admission.success_rate_threshold
    if sr > 0:
        out.append({"name": "envoy.filters.http.admission_control", "typed_config": {
            "@type": _ADMISSION,
            "enabled": {"default_value": True, "runtime_key": "admission_control.enabled"},
            "sampling_window": "30s",
            "sr_threshold": {"default_value": {"value": round(sr * 100, 3)},
                             "runtime_key": "admission_control.sr_threshold"},
            "aggression": {"default_value": 1.5, "runtime_key": "admission_control.aggression"},
            "rps_threshold": {"default_value": 20, "runtime_key": "admission_control.rps_threshold"},
            "max_rejection_probability": {"default_value": {"value": 80.0},
                                          "runtime_key": "admission_control.max_rejection_probability"},
            # Only the providers' 5xx count as failures: a 4xx (429 included) is the client's
            # problem or a provider limit, which the router stage steers around.
            "success_criteria": {"http_criteria": {"http_success_status": [{"start": 100, "end": 500}]}},
        }})
    return out


def _local_grpc_cluster(name: str, sockets: Iterable[tuple[str, int]], *, max_connections: int,
                        max_requests: int, max_retries: int) -> dict[str, Any]:
    """A cluster of the pod's own gRPC processes: static addresses, HTTP/2 with keep-alive."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _socket(address, port)}} for address, port in sockets]}]},
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": _HTTP_OPTS, "explicit_http_config": {"http2_protocol_options": {
                "max_concurrent_streams": 10000,
                "connection_keepalive": {"interval": "30s", "timeout": "5s"}}}}},
        "circuit_breakers": {"thresholds": [{
            "priority": "DEFAULT", "max_connections": max_connections, "max_pending_requests": max_requests,
            "max_requests": max_requests, "max_retries": max_retries}]},
    }


def _ratelimit_cluster(cfg: GatewayConfig) -> dict[str, Any]:
    rl = cfg.rate_limit
    return _local_grpc_cluster(metadata.RATELIMIT_CLUSTER, [(rl.address, rl.port)], max_connections=64,
                               max_requests=100000, max_retries=0)


def _overload_manager(cfg: GatewayConfig) -> dict[str, Any]:
    heap = "envoy.resource_monitors.fixed_heap"
    return {
        "refresh_interval": "0.25s",
        "resource_monitors": [
            {"name": "envoy.resource_monitors.global_downstream_max_connections",
             "typed_config": {"@type": _MAX_CONNECTIONS, "max_active_downstream_connections": 50000}},
            {"name": heap, "typed_config": {"@type": _FIXED_HEAP,
                                            "max_heap_size_bytes": cfg.admission.max_heap_bytes}},
        ],
        "actions": [
            {"name": "envoy.overload_actions.shrink_heap",
             "triggers": [{"name": heap, "threshold": {"value": 0.95}}]},
            {"name": "envoy.overload_actions.stop_accepting_requests",
             "triggers": [{"name": heap, "threshold": {"value": 0.98}}]},
        ],
    }


def _extproc_cluster(cfg: GatewayConfig) -> dict[str, Any]:
    x = cfg.extproc
    cluster = _local_grpc_cluster(metadata.EXTPROC_CLUSTER, [(x.address, x.port + i) for i in range(worker_count(cfg))],
                                  max_connections=1024, max_requests=x.max_streams, max_retries=3)
    return {
        **cluster,
        "lb_policy": "LEAST_REQUEST",
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


def _file_source(out_dir: str, name: str) -> dict[str, Any]:
    return {"resource_api_version": "V3", "path_config_source": {
        "path": f"{out_dir}/{name}", "watched_directory": {"path": out_dir}}}


def render(cfg: GatewayConfig, out_dir: str, static: bool = False) -> dict[str, dict[str, Any]]:
    """Every file for `cfg` as data, by file name. Paths inside point into `out_dir`."""
    orders = provider_orders(cfg)
    clusters = _clusters(cfg.providers, orders, cfg.limits)
    if static:
        rds: dict[str, Any] = {"route_config": route_config(cfg.providers, orders)}
    else:
        rds = {"rds": {"route_config_name": ROUTE_CONFIG, "config_source": _file_source(out_dir, "rds.yaml")}}
    bootstrap: dict[str, Any] = {
        "node": {"id": "interlock", "cluster": "interlock"},
        "admin": {"address": _socket(cfg.admin.address, cfg.admin.port)},
        "static_resources": {
            "listeners": [_listener(cfg, rds)],
            "clusters": [_extproc_cluster(cfg), _ratelimit_cluster(cfg)] + (clusters if static else []),
        },
        "overload_manager": _overload_manager(cfg),
    }
    if static:
        return {"envoy.yaml": bootstrap}
    bootstrap["dynamic_resources"] = {"cds_config": _file_source(out_dir, "cds.yaml")}
    return {"envoy.yaml": bootstrap, **dynamic_resources(cfg.providers, orders, cfg.limits, "1")}


def _clusters(providers: Iterable[Provider], orders: list[tuple[str, ...]], limits: Limits) -> list[dict[str, Any]]:
    providers = list(providers)
    by_name = {p.name: p for p in providers}
    return [provider_cluster(p, limits) for p in providers] + [aggregate_cluster(o, by_name) for o in orders]


def dynamic_resources(providers: Iterable[Provider], orders: list[tuple[str, ...]], limits: Limits,
                      version: str) -> dict[str, dict[str, Any]]:
    """`cds.yaml` and `rds.yaml` (provider and fallback clusters and their routes), as Envoy's
    file-based xDS reads them."""
    providers = list(providers)
    return {
        "cds.yaml": {"version_info": version, "resources": [
            {"@type": _CLUSTER, **c} for c in _clusters(providers, orders, limits)]},
        "rds.yaml": {"version_info": version, "resources": [
            {"@type": _ROUTE_CONFIG, **route_config(providers, orders)}]},
    }


_HEADER = "# Rendered by `interlock render`: do not edit; edit the gateway config instead.\n"


def to_yaml(doc: dict[str, Any]) -> str:
    return _HEADER + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def render_files(cfg: GatewayConfig, out_dir: str, static: bool = False) -> dict[str, str]:
    return {name: to_yaml(doc) for name, doc in render(cfg, out_dir, static).items()}


def write_files(out_dir: Path, files: dict[str, str]) -> None:
    """Write each file atomically (temp file + rename in the same directory): Envoy's directory
    watch sees whole files only."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out_dir / name)
