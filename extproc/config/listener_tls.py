"""The `listen` section, with its optional `tls` (HTTPS on the listener).

    listen: {address: 0.0.0.0, port: 10000, tls: {cert_file: /path/tls.crt, key_file: /path/tls.key,
                                                   client_ca_file: /path/ca.crt}}

Both files are PEM (a Kubernetes `kubernetes.io/tls` Secret's `tls.crt` and `tls.key`); paths must
be absolute. `client_ca_file` (optional, PEM) verifies client certificates against it (mTLS):
tenants may then be identified by the certificate's SPIFFE ID (`tenants[].spiffe_ids`).
`client_certificate: required` (default) refuses a client without one at the handshake;
`optional` lets it connect (and authenticate with a key): the kubelet's HTTPS probes carry none. Envoy reads them itself and reloads them when their directory changes (a Secret
volume's `..data` swap): `extproc.envoyconf.listener_tls`."""

from __future__ import annotations

from typing import Any

from extproc.config.model import Listen, ListenerTls
from extproc.config.reader import _Reader


def parse_listen(r: _Reader, raw: Any, path: str = "listen") -> Listen:
    base = Listen()
    d = r.mapping(raw, path, ("address", "port", "tls")) or {}
    address = r.string(d, "address", path, default=base.address) or base.address
    port = int(r.number(d, "port", path, base.port, integer=True, minimum=1, maximum=65535))
    return Listen(address, port, _tls(r, d.get("tls"), f"{path}.tls") if "tls" in d else None)


def _tls(r: _Reader, raw: Any, path: str) -> ListenerTls | None:
    d = r.mapping(raw, path, ("cert_file", "key_file", "client_ca_file", "client_certificate"))
    if d is None:
        return None
    files = [r.string(d, key, path, required=True) or "" for key in ("cert_file", "key_file")]
    ca = r.string(d, "client_ca_file", path)
    for key, value in zip(("cert_file", "key_file", "client_ca_file"), (*files, ca or ""), strict=True):
        if value and not value.startswith("/"):
            r.fail(f"{path}.{key}", "must be an absolute path")
    mode = r.string(d, "client_certificate", path, default="required", choices=("required", "optional"))
    if "client_certificate" in d and not ca:
        r.fail(f"{path}.client_certificate", "needs client_ca_file")
    return ListenerTls(files[0], files[1], ca or None, mode or "required")
