"""SigV4 signing: the headers `sign` returns equal what botocore's SigV4Auth adds to the same
request at the same frozen time, and what a real boto3 bedrock-runtime client sends for
converse / converse_stream (path, body and signature), for model ids with `:` and `/`, ARNs,
session tokens and endpoint overrides."""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Iterator
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth, _host_from_url
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.credentials import Credentials

from extproc.auth.sigv4 import AwsCredentials, authority, sign
from extproc.translate.base import Target
from extproc.translate.openai_bedrock import OpenAIToBedrock, path_for

NOW = datetime.datetime(2026, 3, 14, 15, 9, 26, tzinfo=datetime.UTC)
MODELS = [
    "anthropic.claude-3-haiku-20240307-v1:0",
    "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "amazon.nova-pro-v1:0",
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20240620-v1:0",
    "arn:aws:bedrock:us-west-2:123456789012:provisioned-model/abc123def456",
    "arn:aws:bedrock:eu-central-1:123456789012:application-inference-profile/a1b2c3d4e5f6",
]
BODIES = [b"", b'{"messages":[{"role":"user","content":[{"text":"Hi"}]}]}',
          '{"messages":[{"role":"user","content":[{"text":"こんにちは  spaced"}]}]}'.encode()]
CREDS = [AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
         AwsCredentials("ASIAEXAMPLE", "secret/with+chars", "FwoGZXIvYXdzEXAMPLE//token+with/slashes=")]
ENDPOINTS = ["https://bedrock-runtime.us-east-1.amazonaws.com", "https://bedrock-runtime.eu-central-1.amazonaws.com:443",
             "http://localhost:8123", "https://bedrock.internal.example:8443", "http://127.0.0.1:80"]


def _botocore_headers(method: str, url: str, headers: dict[str, str], body: bytes, creds: AwsCredentials,
                      region: str) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    credentials = Credentials(creds.access_key_id, creds.secret_access_key, creds.session_token)
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        SigV4Auth(credentials, "bedrock", region).add_auth(request)
    added = {"x-amz-date", "x-amz-security-token", "authorization"}
    return {k.lower(): v for k, v in request.headers.items() if k.lower() in added}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("body", BODIES, ids=["empty", "ascii", "utf8"])
