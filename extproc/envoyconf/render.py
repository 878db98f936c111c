"""Gateway config → Envoy configuration files, as plain data.

Files (`render_files`): `envoy.yaml` (bootstrap: listener, ext_proc cluster, admin), `cds.yaml`
(one cluster per provider) and `rds.yaml` (the route configuration). The last two are Envoy
file-based dynamic resources: rewriting them (atomically, by rename) changes the providers of a
running Envoy without a restart, which is how config reload adds a provider. `static=True`
puts everything into one static bootstrap instead (for `envoy --mode validate` of every resource).

Shape of what is rendered:
- one listener (INBOUND, so a drain reaches it): HTTP connection manager → readiness
  (`/health/ready`, `/health`) → the client's path recorded (`CLIENT_NAMESPACE`) → ext_proc
  (router stage; skipped for Envoy's refusals of malformed requests) → rate limit (our
  RateLimitService, `extproc.limits`) → router; `/health/live` is a route Envoy answers without
  the ext_proc; HTTP codec limits written out, one buffer limit (`buffer_limit`) for HTTP/1.1
  and HTTP/2;
- routes: every path goes to the cluster the ext_proc names in `x-interlock-cluster`
  (the ext_proc clears the route cache when it sets it); no route timeout, so long generations
  are not cut; streams end when idle for the provider's `idle_timeout` (on a fallback order,
  each attempt when idle for the shortest of its providers': `fallback.attempt_idle_timeout`);
- one cluster per provider (DNS, TLS with SNI for https, circuit breakers, outlier detection,
  its own admission control);
- the ext_proc cluster: HTTP/2 to every worker process, gRPC health-checked, its circuit
  breaker sized for `extproc.max_streams` (each open LLM stream holds one gRPC stream);
- the rate-limit cluster: HTTP/2 to the pod's one rate-limit process, gRPC health-checked;
- replies Envoy makes itself (malformed HTTP, no healthy upstream, overflow, timeouts, body or
  answer too large, ext_proc unavailable, rate limited, overloaded, shed by admission control)
  are shaped by `local_reply_config` (`local_replies.py`) into the client API's error format,
  with the gateway's own messages; health endpoints in `health.py`, providers in `providers.py`;
- last lines of defence: each provider's `admission_control` sheds when that provider's success
  rate collapses, and the overload manager refuses new requests near the heap limit (and caps connections).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from extproc import metadata
from extproc.config.model import GatewayConfig, Limits, Provider
from extproc.envoyconf import listener_tls, observability, overrides
from extproc.envoyconf.fallback import aggregate_cluster, aggregate_route, upstream_filters
from extproc.envoyconf.health import (  # noqa: F401 (LIVE_PATH, READY_PATHS: read here by the tests)
    LIVE_PATH,
    READY_PATHS,
    grpc_health_checks,
    liveness_route,
    readiness_filter,
)
from extproc.envoyconf.local_replies import (  # noqa: F401 (names the tests and the chart read here)
    ANTHROPIC_PATH,
    CLIENT_NAMESPACE,
    MAX_HEADERS_COUNT,
    MAX_REQUEST_HEADERS_KB,
    local_reply_config,
)
from extproc.envoyconf.orders import provider_orders
from extproc.envoyconf.pools import (
    epp_cluster,
    epp_filters,
    pool_cluster,
    pool_route,
    pools_in_orders,
    served_filters,
)
from extproc.envoyconf.providers import (
    ADMISSION_ENABLED_KEY,
    ADMISSION_THRESHOLD_KEY,
    provider_cluster,
    provider_route,
)
from extproc.envoyconf.providers import duration as _duration
from extproc.envoyconf.providers import socket_address as _socket
from extproc.limits.scheme import envoy_rate_limits
from extproc.pools.picker import LB_NAMESPACE, SUBSET_NAMESPACE
from extproc.telemetry.settings import settings_or_default

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
_HEADER_TO_METADATA = "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config"
_MATCHER = "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher"
_CEL_INPUT = "type.googleapis.com/xds.type.matcher.v3.HttpAttributesCelMatchInput"
_CEL_MATCHER = "type.googleapis.com/xds.type.matcher.v3.CelMatcher"
_SKIP = "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"
_RATELIMIT = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"
_EXT_PROC_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"
_FIXED_HEAP = "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig"


def worker_count(cfg: GatewayConfig) -> int:
    return cfg.extproc.workers or os.cpu_count() or 1


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
            "routes": [liveness_route()] + [pool_route(p) if p.pool else provider_route(p) for p in providers]
            + fallback + [{
                # No cluster chosen: the ext_proc answered or failed before routing.
                "match": {"prefix": "/"},
                "direct_response": {"status": 404, "body": {"inline_string": "Not found."}},
            }],
        }],
    }


def _listener(cfg: GatewayConfig, rds: dict[str, Any]) -> dict[str, Any]:
    # With a pool, envoy.lb comes back too: which endpoint served (`served_filters`).
    forwarding = [SUBSET_NAMESPACE, *([LB_NAMESPACE] if any(p.pool is not None for p in cfg.providers) else [])]
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
        "response_attributes": ["xds.upstream_host_metadata", "upstream.address"],
        # The original request travels to the upstream stage in this namespace.
        # envoy.lb: a pool's endpoints (`extproc.pools`); its subset hint comes from earlier filters.
        "metadata_options": {"receiving_namespaces": {"untyped": [metadata.NAMESPACE, LB_NAMESPACE]},
                             "forwarding_namespaces": {"untyped": forwarding}},
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
        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST",
                                         "max_headers_count": MAX_HEADERS_COUNT},
        "max_request_headers_kb": MAX_REQUEST_HEADERS_KB,
        # An HTTP/2 stream's buffer limit is its window: the same limit as HTTP/1.1's.
        "http2_protocol_options": {"initial_stream_window_size": buffer_limit(cfg.limits)},
        # A client must never pick the cluster itself: the header is the ext_proc's to set. Nor the
        # request id: Envoy makes its own (a client's would be echoed, any length, in every answer
        # and log line; correlation from the client travels in `traceparent`).
        "early_header_mutation_extensions": [{
            "name": "envoy.http.early_header_mutation.header_mutation",
            "typed_config": {"@type": _EARLY_MUTATION, "mutations": [{"remove": metadata.CLUSTER_HEADER},
                                                                     {"remove": metadata.REQUEST_ID_HEADER}]}}],
        "http_filters": [
            readiness_filter(),
            _client_path_filter(),
            _router_stage_filter(ext_proc),
            *epp_filters(cfg.providers),  # pools with an external endpoint picker
            *served_filters(cfg.providers),  # after every ext_proc: which pool endpoint served
            *_limit_filters(cfg),
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": _ROUTER, "upstream_http_filters": upstream_filters(cfg.extproc, _duration)}},
        ],
        "local_reply_config": local_reply_config(cfg.limits),
        **rds,
    }
    return {
        "name": metadata.LISTENER_NAME,
        "address": _socket(cfg.listen.address, cfg.listen.port),
        # The listener clients reach: `drain_listeners?inboundonly` (the drain on stop) selects
        # only listeners marked INBOUND; unmarked, it drained nothing.
        "traffic_direction": "INBOUND",
        "per_connection_buffer_limit_bytes": buffer_limit(cfg.limits),
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}],
    }


def buffer_limit(limits: Limits) -> int:
    """The most Envoy holds of one request body or one answer: Envoy has one buffer limit per
    stream for both directions, so the larger of `limits.max_request_bytes` and
    `limits.max_response_bytes`. A request body over it is a 413 and an answer held whole (to
    translate or read it) over it a 502, both made by Envoy. It is the listener's limit for
    HTTP/1.1 streams and the stream window for HTTP/2 ones (whose default, 256 MiB, let 3 MB
    answers through a 1 MiB limit), so within HTTP/2's bounds for a window."""
    return min(max(limits.max_request_bytes, limits.max_response_bytes, 65535), 2**31 - 1)


