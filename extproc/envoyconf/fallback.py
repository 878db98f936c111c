"""The Envoy pieces of per-attempt fallback: aggregate clusters, their routes, and the upstream
stage (the ext_proc again, in the router's upstream filter chain).

Every request carries `x-interlock-translated-for: <provider>` (the provider whose API its body
is in). The upstream stage is wrapped in a matcher that skips it when the host Envoy picked for
this attempt belongs to that provider — so first attempts cost nothing extra — and runs it
otherwise (a retry on another provider, or Envoy spilling a first attempt past an ejected
provider): it then re-translates the original request, kept in dynamic metadata, for the
provider of this attempt.
"""

from __future__ import annotations

from typing import Any

from extproc import metadata
from extproc.config.model import ExtProcSettings, Provider
from extproc.metadata import aggregate_name

_AGGREGATE = "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig"
_PREVIOUS_PRIORITIES = ("type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3."
                        "PreviousPrioritiesConfig")
_MATCHER = "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher"
_CEL_INPUT = "type.googleapis.com/xds.type.matcher.v3.HttpAttributesCelMatchInput"
_CEL_MATCHER = "type.googleapis.com/xds.type.matcher.v3.CelMatcher"
_SKIP = "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"
_EXT_PROC = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
_HEADER_MUTATION = "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
_CODEC = "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"

# What a retry is for: the attempt failed before the provider answered, or it answered 429/5xx, or
# it refused the gateway's own credentials (401/403: that account is misconfigured or revoked, the
# client's request is not at fault, and the next candidate's account may be fine).
RETRY_ON = "connect-failure,refused-stream,reset,retriable-status-codes,5xx"
RETRIABLE_STATUS_CODES = [401, 403, 429]


def host_metadata(provider: Provider) -> dict[str, Any]:
    """Endpoint metadata naming the provider; both ext_proc stages read it per attempt."""
    return {"filter_metadata": {metadata.NAMESPACE: {"provider": provider.name}}}


def aggregate_cluster(order: tuple[str, ...], clusters: dict[str, Provider]) -> dict[str, Any]:
    return {
        "name": aggregate_name(order),
        "connect_timeout": "1s",
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {"name": "envoy.clusters.aggregate", "typed_config": {
            "@type": _AGGREGATE, "clusters": [clusters[p].cluster_name for p in order]}},
        # Retries count against this budget: at most 20 % of active requests (min 10) retrying.
        "circuit_breakers": {"thresholds": [{"priority": "DEFAULT", "retry_budget": {
            "budget_percent": {"value": 20.0}, "min_retry_concurrency": 10}}]},
    }


def attempt_idle_timeout(order: tuple[str, ...], providers: dict[str, Provider]) -> float:
    """How long an attempt on this order may go without a byte from its provider: the shortest
    `cluster.idle_timeout` among the order's providers.

    Envoy 1.40 has one per-try idle timeout per route (`retry_policy.per_try_idle_timeout`, with
    no header or per-cluster override), and one aggregate route serves every attempt of an order,
    whichever provider it lands on. The shortest value is the only one that ends a stall within
    the stalling provider's own idle timeout; the price is that a provider with a longer one is
    held to the shortest while it serves this order (a quiet stretch longer than that is a stall)."""
    return min(providers[p].cluster.idle_timeout for p in order)


def aggregate_route(order: tuple[str, ...], providers: dict[str, Provider],
                    duration: Any) -> dict[str, Any]:
    """Attempt n goes to the n-th provider; the primary's first-byte timeout bounds each try, and
    `attempt_idle_timeout` bounds each try's silences, before its first byte (the attempt fails
    over to the next provider) and after it (the stream ends)."""
    first = providers[order[0]].cluster
    idle = attempt_idle_timeout(order, providers)
    retry: dict[str, Any] = {
        "retry_on": RETRY_ON,
        "retriable_status_codes": RETRIABLE_STATUS_CODES,
        "num_retries": len(order) - 1,
        "per_try_idle_timeout": duration(idle),
        "retry_priority": {"name": "envoy.retry_priorities.previous_priorities", "typed_config": {
            "@type": _PREVIOUS_PRIORITIES, "update_frequency": 1}},
        "retry_back_off": {"base_interval": "0.005s", "max_interval": "0.05s"},
    }
    if first.per_try_timeout:
        retry["per_try_timeout"] = duration(first.per_try_timeout)
    return {
        "match": {"prefix": "/", "headers": [{"name": metadata.CLUSTER_HEADER,
                                             "string_match": {"exact": aggregate_name(order)}}]},
        # The stream's own idle timeout (Envoy's connection manager, which sees no bytes while
        # attempts fail over) only backs the per-try one up: every attempt may use its bound.
        "route": {"cluster": aggregate_name(order), "timeout": "0s", "auto_host_rewrite": True,
                  "idle_timeout": duration(len(order) * idle + 1),
                  "retry_policy": retry},
    }


