"""HTTPS on the listener (`listen.tls`): Envoy's DownstreamTlsContext over the configured PEM files.

Rendered (`interlock render`, `interlock run`): the certificate is a file-based SDS secret,
`listener_tls.yaml` next to `envoy.yaml`, whose `watched_directory` is the certificate's own
directory. A Kubernetes Secret volume changes by a rename in that directory (the kubelet swaps its
`..data` symlink), so Envoy re-reads both files and new connections get the new certificate
without a restart; connections already open keep theirs. `--static` has no SDS file: the files
are read once at start. TLS 1.2 and 1.3; ALPN h2 and http/1.1."""

from __future__ import annotations

import os
from typing import Any

from extproc.config.model import ListenerTls

SDS_FILE = "listener_tls.yaml"
SECRET_NAME = "listener_certificate"
_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
_SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def _certificate(tls: ListenerTls) -> dict[str, Any]:
    return {"certificate_chain": {"filename": tls.cert_file}, "private_key": {"filename": tls.key_file},
            "watched_directory": {"path": os.path.dirname(tls.cert_file)}}


def transport_socket(tls: ListenerTls, out_dir: str, static: bool) -> dict[str, Any]:
    common: dict[str, Any] = {"alpn_protocols": ["h2", "http/1.1"],
                              "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"}}
    if static:
        common["tls_certificates"] = [{k: v for k, v in _certificate(tls).items() if k != "watched_directory"}]
    else:
        common["tls_certificate_sds_secret_configs"] = [{"name": SECRET_NAME, "sds_config": {
            "resource_api_version": "V3",
            "path_config_source": {"path": f"{out_dir}/{SDS_FILE}", "watched_directory": {"path": out_dir}}}}]
    return {"name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": _TLS, "common_tls_context": common}}


def apply(bootstrap: dict[str, Any], tls: ListenerTls | None, out_dir: str, static: bool) -> dict[str, dict[str, Any]]:
    """Add TLS to the listener's filter chain; the extra files to write (the SDS secret)."""
    if tls is None:
        return {}
    [listener] = bootstrap["static_resources"]["listeners"]
    for chain in listener["filter_chains"]:
        chain["transport_socket"] = transport_socket(tls, out_dir, static)
    if static:
        return {}
    return {SDS_FILE: {"resources": [{"@type": _SECRET, "name": SECRET_NAME, "tls_certificate": _certificate(tls)}]}}
