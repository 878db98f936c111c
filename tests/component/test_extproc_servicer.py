"""The ext_proc servicer without Envoy: scripted `ProcessingRequest`s, as Envoy 1.40 sends them,
over a real gRPC connection to the product's own server (`ExternalProcessor` on `h2grpc.Server`,
127.0.0.1 port 0), asserting only what Envoy and the client would see: immediate responses
(status, body in the client's API error format, headers), header and body mutations, the
response body mode override and the dynamic metadata.

Both stages are covered through the gRPC boundary only: the router stage (every phase and error
path) and the upstream stage (a retry on another provider, selected by the call's
`x-interlock-stage: upstream` metadata). The stage modules are deliberately not imported.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import yaml
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import json_format

from extproc import metadata
from extproc.config import load_text
from extproc.runtime import Runtime, compile_runtime
from extproc.translate.registry import default_registry
from tests.component.servicer_envoy import (
    ServicerHarness,
    apply_header_mutation,
    body_after,
    body_msg,
    header_mutation,
    headers_msg,
    host_metadata_text,
    passed_on,
    response_body_msg,
    response_headers_msg,
)

TENANT_KEY = "sk-tenant-servicer"
NARROW_KEY = "sk-tenant-narrow"
OPENAI_SECRET = "sk-openai-PROVIDER-SECRET-0001"
ANTHROPIC_SECRET = "sk-ant-PROVIDER-SECRET-0002"
GEMINI_SECRET = "AIza-PROVIDER-SECRET-0003"
SECRETS = (OPENAI_SECRET, ANTHROPIC_SECRET, GEMINI_SECRET)
MAX_REQUEST_BYTES = 65536
RID = "5f0c7e6a-servicer-test"

_MODE = processing_mode_pb2.ProcessingMode
# Streams go FULL_DUPLEX_STREAMED (the router stage may then end a stalled one unasked).
STREAMED, BUFFERED, NONE = _MODE.FULL_DUPLEX_STREAMED, _MODE.BUFFERED, _MODE.NONE


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


CONFIG: dict[str, Any] = {
    "limits": {"max_request_bytes": MAX_REQUEST_BYTES},
    "providers": [
        {"name": "openai", "type": "openai", "endpoint": "https://api.openai.com", "api_key_env": "T_OPENAI_KEY"},
        {"name": "anthropic", "type": "anthropic", "endpoint": "https://api.anthropic.com",
         "api_key_env": "T_ANTHROPIC_KEY"},
        {"name": "gemini", "type": "gemini", "endpoint": "https://generativelanguage.googleapis.com",
         "api_key_env": "T_GEMINI_KEY"},
    ],
    "models": [
        {"name": "gpt-4o-mini", "provider": "openai", "upstream_model": "gpt-4o-mini-2024-07-18"},
        {"name": "claude-haiku", "provider": "anthropic", "upstream_model": "claude-haiku-4-5-20251001",
         "max_output_tokens": 1024},
        {"name": "gemini-flash", "provider": "gemini", "upstream_model": "gemini-2.5-flash"},
        # Route candidates, used by the route tests only (so no other test's failures steer them).
        {"name": "r-gpt", "provider": "openai", "upstream_model": "gpt-4o-mini-2024-07-18",
         "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}, "quality": 0.5},
        {"name": "r-claude", "provider": "anthropic", "upstream_model": "claude-haiku-4-5-20251001",
         "max_output_tokens": 2048, "price": {"input_per_mtok": 1.0, "output_per_mtok": 5.0}, "quality": 0.9},
    ],
    "routes": [
        # Two providers of different types, in a fixed order: openai first, then anthropic ...
        {"name": "cheap", "candidates": ["r-gpt", "r-claude"], "policy": {"kind": "cheapest"}},
        # ... and the other way round.
        {"name": "smart", "candidates": ["r-gpt", "r-claude"], "policy": {"kind": "best_quality"}},
    ],
    "tenants": [
        {"name": "main", "api_key_sha256": [_sha(TENANT_KEY)]},
        {"name": "narrow", "api_key_sha256": [_sha(NARROW_KEY)], "models": ["gpt-4o-mini"]},
    ],
}
ENVIRON = {"T_OPENAI_KEY": OPENAI_SECRET, "T_ANTHROPIC_KEY": ANTHROPIC_SECRET, "T_GEMINI_KEY": GEMINI_SECRET}
CHAIN_CHEAP = "r-gpt@openai:gpt-4o-mini-2024-07-18,r-claude@anthropic:claude-haiku-4-5-20251001"
CHAIN_SMART = "r-claude@anthropic:claude-haiku-4-5-20251001,r-gpt@openai:gpt-4o-mini-2024-07-18"


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return compile_runtime(load_text(yaml.safe_dump(CONFIG)), default_registry(), environ=ENVIRON)


@pytest.fixture
def gw(runtime: Runtime) -> Iterator[ServicerHarness]:
    """A fresh servicer per test: its routing statistics start empty."""
    h = ServicerHarness(runtime).start()
    try:
        yield h
    finally:
        h.stop()


# -- what Envoy sends ----------------------------------------------------------------------------

def client_headers(path: str = "/v1/chat/completions", method: str = "POST", body: bytes | None = b"",
                   key: str | None = TENANT_KEY, auth: str = "bearer", **extra: str) -> dict[str, str]:
    """Request headers of a client request as Envoy's listener hands them to the router stage."""
    h = {":authority": "gateway.example:8080", ":path": path, ":method": method, ":scheme": "http",
         "user-agent": "OpenAI/Python 3.63.0", "accept": "application/json", "x-forwarded-proto": "http",
         "x-request-id": RID}
    if body is not None and method == "POST":
        h["content-type"] = "application/json"
        h["content-length"] = str(len(body))
    if key is not None:
        if auth == "bearer":
            h["authorization"] = f"Bearer {key}"
        else:
            h["x-api-key"] = key
    if path.startswith("/v1/messages"):
        h["anthropic-version"] = "2023-06-01"
        h["user-agent"] = "Anthropic/Python 2.17.0"
    h.update({k.replace("_", "-"): v for k, v in extra.items()})
    return h


def chat_body(model: str = "claude-haiku", **fields: Any) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": "Say hello."}], **fields})


def messages_body(model: str = "claude-haiku", **fields: Any) -> bytes:
    return orjson.dumps({"model": model, "max_tokens": 256, "messages": [{"role": "user", "content": "Say hello."}],
                         **fields})


def request(gw: ServicerHarness, body: bytes, path: str = "/v1/chat/completions", **headers: Any
            ) -> tuple[dict[str, str], list[pb.ProcessingResponse]]:
    """Request headers + body (Envoy buffers the body); returns the client headers and both replies."""
    h = client_headers(path, body=body, **headers)
    return h, gw.process([headers_msg(h), body_msg(body)])


def immediate(resp: pb.ProcessingResponse) -> tuple[int, dict[str, Any], dict[str, str]]:
    assert resp.WhichOneof("response") == "immediate_response", resp
    imm = resp.immediate_response
    headers = {o.header.key: o.header.raw_value.decode() for o in imm.headers.set_headers}
    assert imm.details == metadata.IMMEDIATE_DETAILS
    return int(imm.status.code), orjson.loads(imm.body), headers


def assert_openai_error(body: dict[str, Any], type_: str, code: str | None = None) -> str:
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"message", "type", "code"} <= set(err)
    assert err["type"] == type_
    if code is not None:
        assert err["code"] == code
    assert isinstance(err["message"], str) and err["message"]
    return str(err["message"])


def assert_anthropic_error(body: dict[str, Any], type_: str) -> str:
    assert body["type"] == "error" and set(body) == {"type", "error"}, body
    assert body["error"]["type"] == type_
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return str(body["error"]["message"])


def assert_no_secrets(*blobs: bytes | str) -> None:
    for blob in blobs:
        text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
        for secret in SECRETS:
            assert secret not in text
        assert "Traceback" not in text


# -- request headers: auth, paths, methods -------------------------------------------------------

@pytest.mark.parametrize("key", [None, "sk-not-a-tenant"], ids=["no-key", "bad-key"])
def test_auth_failure_is_401_in_openai_format(gw: ServicerHarness, key: str | None) -> None:
    [resp] = gw.process([headers_msg(client_headers(key=key, body=chat_body()))])
    status, body, headers = immediate(resp)
    assert status == 401
    assert_openai_error(body, "authentication_error", "invalid_api_key")
    assert headers["content-type"] == "application/json"
    assert headers[metadata.REQUEST_ID_HEADER] == RID
    assert headers[metadata.PROVIDER_HEADER] == metadata.GATEWAY_PROVIDER


