"""A `type: pool` provider's Envoy cluster and route (`extproc.pools`).

The cluster holds every server of the pool (static `ip:port` endpoints, or STRICT_DNS on the
pool's name through `dns_server` when given, re-resolved every `dns_refresh`) and routes by the
Gateway API Inference Extension's convention: the override-host load-balancing policy takes the
first address of `x-gateway-destination-endpoint` (the header, or the same list in `envoy.lb`
dynamic metadata) and the next one on each retry; a request without the list (a retry from
another provider of a fallback order, a second pool of one chain) gets least-request. In a
fallback order (an aggregate cluster) the chosen host is named by `ENDPOINT_KEY` instead
on the pool's twin cluster for orders (`subset_policy`): one attempt on it, then the order's
next provider. A DNS-named pool's hosts
carry no per-host metadata, so there the aggregate's attempt is least-request. Its route
retries on a connection failure or refused stream, walking the list. With `epp:` an external
Endpoint Picker sets that list: a second ext_proc filter (`EPP_FILTER`, disabled on every other
route) is turned on for this pool's route and pointed at the picker's cluster.

Which endpoint served (the Endpoint Picker Protocol's `x-gateway-destination-endpoint-served`,
which Envoy 1.40 does not set itself): a pool's route adds `SERVED_HEADER` (the `ip:port` of the
host that answered, after any retry) to the response, and a header-to-metadata filter
(`served_filters`; its rule is the pool route's per-route config, so it does nothing on other
routes) moves it, before any ext_proc filter sees the response, into `envoy.lb` dynamic metadata,
which the external picker and the router stage receive. The header never reaches the client.
(Measured: a filter disabled by default and enabled per route stayed off, as Envoy decides that
when it builds the filter chain, before the router stage has chosen the route.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from extproc.config.model import Limits, Provider
from extproc.envoyconf.providers import duration, provider_cluster, provider_route, socket_address
from extproc.metadata import CLUSTER_HEADER
from extproc.pools.picker import DESTINATION_HEADER, ENDPOINT_KEY, LB_NAMESPACE, SERVED_KEY, SUBSET_NAMESPACE
from extproc.pools.settings import ip_port, name_port

_OVERRIDE = "type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost"
_SUBSET = "type.googleapis.com/envoy.extensions.load_balancing_policies.subset.v3.Subset"
_LEAST = "type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest"
_CARES = "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig"
_EXT_PROC = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
_EXT_PROC_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"
_HTTP_OPTS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_MATCHER = "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher"
_SKIP = "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"
_HEADER_INPUT = "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput"
_HEADER_TO_METADATA = "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config"
EPP_FILTER = "interlock.epp"
SERVED_FILTER = "interlock.pool-served"
SERVED_HEADER = "x-interlock-served-endpoint"
POOL_RETRY_ON = "connect-failure,refused-stream,reset"
POOL_RETRIES = 2


def epp_cluster_name(p: Provider) -> str:
    return f"epp_{p.name}"


def override_host_policy() -> dict[str, Any]:
    return {"policies": [{"typed_extension_config": {
        "name": "envoy.load_balancing_policies.override_host",
        "typed_config": {
            "@type": _OVERRIDE,
            "override_host_sources": [{"header": DESTINATION_HEADER},
                                      {"metadata": {"key": LB_NAMESPACE, "path": [{"key": DESTINATION_HEADER}]}}],
            "fallback_policy": {"policies": [{"typed_extension_config": {
                "name": "envoy.load_balancing_policies.least_request", "typed_config": {"@type": _LEAST}}}]},
        }}}]}


def subset_policy() -> dict[str, Any]:
    """Subsets of one host each, keyed on the host's `envoy.lb` `ENDPOINT_KEY`, chosen by the
    router's metadata match (Envoy merges the request's `envoy.lb` dynamic metadata into it);
    without that key, least-request. Inside an aggregate cluster (a pool in a fallback order)
    Envoy 1.40 passes the override-host policy no request data (measured: picks ignored), but it
    passes the metadata match: the router stage then names the chosen host by `ENDPOINT_KEY`,
    and the aggregate's members are the pools' twins with this policy (`pools_in_orders`)."""
    return {"policies": [{"typed_extension_config": {
        "name": "envoy.load_balancing_policies.subset",
        "typed_config": {
            "@type": _SUBSET, "fallback_policy": "ANY_ENDPOINT", "allow_redundant_keys": True,
            "subset_selectors": [{"keys": [ENDPOINT_KEY]}],
            "subset_lb_policy": {"policies": [{"typed_extension_config": {
                "name": "envoy.load_balancing_policies.least_request", "typed_config": {"@type": _LEAST}}}]},
        }}}]}


def in_order_name(p: Provider) -> str:
    """The pool's cluster as a member of fallback orders (`subset_policy`)."""
    return f"{p.cluster_name}~in-order"