def _client_path_filter() -> dict[str, Any]:
    """Before the router stage: record the client's own path (`CLIENT_NAMESPACE`). Envoy's replies
    follow the client's API by it once the router stage has rewritten the path for a provider (the
    header naming the client's API is removed before the request goes upstream, from the same
    header map Envoy's replies read)."""
    return {"name": "envoy.filters.http.header_to_metadata", "typed_config": {
        "@type": _HEADER_TO_METADATA,
        "request_rules": [{"header": ":path", "remove": False, "on_header_present": {
            "metadata_namespace": CLIENT_NAMESPACE, "key": "path", "type": "STRING"}}]}}


def _envoys_refusal() -> dict[str, Any]:
    """CEL, as a parsed AST (this Envoy's matcher takes no expression strings):

        !has(request.method) || response.code_details.startsWith('http1.')

    The reply is Envoy's refusal of a malformed request: the filter's request side never ran
    (the codec, or the connection manager, refused the request before any filter saw its headers:
    the matcher runs on the reply, without the request's headers), or the HTTP/1 codec refused the
    body after the headers went through (a bad chunk). The second half reads the response, so
    Envoy evaluates the matcher again on the reply; at request time it is not a match."""
    ids = iter(range(1, 32))

    def node(**kind: Any) -> dict[str, Any]:
        return {"id": next(ids), **kind}

    no_request = node(call_expr={"function": "!_", "args": [node(select_expr={
        "operand": node(ident_expr={"name": "request"}), "field": "method", "test_only": True})]})
    codec = node(call_expr={
        "target": node(select_expr={"operand": node(ident_expr={"name": "response"}), "field": "code_details"}),
        "function": "startsWith", "args": [node(const_expr={"string_value": "http1."})]})
    return {"expr": node(call_expr={"function": "_||_", "args": [no_request, codec]})}