@pytest.mark.parametrize("key", [None, "sk-not-a-tenant"], ids=["no-key", "bad-key"])
def test_auth_failure_on_messages_is_401_in_anthropic_format(gw: ServicerHarness, key: str | None) -> None:
    [resp] = gw.process([headers_msg(client_headers("/v1/messages", key=key, auth="x-api-key",
                                                    body=messages_body()))])
    status, body, headers = immediate(resp)
    assert status == 401
    assert_anthropic_error(body, "authentication_error")
    assert headers[metadata.REQUEST_ID_HEADER] == RID


def test_both_key_headers_authenticate(gw: ServicerHarness) -> None:
    for auth in ("bearer", "x-api-key"):
        [resp] = gw.process([headers_msg(client_headers(auth=auth, body=chat_body()))])
        assert resp.WhichOneof("response") == "request_headers"
        assert not resp.request_headers.response.header_mutation.set_headers


def test_unknown_path_is_404(gw: ServicerHarness) -> None:
    [resp] = gw.process([headers_msg(client_headers("/v1/images/generations", body=b"{}"))])
    status, body, _ = immediate(resp)
    assert status == 404
    assert_openai_error(body, "not_found_error", "unknown_url")


@pytest.mark.parametrize(("path", "method"), [("/v1/chat/completions", "GET"), ("/v1/models", "POST"),
                                              ("/v1/embeddings", "PUT")])
def test_wrong_method_is_405(gw: ServicerHarness, path: str, method: str) -> None:
    [resp] = gw.process([headers_msg(client_headers(path, method, body=None), end_of_stream=method == "GET")])
    status, body, _ = immediate(resp)
    assert status == 405
    assert_openai_error(body, "invalid_request_error")


def test_wrong_method_on_messages_is_405_in_anthropic_format(gw: ServicerHarness) -> None:
    [resp] = gw.process([headers_msg(client_headers("/v1/messages", "GET", body=None), end_of_stream=True)])
    status, body, _ = immediate(resp)
    assert status == 405
    assert_anthropic_error(body, "invalid_request_error")


def test_post_without_body_is_400(gw: ServicerHarness) -> None:
    # A request with no body: Envoy sends no body message, only headers with end_of_stream.
    h = client_headers(body=None)
    [resp] = gw.process([headers_msg(h, end_of_stream=True)])
    status, body, _ = immediate(resp)
    assert status == 400
    assert_openai_error(body, "invalid_request_error")


def test_declared_length_over_the_limit_is_413(gw: ServicerHarness) -> None:
    h = client_headers(body=b"x" * (MAX_REQUEST_BYTES + 1))
    [resp] = gw.process([headers_msg(h)])
    status, body, _ = immediate(resp)
    assert status == 413
    assert_openai_error(body, "invalid_request_error", "request_too_large")


@pytest.mark.parametrize("header", [{"x_interlock_priority": "urgent"}, {"x_interlock_deadline_ms": "soon"},
                                    {"x_interlock_deadline_ms": "0"}])
def test_bad_admission_headers_are_400(gw: ServicerHarness, header: dict[str, str]) -> None:
    [resp] = gw.process([headers_msg(client_headers(body=chat_body(), **header))])
    status, body, _ = immediate(resp)
    assert status == 400
    assert_openai_error(body, "invalid_request_error")


# -- GET /v1/models ----------------------------------------------------------------------------

def test_models_list_in_openai_format(gw: ServicerHarness) -> None:
    [resp] = gw.process([headers_msg(client_headers("/v1/models", "GET", body=None), end_of_stream=True)])
    status, body, headers = immediate(resp)
    assert status == 200
    assert headers["content-type"] == "application/json" and headers[metadata.REQUEST_ID_HEADER] == RID
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids == ["gpt-4o-mini", "claude-haiku", "gemini-flash", "r-gpt", "r-claude", "cheap", "smart"]
    for m in body["data"]:
        assert m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"]
    assert {m["id"]: m["owned_by"] for m in body["data"]}["claude-haiku"] == "anthropic"


def test_models_list_in_anthropic_format(gw: ServicerHarness) -> None:
    h = client_headers("/v1/models", "GET", body=None, key=NARROW_KEY, auth="x-api-key", anthropic_version="2023-06-01")
    [resp] = gw.process([headers_msg(h, end_of_stream=True)])
    status, body, _ = immediate(resp)
    assert status == 200
    # The narrow tenant sees only what it may use; created_at is when the worker started serving.
    created = body["data"][0].pop("created_at")
    # Which request paths serve the model (a chat model: chat, messages, responses, ...).
    assert {"/v1/chat/completions", "/v1/messages", "/v1/responses"} <= set(body["data"][0].pop("apis"))
    assert body == {"data": [{"type": "model", "id": "gpt-4o-mini", "display_name": "gpt-4o-mini"}],
                    "has_more": False, "first_id": "gpt-4o-mini", "last_id": "gpt-4o-mini"}
    started = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    assert abs(time.time() - started.timestamp()) < 3600


def test_one_model_and_a_hidden_one(gw: ServicerHarness) -> None:
    [resp] = gw.process([headers_msg(client_headers("/v1/models/gpt-4o-mini", "GET", body=None, key=NARROW_KEY),
                                     end_of_stream=True)])
    status, body, _ = immediate(resp)
    assert status == 200 and body["id"] == "gpt-4o-mini" and body["owned_by"] == "openai"
    [resp] = gw.process([headers_msg(client_headers("/v1/models/claude-haiku", "GET", body=None, key=NARROW_KEY),
                                     end_of_stream=True)])
    status, body, _ = immediate(resp)
    assert status == 404
    assert_openai_error(body, "not_found_error", "model_not_found")


# -- request body errors -------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"{not json", b"", b'["model", "claude-haiku"]', b'"hello"',
                                 b'{"messages": []}', b'{"model": 42, "messages": []}', b'{"model": ""}'],
                         ids=["not-json", "empty", "array", "string", "no-model", "model-not-string", "model-empty"])
def test_bad_body_is_400(gw: ServicerHarness, raw: bytes) -> None:
    _, [first, resp] = request(gw, raw)
    assert first.WhichOneof("response") == "request_headers"
    status, body, headers = immediate(resp)
    assert status == 400
    assert_openai_error(body, "invalid_request_error")
    assert headers[metadata.REQUEST_ID_HEADER] == RID


def test_bad_body_on_messages_is_400_in_anthropic_format(gw: ServicerHarness) -> None:
    _, [_, resp] = request(gw, b"{oops", "/v1/messages", auth="x-api-key")
    status, body, _ = immediate(resp)
    assert status == 400
    assert_anthropic_error(body, "invalid_request_error")


@pytest.mark.parametrize(("key", "model"), [(TENANT_KEY, "gpt-5-imaginary"), (NARROW_KEY, "claude-haiku")],
                         ids=["unknown", "not-allowed"])
def test_unknown_or_forbidden_model_is_404(gw: ServicerHarness, key: str, model: str) -> None:
    _, [_, resp] = request(gw, chat_body(model), key=key)
    status, body, headers = immediate(resp)
    assert status == 404
    assert_openai_error(body, "not_found_error", "model_not_found")
    assert headers[metadata.MODEL_HEADER] == model


def test_unknown_model_on_messages_is_404_in_anthropic_format(gw: ServicerHarness) -> None:
    _, [_, resp] = request(gw, messages_body("nope"), "/v1/messages")
    status, body, _ = immediate(resp)
    assert status == 404
    assert_anthropic_error(body, "not_found_error")


def test_a_request_the_provider_cannot_serve_is_400(gw: ServicerHarness) -> None:
    _, [_, resp] = request(gw, chat_body(n=2))
    status, body, _ = immediate(resp)
    assert status == 400
    assert_openai_error(body, "invalid_request_error")


# -- request body: translation -------------------------------------------------------------------

