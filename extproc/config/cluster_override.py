"""`providers[].cluster.envoy`: any other field of the provider's rendered Envoy cluster.

    cluster:
      envoy:                                    # fields of envoy.config.cluster.v3.Cluster
        cluster_type:                           # DNS refresh (replaces the rendered `type`)
          name: envoy.clusters.dns
          typed_config: {"@type": type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster,
                         dns_refresh_rate: 30s, respect_dns_ttl: true, all_addresses_in_single_endpoint: true}
        upstream_connection_options: {tcp_keepalive: {keepalive_time: 60}}
        typed_extension_protocol_options:
          envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
            explicit_http_config: {http2_protocol_options: {connection_keepalive: {interval: 30s, timeout: 5s}}}
        transport_socket: {typed_config: {common_tls_context: {validation_context:
          {trusted_ca: {filename: /etc/ssl/private-ca.pem}}}}}

Typed: every key is checked against Envoy's own message descriptors (PyPI xds-protos) when the
config loads, so a misspelt field is a config error with its path
(`providers[0].cluster.envoy.dns_refresh_rte: not a field of envoy.config.cluster.v3.Cluster`), and
so is a field Envoy has deprecated;
values are checked by Envoy itself when it loads the merged cluster (`interlock run` fails to
start, a reload is refused and the last good config keeps serving). The override is merged into
the rendered cluster by `extproc.envoyconf.overrides`: mappings merge key by key, lists and
scalars replace, and setting one member of a proto `oneof` removes the rendered member.

What the gateway owns cannot be overridden: the cluster's name and endpoints (`endpoint`), the knobs that have their own setting (`connect_timeout`, `circuit_breakers`,
`outlier_detection`: use `cluster.*`), and the upstream HTTP filters (admission control and the
upstream stage). The value is kept as canonical JSON, so configs stay hashable and comparable."""

from __future__ import annotations

import json
from typing import Any

from extproc.config.reader import _Reader

OWNED = {
    "name": "the gateway names provider clusters",
    "type": "set by the provider's endpoint (an IP: STATIC, else LOGICAL_DNS)",
    "eds_cluster_config": "set by the provider's endpoint",
    "load_assignment": "set by the provider's endpoint",
    "connect_timeout": "use cluster.connect_timeout",
    "circuit_breakers": "use cluster.max_requests, max_pending_requests, max_connections and max_retries",
    "outlier_detection": "use cluster.outlier_detection",
}
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def descriptors() -> Any:
    """The Cluster descriptor, with the messages an override commonly names registered."""
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.extensions.clusters.dns.v3 import dns_cluster_pb2  # noqa: F401
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401 (registers the TLS contexts)
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401

    return cluster_pb2.Cluster.DESCRIPTOR


def any_type(value: dict[str, Any], key_hint: str | None = None) -> Any:
    """The descriptor an `Any` holds (`@type`, else a map key naming the type), or None."""
    from google.protobuf import symbol_database

    name = str(value.get("@type", "")).rsplit("/", 1)[-1] or key_hint or ""
    try:
        return symbol_database.Default().pool.FindMessageTypeByName(name)
    except KeyError:
        return None


def parse_override(r: _Reader, raw: Any, path: str) -> str:
    """Canonical JSON of a valid override ("" when absent); every problem reported with its path."""
    if raw is None:
        return ""
    if not isinstance(raw, dict):
        r.fail(path, "must be a mapping of Envoy Cluster fields")
        return ""
    for key, why in OWNED.items():
        if key in raw:
            r.fail(f"{path}.{key}", f"cannot be overridden ({why})")
    _check(r, raw, descriptors(), path)
    http = raw.get("typed_extension_protocol_options", {})
    if isinstance(http, dict) and isinstance(http.get(_HTTP_OPTIONS), dict) and "http_filters" in http[_HTTP_OPTIONS]:
        r.fail(f"{path}.typed_extension_protocol_options.{_HTTP_OPTIONS}.http_filters",
               "cannot be overridden (the gateway's upstream filters: admission control and the upstream stage)")
    return json.dumps(raw, sort_keys=True, separators=(",", ":"))


def _check(r: _Reader, value: Any, descriptor: Any, path: str, key_hint: str | None = None) -> None:
    if not isinstance(value, dict) or descriptor is None:
        return
    if descriptor.full_name == "google.protobuf.Any":
        _check(r, {k: v for k, v in value.items() if k != "@type"}, any_type(value, key_hint), path)
        return
    for key, item in value.items():
        field = descriptor.fields_by_name.get(key)
        if field is None:
            r.fail(f"{path}.{key}", f"not a field of {descriptor.full_name}")
            continue
        if field.GetOptions().deprecated:
            r.fail(f"{path}.{key}", f"deprecated by Envoy ({descriptor.full_name}; see its replacement in the "
                                    "Envoy API docs, e.g. DNS settings in cluster_type envoy.clusters.dns)")
            continue
        message = field.message_type
        if message is None:
            continue
        if message.GetOptions().map_entry:
            value_type = message.fields_by_name["value"].message_type
            if isinstance(item, dict):
                for k, v in item.items():
                    _check(r, v, value_type, f"{path}.{key}.{k}", key_hint=str(k))
        elif field.is_repeated:
            for i, v in enumerate(item if isinstance(item, list) else []):
                _check(r, v, message, f"{path}.{key}[{i}]")
        else:
            _check(r, item, message, f"{path}.{key}")
