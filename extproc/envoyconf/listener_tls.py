"""HTTPS on the listener (`listen.tls`): Envoy's DownstreamTlsContext over the configured PEM files.

Rendered (`interlock render`, `interlock run`): the certificate is a file-based SDS secret,
`listener_tls.yaml` next to `envoy.yaml`, whose `watched_directory` is the certificate's own
directory. A Kubernetes Secret volume changes by a rename in that directory (the kubelet swaps its
`..data` symlink), so Envoy re-reads both files and new connections get the new certificate
without a restart; connections already open keep theirs. `--static` has no SDS file: the files
are read once at start. TLS 1.2 and 1.3; ALPN h2 and http/1.1.

With `client_ca_file` (mTLS), clients must present a certificate that CA signed (the CA is a second
SDS secret, `listener_client_ca.yaml`, reloaded the same way), and the connection manager sets
`x-forwarded-client-cert` itself (`SANITIZE_SET`: a client's own header is dropped, Envoy's
carries the certificate's hash and URI SAN), which the router stage reads as the caller's SPIFFE
ID (`extproc.stages.request.mesh_identity`). Without it, Envoy's default (`SANITIZE`) strips
any XFCC a client sends."""

from __future__ import annotations

import os
from typing import Any

from extproc.config.model import ListenerTls

SDS_FILE = "listener_tls.yaml"
SECRET_NAME = "listener_certificate"
CA_SECRET_NAME = "listener_client_ca"
CA_SDS_FILE = "listener_client_ca.yaml"  # file-based SDS takes one secret per file
_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
_SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def _certificate(tls: ListenerTls) -> dict[str, Any]:
    return {"certificate_chain": {"filename": tls.cert_file}, "private_key": {"filename": tls.key_file},
            "watched_directory": {"path": os.path.dirname(tls.cert_file)}}


def _client_ca(tls: ListenerTls) -> dict[str, Any]:
    ca = tls.client_ca_file or ""
    return {"trusted_ca": {"filename": ca}, "watched_directory": {"path": os.path.dirname(ca)}}


def transport_socket(tls: ListenerTls, out_dir: str, static: bool) -> dict[str, Any]:
    common: dict[str, Any] = {"alpn_protocols": ["h2", "http/1.1"],
                              "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"}}
    def sds(file: str) -> dict[str, Any]:
        return {"resource_api_version": "V3",
                "path_config_source": {"path": f"{out_dir}/{file}", "watched_directory": {"path": out_dir}}}

    if static:
        common["tls_certificates"] = [{k: v for k, v in _certificate(tls).items() if k != "watched_directory"}]
        if tls.client_ca_file:
            common["validation_context"] = {"trusted_ca": {"filename": tls.client_ca_file}}
    else:
        common["tls_certificate_sds_secret_configs"] = [{"name": SECRET_NAME, "sds_config": sds(SDS_FILE)}]
        if tls.client_ca_file:
            common["validation_context_sds_secret_config"] = {"name": CA_SECRET_NAME, "sds_config": sds(CA_SDS_FILE)}
    context: dict[str, Any] = {"@type": _TLS, "common_tls_context": common}
    if tls.client_ca_file and tls.client_certificate == "required":
        context["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def apply(bootstrap: dict[str, Any], tls: ListenerTls | None, out_dir: str, static: bool) -> dict[str, dict[str, Any]]:
    """Add TLS to the listener's filter chain; the extra files to write (the SDS secret)."""
    if tls is None:
        return {}
    [listener] = bootstrap["static_resources"]["listeners"]
    for chain in listener["filter_chains"]:
        chain["transport_socket"] = transport_socket(tls, out_dir, static)
        if tls.client_ca_file:
            for f in chain["filters"]:
                if f["name"] == "envoy.filters.network.http_connection_manager":
                    f["typed_config"]["forward_client_cert_details"] = "SANITIZE_SET"
                    f["typed_config"]["set_current_client_cert_details"] = {"uri": True}
    if static:
        return {}
    files = {SDS_FILE: {"resources": [{"@type": _SECRET, "name": SECRET_NAME, "tls_certificate": _certificate(tls)}]}}
    if tls.client_ca_file:
        files[CA_SDS_FILE] = {"resources": [{"@type": _SECRET, "name": CA_SECRET_NAME,
                                             "validation_context": _client_ca(tls)}]}
    return files