@pytest.mark.parametrize("auth", ["bearer", "x-api-key"])
def test_openai_request_to_anthropic_provider_is_translated(gw: ServicerHarness, auth: str) -> None:
    body = chat_body("claude-haiku", max_tokens=300, temperature=0.2,
                     messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi ✓"}])
    h, [first, resp] = request(gw, body, auth=auth, openai_organization="org-client", cookie="a=b")
    assert first.WhichOneof("response") == "request_headers"
    assert resp.WhichOneof("response") == "request_body"
    common = resp.request_body.response
    assert common.clear_route_cache
    sent = body_after(common, body)
    assert orjson.loads(sent) == {"model": "claude-haiku-4-5-20251001", "max_tokens": 300, "system": "Be brief.",
                                  "messages": [{"role": "user", "content": "Hi ✓"}]}
    up = apply_header_mutation(h, common)
    assert up[":path"] == "/v1/messages"
    assert up[":method"] == "POST"
    assert up["content-length"] == str(len(sent))
    assert up[metadata.CLUSTER_HEADER] == "provider_anthropic"
    assert up[metadata.TRANSLATED_FOR_HEADER] == "anthropic"
    assert up[metadata.CLIENT_API_HEADER] == "openai"
    assert up["anthropic-version"] == "2026-10-21"
    assert up["content-type"] == "application/json"
    # The provider's credentials replace the client's; no client credential or client-SDK header goes on.
    assert up["authorization"] == f"Bearer {ANTHROPIC_SECRET}"
    assert "x-api-key" not in up
    assert TENANT_KEY not in repr(up)
    assert "openai-organization" not in up and "cookie" not in up
    assert up["x-request-id"] == RID
    # A single deployment: nothing for the upstream stage.
    assert not resp.HasField("dynamic_metadata")


def test_dropped_params_are_named_on_the_response(gw: ServicerHarness) -> None:
    body = chat_body(temperature=0.5, seed=7)
    h = client_headers(body=body)
    r = gw.process([headers_msg(h), body_msg(body),
                    response_headers_msg(200, {"content-type": "application/json"}, provider="anthropic")])
    set_headers, _ = header_mutation(r[2].response_headers.response)
    assert sorted(set_headers[metadata.DROPPED_PARAMS_HEADER].split(",")) == ["seed", "temperature"]


def test_anthropic_request_to_openai_provider_is_translated(gw: ServicerHarness) -> None:
    body = messages_body("gpt-4o-mini", system="Be brief.")
    h, [_, resp] = request(gw, body, "/v1/messages", auth="x-api-key", anthropic_beta="prompt-caching-2024-07-31")
    common = resp.request_body.response
    sent = orjson.loads(body_after(common, body))
    assert sent["model"] == "gpt-4o-mini-2024-07-18"
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    up = apply_header_mutation(h, common)
    assert up[":path"] == "/v1/chat/completions"
    assert up["content-length"] == str(len(body_after(common, body)))
    assert up[metadata.CLUSTER_HEADER] == "provider_openai"
    assert up[metadata.CLIENT_API_HEADER] == "anthropic"
    assert up["authorization"] == f"Bearer {OPENAI_SECRET}"
    assert "x-api-key" not in up and "anthropic-version" not in up and "anthropic-beta" not in up


def test_anthropic_passthrough_keeps_the_beta_header(gw: ServicerHarness) -> None:
    body = messages_body("claude-haiku")
    h, [_, resp] = request(gw, body, "/v1/messages", auth="x-api-key", anthropic_beta="prompt-caching-2024-07-31")
    common = resp.request_body.response
    up = apply_header_mutation(h, common)
    assert orjson.loads(body_after(common, body))["model"] == "claude-haiku-4-5-20251001"
    assert up["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert up["authorization"] == f"Bearer {ANTHROPIC_SECRET}" and "x-api-key" not in up
    assert up[metadata.CLUSTER_HEADER] == "provider_anthropic"


def test_openai_request_to_gemini_uses_its_key_header(gw: ServicerHarness) -> None:
    body = chat_body("gemini-flash")
    h, [_, resp] = request(gw, body)
    common = resp.request_body.response
    up = apply_header_mutation(h, common)
    assert up[":path"].endswith("gemini-2.5-flash:generateContent")
    assert up["x-goog-api-key"] == GEMINI_SECRET
    assert "authorization" not in up
    assert up["content-length"] == str(len(body_after(common, body)))


def test_client_deadline_becomes_envoys_route_timeout(gw: ServicerHarness) -> None:
    body = chat_body()
    h, [_, resp] = request(gw, body, x_interlock_deadline_ms="30000")
    up = apply_header_mutation(h, resp.request_body.response)
    assert 29_000 < int(up[metadata.ENVOY_TIMEOUT_HEADER]) <= 30_000


# -- response headers ----------------------------------------------------------------------------

ANTHROPIC_MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
    "content": [{"type": "text", "text": "Hello — nice to meet you! 👋"}], "stop_reason": "end_turn",
    "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 9, "cache_creation_input_tokens": 0,
                                     "cache_read_input_tokens": 0},
}
PROVIDER_RESPONSE_HEADERS = {"content-type": "application/json", "request-id": "req_011CProvider",
                             "anthropic-organization-id": "org-secret-provider", "set-cookie": "sid=1",
                             "x-envoy-upstream-service-time": "412", "x-envoy-attempt-count": "1"}


def test_buffered_translation_of_a_whole_response(gw: ServicerHarness) -> None:
    body = chat_body()
    upstream = orjson.dumps(ANTHROPIC_MESSAGE)
    r = gw.process([headers_msg(client_headers(body=body)), body_msg(body),
                    response_headers_msg(200, {**PROVIDER_RESPONSE_HEADERS, "content-length": str(len(upstream))},
                                         provider="anthropic"),
                    response_body_msg(upstream, end_of_stream=True)])
    rh = r[2]
    assert rh.mode_override.response_body_mode == BUFFERED
    set_headers, removed = header_mutation(rh.response_headers.response)
    assert set_headers[metadata.PROVIDER_HEADER] == "anthropic"
    assert set_headers[metadata.MODEL_HEADER] == "claude-haiku"
    assert set_headers[metadata.ATTEMPTS_HEADER] == "1"
    assert {"request-id", "anthropic-organization-id", "set-cookie"} <= set(removed)
    common = r[3].response_body.response
    out = body_after(common, upstream)
    assert header_mutation(common)[0]["content-length"] == str(len(out))
    completion = orjson.loads(out)
    assert completion["object"] == "chat.completion"
    message = completion["choices"][0]["message"]
    assert message["role"] == "assistant" and message["content"] == "Hello — nice to meet you! 👋"
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["usage"]["prompt_tokens"] == 12 and completion["usage"]["completion_tokens"] == 9


def test_sse_response_is_streamed(gw: ServicerHarness) -> None:
    body = chat_body(stream=True)
    r = gw.process([headers_msg(client_headers(body=body)), body_msg(body),
                    response_headers_msg(200, {"content-type": "text/event-stream", "cache-control": "no-cache",
                                               "x-envoy-upstream-service-time": "80"}, provider="anthropic")])
    rh = r[2]
    assert rh.mode_override.response_body_mode == STREAMED
    assert rh.mode_override.response_trailer_mode == _MODE.SEND  # Envoy requires it in full duplex
    set_headers, removed = header_mutation(rh.response_headers.response)
    assert set_headers["content-type"].startswith("text/event-stream")
    assert set_headers[metadata.PROVIDER_HEADER] == "anthropic"
    assert set_headers[metadata.MODEL_HEADER] == "claude-haiku"
    assert "content-length" in removed


OPENAI_COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello — nice to meet you! 👋"},
                 "finish_reason": "stop"}], "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}}


def test_passthrough_response_is_read_and_never_changed(gw: ServicerHarness) -> None:
    """A same-API answer is read whole (to check it is a chat completion), its bytes untouched."""
    body = chat_body("gpt-4o-mini")
    answer = orjson.dumps(OPENAI_COMPLETION)
    r = gw.process([headers_msg(client_headers(body=body)), body_msg(body),
                    response_headers_msg(200, {"content-type": "application/json", "openai-organization": "org-x",
                                               "openai-processing-ms": "300", "x-request-id": RID,
                                               "x-envoy-upstream-service-time": "300"}, provider="openai"),
                    response_body_msg(answer, end_of_stream=True)])
    rh = r[2]
    assert rh.HasField("mode_override") and rh.mode_override.response_body_mode == BUFFERED
    set_headers, removed = header_mutation(rh.response_headers.response)
    assert set_headers[metadata.PROVIDER_HEADER] == "openai"
    assert set_headers[metadata.MODEL_HEADER] == "gpt-4o-mini"
    assert {"openai-organization", "openai-processing-ms"} <= set(removed)
    assert "x-request-id" not in removed
    common = r[3].response_body.response
    assert not common.HasField("body_mutation") and not common.header_mutation.set_headers