def pools_in_orders(aggregate: dict[str, Any], providers: dict[str, Provider]) -> dict[str, Any]:
    """An aggregate cluster (`extproc.envoyconf.fallback`) with each pool member replaced by the
    pool's in-order twin, which the router stage's metadata match steers."""
    twins = {p.cluster_name: in_order_name(p) for p in providers.values() if p.pool is not None}
    members = aggregate["cluster_type"]["typed_config"]["clusters"]
    aggregate["cluster_type"]["typed_config"]["clusters"] = [twins.get(c, c) for c in members]
    return aggregate


def pool_cluster(p: Provider, limits: Limits, in_order: bool = False) -> dict[str, Any]:
    """The pool's cluster (override host), or with `in_order` its twin for fallback orders
    (`subset_policy`; circuit breakers of its own)."""
    assert p.pool is not None
    cluster = provider_cluster(p, limits)
    meta = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["metadata"]
    cluster.pop("lb_policy", None)
    cluster["load_balancing_policy"] = subset_policy() if in_order else override_host_policy()
    if in_order:
        cluster["name"] = in_order_name(p)
    # Envoy's own panic mode would send to an ejected server; the picker already avoids them.
    cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": 0}}
    if p.pool.dns:
        host, port = name_port(p.pool.dns) or ("", 0)
        cluster["type"] = "STRICT_DNS"
        cluster["dns_refresh_rate"] = duration(p.pool.dns_refresh)
        cluster["respect_dns_ttl"] = False
        endpoints = [{"endpoint": {"address": socket_address(host, port)}, "metadata": meta}]
        if p.pool.dns_server:
            server, server_port = ip_port(p.pool.dns_server) or ("", 0)
            cluster["typed_dns_resolver_config"] = {"name": "envoy.network.dns_resolver.cares", "typed_config": {
                "@type": _CARES, "resolvers": [socket_address(server, server_port)],
                "use_resolvers_as_fallback": False,
                "dns_resolver_options": {"no_default_search_domain": True}}}
    else:
        cluster["type"] = "STATIC"
        endpoints = []
        for e in p.pool.endpoints:
            host, port = ip_port(e) or ("", 0)
            host_meta = {"filter_metadata": {**meta["filter_metadata"], LB_NAMESPACE: {ENDPOINT_KEY: e}}}
            endpoints.append({"endpoint": {"address": socket_address(host, port), "hostname": e},
                              "metadata": host_meta})
    cluster["load_assignment"] = {"cluster_name": cluster["name"], "endpoints": [{"lb_endpoints": endpoints}]}
    return cluster


