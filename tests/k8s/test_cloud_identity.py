"""Provider credentials from workload identity, through google-auth, off the request path.

A stand-in of the GKE metadata server (the endpoint GKE Workload Identity serves on every node)
hands out access tokens it obtained from the simulator's Google OAuth endpoint for the simulator's
service account; the gateway runs with `credentials: application-default` and no key file, and
its Vertex requests carry a token the simulator accepts. `RefreshingToken`'s schedule and failure
handling are tested with an injected clock and fetch."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from extproc.auth import cloud
from extproc.auth.credentials import credential_for
from extproc.config import ConfigError, validate
from extproc.errors import GatewayError
from tests.conftest import free_port, free_port_run
from tests.integration.conftest import (
    TENANT_KEY,
    Proc,
    Simulator,
    gateway_config,
    start_process,
    wait_for_line,
)


class MetadataServer:
    """GKE's metadata server, as far as google-auth's application-default credentials use it."""

    def __init__(self, key_file: Path) -> None:
        from google.oauth2 import service_account

        self.creds = service_account.Credentials.from_service_account_file(
            str(key_file), scopes=[cloud.CLOUD_PLATFORM_SCOPE])
        self.token_requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.headers.get("metadata-flavor") != "Google":
                    self._send(403, "text/plain", b"Missing Metadata-Flavor:Google header.")
                    return
                path = self.path.split("?")[0]
                base = "/computeMetadata/v1/instance/service-accounts/default/"
                if path in ("", "/"):
                    self._send(200, "text/plain", b"")
                elif path == "/computeMetadata/v1/project/project-id":
                    self._send(200, "text/plain", b"interlock-sim")
                elif path == base:
                    self._send(200, "application/json", json.dumps({
                        "email": outer.creds.service_account_email, "aliases": ["default"],
                        "scopes": [cloud.CLOUD_PLATFORM_SCOPE]}).encode())
                elif path == base + "token":
                    import google.auth.transport.requests

                    outer.creds.refresh(google.auth.transport.requests.Request())
                    outer.token_requests += 1
                    self._send(200, "application/json", json.dumps({
                        "access_token": outer.creds.token, "expires_in": 3599, "token_type": "Bearer"}).encode())
                else:
                    self._send(404, "text/plain", b"not found")

            def _send(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Metadata-Flavor", "Google")
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def adc_gateway(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[str, MetadataServer, Proc]]:
    metadata = MetadataServer(simulator.gcp_key_file)
    work = tmp_path_factory.mktemp("adc")
    port = free_port()
    cfg: dict[str, Any] = gateway_config(simulator.port, port, free_port(), free_port_run(1), workers=1)
    cfg["providers"] = [{"name": "vertex", "type": "vertex", "endpoint": simulator.url, "project": "interlock-sim",
                         "location": "us-east5", "credentials": "application-default"}]
    cfg["models"] = [{"name": "gemini-adc", "provider": "vertex", "upstream_model": "gemini-2.5-flash"}]
    cfg["tenants"] = [t for t in cfg["tenants"] if t["models"] == ["*"]]
    (work / "gateway.yaml").write_text(yaml.safe_dump(cfg))
    env = {"GCE_METADATA_HOST": metadata.host, "GCE_METADATA_IP": metadata.host, "HOME": str(work),
           "GOOGLE_APPLICATION_CREDENTIALS": "", "CLOUDSDK_CONFIG": str(work / "gcloud")}
    p = start_process(["run", "-c", str(work / "gateway.yaml"), "--workdir", str(work / "rendered"),
                       "--drain-timeout", "2"], work / "gateway.log", env=env)
    try:
        wait_for_line(p, "ready: ", 90)
        yield f"http://127.0.0.1:{port}", metadata, p
    finally:
        p.stop()
        metadata.server.shutdown()


def test_vertex_authenticates_with_the_workload_identity(adc_gateway: tuple[str, MetadataServer, Proc]) -> None:
    url, metadata, proc = adc_gateway
    with httpx.Client(timeout=30) as c:
        for _ in range(3):
            r = c.post(url + "/v1/chat/completions", headers={"authorization": f"Bearer {TENANT_KEY}"},
                       json={"model": "gemini-adc", "messages": [{"role": "user", "content": "Hi"}]})
            assert r.status_code == 200, r.text + proc.text()[-3000:]
    # One token for all three requests: fetched by the refresh thread, then read from its cache.
    assert metadata.token_requests == 1
    assert metadata.creds.token not in proc.text()


def test_the_config_takes_workload_identity_instead_of_keys() -> None:
    base = {"models": [], "tenants": []}
    cfg = validate({**base, "providers": [
        {"name": "v", "type": "vertex", "project": "p", "location": "us-east5", "credentials": "application-default"},
        {"name": "a", "type": "azure-openai", "endpoint": "https://r.openai.azure.com",
         "credentials": "workload-identity"}]})
    assert [p.credentials for p in cfg.providers] == ["application-default", "workload-identity"]
    assert all(isinstance(credential_for(p), cloud.RefreshingToken) for p in cfg.providers)
    with pytest.raises(ConfigError) as e:
        validate({**base, "providers": [{"name": "v", "type": "vertex", "project": "p", "location": "l",
                                         "credentials": "workload-identity"}]})
    assert "providers[0].credentials: must be application-default (or absent: the type's key settings)" in e.value.problems
    with pytest.raises(ConfigError) as e:
        validate({**base, "providers": [{"name": "o", "type": "openai", "api_key_env": "K",
                                         "credentials": "application-default"}]})
    assert any(p.startswith("providers[0].credentials: not a setting of type openai") for p in e.value.problems)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_is_fetched_once_and_served_from_the_cache() -> None:
    clock = FakeClock()
    calls: list[float] = []

    def fetch() -> tuple[str, float]:
        calls.append(clock.now)
        return f"tok-{len(calls)}", clock.now + 3600

    source = cloud.RefreshingToken("p", fetch, clock=clock)
    try:
        got = [asyncio.run(source.headers("POST", "h", "/", {}, b"")) for _ in range(5)]
    finally:
        source.stop()
    assert got == [[("authorization", "Bearer tok-1")]] * 5 and len(calls) == 1


def test_no_token_is_a_502_and_the_failure_is_logged_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    def fetch() -> tuple[str, float]:
        raise RuntimeError("metadata server unreachable")

    source = cloud.RefreshingToken("vertex", fetch)
    cloud_wait, cloud.FIRST_TOKEN_WAIT_S = cloud.FIRST_TOKEN_WAIT_S, 0.5
    try:
        with pytest.raises(GatewayError) as e:
            asyncio.run(source.headers("POST", "h", "/", {}, b""))
    finally:
        cloud.FIRST_TOKEN_WAIT_S = cloud_wait
        source.stop()
    assert e.value.status == 502 and "could not obtain credentials" in str(e.value)
    deadline = time.monotonic() + 5
    while "token refresh failed" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "provider vertex: token refresh failed (RuntimeError: metadata server unreachable)" in caplog.text


class EntraTokenEndpoint:
    """Microsoft Entra ID's token endpoint, as AKS workload identity's federated flow calls it:
    HTTPS (azure-identity refuses anything else), `POST /{tenant}/oauth2/v2.0/token` with the
    pod's projected service-account token as the client assertion."""

    def __init__(self, tmp: Path) -> None:
        import ssl

        from tests.k8s.certs import certificate

        pem = certificate(7)
        for name, text in pem.items():
            (tmp / name).write_text(text)
        self.ca = tmp / "tls.crt"
        self.forms: list[dict[str, list[str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                from urllib.parse import parse_qs

                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                outer.forms.append({"path": [self.path], **parse_qs(body)})
                answer = json.dumps({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                                     "access_token": f"entra-token-{len(outer.forms)}"}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tmp / "tls.crt"), str(tmp / "tls.key"))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://gateway.llm.svc:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_azure_openai_authenticates_with_aks_workload_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    entra = EntraTokenEndpoint(tmp_path)
    real_getaddrinfo = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: real_getaddrinfo(
        "127.0.0.1" if host == "gateway.llm.svc" else host, *a, **k))
    (tmp_path / "azure-identity-token").write_text("eyJ.projected-service-account-token.sig")
    for name, value in {"AZURE_TENANT_ID": "tenant-1", "AZURE_CLIENT_ID": "client-1",
                        "AZURE_FEDERATED_TOKEN_FILE": str(tmp_path / "azure-identity-token"),
                        "AZURE_AUTHORITY_HOST": entra.url, "REQUESTS_CA_BUNDLE": str(entra.ca)}.items():
        monkeypatch.setenv(name, value)
    [provider] = validate({"models": [], "tenants": [], "providers": [
        {"name": "azure", "type": "azure-openai", "endpoint": "https://r.openai.azure.com",
         "credentials": "workload-identity"}]}).providers
    source = credential_for(provider)
    assert isinstance(source, cloud.RefreshingToken)
    try:
        first = asyncio.run(source.headers("POST", "r.openai.azure.com", "/openai/deployments/d/chat/completions",
                                           {}, b"{}"))
        again = asyncio.run(source.headers("POST", "r.openai.azure.com", "/", {}, b"{}"))
    finally:
        source.stop()
        entra.server.shutdown()
    assert first == again == [("authorization", "Bearer entra-token-1")]
    [form] = entra.forms
    assert form["path"] == ["/tenant-1/oauth2/v2.0/token"]
    assert form["client_id"] == ["client-1"] and form["scope"] == [cloud.AZURE_OPENAI_SCOPE]
    assert form["client_assertion"] == ["eyJ.projected-service-account-token.sig"]
    assert form["client_assertion_type"] == ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