def test_every_passthrough_stream_is_read_and_never_changed(gw: ServicerHarness) -> None:
    """Every passthrough stream is read (full duplex), for its usage, its token rate and its end; a
    stream that ends with `[DONE]` goes on byte for byte."""
    body = chat_body("gpt-4o-mini", stream=True)
    chunk = b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[]}\n\n'
    for _ in range(3):
        s = gw.open()
        s.send(headers_msg(client_headers(body=body)))
        s.send(body_msg(body))
        rh = s.send(response_headers_msg(200, {"content-type": "text/event-stream"}, provider="openai"))
        assert rh.mode_override.response_body_mode == STREAMED
        for part, end in ((chunk, False), (b"data: [DONE]\n\n", True)):
            rb = s.send(response_body_msg(part, end_of_stream=end))
            assert rb.WhichOneof("response") == "response_body"
            assert passed_on(rb, part) and rb.response_body.response.body_mutation.streamed_response.end_of_stream == end
        s.close()


EXCEEDED = {"x-interlock-ratelimit-exceeded": "unit=tokens;per=minute;amount=40000;remaining=12;needed=90;model=0;"
                                               "priority=0"}


def test_gateway_rate_limit_reply_is_worded_naming_the_limit(gw: ServicerHarness) -> None:
    """Envoy's rate-limit filter refused: the answer names the limit the rate-limit service says
    was hit, in the client's format; the service's word and Envoy's mark are removed."""
    body = chat_body()
    r = gw.process([headers_msg(client_headers(body=body)), body_msg(body),
                    response_headers_msg(429, {"content-type": "application/json", "x-envoy-ratelimited": "true",
                                               "retry-after": "3", **EXCEEDED}),
                    response_body_msg(b'{"error":{"message":"Rate limit exceeded"}}', end_of_stream=True)])
    rh = r[2]
    assert rh.mode_override.response_body_mode == BUFFERED
    set_headers, removed = header_mutation(rh.response_headers.response)
    assert set_headers[metadata.PROVIDER_HEADER] == metadata.GATEWAY_PROVIDER
    assert set_headers[metadata.MODEL_HEADER] == "claude-haiku"
    assert set_headers[metadata.PRIORITY_HEADER] == "default"
    assert sorted(removed) == ["x-envoy-ratelimited", "x-interlock-ratelimit-exceeded"]
    status, out_headers, err = rendered_error(r[3])
    assert status == 429 and out_headers["retry-after"] == "3"
    assert err["error"]["code"] == "rate_limit_exceeded"
    assert err["error"]["message"].startswith("Rate limit exceeded: this API key may use 40000 tokens per minute; "
                                              "12 are left in this window"), err


# -- response body: a streamed Anthropic answer to an OpenAI client -------------------------------

STREAM_TEXT_PARTS = ["Héllo", ", wörld", "! 日本語で", "話します", " 🚀🚀", " — done."]
STREAM_TEXT = "".join(STREAM_TEXT_PARTS)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def anthropic_sse(parts: list[str] = STREAM_TEXT_PARTS) -> bytes:
    """An Anthropic Messages stream as the API sends it (raw UTF-8 in the JSON, a ping, usage in
    message_start and message_delta)."""
    out = [_event("message_start", {"type": "message_start", "message": {
        "id": "msg_01StreamServicerTest", "type": "message", "role": "assistant", "content": [],
        "model": "claude-haiku-4-5-20251001", "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 1}}}),
        _event("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}}),
        _event("ping", {"type": "ping"})]
    out += [_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                           "delta": {"type": "text_delta", "text": p}}) for p in parts]
    out += [_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                     "usage": {"output_tokens": 17}}),
            _event("message_stop", {"type": "message_stop"})]
    return b"".join(out)


def awkward_chunks(data: bytes) -> list[bytes]:
    """`data` cut mid-event, mid-line, between the two newlines ending an event, inside multi-byte
    UTF-8 characters, and one byte at a time across a 4-byte emoji and its event's end."""
    cuts = {7, 30, data.index(b"\n\n") + 1}  # inside "event: message_start", inside its data, between "\n" "\n"
    for char in ("é", "日", "話"):
        i = data.index(char.encode())
        cuts.add(i + 1)  # between the bytes of one character
    rocket = data.index("🚀".encode())
    cuts.update(range(rocket - 3, rocket + 12))  # one byte at a time
    i = data.index(b"message_delta")
    cuts.update((i + 3, i + 40))
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert b"".join(chunks) == data
    undecodable = 0
    for c in chunks:
        try:
            c.decode("utf-8")
        except UnicodeDecodeError:
            undecodable += 1
    assert undecodable >= 3  # the test really splits characters
    return chunks


def parse_openai_sse(raw: bytes) -> list[Any]:
    """Client-side SSE parsing: every event is `data: <json>` or `data: [DONE]`."""
    text = raw.decode("utf-8")  # the client's whole stream is valid UTF-8
    assert text.endswith("\n\n")
    out: list[Any] = []
    for block in text[:-2].split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln and not ln.startswith(":")]
        assert len(lines) == 1 and lines[0].startswith("data: "), block
        payload = lines[0][len("data: "):]
        out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return out


def stream_through(gw: ServicerHarness, chunks: list[bytes], *, empty_last: bool = False,
                   **fields: Any) -> tuple[bytes, list[pb.ProcessingResponse]]:
    """A streamed request and its response body, one ext_proc message per chunk; returns what
    the client receives and the body replies."""
    body = chat_body(stream=True, **fields)
    s = gw.open()
    s.send(headers_msg(client_headers(body=body)))
    s.send(body_msg(body))
    rh = s.send(response_headers_msg(200, {"content-type": "text/event-stream; charset=utf-8",
                                           "cache-control": "no-cache", "x-envoy-upstream-service-time": "95"},
                                     provider="anthropic"))
    assert rh.mode_override.response_body_mode == STREAMED
    messages = [(c, not empty_last and i == len(chunks) - 1) for i, c in enumerate(chunks)]
    if empty_last:
        messages.append((b"", True))
    client = b""
    replies = []
    for chunk, end in messages:
        reply = s.send(response_body_msg(chunk, end_of_stream=end))
        assert reply.WhichOneof("response") == "response_body"
        replies.append(reply)
        out = body_after(reply.response_body.response, chunk)
        # The client gets whole events only: a partial one is held until its end arrives.
        assert out == b"" or out.endswith(b"\n\n")
        client += out
    s.close()
    return client, replies


def check_chunks(events: list[Any], include_usage: bool) -> list[dict[str, Any]]:
    from openai.types.chat import ChatCompletionChunk  # the client SDK is the oracle

    assert events[-1] == "[DONE]" and "[DONE]" not in events[:-1]
    chunks = events[:-1]
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
        assert c["object"] == "chat.completion.chunk"
        assert c["id"] == chunks[0]["id"] and c["created"] == chunks[0]["created"]
        assert c["model"] == "claude-haiku-4-5-20251001"
    with_choices = [c for c in chunks if c["choices"]]
    assert with_choices[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in with_choices)
    assert content == STREAM_TEXT
    finishes = [c["choices"][0]["finish_reason"] for c in with_choices if c["choices"][0]["finish_reason"]]
    assert finishes == ["stop"]
    if include_usage:
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["prompt_tokens"] == 25 and chunks[-1]["usage"]["completion_tokens"] == 17
    else:
        assert all(c.get("usage") is None for c in chunks)
    return chunks


@pytest.mark.parametrize("include_usage", [False, True])
def test_streamed_answer_split_at_awkward_points(gw: ServicerHarness, include_usage: bool) -> None:
    sse = anthropic_sse()
    opts: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    client, replies = stream_through(gw, awkward_chunks(sse), **opts)
    assert len(replies) > 20
    check_chunks(parse_openai_sse(client), include_usage)
    assert_no_secrets(client)


