"""Provider failures as the client sees them: error bodies, unreadable answers and broken streams."""

from __future__ import annotations

import json

import orjson
import pytest

from extproc.errors import GatewayError, ProviderError, render
from extproc.translate.base import ResponseContext, Target
from extproc.translate.openai_anthropic import OpenAIToAnthropic
from extproc.translate.openai_openai import OpenAIToOpenAI
from extproc.translate.registry import default_registry

CLAUDE = Target("claude", "claude-sonnet-4-5", "anthropic", 4096, frozenset())
GPT = Target("gpt", "gpt-4o", "openai", 4096, frozenset())
CTX = ResponseContext("req-1", 1767225600, include_usage=True)


def anthropic_body(kind: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_x"})


def openai_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


ANTHROPIC = [
    (400, anthropic_body("invalid_request_error", "max_tokens: too big"), None, 400, "max_tokens: too big", {}),
    (401, anthropic_body("authentication_error", "invalid x-api-key sk-ant-secret"), None, 502,
     "The provider rejected the gateway's credentials for this model.", {}),
    (403, anthropic_body("permission_error", "no access"), None, 502,
     "The provider rejected the gateway's credentials for this model.", {}),
    (404, anthropic_body("not_found_error", "model: claude-x"), None, 404, "model: claude-x", {}),
    (413, anthropic_body("request_too_large", "Request exceeds the maximum size"), None, 413,
     "Request exceeds the maximum size", {}),
    (429, anthropic_body("rate_limit_error", "slow down"), "30", 429, "slow down", {"retry-after": "30"}),
    (429, anthropic_body("rate_limit_error", "slow down"), None, 429, "slow down", {"retry-after": "1"}),
    (429, anthropic_body("rate_limit_error", "slow down"), "Wed, 21 Oct 2026 07:28:00 GMT", 429, "slow down",
     {"retry-after": "1"}),
    (500, anthropic_body("api_error", "Internal server error"), None, 502,
     "The provider failed to serve the request (status 500).", {}),
    (503, b"", None, 503, "The provider failed to serve the request (status 503).", {}),
    (504, b"upstream request timeout", None, 504, "The provider failed to serve the request (status 504).", {}),
    (529, anthropic_body("overloaded_error", "Overloaded"), None, 503,
     "The provider failed to serve the request (status 529).", {}),
    (400, b"<html>bad request</html>", None, 400, "The provider rejected the request (status 400).", {}),
    (400, b'{"error": "plain string"}', None, 400, "The provider rejected the request (status 400).", {}),
    (400, b'{"type": "error", "error": {"type": "invalid_request_error", "message": 7}}', None, 400,
     "The provider rejected the request (status 400).", {}),
    (400, b"[1, 2]", None, 400, "The provider rejected the request (status 400).", {}),
]


@pytest.mark.parametrize(("status", "body", "retry_after", "client_status", "message", "headers"), ANTHROPIC)
def test_anthropic_errors(status: int, body: bytes, retry_after: str | None, client_status: int, message: str,
                          headers: dict[str, str]) -> None:
    err = OpenAIToAnthropic().translate_error(status, body, {"retry-after": retry_after} if retry_after else {})
    rendered_status, rendered, extra = render(err, "openai")
    assert (rendered_status, orjson.loads(rendered)["error"]["message"]) == (client_status, message)
    assert {k: v for k, v in extra.items() if k != "content-type"} == headers
    assert b"sk-ant" not in rendered


OPENAI = [
    (400, openai_body("Invalid 'temperature'", "invalid_request_error", "temperature", "invalid_value"), None,
     400, "Invalid 'temperature'", "temperature", "invalid_value"),
    (401, openai_body("Incorrect API key provided: sk-proj-abc", "invalid_request_error", None, "invalid_api_key"),
     None, 502, "The provider rejected the gateway's credentials for this model.", None, None),
    (404, openai_body("The model `gpt-x` does not exist", "invalid_request_error", None, "model_not_found"), None,
     404, "The model `gpt-x` does not exist", None, None),
    (429, openai_body("Rate limit reached", "requests", None, "rate_limit_exceeded"), "3", 429, "Rate limit reached",
     None, "rate_limit_exceeded"),
    (500, openai_body("The server had an error", "server_error"), None, 502,
     "The provider failed to serve the request (status 500).", None, None),
    (503, b"no healthy upstream", None, 503, "The provider failed to serve the request (status 503).", None, None),
]


@pytest.mark.parametrize(("status", "body", "retry_after", "client_status", "message", "param", "code"), OPENAI)
def test_openai_errors(status: int, body: bytes, retry_after: str | None, client_status: int, message: str,
                       param: str | None, code: str | None) -> None:
    err = OpenAIToOpenAI().translate_error(status, body, {"retry-after": retry_after} if retry_after else {})
    assert (err.status, err.message, err.param, err.code) == (client_status, message, param, code)
    assert b"sk-proj" not in render(err, "openai")[1]


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"type": "message"}'])
def test_unreadable_anthropic_response_is_502(body: bytes) -> None:
    with pytest.raises(GatewayError) as info:
        OpenAIToAnthropic().translate_response(body, CLAUDE, CTX)
    assert info.value.status == 502


