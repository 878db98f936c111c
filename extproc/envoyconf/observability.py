"""Envoy's part of observability: the OpenTelemetry tracer and the JSON access log.

`apply(bootstrap, settings)` adds to the gateway's listener (its HTTP connection manager):

- with a traces endpoint: Envoy's OpenTelemetry tracer (OTLP over HTTP to a cluster of its own,
  `interlock_otel_collector`): a span for each request and one per upstream attempt
  (`spawn_upstream_span`), continuing the client's W3C `traceparent` and sending Envoy's to the
  provider; the ext_proc call carries it too, so the router stage's spans are its children.
  `random_sampling` is the share of new traces (`OTEL_TRACES_SAMPLER_ARG`).
- the access log (unless `INTERLOCK_ACCESS_LOG=off`): one JSON line per request on Envoy's stdout
  with the request id, tenant, model, provider, status, tokens (cached ones too) and cost (`ACCESS_LOG_FORMAT`; the
  tenant, tokens and cost from the router stage's dynamic metadata, `access_*` keys).

Pure: a function of the bootstrap dict and the settings.
"""

from __future__ import annotations

from typing import Any

from extproc import metadata
from extproc.telemetry.settings import TelemetrySettings, collector_address

COLLECTOR_CLUSTER = "interlock_otel_collector"
_OTEL = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
_STDOUT = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


# Envoy's OpenTelemetry tracer exports when 5 spans are buffered (its default): a POST every
# request or two at full sampling (three spans or more per request). Batches of up to 512 spans,
# at least once a second.
TRACER_RUNTIME = {"tracing.opentelemetry.min_flush_spans": 512, "tracing.opentelemetry.flush_interval_ms": 1000}


def _meta(key: str) -> str:
    return f"%DYNAMIC_METADATA({metadata.NAMESPACE}:{key})%"


# Values Envoy does not know print as null (JSON); no header value a client chose is logged but
# the request id Envoy generated and the path without its query.
ACCESS_LOG_FORMAT: dict[str, str] = {
    "time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "trace_id": "%TRACE_ID%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ_WITHOUT_QUERY(:PATH)%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "tenant": _meta("access_tenant"),
    "model": f"%RESP({metadata.MODEL_HEADER})%",
    "provider": f"%RESP({metadata.PROVIDER_HEADER})%",
    "route": f"%RESP({metadata.ROUTE_HEADER})%",
    "priority": f"%RESP({metadata.PRIORITY_HEADER})%",  # the class admitted (capacity planning reads it)
    "input_tokens": _meta("access_input_tokens"),
    "output_tokens": _meta("access_output_tokens"),
    "cached_tokens": _meta("access_cached_tokens"),  # of input_tokens, served from the answering server's cache
    "cost_micro_usd": _meta("access_cost_micro_usd"),
    "duration_ms": "%DURATION%",
    "upstream_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "bytes_sent": "%BYTES_SENT%",
}


def access_log() -> list[dict[str, Any]]:
    return [{"name": "envoy.access_loggers.stdout", "typed_config": {
        "@type": _STDOUT,
        "log_format": {"json_format": ACCESS_LOG_FORMAT, "json_format_options": {"sort_properties": False},
                       "formatters": [{"name": "envoy.formatter.req_without_query", "typed_config": {
                           "@type": "type.googleapis.com/envoy.extensions.formatter.req_without_query.v3"
                                    ".ReqWithoutQuery"}}]}}}]


def tracing(settings: TelemetrySettings) -> dict[str, Any]:
    assert settings.traces_endpoint is not None
    return {
        "random_sampling": {"value": settings.sample_ratio * 100},
        "spawn_upstream_span": True,
        "provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
            "@type": _OTEL,
            "service_name": f"{settings.service_name}-envoy",
            "http_service": {"http_uri": {"uri": settings.traces_endpoint, "cluster": COLLECTOR_CLUSTER,
                                          "timeout": "5s"}},
        }},
    }


def collector_cluster(url: str) -> dict[str, Any]:
    host, port, _, tls = collector_address(url)
    cluster: dict[str, Any] = {
        "name": COLLECTOR_CLUSTER,
        "type": "STRICT_DNS",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": COLLECTOR_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}]},
    }
    if tls:
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls",
                                       "typed_config": {"@type": _TLS, "sni": host}}
    return cluster


def apply(bootstrap: dict[str, Any], settings: TelemetrySettings) -> dict[str, Any]:
    """Add the tracer and access log of `settings` to `bootstrap`'s listener (in place; returned)."""
    static = bootstrap["static_resources"]
    for listener in static["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                hcm = f["typed_config"]
                if settings.access_log:
                    hcm["access_log"] = access_log()
                if settings.traces_endpoint:
                    hcm["tracing"] = tracing(settings)
    if settings.traces_endpoint:
        static["clusters"].append(collector_cluster(settings.traces_endpoint))
        layers = bootstrap.setdefault("layered_runtime", {"layers": []})["layers"]
        static_layer = next((layer["static_layer"] for layer in layers if "static_layer" in layer), None)
        if static_layer is None:
            static_layer = {}
            layers.insert(0, {"name": "interlock", "static_layer": static_layer})
        static_layer.update(TRACER_RUNTIME)
    return bootstrap