def test_streamed_answer_one_event_per_message_then_an_empty_end(gw: ServicerHarness) -> None:
    sse = anthropic_sse()
    chunks = [e + b"\n\n" for e in sse.split(b"\n\n") if e]
    client, replies = stream_through(gw, chunks, empty_last=True)
    check_chunks(parse_openai_sse(client), False)
    # The last event already closed the stream: the empty end adds nothing.
    assert body_after(replies[-1].response_body.response, b"") == b""


def test_streamed_answer_in_one_message(gw: ServicerHarness) -> None:
    client, _ = stream_through(gw, [anthropic_sse()])
    check_chunks(parse_openai_sse(client), False)


def test_provider_error_event_mid_stream_ends_the_client_stream_with_an_error(gw: ServicerHarness) -> None:
    sse = anthropic_sse(["Hel"]).split(b"event: content_block_stop")[0]
    sse += _event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    client, _ = stream_through(gw, [sse[:50], sse[50:]])
    events = parse_openai_sse(client)
    assert "[DONE]" not in events
    assert events[-1]["error"]["type"] in ("api_error", "overloaded_error")
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e.get("choices")) == "Hel"
    assert_no_secrets(client)


def test_stream_cut_short_ends_with_an_error_not_done(gw: ServicerHarness) -> None:
    sse = anthropic_sse().split(b"event: message_delta")[0]
    client, _ = stream_through(gw, [sse])
    events = parse_openai_sse(client)
    assert "[DONE]" not in events
    assert set(events[-1]) == {"error"}


# -- provider errors -----------------------------------------------------------------------------

ANTHROPIC_ERRORS = {
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", f"Internal server error while using key {ANTHROPIC_SECRET}."),
    401: ("authentication_error", f"invalid x-api-key: {ANTHROPIC_SECRET}"),
    529: ("overloaded_error", "Overloaded"),
}
EXPECTED_STATUS = {429: 429, 500: 502, 401: 502, 529: 503}
EXPECTED_ANTHROPIC_TYPE = {429: "rate_limit_error", 502: "api_error", 503: "overloaded_error"}
EXPECTED_OPENAI_TYPE = {429: "rate_limit_error", 502: "api_error", 503: "api_error"}


def provider_error(gw: ServicerHarness, status: int, path: str, body: bytes
                   ) -> tuple[pb.ProcessingResponse, pb.ProcessingResponse, bytes]:
    kind, message = ANTHROPIC_ERRORS[status]
    upstream = orjson.dumps({"type": "error", "error": {"type": kind, "message": message},
                             "request_id": "req_011CErr"})
    headers = {"content-type": "application/json", "request-id": "req_011CErr", "x-should-retry": "true",
               "x-envoy-upstream-service-time": "31", "x-envoy-attempt-count": "1",
               "content-length": str(len(upstream))}
    if status == 429:
        headers["retry-after"] = "7"
    r = gw.process([headers_msg(client_headers(path, body=body)), body_msg(body),
                    response_headers_msg(status, headers, provider="anthropic"),
                    response_body_msg(upstream, end_of_stream=True)])
    return r[2], r[3], upstream


def _client_reply(rh: pb.ProcessingResponse, rb: pb.ProcessingResponse, upstream: bytes
                  ) -> tuple[int, dict[str, str], bytes]:
    assert rh.mode_override.response_body_mode == BUFFERED
    first, _ = header_mutation(rh.response_headers.response)
    common = rb.response_body.response
    final = {**first, **header_mutation(common)[0]}
    out = body_after(common, upstream)
    assert final["content-length"] == str(len(out))
    assert final["content-type"] == "application/json"
    assert final[metadata.PROVIDER_HEADER] == "anthropic"
    return int(final[":status"]), final, out


@pytest.mark.parametrize("status", [429, 500, 401, 529])
def test_provider_errors_map_to_openai_client_errors(gw: ServicerHarness, status: int) -> None:
    rh, rb, upstream = provider_error(gw, status, "/v1/chat/completions", chat_body())
    client_status, headers, out = _client_reply(rh, rb, upstream)
    assert client_status == EXPECTED_STATUS[status]
    assert "request-id" in header_mutation(rh.response_headers.response)[1]  # the provider's, not ours
    # Envoy sends the headers it holds after the body reply; the status set at headers time was provisional.
    assert int(header_mutation(rh.response_headers.response)[0][":status"]) == client_status
    assert_openai_error(orjson.loads(out), EXPECTED_OPENAI_TYPE[client_status])
    if status == 429:
        assert headers["retry-after"] == "7"
        assert orjson.loads(out)["error"]["code"] == "rate_limit_exceeded"
    assert_no_secrets(out, repr(headers))


@pytest.mark.parametrize("status", [429, 500, 401, 529])
def test_provider_errors_map_to_anthropic_client_errors(gw: ServicerHarness, status: int) -> None:
    rh, rb, upstream = provider_error(gw, status, "/v1/messages", messages_body())
    client_status, headers, out = _client_reply(rh, rb, upstream)
    assert client_status == EXPECTED_STATUS[status]
    assert_anthropic_error(orjson.loads(out), EXPECTED_ANTHROPIC_TYPE[client_status])
    if status == 429:
        assert headers["retry-after"] == "7"
    assert_no_secrets(out, repr(headers))


def test_provider_unreachable_is_503_in_the_client_format(gw: ServicerHarness) -> None:
    # Envoy's own reply when it cannot connect: no x-envoy-upstream-service-time.
    body = chat_body()
    envoy_body = b"upstream connect error or disconnect/reset before headers. reset reason: connection refused"
    r = gw.process([headers_msg(client_headers(body=body)), body_msg(body),
                    response_headers_msg(503, {"content-type": "text/plain", "content-length": str(len(envoy_body))},
                                         provider="anthropic"),
                    response_body_msg(envoy_body, end_of_stream=True)])
    status, _, out = _client_reply(r[2], r[3], envoy_body)
    assert status == 503
    assert_openai_error(orjson.loads(out), "api_error", "provider_unreachable")


# -- internal faults -----------------------------------------------------------------------------

def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError(f"secret internal detail {ANTHROPIC_SECRET}")


@pytest.mark.parametrize(("path", "client", "body"), [("/v1/chat/completions", "openai", chat_body()),
                                                      ("/v1/messages", "anthropic", messages_body())],
                         ids=["openai", "anthropic"])
def test_internal_fault_is_500_with_the_request_id(gw: ServicerHarness, runtime: Runtime,
                                                   monkeypatch: pytest.MonkeyPatch, path: str, client: str,
                                                   body: bytes) -> None:
    monkeypatch.setattr(runtime.registry.get(client, "anthropic"), "translate_request", _boom)
    _, [_, resp] = request(gw, body, path)
    status, err, headers = immediate(resp)
    assert status == 500
    message = (assert_openai_error(err, "api_error") if client == "openai"
               else assert_anthropic_error(err, "api_error"))
    assert RID in message
    assert headers[metadata.REQUEST_ID_HEADER] == RID
    assert "RuntimeError" not in message and "secret internal detail" not in message
    assert_no_secrets(resp.immediate_response.body, repr(headers))