def _cel_same_provider() -> dict[str, Any]:
    """CEL (as a parsed AST; this Envoy takes no expression strings):
    request.headers['x-interlock-translated-for']
        == xds.upstream_host_metadata.filter_metadata['interlock']['provider']"""
    ids = iter(range(1, 64))

    def ident(name: str) -> dict[str, Any]:
        return {"id": next(ids), "ident_expr": {"name": name}}

    def select(operand: dict[str, Any], field: str) -> dict[str, Any]:
        return {"id": next(ids), "select_expr": {"operand": operand, "field": field}}

    def const(value: str) -> dict[str, Any]:
        return {"id": next(ids), "const_expr": {"string_value": value}}

    def call(function: str, *args: dict[str, Any]) -> dict[str, Any]:
        return {"id": next(ids), "call_expr": {"function": function, "args": list(args)}}

    translated_for = call("_[_]", select(ident("request"), "headers"), const(metadata.TRANSLATED_FOR_HEADER))
    host_provider = call("_[_]", call("_[_]", select(select(ident("xds"), "upstream_host_metadata"),
                                                     "filter_metadata"), const(metadata.NAMESPACE)),
                         const("provider"))
    return {"expr": call("_==_", translated_for, host_provider)}


def upstream_filters(x: ExtProcSettings, duration: Any) -> list[dict[str, Any]]:
    """The router's upstream filter chain: [upstream stage unless already translated, codec]."""
    ext_proc = {
        "@type": _EXT_PROC,
        "grpc_service": {"envoy_grpc": {"cluster_name": metadata.EXTPROC_CLUSTER},
                         "timeout": duration(x.message_timeout),
                         "initial_metadata": [{"key": metadata.STAGE_METADATA, "value": "upstream"}]},
        "failure_mode_allow": False,
        "message_timeout": duration(x.message_timeout),
        "processing_mode": {
            "request_header_mode": "SEND", "request_body_mode": "BUFFERED", "request_trailer_mode": "SKIP",
            "response_header_mode": "SKIP", "response_body_mode": "NONE", "response_trailer_mode": "SKIP"},
        "request_attributes": ["xds.upstream_host_metadata"],
        "metadata_options": {"forwarding_namespaces": {"untyped": [metadata.NAMESPACE]}},
        "mutation_rules": {"allow_all_routing": True},
        "status_on_error": {"code": "ServiceUnavailable"},
    }
    skip_when_translated = {"matcher_list": {"matchers": [{
        "predicate": {"single_predicate": {
            "input": {"name": "attributes", "typed_config": {"@type": _CEL_INPUT}},
            "custom_match": {"name": "same-provider", "typed_config": {
                "@type": _CEL_MATCHER, "expr_match": {"parsed_expr": _cel_same_provider()}}}}},
        "on_match": {"action": {"name": "skip", "typed_config": {"@type": _SKIP}}}}]}}
    return [
        {"name": "interlock.upstream_stage", "typed_config": {
            "@type": _MATCHER, "xds_matcher": skip_when_translated,
            "extension_config": {"name": "envoy.filters.http.ext_proc", "typed_config": ext_proc}}},
        *upstream_tail(),
    ]


def upstream_tail() -> list[dict[str, Any]]:
    """The end of every upstream filter chain: Interlock's own routing headers and the headers
    Envoy adds for itself (`x-forwarded-proto`, which the router needs until routing is done; the
    original host; the expected timeout; the attempt count) stop here — providers never see them —
    then the codec."""
    return [
        {"name": "envoy.filters.http.header_mutation", "typed_config": {
            "@type": _HEADER_MUTATION, "mutations": {"request_mutations": [
                {"remove": metadata.TRANSLATED_FOR_HEADER}, {"remove": metadata.CLUSTER_HEADER},
                {"remove": metadata.CLIENT_API_HEADER}, {"remove": "x-forwarded-proto"},
                {"remove": "x-envoy-original-host"}, {"remove": "x-envoy-expected-rq-timeout-ms"},
                {"remove": metadata.ENVOY_ATTEMPT_COUNT}]}}},
        {"name": "envoy.filters.http.upstream_codec", "typed_config": {"@type": _CODEC}},
    ]