def _router_stage_filter(ext_proc: dict[str, Any]) -> dict[str, Any]:
    """The router stage (ext_proc), skipped for Envoy's replies to malformed requests
    (`_envoys_refusal`). Envoy sends its own replies (400, 426, 431) through every filter's
    response side; the ext_proc held the reply for a gRPC round trip, and the HTTP/1 codec closes
    the connection right after a codec error, so the client got no answer at all."""
    skip = {"matcher_list": {"matchers": [{
        "predicate": {"single_predicate": {
            "input": {"name": "attributes", "typed_config": {"@type": _CEL_INPUT}},
            "custom_match": {"name": "envoys-refusal", "typed_config": {
                "@type": _CEL_MATCHER, "expr_match": {"parsed_expr": _envoys_refusal()}}}}},
        "on_match": {"action": {"name": "skip", "typed_config": {"@type": _SKIP}}}}]}}
    # The outer name stays the ext_proc's: per-route configs (ExtProcPerRoute) address it by it.
    return {"name": "envoy.filters.http.ext_proc", "typed_config": {
        "@type": _MATCHER, "xds_matcher": skip,
        "extension_config": {"name": "envoy.filters.http.ext_proc", "typed_config": {"@type": _EXT_PROC, **ext_proc}}}}


def _limit_filters(cfg: GatewayConfig) -> list[dict[str, Any]]:
    """The rate-limit filter (descriptors from what the router stage wrote in dynamic metadata;
    no descriptor, no call). Admission control is per provider, in each provider cluster's
    upstream filter chain (`providers.admission_control`), not here: on the listener it had one
    success-rate window for every provider, so one failing provider shed the others' traffic."""
    rl = cfg.rate_limit
    return [{"name": "envoy.filters.http.ratelimit", "typed_config": {
        "@type": _RATELIMIT,
        "domain": metadata.RATELIMIT_DOMAIN,
        "timeout": _duration(rl.timeout),
        "failure_mode_deny": rl.failure_mode == "closed",
        # failure_mode closed: the documented 429 when the rate-limit service cannot answer (Envoy's
        # default is a 500, which read as "the provider could not be reached"); the router stage
        # renders it in the client's format, as the gateway's refusal, with Retry-After.
        "status_on_error": {"code": "TooManyRequests"},
        "rate_limit_service": {"grpc_service": {"envoy_grpc": {"cluster_name": metadata.RATELIMIT_CLUSTER}},
                               "transport_api_version": "V3"},
        "rate_limits": envoy_rate_limits(metadata.NAMESPACE),
    }}]


def admission_runtime(cfg: GatewayConfig) -> dict[str, Any]:
    """The bootstrap's static runtime layer: the switch and threshold of every provider's
    admission control (`admission.success_rate_threshold`; 0 turns it off)."""
    sr = cfg.admission.success_rate_threshold
    return {ADMISSION_ENABLED_KEY: sr > 0, ADMISSION_THRESHOLD_KEY: round(sr * 100, 3)}


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
    cluster = _local_grpc_cluster(metadata.RATELIMIT_CLUSTER, [(rl.address, rl.port)], max_connections=64,
                                  max_requests=100000, max_retries=0)
    # Checked like the workers, so readiness (`_readiness_filter`) knows whether it answers.
    return {**cluster, "health_checks": grpc_health_checks()}


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
        "health_checks": grpc_health_checks(),
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
        # Static values the provider clusters read (admission control), then the admin layer
        # (`/runtime_modify`), as Envoy has by default.
        "layered_runtime": {"layers": [{"name": "interlock", "static_layer": admission_runtime(cfg)},
                                       {"name": "admin", "admin_layer": {}}]},
    }
    observability.apply(bootstrap, settings_or_default(os.environ))
    tls_files = listener_tls.apply(bootstrap, cfg.listen.tls, out_dir, static)
    if static:
        return {"envoy.yaml": bootstrap}
    bootstrap["dynamic_resources"] = {"cds_config": _file_source(out_dir, "cds.yaml")}
    return {"envoy.yaml": bootstrap, **dynamic_resources(cfg.providers, orders, cfg.limits, "1"), **tls_files}


def _clusters(providers: Iterable[Provider], orders: list[tuple[str, ...]], limits: Limits) -> list[dict[str, Any]]:
    providers = list(providers)
    by_name = {p.name: p for p in providers}
    in_orders = {p for o in orders if len(o) > 1 for p in o if by_name[p].pool}
    return ([overrides.apply(pool_cluster(p, limits) if p.pool else provider_cluster(p, limits), p.cluster.envoy)
             for p in providers]
            + [overrides.apply(pool_cluster(p, limits, in_order=True), p.cluster.envoy)
               for p in providers if p.name in in_orders]
            + [epp_cluster(p) for p in providers if p.pool and p.pool.epp]
            + [pools_in_orders(aggregate_cluster(o, by_name), by_name) for o in orders])


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