def test_internal_fault_mid_stream_ends_the_stream_with_an_error_event(gw: ServicerHarness, runtime: Runtime,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    translator = runtime.registry.get("openai", "anthropic")
    real = translator.stream_translator

    class Faulty:
        def __init__(self, inner: Any) -> None:
            self.inner, self.fed = inner, 0

        @property
        def usage(self) -> Any:
            return self.inner.usage

        def feed(self, chunk: bytes) -> bytes:
            self.fed += 1
            if self.fed == 3:
                _boom()
            return bytes(self.inner.feed(chunk))

        def finish(self) -> bytes:
            return bytes(self.inner.finish())

    monkeypatch.setattr(translator, "stream_translator", lambda *a: Faulty(real(*a)))
    sse = anthropic_sse()
    chunks = [e + b"\n\n" for e in sse.split(b"\n\n") if e]
    body = chat_body(stream=True)
    s = gw.open()
    s.send(headers_msg(client_headers(body=body)))
    s.send(body_msg(body))
    s.send(response_headers_msg(200, {"content-type": "text/event-stream"}, provider="anthropic"))
    client = b""
    for chunk in chunks[:3]:
        reply = s.send(response_body_msg(chunk, end_of_stream=False))
        assert reply.WhichOneof("response") == "response_body"  # headers already went: no immediate response
        client += body_after(reply.response_body.response, chunk)
    s.close()
    events = parse_openai_sse(client)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    err = events[-1]["error"]
    assert RID in err["message"] and "secret" not in err["message"]
    assert_no_secrets(client)


# -- the upstream stage: a retry on another provider ---------------------------------------------

ROUTE_CASES = {
    # (client path, route): (first provider, retry provider, retry model, path for the retry)
    ("/v1/chat/completions", "cheap"): ("openai", "anthropic", "r-claude", "/v1/messages"),
    ("/v1/chat/completions", "smart"): ("anthropic", "openai", "r-gpt", "/v1/chat/completions"),
    ("/v1/messages", "cheap"): ("openai", "anthropic", "r-claude", "/v1/messages"),
    ("/v1/messages", "smart"): ("anthropic", "openai", "r-gpt", "/v1/chat/completions"),
}
SECRET_OF = {"openai": OPENAI_SECRET, "anthropic": ANTHROPIC_SECRET}


def forwarded(resp: pb.ProcessingResponse) -> dict[str, dict[str, Any]]:
    """The router stage's dynamic metadata as Envoy forwards it to the upstream stage's
    `metadata_context.filter_metadata` (namespace → fields)."""
    md = json_format.MessageToDict(resp.dynamic_metadata)
    return {ns: dict(fields) for ns, fields in md.items()}


def upstream_attempt(gw: ServicerHarness, headers: dict[str, str], body: bytes | None, provider: str | None,
                     md: dict[str, dict[str, str]] | None) -> list[pb.ProcessingResponse]:
    """One attempt through the upstream filter chain's ext_proc: the request as the router stage
    (and any earlier attempt) left it, the attempt count, the host Envoy picked (its metadata is a
    request attribute there). `body` None: headers only (Envoy sends no body after an immediate
    response)."""
    attrs = {"xds.upstream_host_metadata": host_metadata_text(provider)} if provider else None
    h = {**headers, metadata.ENVOY_ATTEMPT_COUNT: "2"}
    msgs = [headers_msg(h, attributes=attrs, filter_metadata=md)]
    if body is not None:
        msgs.append(body_msg(body, attributes=attrs))
    return gw.process(msgs, stage="upstream")


@pytest.mark.parametrize(("path", "route"), list(ROUTE_CASES), ids=[f"{p.split('/')[-1]}-{r}" for p, r in ROUTE_CASES])
def test_retry_on_another_provider_is_translated_afresh(gw: ServicerHarness, path: str, route: str) -> None:
    first, second, second_model, second_path = ROUTE_CASES[(path, route)]
    client_api = "anthropic" if path == "/v1/messages" else "openai"
    body = messages_body(route) if client_api == "anthropic" else chat_body(route, max_tokens=200)
    h = client_headers(path, body=body, auth="x-api-key" if client_api == "anthropic" else "bearer")

    router = gw.open()
    assert router.send(headers_msg(h)).WhichOneof("response") == "request_headers"
    rb = router.send(body_msg(body))
    common = rb.request_body.response
    attempt1_body = body_after(common, body)
    attempt1 = apply_header_mutation(h, common)
    assert attempt1[metadata.CLUSTER_HEADER] == f"fallback~{first}~{second}"
    assert attempt1[metadata.TRANSLATED_FOR_HEADER] == first
    assert attempt1["authorization"] == f"Bearer {SECRET_OF[first]}"
    md = forwarded(rb)
    assert set(md) == {metadata.NAMESPACE}
    record = md[metadata.NAMESPACE]["decision"]  # the DecisionRecord (protos/interlock/v1/decision.proto)
    assert record["route"] == route and record["client_api"] == client_api
    assert ",".join(record["deployments"]) == (CHAIN_CHEAP if route == "cheap" else CHAIN_SMART)
    assert orjson.loads(record["request"]) == orjson.loads(body)

    # Attempt 1 failed; Envoy retries on a host of the second provider, through the upstream stage.
    hdr_reply, body_reply = upstream_attempt(gw, attempt1, attempt1_body, second, md)
    assert hdr_reply.WhichOneof("response") == "request_headers"
    assert body_reply.WhichOneof("response") == "request_body"
    after_headers = apply_header_mutation(attempt1, hdr_reply.request_headers.response)
    c2 = body_reply.request_body.response
    attempt2_body = body_after(c2, attempt1_body)
    attempt2 = apply_header_mutation(after_headers, c2)
    sent = orjson.loads(attempt2_body)
    upstream_model = {"r-claude": "claude-haiku-4-5-20251001", "r-gpt": "gpt-4o-mini-2024-07-18"}[second_model]
    assert sent["model"] == upstream_model
    if second == "anthropic":
        assert sent["messages"] == [{"role": "user", "content": "Say hello."}]
        assert sent["max_tokens"] == (256 if client_api == "anthropic" else 200)
        assert attempt2["anthropic-version"] == "2026-10-21"
    else:
        assert sent["messages"][-1] == {"role": "user", "content": "Say hello."}
        assert "anthropic-version" not in attempt2 and "anthropic-beta" not in attempt2
    assert attempt2[":path"] == second_path
    assert attempt2["content-length"] == str(len(attempt2_body))
    assert attempt2[metadata.TRANSLATED_FOR_HEADER] == second
    assert attempt2["authorization"] == f"Bearer {SECRET_OF[second]}"
    for other in ("x-api-key", "api-key", "x-goog-api-key"):
        assert other not in attempt2
        assert other in c2.header_mutation.remove_headers
    assert SECRET_OF[first] not in repr(attempt2) and TENANT_KEY not in repr(attempt2)
    assert attempt2[metadata.CLUSTER_HEADER] == f"fallback~{first}~{second}"  # the route is Envoy's, unchanged

    # The second provider answers; the router stage translates back from what it speaks.
    passthrough = (client_api == "openai") == (second == "openai")
    answer = (orjson.dumps(ANTHROPIC_MESSAGE) if second == "anthropic" else orjson.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello — nice to meet you! 👋"},
                     "finish_reason": "stop"}], "usage": {"prompt_tokens": 12, "completion_tokens": 9,
                                                           "total_tokens": 21}}))
    rh = router.send(response_headers_msg(200, {"content-type": "application/json", "content-length": str(len(answer)),
                                                "x-envoy-upstream-service-time": "120",
                                                metadata.ENVOY_ATTEMPT_COUNT: "2"}, provider=second))
    set_headers, _ = header_mutation(rh.response_headers.response)
    assert set_headers[metadata.PROVIDER_HEADER] == second
    assert set_headers[metadata.MODEL_HEADER] == second_model
    assert set_headers[metadata.ROUTE_HEADER] == route
    assert set_headers[metadata.ATTEMPTS_HEADER] == "2"
    assert rh.mode_override.response_body_mode == BUFFERED
    if passthrough:  # read, never changed
        reply = router.send(response_body_msg(answer, end_of_stream=True)).response_body.response
        router.close()
        assert not reply.HasField("body_mutation")
        return
    out = orjson.loads(body_after(router.send(response_body_msg(answer, end_of_stream=True)).response_body.response,
                                  answer))
    router.close()
    if client_api == "openai":
        assert out["object"] == "chat.completion"
        assert out["choices"][0]["message"]["content"] == "Hello — nice to meet you! 👋"
    else:
        assert out["type"] == "message" and out["content"][0]["text"] == "Hello — nice to meet you! 👋"


def test_upstream_stage_without_a_matching_provider_is_502(gw: ServicerHarness) -> None:
    body = chat_body("cheap")
    h, [_, rb] = request(gw, body)
    md = forwarded(rb)
    attempt1 = apply_header_mutation(h, rb.request_body.response)
    for provider, forwarded_md in (("gemini", md), ("anthropic", None), (None, md)):
        [resp] = upstream_attempt(gw, attempt1, None, provider, forwarded_md)
        status, err, _ = immediate(resp)
        assert status == 502
        assert_openai_error(err, "api_error")


def test_upstream_stage_errors_use_the_anthropic_format_for_anthropic_clients(gw: ServicerHarness) -> None:
    body = messages_body("cheap")
    h, [_, rb] = request(gw, body, "/v1/messages")
    [resp] = upstream_attempt(gw, apply_header_mutation(h, rb.request_body.response), None, "gemini",
                              forwarded(rb))
    status, err, _ = immediate(resp)
    assert status == 502
    assert_anthropic_error(err, "api_error")