def test_an_unreadable_same_api_answer_is_a_502_not_a_200() -> None:
    with pytest.raises(ProviderError) as info:
        OpenAIToOpenAI().translate_response(b"not json", GPT, CTX)
    assert info.value.status == 502


def _stream(*events: dict[str, object] | bytes, finish: bool = True) -> list[dict[str, object] | str]:
    stream = OpenAIToAnthropic().stream_translator(CLAUDE, CTX)
    raw = b"".join(e if isinstance(e, bytes) else b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
    out = stream.feed(raw) + (stream.finish() if finish else b"")
    lines = [line[6:] for line in out.decode().split("\n\n") if line]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


START = {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                                              "content": [], "stop_reason": None, "stop_sequence": None,
                                              "usage": {"input_tokens": 5, "output_tokens": 1}}}


@pytest.mark.parametrize(("kind", "message"), [
    ("overloaded_error", "The provider failed to serve the request (status 529)."),
    ("api_error", "The provider failed to serve the request (status 500)."),
    ("rate_limit_error", "Too many requests"),
    ("invalid_request_error", "Too many requests"),
    ("something_new", "The provider failed to serve the request (status 500)."),
])
def test_stream_error_event_ends_the_stream(kind: str, message: str) -> None:
    error = {"type": "error", "error": {"type": kind, "message": "Too many requests"}}
    out = _stream(START, error, {"type": "message_stop"})
    assert len(out) == 2
    assert out[-1] == {"error": {"message": message, "type": out[-1]["error"]["type"],  # type: ignore[index]
                                 "param": None, "code": out[-1]["error"]["code"]}}  # type: ignore[index]


def test_unreadable_stream_event_fails_the_stream() -> None:
    out = _stream(START, b"data: {not json\n\n", {"type": "message_stop"})
    assert out[-1]["error"]["message"] == "The provider returned a stream event the gateway could not read."  # type: ignore[index]
    assert len(out) == 2


def test_stream_ending_after_message_delta_completes() -> None:
    out = _stream(START, {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}})
    assert out[-1] == "[DONE]"
    assert out[-2]["usage"]["completion_tokens"] == 3  # type: ignore[index]


def test_empty_stream_fails() -> None:
    out = _stream()
    assert out == [{"error": {"message": "The provider's stream ended before the response was complete.",
                              "type": "api_error", "param": None, "code": None}}]


def test_stream_without_message_start_still_has_role_chunk_and_ids() -> None:
    out = _stream({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
                  {"type": "message_stop"})
    chunks = [c for c in out if isinstance(c, dict)]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}  # type: ignore[index]
    assert {c["id"] for c in chunks} == {"chatcmpl-req-1"}
    assert out[-1] == "[DONE]"


def test_registry_pairs() -> None:
    registry = default_registry()
    assert isinstance(registry.get("openai", "anthropic"), OpenAIToAnthropic)
    assert isinstance(registry.get("openai", "openai"), OpenAIToOpenAI)
    with pytest.raises(GatewayError) as info:
        registry.get("openai-embeddings", "bedrock")
    assert info.value.status == 400
