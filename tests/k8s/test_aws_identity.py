"""Bedrock's SigV4 from the pod's AWS identity: IRSA and EKS Pod Identity, through botocore.

Stand-ins of STS (`AssumeRoleWithWebIdentity`, its query-protocol XML; botocore reaches it through
`AWS_ENDPOINT_URL_STS`) and of the EKS Pod Identity agent (the container credentials endpoint,
JSON) hand out temporary credentials they also register with the simulator; the gateway runs with
`credentials: workload-identity` and no keys, and its Bedrock requests, signed through the real
Envoy with those credentials and their session token, are accepted."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import yaml

from extproc.auth import aws, cloud
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

ROLE = "arn:aws:iam::111122223333:role/interlock-bedrock"
PROJECTED_TOKEN = "eyJhbGciOiJSUzI1NiJ9.projected-service-account-token.sig"
AGENT_TOKEN = "eks-pod-identity-agent-authorization-token"
_serial = itertools.count(1)


def _issue(simulator: Simulator, kind: str) -> tuple[str, str, str]:
    n = next(_serial)
    key_id, secret, session = f"ASIA{kind.upper()}{n:08d}", f"{kind}-temporary-secret-{n}", f"{kind}-session-token-{n}"
    simulator.control("POST", "/_sim/aws/credentials", {"access_key_id": key_id, "secret_access_key": secret})
    return key_id, secret, session


def _expiry() -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Sts(_Server):
    """STS's AssumeRoleWithWebIdentity: form in, XML out (unsigned: the token is the proof)."""

    def __init__(self, simulator: Simulator) -> None:
        self.calls: list[dict[str, list[str]]] = []
        self.issued: list[tuple[str, str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                form = parse_qs(self.rfile.read(int(self.headers.get("content-length", 0))).decode())
                outer.calls.append(form)
                key_id, secret, session = _issue(simulator, "irsa")
                outer.issued.append((key_id, secret, session))
                body = f"""<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:llm:gw-interlock</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser><Arn>{ROLE.replace(':iam:', ':sts:').replace(':role/', ':assumed-role/')}/s</Arn>
      <AssumedRoleId>AROAEXAMPLE:s</AssumedRoleId></AssumedRoleUser>
    <Credentials><SessionToken>{session}</SessionToken><SecretAccessKey>{secret}</SecretAccessKey>
      <Expiration>{_expiry()}</Expiration><AccessKeyId>{key_id}</AccessKeyId></Credentials>
    <Provider>arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EX</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>""".encode()
                self.send_response(200)
                self.send_header("content-type", "text/xml")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(Handler)


class PodIdentityAgent(_Server):
    """The EKS Pod Identity agent's credentials endpoint: GET with the projected token as
    `Authorization`, JSON out."""

    def __init__(self, simulator: Simulator) -> None:
        self.authorizations: list[str | None] = []
        self.issued: list[tuple[str, str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                import json

                outer.authorizations.append(self.headers.get("authorization"))
                if self.headers.get("authorization") != AGENT_TOKEN:
                    status, answer = 401, {"message": "invalid token"}
                else:
                    key_id, secret, session = _issue(simulator, "podid")
                    outer.issued.append((key_id, secret, session))
                    status, answer = 200, {"AccessKeyId": key_id, "SecretAccessKey": secret, "Token": session,
                                           "AccountId": "111122223333", "Expiration": _expiry()}
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(Handler)


_IDENTITY_VARS = ("AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                  "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")


def _clean_aws_env(work: Path) -> dict[str, str]:
    """No keys, profiles or IMDS: only the identity under test can give credentials (botocore
    takes an identity variable that is present but empty as set, so this test's process has none)."""
    assert not any(name in os.environ for name in _IDENTITY_VARS)
    return {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "",
            "AWS_CONFIG_FILE": str(work / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(work / "none"),
            "AWS_EC2_METADATA_DISABLED": "true"}


def _identity_env(kind: str, work: Path, simulator: Simulator) -> tuple[dict[str, str], Sts | PodIdentityAgent]:
    env = _clean_aws_env(work)
    if kind == "irsa":
        sts = Sts(simulator)
        (work / "eks-token").write_text(PROJECTED_TOKEN)
        env.update({"AWS_ROLE_ARN": ROLE, "AWS_WEB_IDENTITY_TOKEN_FILE": str(work / "eks-token"),
                    "AWS_ROLE_SESSION_NAME": "interlock", "AWS_ENDPOINT_URL_STS": sts.url})
        return env, sts
    agent = PodIdentityAgent(simulator)
    (work / "eks-pod-identity-token").write_text(AGENT_TOKEN)
    env.update({"AWS_CONTAINER_CREDENTIALS_FULL_URI": agent.url + "/v1/credentials",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(work / "eks-pod-identity-token")})
    return env, agent


@pytest.fixture(scope="module", params=["irsa", "pod-identity"])
def aws_gateway(request: pytest.FixtureRequest, simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[str, Sts | PodIdentityAgent, Proc]]:
    work = tmp_path_factory.mktemp(request.param)
    env, stand_in = _identity_env(request.param, work, simulator)
    port = free_port()
    cfg: dict[str, Any] = gateway_config(simulator.port, port, free_port(), free_port_run(1), workers=1)
    cfg["providers"] = [{"name": "bedrock", "type": "bedrock", "endpoint": simulator.url, "region": "us-east-1",
                         "credentials": "workload-identity"}]
    cfg["models"] = [{"name": "claude-bedrock", "provider": "bedrock",
                      "upstream_model": "anthropic.claude-sonnet-4-5-20250929-v1:0"}]
    cfg["tenants"] = [t for t in cfg["tenants"] if t["models"] == ["*"]]
    (work / "gateway.yaml").write_text(yaml.safe_dump(cfg))
    p = start_process(["run", "-c", str(work / "gateway.yaml"), "--workdir", str(work / "rendered"),
                       "--drain-timeout", "2"], work / "gateway.log", env=env)
    try:
        wait_for_line(p, "ready: ", 90)
        yield f"http://127.0.0.1:{port}", stand_in, p
    finally:
        p.stop()
        stand_in.server.shutdown()


def test_bedrock_signs_with_the_pods_temporary_aws_credentials(
        aws_gateway: tuple[str, Sts | PodIdentityAgent, Proc], simulator: Simulator) -> None:
    url, stand_in, proc = aws_gateway
    with httpx.Client(timeout=30) as c:
        for _ in range(3):
            r = c.post(url + "/v1/chat/completions", headers={"authorization": f"Bearer {TENANT_KEY}"},
                       json={"model": "claude-bedrock", "messages": [{"role": "user", "content": "Hi"}]})
            assert r.status_code == 200, r.text + proc.text()[-3000:]
            assert r.headers["x-interlock-provider"] == "bedrock"
    # One exchange for all three requests: fetched off the request path, then served from the cache.
    [(key_id, secret, session)] = stand_in.issued
    signed = [q["headers"] for q in simulator.requests() if key_id in q["headers"].get("authorization", "")]
    assert len(signed) == 3
    assert all(h["x-amz-security-token"] == session and "x-amz-security-token" in h["authorization"]
               for h in signed)
    if isinstance(stand_in, Sts):
        [form] = stand_in.calls
        assert form["Action"] == ["AssumeRoleWithWebIdentity"] and form["RoleArn"] == [ROLE]
        assert form["WebIdentityToken"] == [PROJECTED_TOKEN] and form["RoleSessionName"] == ["interlock"]
    else:
        assert stand_in.authorizations == [AGENT_TOKEN]
    assert secret not in proc.text() and session not in proc.text()


def test_without_an_aws_identity_bedrock_answers_502_and_logs_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    for name, value in _clean_aws_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    [provider] = validate({"models": [], "tenants": [], "providers": [
        {"name": "bedrock", "type": "bedrock", "region": "us-east-1", "credentials": "workload-identity"}]}).providers
    source = credential_for(provider)
    assert isinstance(source, aws.RefreshingAwsCredentials)
    wait, cloud.FIRST_TOKEN_WAIT_S = cloud.FIRST_TOKEN_WAIT_S, 2.0
    try:
        with pytest.raises(GatewayError) as e:
            asyncio.run(source.headers("POST", "bedrock-runtime.us-east-1.amazonaws.com", "/model/m/converse",
                                       {}, b"{}"))
    finally:
        cloud.FIRST_TOKEN_WAIT_S = wait
        source.stop()
    assert e.value.status == 502 and e.value.code == "provider_credentials_unavailable"
    assert "provider bedrock: token refresh failed (NoAwsIdentity: no AWS workload identity" in caplog.text


def test_the_config_takes_the_aws_identity_instead_of_keys() -> None:
    base: dict[str, Any] = {"models": [], "tenants": []}
    [p] = validate({**base, "providers": [{"name": "b", "type": "bedrock", "region": "eu-west-1",
                                           "credentials": "workload-identity"}]}).providers
    assert p.credentials == "workload-identity" and p.aws_access_key_id_env is None
    with pytest.raises(ConfigError) as e:
        validate({**base, "providers": [{"name": "b", "type": "bedrock", "region": "eu-west-1",
                                         "credentials": "workload-identity", "aws_access_key_id_env": "K"}]})
    assert e.value.problems == ["providers[0].aws_access_key_id_env: not with credentials: workload-identity "
                                "(the keys come from the pod's AWS identity)"]
    with pytest.raises(ConfigError) as e:
        validate({**base, "providers": [{"name": "b", "type": "bedrock", "credentials": "workload-identity"}]})
    assert e.value.problems == ["providers[0].region: required for type bedrock"]
    with pytest.raises(ConfigError) as e:
        validate({**base, "providers": [{"name": "b", "type": "bedrock", "region": "eu-west-1",
                                         "credentials": "application-default"}]})
    assert e.value.problems[0] == ("providers[0].credentials: must be workload-identity (or absent: the type's "
                                   "key settings)")
