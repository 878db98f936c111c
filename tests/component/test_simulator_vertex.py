"""The simulator's Vertex AI endpoints and OAuth token endpoint, with `google-genai`
(`vertexai=True` + service-account credentials), `google-auth` and `anthropic.AnthropicVertex`."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google import genai
from google.auth.transport.requests import Request
from google.genai import errors, types
from google.oauth2 import service_account

from simulator import BackgroundSimulator, start_background
from simulator.gcp import JWT_GRANT, make_service_account, public_key_pem

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
CLAUDE = "claude-sonnet-4@20250514"


@pytest.fixture(scope="module")
def account_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gcp") / "sa.json"


@pytest.fixture(scope="module")
def sim(account_file: Path) -> Iterator[BackgroundSimulator]:
    simulator = start_background()
    simulator.add_gcp_service_account(account_file)
    yield simulator
    simulator.stop()


@pytest.fixture
def info(sim: BackgroundSimulator, account_file: Path) -> dict[str, Any]:
    sim.reset()
    return dict(json.loads(account_file.read_text()))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(info: dict[str, Any], claims: dict[str, Any], key: Any = None) -> str:
    private: Any = key or serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    signing_input = _b64(orjson.dumps({"alg": "RS256", "typ": "JWT", "kid": info["private_key_id"]})) + "." + \
        _b64(orjson.dumps(claims))
    signature = private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64(signature)


def claims(info: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": info["client_email"], "aud": info["token_uri"], "scope": SCOPE, "iat": now, "exp": now + 3600,
            **overrides}


def post(url: str, data: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def token_request(info: dict[str, Any], assertion: str, grant: str = JWT_GRANT) -> tuple[int, Any]:
    form = urllib.parse.urlencode({"grant_type": grant, "assertion": assertion}).encode()
    return post(info["token_uri"], form, {"content-type": "application/x-www-form-urlencoded"})


def access_token(info: dict[str, Any]) -> str:
    status, body = token_request(info, jwt(info, claims(info)))
    assert status == 200, body
    return str(body["access_token"])


def genai_client(sim: BackgroundSimulator, path: Path, project: str) -> tuple[genai.Client, Any]:
    creds = service_account.Credentials.from_service_account_file(str(path), scopes=[SCOPE])
    client = genai.Client(vertexai=True, project=project, location="us-central1", credentials=creds,
                          http_options=types.HttpOptions(base_url=sim.url))
    return client, creds


def test_genai_vertex_with_a_service_account(sim: BackgroundSimulator, account_file: Path,
                                             info: dict[str, Any]) -> None:
    client, _ = genai_client(sim, account_file, info["project_id"])
    response = client.models.generate_content(model="gemini-2.5-flash", contents="hello vertex")
    assert (response.text or "").startswith("Simulated response")
    assert response.usage_metadata and response.usage_metadata.traffic_type == types.TrafficType.ON_DEMAND
    assert response.create_time is not None
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="hello vertex"))
    assert "".join(c.text or "" for c in chunks) == response.text
    assert sim.stats()["gcp"] == {"token_requests": 1, "tokens_issued": 1, "tokens_valid": 1, "expires_in": 3600}
    paths = [r["path"] for r in sim.requests()]
    assert paths[0] == "/token"
    assert paths[1].endswith(f"/projects/{info['project_id']}/locations/us-central1/publishers/google/models/"
                             "gemini-2.5-flash:generateContent")


def test_token_lifetime_is_configurable_and_revocable(sim: BackgroundSimulator, info: dict[str, Any]) -> None:
    sim.set_gcp_token_lifetime(120)
    status, body = token_request(info, jwt(info, claims(info)))
    assert status == 200 and body["expires_in"] == 120 and body["token_type"] == "Bearer"
    url = (f"{sim.url}/v1/projects/{info['project_id']}/locations/us-east5/publishers/anthropic/models/"
           f"{CLAUDE}:rawPredict")
    message = orjson.dumps({"anthropic_version": "vertex-2023-10-16", "max_tokens": 20,
                            "messages": [{"role": "user", "content": "hi"}]})
    headers = {"authorization": f"Bearer {body['access_token']}", "content-type": "application/json"}
    assert post(url, message, headers)[0] == 200
    sim.revoke_gcp_tokens()
    status, answer = post(url, message, headers)
    assert status == 401 and answer["error"]["status"] == "UNAUTHENTICATED"
    assert answer["error"]["details"][0]["reason"] == "ACCESS_TOKEN_TYPE_UNSUPPORTED"


def test_anthropic_vertex_client(sim: BackgroundSimulator, info: dict[str, Any]) -> None:
    client = anthropic.AnthropicVertex(region="us-east5", project_id=info["project_id"],
                                       access_token=access_token(info), base_url=sim.url + "/v1", max_retries=0)
    message = client.messages.create(model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "hello"}])
    assert message.model == CLAUDE and message.content[0].type == "text"
    assert message.content[0].text.startswith("Simulated response") and message.usage.input_tokens == 1
    with client.messages.stream(model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "hello"}]) as s:
        assert s.get_final_text() == message.content[0].text
    record = sim.requests()[-1]
    assert record["path"].endswith(f"/publishers/anthropic/models/{CLAUDE}:streamRawPredict")
    assert "model" not in record["body"] and record["body"]["anthropic_version"]
    sim.set_behaviour(CLAUDE, status=429)
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "hello"}])
    assert limited.value.body["error"]["status"] == "RESOURCE_EXHAUSTED"  # type: ignore[index]
    sim.set_behaviour(CLAUDE, status=529)
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "hello"}])


@pytest.mark.parametrize(("body", "problem"), [
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "anthropic_version: Field required"),
    ({"anthropic_version": "2023-06-01", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
     "anthropic_version: Input should be 'vertex-2023-10-16'"),
    ({"anthropic_version": "vertex-2023-10-16", "model": CLAUDE, "max_tokens": 5,
      "messages": [{"role": "user", "content": "x"}]}, "model: Extra inputs are not permitted"),
])
def test_vertex_anthropic_body_rules(sim: BackgroundSimulator, info: dict[str, Any], body: Any, problem: str) -> None:
    url = (f"{sim.url}/v1/projects/{info['project_id']}/locations/us-east5/publishers/anthropic/models/"
           f"{CLAUDE}:rawPredict")
    status, answer = post(url, orjson.dumps(body), {"authorization": f"Bearer {access_token(info)}",
                                                    "content-type": "application/json"})
    assert status == 400 and answer["type"] == "error" and problem in answer["error"]["message"]


def test_bearer_rules(sim: BackgroundSimulator, info: dict[str, Any], tmp_path: Path) -> None:
    body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    url = f"{sim.url}/v1/projects/{info['project_id']}/locations/us-central1/publishers/google/models/g:generateContent"
    plain = {"content-type": "application/json"}
    status, answer = post(url, body, plain)
    assert status == 401 and answer["error"]["details"][0]["reason"] == "CREDENTIALS_MISSING"
    status, answer = post(url, body, {**plain, "x-goog-api-key": "k"})
    assert status == 401
    status, answer = post(url, body, {**plain, "authorization": "Bearer not-issued-here"})
    assert status == 401 and answer["error"]["message"].startswith("Request had invalid authentication credentials")
    narrow = token_request(info, jwt(info, claims(info, scope="https://www.googleapis.com/auth/userinfo.email")))[1]
    status, answer = post(url, body, {**plain, "authorization": f"Bearer {narrow['access_token']}"})
    assert status == 403 and answer["error"]["details"][0]["reason"] == "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
    other = url.replace(f"/projects/{info['project_id']}/", "/projects/someone-else/")
    status, answer = post(other, body, {**plain, "authorization": f"Bearer {access_token(info)}"})
    assert status == 403 and answer["error"]["status"] == "PERMISSION_DENIED"
    stranger = make_service_account(tmp_path / "other.json", info["token_uri"], project_id="p2",
                                    client_email="other@p2.iam.gserviceaccount.com")
    status, answer = post(sim.url + "/_sim/gcp/service-accounts", orjson.dumps({
        "client_email": stranger["client_email"], "public_key_pem": public_key_pem(stranger)}),
        {"content-type": "application/json"})
    assert status == 201
    assert token_request(stranger, jwt(stranger, claims(stranger)))[0] == 200


def test_genai_sees_an_expired_token_as_401(sim: BackgroundSimulator, account_file: Path,
                                            info: dict[str, Any]) -> None:
    client, creds = genai_client(sim, account_file, info["project_id"])
    client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    sim.revoke_gcp_tokens()
    with pytest.raises(errors.ClientError) as refused:
        client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert refused.value.code == 401
    creds.refresh(Request())
    client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert sim.stats()["gcp"]["tokens_issued"] == 2


def _other_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


@pytest.mark.parametrize(("mutate", "error", "fragment"), [
    (lambda i: jwt(i, claims(i), _other_key()), "invalid_grant", "Invalid JWT Signature."),
    (lambda i: jwt(i, claims(i, iss="nobody@x.iam.gserviceaccount.com")), "invalid_grant", "account not found"),
    (lambda i: jwt(i, claims(i, aud="https://example.com/token")), "invalid_grant", "audience"),
    (lambda i: jwt(i, claims(i, exp=int(time.time()) + 7200)), "invalid_grant", "short-lived"),
    (lambda i: jwt(i, claims(i, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)), "invalid_grant",
     "short-lived"),
    (lambda i: jwt(i, claims(i, scope="")), "invalid_scope", "Invalid OAuth scope"),
    (lambda i: "not-a-jwt", "invalid_grant", "Invalid JWT"),
])
def test_bad_assertions_are_refused(sim: BackgroundSimulator, info: dict[str, Any], mutate: Any, error: str,
                                    fragment: str) -> None:
    status, body = token_request(info, mutate(info))
    assert status == 400 and body["error"] == error and fragment in body["error_description"]
    assert sim.stats()["gcp"]["tokens_issued"] == 0


def test_wrong_grant_type_and_google_audience(sim: BackgroundSimulator, info: dict[str, Any]) -> None:
    status, body = token_request(info, jwt(info, claims(info)), grant="client_credentials")
    assert status == 400 and body["error"] == "unsupported_grant_type"
    google = jwt(info, claims(info, aud="https://oauth2.googleapis.com/token"))
    assert token_request(info, google)[0] == 200
    stats = sim.stats()["gcp"]
    assert (stats["token_requests"], stats["tokens_issued"]) == (2, 1)