def test_upstream_stage_internal_fault_is_500_with_the_request_id(gw: ServicerHarness, runtime: Runtime,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    body = chat_body("cheap")
    h, [_, rb] = request(gw, body)
    monkeypatch.setattr(runtime.registry.get("openai", "anthropic"), "translate_request", _boom)
    hdr_reply, body_reply = upstream_attempt(gw, apply_header_mutation(h, rb.request_body.response),
                                             body_after(rb.request_body.response, body), "anthropic", forwarded(rb))
    assert hdr_reply.WhichOneof("response") == "request_headers"
    status, err, _ = immediate(body_reply)
    assert status == 500
    assert RID in assert_openai_error(err, "api_error")
    assert_no_secrets(body_reply.immediate_response.body)


def test_a_boolean_max_tokens_is_400_and_nothing_goes_upstream(gw: ServicerHarness) -> None:
    # `true` is not a limit: before the router stage read the request once, it was forwarded to the provider.
    _, [first, resp] = request(gw, chat_body("gpt-4o-mini", max_tokens=True))
    assert first.WhichOneof("response") == "request_headers"
    status, body, headers = immediate(resp)
    assert status == 400
    assert_openai_error(body, "invalid_request_error")
    assert body["error"]["param"] == "max_tokens"
    assert headers[metadata.REQUEST_ID_HEADER] == RID


# -- a provider's 2xx that is not an answer (issue 11, point 6) -----------------------------------

def answer_through(gw: ServicerHarness, model: str, path: str, stream: bool, headers: dict[str, str],
                   chunks: list[bytes]) -> tuple[pb.ProcessingResponse, list[pb.ProcessingResponse]]:
    """A request for `model`, the provider's 2xx with `headers`, then its body in `chunks` (each
    sent while the stream mode asks for it); returns the response-headers reply and the body replies."""
    anthropic = path == "/v1/messages"
    body = messages_body(model, stream=stream) if anthropic else chat_body(model, stream=stream)
    provider = "anthropic" if model.startswith("claude") else "openai"
    s = gw.open()
    s.send(headers_msg(client_headers(path, body=body, auth="x-api-key" if anthropic else "bearer")))
    s.send(body_msg(body))
    rh = s.send(response_headers_msg(200, {"x-envoy-upstream-service-time": "50", **headers}, provider=provider))
    replies = []
    if rh.mode_override.response_body_mode == BUFFERED:
        replies.append(s.send(response_body_msg(b"".join(chunks), end_of_stream=True)))
    elif rh.mode_override.response_body_mode == STREAMED:
        replies += [s.send(response_body_msg(c, end_of_stream=i == len(chunks) - 1)) for i, c in enumerate(chunks)]
    s.close()
    return rh, replies


def rendered_error(reply: pb.ProcessingResponse) -> tuple[int, dict[str, str], dict[str, Any]]:
    """(status, set headers, body) of a buffered body reply that replaced the answer with an error."""
    common = reply.response_body.response
    set_headers, _ = header_mutation(common)
    body = common.body_mutation.body
    assert set_headers["content-length"] == str(len(body)) and set_headers["content-type"] == "application/json"
    return int(set_headers[":status"]), set_headers, orjson.loads(body)


HTML = b"<!DOCTYPE html><html><body><h1>We'll be right back</h1></body></html>"


@pytest.mark.parametrize(("model", "path"), [("gpt-4o-mini", "/v1/chat/completions"), ("claude-haiku", "/v1/messages")],
                         ids=["openai", "anthropic"])
@pytest.mark.parametrize("body", [b'{"id": "chatcmpl-1", "choi', b"not json", b'{"error": {"message": "x"}}', b"[]"],
                         ids=["cut-json", "not-json", "no-answer", "array"])
def test_a_passthrough_200_that_is_not_an_answer_is_a_502(gw: ServicerHarness, model: str, path: str,
                                                          body: bytes) -> None:
    rh, [reply] = answer_through(gw, model, path, False, {"content-type": "application/json"}, [body])
    assert rh.mode_override.response_body_mode == BUFFERED
    status, _, err = rendered_error(reply)
    assert status == 502
    if path == "/v1/messages":
        assert err["type"] == "error" and err["error"]["type"] == "api_error"
    else:
        assert err["error"]["type"] == "api_error" and err["error"]["code"] == "provider_invalid_response"


@pytest.mark.parametrize(("model", "path"), [("gpt-4o-mini", "/v1/chat/completions"), ("claude-haiku", "/v1/messages"),
                                             ("claude-haiku", "/v1/chat/completions")],
                         ids=["passthrough-openai", "passthrough-anthropic", "translated"])
@pytest.mark.parametrize(("stream", "content_type"), [(False, "text/html; charset=utf-8"), (True, "text/html"),
                                                      (True, "application/json")], ids=["whole-html", "stream-html",
                                                                                        "stream-json"])
def test_a_200_of_the_wrong_media_type_is_a_502_before_any_byte(gw: ServicerHarness, model: str, path: str,
                                                                stream: bool, content_type: str) -> None:
    rh, [reply] = answer_through(gw, model, path, stream, {"content-type": content_type}, [HTML])
    assert rh.mode_override.response_body_mode == BUFFERED  # held: the client sees only the error
    set_headers, _ = header_mutation(rh.response_headers.response)
    assert set_headers[":status"] == "502" and set_headers[metadata.PROVIDER_HEADER] in ("openai", "anthropic")
    status, _, err = rendered_error(reply)
    media = content_type.split(";")[0]
    message = err["error"]["message"]
    assert status == 502 and media in message and ("event stream" if stream else "JSON") in message, message
    assert "<html" not in message.lower()


OPENAI_CHUNK = b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,' \
               b'"delta":{"content":"Hel"},"finish_reason":null}]}\n\n'


@pytest.mark.parametrize(("chunks", "tail"), [
    ([OPENAI_CHUNK, OPENAI_CHUNK], b"data: "),  # ends cleanly between events, without [DONE]
    ([OPENAI_CHUNK, OPENAI_CHUNK[:40]], b"\n\ndata: "),  # ends inside an event
    ([OPENAI_CHUNK, b""], b"data: "),  # Envoy's empty end-of-stream message
], ids=["between-events", "mid-event", "empty-end"])
def test_a_passthrough_openai_stream_cut_before_done_ends_with_an_error_event(
        gw: ServicerHarness, chunks: list[bytes], tail: bytes) -> None:
    rh, replies = answer_through(gw, "gpt-4o-mini", "/v1/chat/completions", True,
                                 {"content-type": "text/event-stream"}, chunks)
    assert rh.mode_override.response_body_mode == STREAMED
    assert "content-length" in header_mutation(rh.response_headers.response)[1]
    assert all(passed_on(r, c) for r, c in zip(replies[:-1], chunks[:-1], strict=True))  # never rewritten
    last = replies[-1].response_body.response
    added = body_after(last, chunks[-1])
    assert added.startswith(chunks[-1])
    event = added[len(chunks[-1]):]
    assert event.startswith(tail) and event.endswith(b"\n\n")
    err = orjson.loads(event.strip().split(b"data: ", 1)[1])
    assert err["error"]["type"] == "api_error" and "ended before" in err["error"]["message"]


def test_a_passthrough_anthropic_stream_cut_before_message_stop_ends_with_an_error_event(
        gw: ServicerHarness) -> None:
    sse = anthropic_sse().split(b"event: message_delta")[0]
    rh, replies = answer_through(gw, "claude-haiku", "/v1/messages", True, {"content-type": "text/event-stream"},
                                 [sse[:100], sse[100:]])
    assert rh.mode_override.response_body_mode == STREAMED
    assert passed_on(replies[0], sse[:100])
    added = body_after(replies[-1].response_body.response, sse[100:])
    assert added.startswith(sse[100:])
    event = added[len(sse[100:]):]
    assert event.startswith(b"event: error\ndata: ")
    err = orjson.loads(event.split(b"data: ", 1)[1])
    assert err["type"] == "error" and err["error"]["type"] == "api_error"


