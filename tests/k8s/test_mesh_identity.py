"""Mesh callers identified by their client certificate: with `listen.tls.client_ca_file` the real
Envoy requires a client certificate, puts its SPIFFE ID in `x-forwarded-client-cert`
(`SANITIZE_SET`), and a tenant's `spiffe_ids` make that caller the tenant, whatever key it carries
(a provider key, say). An XFCC header a client writes itself is dropped by Envoy."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from extproc.config import ConfigError, validate
from extproc.stages.request import authenticate, mesh_identity
from tests.conftest import free_port, free_port_run
from tests.integration.conftest import (
    PROVIDER_ENV,
    PROVIDER_KEY,
    TENANT_KEY,
    Proc,
    Simulator,
    gateway_config,
    sha,
    start_process,
    wait_for_line,
)
from tests.k8s.certs import HOST, Authority
from tests.k8s.pod import atomic_write

WEB = "spiffe://cluster.local/ns/app/sa/web"
WORKLOAD_KEY = "sk-the-workloads-own-provider-key"  # what an OpenAI SDK in the mesh sends


@pytest.fixture(scope="module", params=["required", "optional"])
def mtls_gateway(request: pytest.FixtureRequest, simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[Proc, str, Path]]:
    work = tmp_path_factory.mktemp(f"mtls-{request.param}")
    mesh = Authority()
    cert, key = mesh.issue(HOST, dns=HOST)
    atomic_write(work / "secret", {"tls.crt": cert, "tls.key": key, "ca.crt": mesh.pem})
    for name, uri in (("web", WEB), ("other", "spiffe://cluster.local/ns/app/sa/batch"), ("plain", None)):
        c, k = mesh.issue(name, uri=uri)
        (work / f"{name}.crt").write_text(c)
        (work / f"{name}.key").write_text(k)
    port = free_port()
    cfg: dict[str, Any] = gateway_config(simulator.port, port, free_port(), free_port_run(1), workers=1)
    cfg["listen"]["tls"] = {"cert_file": str(work / "secret/tls.crt"), "key_file": str(work / "secret/tls.key"),
                            "client_ca_file": str(work / "secret/ca.crt"), "client_certificate": request.param}
    cfg["tenants"].append({"name": "mesh-web",
                           "models": ["gpt-4o-mini"], "spiffe_ids": [WEB]})
    (work / "gateway.yaml").write_text(yaml.safe_dump(cfg))
    p = start_process(["run", "-c", str(work / "gateway.yaml"), "--workdir", str(work / "rendered"),
                       "--drain-timeout", "2"], work / "gateway.log", env=PROVIDER_ENV)
    try:
        wait_for_line(p, "ready: ", 90)
        yield p, f"https://127.0.0.1:{port}", work
    finally:
        p.stop()


def _client(work: Path, cert: str | None) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(work / "secret/ca.crt"))
    if cert:
        ctx.load_cert_chain(str(work / f"{cert}.crt"), str(work / f"{cert}.key"))
    return httpx.Client(transport=httpx.HTTPTransport(verify=ctx), timeout=30, headers={"host": HOST})


def _chat(c: httpx.Client, url: str, headers: dict[str, str], model: str = "gpt-4o-mini") -> httpx.Response:
    return c.post(url + "/v1/chat/completions", headers=headers, extensions={"sni_hostname": HOST},
                  json={"model": model, "messages": [{"role": "user", "content": "Hi"}]})


def _tenant_of(proc: Proc, request_id: str) -> str:
    match = re.search(rf"request_id={re.escape(request_id)} tenant=(\S+)", proc.text())
    assert match, proc.text()[-2000:]
    return match.group(1)


def test_a_client_certificates_spiffe_id_is_its_tenant(mtls_gateway: tuple[Proc, str, Path],
                                                       simulator: Simulator) -> None:
    proc, url, work = mtls_gateway
    simulator.reset()
    with _client(work, "web") as c:
        # A mesh workload that sends its own provider key, not a tenant key.
        r = _chat(c, url, {"authorization": f"Bearer {WORKLOAD_KEY}"})
        assert r.status_code == 200, r.text
        assert _tenant_of(proc, r.headers["x-request-id"]) == "mesh-web"
        denied = _chat(c, url, {"authorization": f"Bearer {WORKLOAD_KEY}"}, model="claude-haiku-4-5")
        assert denied.status_code in (403, 404), denied.text  # the tenant's model list applies
    # The provider got the gateway's key, not the workload's.
    [upstream] = [q for q in simulator.requests() if q["path"].endswith("/chat/completions")]
    assert upstream["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    with _client(work, "other") as c:  # another mesh identity, mapped to no tenant: the key decides
        r = _chat(c, url, {"authorization": f"Bearer {WORKLOAD_KEY}"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_a_spoofed_xfcc_header_is_not_an_identity(mtls_gateway: tuple[Proc, str, Path]) -> None:
    proc, url, work = mtls_gateway
    spoof = {"x-forwarded-client-cert": f'By=spiffe://cluster.local/ns/llm/sa/gw;Hash=00;URI={WEB}'}
    for cert in ("plain", "other"):
        with _client(work, cert) as c:
            r = _chat(c, url, {**spoof, "authorization": f"Bearer {PROVIDER_KEY}"})
            assert r.status_code == 401, r.text
            ok = _chat(c, url, {**spoof, "authorization": f"Bearer {TENANT_KEY}"})
            assert ok.status_code == 200 and _tenant_of(proc, ok.headers["x-request-id"]) == "it"


def test_a_client_without_a_certificate(mtls_gateway: tuple[Proc, str, Path]) -> None:
    """`required`: refused at the handshake. `optional`: connects, and needs a tenant key (an XFCC
    header it sends is dropped)."""
    proc, url, work = mtls_gateway
    with _client(work, None) as c:
        if "mtls-required" in str(work):
            with pytest.raises(httpx.HTTPError):
                _chat(c, url, {"authorization": f"Bearer {TENANT_KEY}"})
            return
        spoof = {"x-forwarded-client-cert": f"Hash=00;URI={WEB}"}
        assert _chat(c, url, {**spoof, "authorization": f"Bearer {PROVIDER_KEY}"}).status_code == 401
        ok = _chat(c, url, {**spoof, "authorization": f"Bearer {TENANT_KEY}"})
        assert ok.status_code == 200 and _tenant_of(proc, ok.headers["x-request-id"]) == "it"
        assert c.get(url + "/health/ready", extensions={"sni_hostname": HOST}).status_code == 200


@pytest.mark.parametrize(("xfcc", "identity"), [
    (f"Hash=ab;URI={WEB}", WEB),
    (f'By=spiffe://td/gw;Hash=ab;Subject="CN=a,O=b";URI={WEB}', WEB),
    (f'Hash=1;URI=spiffe://td/old,Hash=2;URI="{WEB}"', WEB),  # the last element is this hop's
    ("Hash=ab;URI=https://example.com/x", None),
    ("Hash=ab", None),
    ("", None),
])
def test_mesh_identity_reads_the_uri_of_the_last_xfcc_element(xfcc: str, identity: str | None) -> None:
    assert mesh_identity({"x-forwarded-client-cert": xfcc}) == identity


def test_spiffe_ids_are_checked_and_need_client_certificates() -> None:
    base: dict[str, Any] = {"providers": [], "models": []}
    tls = {"cert_file": "/s/tls.crt", "key_file": "/s/tls.key", "client_ca_file": "/s/ca.crt"}
    tenant = {"name": "m", "api_key_sha256": [sha("k")], "spiffe_ids": [WEB]}
    cfg = validate({**base, "listen": {"tls": tls}, "tenants": [tenant]})
    assert cfg.tenants[0].spiffe_ids == (WEB,) and cfg.listen.tls is not None
    assert authenticate({"x-forwarded-client-cert": f"Hash=1;URI={WEB}"},
                        {sha("k"): cfg.tenants[0]}).name == "m"
    # a mesh tenant needs no key: its certificate identifies it
    keyless = validate({**base, "listen": {"tls": tls}, "tenants": [{"name": "m", "spiffe_ids": [WEB]}]})
    assert keyless.tenants[0].api_key_sha256 == ()
    with pytest.raises(ConfigError) as e:
        validate({**base, "listen": {"tls": tls}, "tenants": [{"name": "nobody"}]})
    assert e.value.problems == ["tenants[0].api_key_sha256: required"]
    with pytest.raises(ConfigError) as e:
        validate({**base, "tenants": [tenant]})
    assert e.value.problems == ["tenants[0].spiffe_ids: needs listen.tls.client_ca_file (client certificates "
                                "carry the ID)"]
    with pytest.raises(ConfigError) as e:
        validate({**base, "listen": {"tls": {**tls, "client_ca_file": "ca.crt"}},
                  "tenants": [{**tenant, "spiffe_ids": ["web", WEB]},
                              {"name": "n", "api_key_sha256": [sha("n")], "spiffe_ids": [WEB]}]})
    assert e.value.problems == ["listen.tls.client_ca_file: must be an absolute path",
                                "tenants[0].spiffe_ids[0]: must be a SPIFFE ID: spiffe://<trust domain>/<path>",
                                f"tenants[1].spiffe_ids: {WEB} already belongs to tenant 'm'"]


def test_client_certificate_mode_is_checked() -> None:
    tls = {"cert_file": "/s/tls.crt", "key_file": "/s/tls.key"}
    with pytest.raises(ConfigError) as e:
        validate({"providers": [], "models": [], "tenants": [], "listen": {"tls": {**tls, "client_certificate": "optional"}}})
    assert e.value.problems == ["listen.tls.client_certificate: needs client_ca_file"]
    with pytest.raises(ConfigError) as e:
        validate({"providers": [], "models": [], "tenants": [],
                  "listen": {"tls": {**tls, "client_ca_file": "/s/ca.crt", "client_certificate": "sometimes"}}})
    assert e.value.problems == ["listen.tls.client_certificate: must be one of: required, optional"]