@pytest.mark.parametrize("creds", CREDS, ids=["static", "session"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_equals_botocore_sigv4auth(model: str, body: bytes, creds: AwsCredentials, endpoint: str) -> None:
    path = path_for(model, stream=False)
    parts = urlsplit(endpoint)
    host = authority(parts.scheme, parts.hostname or "", parts.port)
    assert host == _host_from_url(endpoint + path)
    headers = {"content-type": "application/json"}
    ours = dict(sign("POST", host, path, headers, body, creds, "us-east-1", "bedrock", NOW))
    assert ours == _botocore_headers("POST", endpoint + path, headers, body, creds, "us-east-1")
    assert ("x-amz-security-token" in ours) == (creds.session_token is not None)
    signed = "content-type;host;x-amz-date" + (";x-amz-security-token" if creds.session_token else "")
    assert f"SignedHeaders={signed}," in ours["authorization"]
    assert "/us-east-1/bedrock/aws4_request" in ours["authorization"]


EXTRA = [
    ("query string", "/model/a%3Ab/converse?b=2&a=1&a=0", {"content-type": "application/json"}),
    ("dot segments and double slashes", "/model/./x//y/../converse/", {"content-type": "application/json"}),
    ("root", "/", {}),
    ("extra headers signed, hop-by-hop not", "/model/m/converse",
     {"Content-Type": "application/json", "X-Custom": "  a   b  ", "User-Agent": "ua", "Connection": "close",
      "x-amzn-trace-id": "Root=1"}),
    ("unicode and tilde in path", "/model/%E2%9C%93~x/converse", {"content-type": "application/json"}),
]


@pytest.mark.parametrize(("name", "path", "headers"), EXTRA, ids=[e[0] for e in EXTRA])
def test_edge_paths_and_headers_equal_botocore(name: str, path: str, headers: dict[str, str]) -> None:
    creds = CREDS[1]
    ours = dict(sign("POST", "example.com", path, headers, b"{}", creds, "ap-south-1", "bedrock", NOW))
    assert ours == _botocore_headers("POST", "https://example.com" + path, headers, b"{}", creds, "ap-south-1")


def test_naive_and_aware_times_agree() -> None:
    tokyo = NOW.astimezone(datetime.timezone(datetime.timedelta(hours=9)))
    signed = [sign("POST", "h", "/", {}, b"", CREDS[0], "us-east-1", "bedrock", when)
              for when in (NOW, NOW.replace(tzinfo=None), tokyo)]
    assert signed[0] == signed[1] == signed[2]


def test_credentials_repr_hides_secrets() -> None:
    text = repr(CREDS[1])
    assert CREDS[1].secret_access_key not in text and str(CREDS[1].session_token) not in text


# ----- a real boto3 client, captured at `before-send` with the clock frozen -------------------

TARGET = Target("claude", "", "bedrock", 1024, frozenset({"tools", "images", "json"}))
CLIENT_REQUEST = {
    "model": "claude",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in this image? ünïcödé"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                       + base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()}}]},
    ],
    "temperature": 0.5,
    "stop": ["END"],
    "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}],
}


def boto3_params(body: dict[str, Any], model_id: str) -> dict[str, Any]:
    """A translated Converse body as boto3 takes it: base64 blobs back to bytes, plus modelId."""

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: (base64.b64decode(v) if k == "bytes" and isinstance(v, str) else walk(v, k))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return {"modelId": model_id, **walk(body)}


@pytest.fixture(autouse=True)
def _no_ambient_aws_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_BEARER_TOKEN_BEDROCK", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    yield


def _capture(endpoint: str | None, region: str, creds: AwsCredentials, stream: bool,
             params: dict[str, Any]) -> Any:
    captured: list[Any] = []

    def before_send(request: Any, **_: Any) -> AWSResponse:
        captured.append(request)

        class Raw:
            def stream(self, **__: Any) -> Iterator[bytes]:
                yield b"" if stream else json.dumps({
                    "output": {"message": {"role": "assistant", "content": [{"text": "ok"}]}},
                    "stopReason": "end_turn", "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
                    "metrics": {"latencyMs": 1}}).encode()

        content_type = "application/vnd.amazon.eventstream" if stream else "application/json"
        return AWSResponse(request.url, 200, {"content-type": content_type}, Raw())

    client = boto3.client("bedrock-runtime", endpoint_url=endpoint, region_name=region,
                          aws_access_key_id=creds.access_key_id, aws_secret_access_key=creds.secret_access_key,
                          aws_session_token=creds.session_token)
    client.meta.events.register("before-send", before_send)
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        (client.converse_stream if stream else client.converse)(**params)
    assert len(captured) == 1
    return captured[0]


REAL = [
    (MODELS[0], None, "us-west-2", CREDS[0], False),
    (MODELS[1], "http://localhost:8123", "us-east-1", CREDS[1], True),
    (MODELS[3], "https://bedrock.internal.example:8443", "us-east-1", CREDS[1], False),
    (MODELS[4], None, "us-west-2", CREDS[0], True),
    (MODELS[5], "https://bedrock-runtime.eu-central-1.amazonaws.com:443", "eu-central-1", CREDS[1], False),
]


@pytest.mark.parametrize(("model", "endpoint", "region", "creds", "stream"), REAL)
def test_equals_what_boto3_sends(model: str, endpoint: str | None, region: str, creds: AwsCredentials,
                                 stream: bool) -> None:
    target = Target(TARGET.public_model, model, "bedrock", 1024, TARGET.capabilities)
    upstream = OpenAIToBedrock().translate_request({**CLIENT_REQUEST, "stream": stream}, target)
    body = json.loads(upstream.body)
    sent = _capture(endpoint, region, creds, stream, boto3_params(body, model))

    url = urlsplit(sent.url)
    assert url.path == upstream.path
    assert json.loads(sent.body) == body
    headers = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in sent.headers.items()}
    assert headers["content-type"] == dict(upstream.headers)["content-type"]
    host = authority(url.scheme, url.hostname or "", url.port)
    ours = dict(sign("POST", host, url.path, dict(upstream.headers), sent.body, creds, region, "bedrock", NOW))
    assert ours == {k: headers[k] for k in ours}
    assert set(ours) == {"x-amz-date", "authorization"} | ({"x-amz-security-token"} if creds.session_token else set())


def test_stale_signing_headers_from_an_earlier_attempt_are_replaced() -> None:
    fresh = sign("POST", "h", "/m", {"content-type": "application/json"}, b"{}", CREDS[1], "us-east-1", "bedrock", NOW)
    stale = {"content-type": "application/json", "X-Amz-Date": "20000101T000000Z", "Authorization": "old",
             "x-amz-security-token": "old", "Host": "other"}
    assert sign("POST", "h", "/m", stale, b"{}", CREDS[1], "us-east-1", "bedrock", NOW) == fresh