@pytest.mark.parametrize(("model", "path", "chunks"), [
    ("gpt-4o-mini", "/v1/chat/completions", [OPENAI_CHUNK, b"data: [DONE]\n\n"]),
    ("gpt-4o-mini", "/v1/chat/completions", [OPENAI_CHUNK, b'data: {"error": {"message": "overloaded"}}\n\n']),
    ("claude-haiku", "/v1/messages", [anthropic_sse()]),
    ("claude-haiku", "/v1/messages", [anthropic_sse().split(b"event: message_delta")[0],
                                      _event("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                                  "message": "Overloaded"}})]),
], ids=["openai-done", "openai-provider-error", "anthropic-message-stop", "anthropic-provider-error"])
def test_a_passthrough_stream_that_reached_its_end_is_never_changed(gw: ServicerHarness, model: str, path: str,
                                                                    chunks: list[bytes]) -> None:
    _, replies = answer_through(gw, model, path, True, {"content-type": "text/event-stream"}, chunks)
    assert replies and all(passed_on(r, c) for r, c in zip(replies, chunks, strict=True))


# -- who refused (issue 11, point 8) -------------------------------------------------------------

def test_the_gateways_own_400_after_choosing_a_deployment_names_the_gateway(
        gw: ServicerHarness, caplog: pytest.LogCaptureFixture) -> None:
    """`n: 2` to an Anthropic model is refused while translating for the chosen deployment: no
    provider saw it, so the answer and the access log name the gateway."""
    with caplog.at_level("INFO", logger="interlock.router"):
        _, [_, resp] = request(gw, chat_body("claude-haiku", n=2))
    status, body, headers = immediate(resp)
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert headers[metadata.PROVIDER_HEADER] == metadata.GATEWAY_PROVIDER
    assert headers[metadata.MODEL_HEADER] == "claude-haiku"
    [line] = [r.getMessage() for r in caplog.records if RID in r.getMessage()]
    assert " provider=interlock " in line and " status=400 " in line and " upstream_status=- " in line, line


def test_the_gateways_rate_limit_refusal_is_logged_as_the_gateways(
        gw: ServicerHarness, caplog: pytest.LogCaptureFixture) -> None:
    body = chat_body()
    with caplog.at_level("INFO", logger="interlock.router"):
        gw.process([headers_msg(client_headers(body=body)), body_msg(body),
                    response_headers_msg(429, {"content-type": "application/json", "x-envoy-ratelimited": "true",
                                               "retry-after": "3", **EXCEEDED}),
                    response_body_msg(b"{}", end_of_stream=True)])
    [line] = [r.getMessage() for r in caplog.records if RID in r.getMessage()]
    assert " provider=interlock " in line and " model=claude-haiku " in line and " upstream_status=- " in line, line
    assert " status=429 " in line, line


@pytest.mark.parametrize(("path", "auth"), [("/v1/chat/completions", "bearer"), ("/v1/messages", "x-api-key")])
def test_rate_limit_service_down_with_failure_mode_closed_is_the_gateways_429(
        gw: ServicerHarness, path: str, auth: str) -> None:
    """Envoy's rate-limit filter, unable to ask the rate-limit service, answers 429 itself
    (`status_on_error`) without `x-envoy-ratelimited`: rendered here as the gateway's 429 with
    Retry-After in the client's format — not a provider that "could not be reached"."""
    body = messages_body() if path == "/v1/messages" else chat_body()
    r = gw.process([headers_msg(client_headers(path, body=body, auth=auth)), body_msg(body),
                    response_headers_msg(429, {"content-type": "application/json", "content-length": "80"}),
                    response_body_msg(b'{"error":{"message":"","type":"rate_limit_error"}}', end_of_stream=True)])
    rh = r[2]
    assert rh.mode_override.response_body_mode == BUFFERED
    set_headers, _ = header_mutation(rh.response_headers.response)
    assert set_headers[metadata.PROVIDER_HEADER] == metadata.GATEWAY_PROVIDER
    status, out_headers, err = rendered_error(r[3])
    assert status == 429 and int(out_headers["retry-after"]) >= 1
    if path == "/v1/messages":
        assert err["type"] == "error" and err["error"]["type"] == "rate_limit_error"
    else:
        assert err["error"]["type"] == "rate_limit_error" and err["error"]["code"] == "rate_limit_exceeded"
    message = err["error"]["message"]
    assert "rate limit" in message and "could not be reached" not in message


# -- a stream that stalls after its first byte (issue 11, points 5 and 6) --------------------------

STALL_IDLE_S = 0.5


@pytest.fixture
def stalling(gw: ServicerHarness) -> ServicerHarness:
    """The harness with every provider's idle timeout at STALL_IDLE_S."""
    cfg = copy.deepcopy(CONFIG)
    for p in cfg["providers"]:
        p["cluster"] = {"idle_timeout": f"{STALL_IDLE_S}s"}
    gw.runtime = compile_runtime(load_text(yaml.safe_dump(cfg)), default_registry(), environ=ENVIRON)
    return gw


@pytest.mark.parametrize(("model", "path", "provider", "chunk"), [
    ("claude-haiku", "/v1/chat/completions", "anthropic", anthropic_sse().split(b"event: content_block_delta")[0]),
    ("gpt-4o-mini", "/v1/chat/completions", "openai", OPENAI_CHUNK),
    ("claude-haiku", "/v1/messages", "anthropic", anthropic_sse().split(b"event: content_block_delta")[0]),
    ("gpt-4o-mini", "/v1/messages", "openai", OPENAI_CHUNK),
    ("cheap", "/v1/chat/completions", "openai", OPENAI_CHUNK),  # a fallback order: its shortest idle timeout
], ids=["openai-translated", "openai-passthrough", "anthropic-passthrough", "anthropic-translated", "route"])
def test_a_stream_that_stalls_ends_with_an_error_event_sent_unasked(
        stalling: ServicerHarness, model: str, path: str, provider: str, chunk: bytes) -> None:
    anthropic = path == "/v1/messages"
    body = messages_body(model, stream=True) if anthropic else chat_body(model, stream=True)
    s = stalling.open()
    s.send(headers_msg(client_headers(path, body=body, auth="x-api-key" if anthropic else "bearer")))
    s.send(body_msg(body))
    rh = s.send(response_headers_msg(200, {"content-type": "text/event-stream", "x-envoy-upstream-service-time": "9"},
                                     provider=provider))
    assert rh.mode_override.response_body_mode == STREAMED
    first = s.send(response_body_msg(chunk, end_of_stream=False))
    assert not first.response_body.response.body_mutation.streamed_response.end_of_stream
    start = time.monotonic()
    unasked = s.receive()  # nothing more from the provider: the idle timer fires
    waited = time.monotonic() - start
    assert STALL_IDLE_S * 0.8 < waited < STALL_IDLE_S, waited  # before Envoy's own cut (bound - 10 %)
    streamed = unasked.response_body.response.body_mutation.streamed_response
    assert streamed.end_of_stream
    event = streamed.body
    if anthropic:
        assert event.startswith(b"event: error\ndata: ") and event.endswith(b"\n\n")
        err = orjson.loads(event.split(b"data: ", 1)[1])
        assert err["type"] == "error" and err["error"]["type"] == "timeout_error"
    else:
        assert event.startswith(b"data: ") and event.endswith(b"\n\n")
        err = orjson.loads(event[6:])["error"]
        assert err["type"] == "timeout_error" and err["code"] == "provider_timeout"
    message = err["error"]["message"] if anthropic else err["message"]
    assert provider in message and f"{STALL_IDLE_S:g} s" in message
    s.close()  # Envoy cancels the stream: nothing more is sent


def test_a_stream_that_keeps_coming_is_never_cut(stalling: ServicerHarness) -> None:
    """Chunks closer together than the idle timeout: the timer never fires, however long the stream."""
    body = chat_body("gpt-4o-mini", stream=True)
    s = stalling.open()
    s.send(headers_msg(client_headers(body=body)))
    s.send(body_msg(body))
    s.send(response_headers_msg(200, {"content-type": "text/event-stream"}, provider="openai"))
    for _ in range(5):
        time.sleep(STALL_IDLE_S * 0.6)
        assert passed_on(s.send(response_body_msg(OPENAI_CHUNK, end_of_stream=False)), OPENAI_CHUNK)
    end = s.send(response_body_msg(b"data: [DONE]\n\n", end_of_stream=True))
    assert passed_on(end, b"data: [DONE]\n\n") and end.response_body.response.body_mutation.streamed_response.end_of_stream
    time.sleep(STALL_IDLE_S * 1.2)  # ended: the timer is stopped
    s.close()