def pool_route(p: Provider) -> dict[str, Any]:
    assert p.pool is not None
    route = provider_route(p)
    action = route["route"]
    action.pop("host_rewrite_literal", None)  # each server is its own host; vLLM does not read Host
    retry = action.get("retry_policy", {"num_retries": 0})
    retry["retry_on"] = POOL_RETRY_ON
    retry["num_retries"] = POOL_RETRIES
    action["retry_policy"] = retry
    # The host that answered (the last attempt's), for `served_filters`: ours, whatever the server sent.
    route["response_headers_to_add"] = [{"header": {"key": SERVED_HEADER, "value": "%UPSTREAM_REMOTE_ADDRESS%"},
                                         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    route["typed_per_filter_config"] = {SERVED_FILTER: _served_rule()}
    if p.pool.epp:
        route["typed_per_filter_config"][EPP_FILTER] = {"@type": _EXT_PROC_PER_ROUTE, "overrides": {
            "grpc_service": {"envoy_grpc": {"cluster_name": epp_cluster_name(p)}}}}
    return route


def _served_rule() -> dict[str, Any]:
    return {"@type": _HEADER_TO_METADATA, "response_rules": [{
        "header": SERVED_HEADER, "remove": True,
        "on_header_present": {"metadata_namespace": LB_NAMESPACE, "key": SERVED_KEY, "type": "STRING"}}]}


def served_filters(providers: Iterable[Provider]) -> list[dict[str, Any]]:
    """When a pool is configured: the filter that moves a pool route's `SERVED_HEADER` into
    `envoy.lb` `SERVED_KEY` and removes it. It goes after every ext_proc filter (responses run
    the chain backwards: it runs before them); it has no rule of its own, only pool routes' one.
    The listener is static: after a reload that adds the first pool, the header still never
    reaches the client (the router stage removes every `x-interlock-*` header of an answer), and
    the router stage reads `upstream.address` instead."""
    if not any(p.pool is not None for p in providers):
        return []
    return [{"name": SERVED_FILTER, "typed_config": {"@type": _HEADER_TO_METADATA}}]


def epp_filters(providers: Iterable[Provider]) -> list[dict[str, Any]]:
    """The external Endpoint Picker's ext_proc filter, after the router stage, when a pool names
    one: it runs only for requests the router stage sent to such a pool (a matcher on the cluster
    header the router stage set), with that pool's picker (per-route `grpc_service`). It gets the
    request headers and body and answers with the destination header and `envoy.lb` metadata; the
    subset hint travels to it in `envoy.lb.subset_hint`. It gets the response headers too, with
    `envoy.lb` `SERVED_KEY` (`served_filters`) in their metadata context. The listener is static:
    the first pool with `epp:` needs a restart, not a reload. A pool with `epp:` reached as a fallback of
    another provider's order gets Envoy's least-request instead (the picker is not called)."""
    epp = [p for p in providers if p.pool is not None and p.pool.epp]
    if not epp:
        return []
    tests = [{"single_predicate": {
        "input": {"name": "cluster", "typed_config": {"@type": _HEADER_INPUT, "header_name": CLUSTER_HEADER}},
        "value_match": {"exact": p.cluster_name}}} for p in epp]
    chosen = tests[0] if len(tests) == 1 else {"or_matcher": {"predicate": tests}}
    skip = {"matcher_list": {"matchers": [{"predicate": {"not_matcher": chosen},
                                           "on_match": {"action": {"name": "skip", "typed_config": {"@type": _SKIP}}}}]}}
    ext_proc = {
        "@type": _EXT_PROC,
        "grpc_service": {"envoy_grpc": {"cluster_name": epp_cluster_name(epp[0])}, "timeout": "5s"},
        "failure_mode_allow": False,
        "processing_mode": {"request_header_mode": "SEND", "request_body_mode": "BUFFERED",
                            "request_trailer_mode": "SKIP", "response_header_mode": "SEND",
                            "response_body_mode": "NONE", "response_trailer_mode": "SKIP"},
        "mutation_rules": {"allow_all_routing": True},
        "metadata_options": {"forwarding_namespaces": {"untyped": [SUBSET_NAMESPACE, LB_NAMESPACE]},
                             "receiving_namespaces": {"untyped": [LB_NAMESPACE]}},
    }
    return [{"name": EPP_FILTER, "typed_config": {
        "@type": _MATCHER, "xds_matcher": skip,
        "extension_config": {"name": EPP_FILTER, "typed_config": ext_proc}}}]


def epp_cluster(p: Provider) -> dict[str, Any]:
    assert p.pool is not None and p.pool.epp
    host, port = ip_port(p.pool.epp) or name_port(p.pool.epp) or ("", 0)
    name = epp_cluster_name(p)
    return {
        "name": name, "type": "STATIC" if ip_port(p.pool.epp) else "STRICT_DNS", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": socket_address(host, port)}}]}]},
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": _HTTP_OPTS, "explicit_http_config": {"http2_protocol_options": {}}}},
    }
