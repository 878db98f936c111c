"""HTTPS on the listener from a mounted TLS Secret: the real Envoy serves the Secret's certificate,
the API and the health endpoints answer over it, and a rotated Secret (the kubelet's `..data`
swap) is served to new connections without a restart."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography import x509

from tests.conftest import free_port, free_port_run
from tests.integration.conftest import (
    PROVIDER_ENV,
    TENANT_KEY,
    Proc,
    Simulator,
    gateway_config,
    start_process,
    wait_for_line,
)
from tests.k8s.certs import HOST, certificate
from tests.k8s.pod import atomic_write


def served_serial(port: int) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=HOST) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


@pytest.fixture(scope="module")
def tls_gateway(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, int, Path]]:
    work = tmp_path_factory.mktemp("tls")
    secret = work / "secret"
    atomic_write(secret, certificate(1001))
    port = free_port()
    cfg = gateway_config(simulator.port, port, free_port(), free_port_run(1), workers=1)
    cfg["listen"]["tls"] = {"cert_file": str(secret / "tls.crt"), "key_file": str(secret / "tls.key")}
    (work / "gateway.yaml").write_text(yaml.safe_dump(cfg))
    p = start_process(["run", "-c", str(work / "gateway.yaml"), "--workdir", str(work / "rendered"),
                       "--drain-timeout", "2"], work / "gateway.log", env=PROVIDER_ENV)
    try:
        wait_for_line(p, "ready: ", 90)
        yield p, port, secret
    finally:
        p.stop()


def test_the_listener_serves_the_secret_over_https(tls_gateway: tuple[Proc, int, Path]) -> None:
    _, port, secret = tls_gateway
    assert served_serial(port) == 1001
    ctx = ssl.create_default_context(cafile=str(secret / "tls.crt"))
    transport = httpx.HTTPTransport(verify=ctx)
    with httpx.Client(transport=transport, timeout=30) as c:
        url = f"https://127.0.0.1:{port}"
        headers = {"host": HOST}
        assert c.get(url + "/health/ready", headers=headers, extensions={"sni_hostname": HOST}).status_code == 200
        r = c.post(url + "/v1/chat/completions", headers={**headers, "authorization": f"Bearer {TENANT_KEY}"},
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
                   extensions={"sni_hostname": HOST})
        assert r.status_code == 200, r.text
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5)  # no plain HTTP on a TLS listener


def test_a_rotated_certificate_is_served_without_a_restart(tls_gateway: tuple[Proc, int, Path]) -> None:
    proc, port, secret = tls_gateway
    atomic_write(secret, certificate(2002))
    deadline = time.monotonic() + 15
    while served_serial(port) != 2002:
        assert time.monotonic() < deadline, "the new certificate was not served within 15 s"
        time.sleep(0.1)
    assert proc.proc.poll() is None
