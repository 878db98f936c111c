"""Responses, streams and errors of the openai→gemini translator beyond the golden files, and
the openai-embeddings→gemini translator."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from extproc.errors import GatewayError
from extproc.translate.base import ResponseContext, Target
from extproc.translate.openai_gemini import OpenAIToGemini
from extproc.translate.openai_gemini_embeddings import OpenAIEmbeddingsToGemini
from extproc.translate.openai_gemini_stream import GeminiToOpenAIStream

TARGET = Target("gem", "gemini-2.5-flash", "gemini", 65536, frozenset({"tools"}), (("api_version", "v1beta"),))
CTX = ResponseContext("req-1", 1767225600)


def _response(**extra: Any) -> bytes:
    return orjson.dumps({"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, **extra}]})


@pytest.mark.parametrize(("reason", "finish"), [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("SPII", "content_filter"),
    ("BLOCKLIST", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"), ("OTHER", "stop"),
    ("FINISH_REASON_UNSPECIFIED", "stop"), ("SOMETHING_NEW", "stop")])
def test_finish_reasons(reason: str, finish: str) -> None:
    body, usage = OpenAIToGemini().translate_response(_response(finishReason=reason), TARGET, CTX)
    out = orjson.loads(body)
    assert out["choices"][0]["finish_reason"] == finish
    assert (out["id"], out["model"], usage) == ("chatcmpl-req-1", "gemini-2.5-flash", None)


@pytest.mark.parametrize("reason", ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"])
def test_failed_finish_is_502(reason: str) -> None:
    with pytest.raises(GatewayError) as info:
        OpenAIToGemini().translate_response(_response(finishReason=reason), TARGET, CTX)
    assert info.value.status == 502 and reason in info.value.message


@pytest.mark.parametrize("body", [b"not json", b"[]", b"{}", b'{"candidates": []}', b'{"candidates": [1]}'])
def test_unreadable_responses_are_502(body: bytes) -> None:
    with pytest.raises(GatewayError) as info:
        OpenAIToGemini().translate_response(body, TARGET, CTX)
    assert info.value.status == 502


def test_thoughts_are_hidden_and_counted() -> None:
    upstream = {"candidates": [{"content": {"role": "model", "parts": [
        {"text": "pondering…", "thought": True}, {"text": "Answer."}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 2, "thoughtsTokenCount": 30,
                          "toolUsePromptTokenCount": 5, "cachedContentTokenCount": 8, "totalTokenCount": 47}}
    body, usage = OpenAIToGemini().translate_response(orjson.dumps(upstream), TARGET, CTX)
    out = orjson.loads(body)
    assert out["choices"][0]["message"]["content"] == "Answer."
    assert out["usage"] == {"prompt_tokens": 15, "completion_tokens": 32, "total_tokens": 47,
                            "prompt_tokens_details": {"cached_tokens": 8},
                            "completion_tokens_details": {"reasoning_tokens": 30}}
    assert usage is not None and (usage.cached_tokens, usage.reasoning_tokens) == (8, 30)


def _sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks)


def _stream(raw: bytes, ctx: ResponseContext = CTX) -> list[Any]:
    stream = GeminiToOpenAIStream(TARGET, ctx)
    out = stream.feed(raw) + stream.finish()
    return [line[6:] if line[6:] == b"[DONE]" else orjson.loads(line[6:])
            for line in out.split(b"\n\n") if line]


def test_stream_interleaves_candidates() -> None:
    raw = _sse({"candidates": [{"content": {"parts": [{"text": "A"}]}},
                               {"content": {"parts": [{"text": "B"}]}, "index": 1}]},
               {"candidates": [{"content": {"parts": [{"text": "pondering", "thought": True}]}, "finishReason": "STOP"},
                               {"content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]},
                                "index": 1, "finishReason": "STOP"}]})
    events = _stream(raw)
    assert events[-1] == b"[DONE]"
    deltas = [(e["choices"][0]["index"], e["choices"][0]["delta"], e["choices"][0]["finish_reason"])
              for e in events[:-1]]
    call = {"index": 0, "id": "call_req-1_1_0", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assert deltas == [(0, {"role": "assistant", "content": ""}, None), (0, {"content": "A"}, None),
                      (1, {"role": "assistant", "content": ""}, None), (1, {"content": "B"}, None),
                      (0, {}, "stop"), (1, {"tool_calls": [call]}, None), (1, {}, "tool_calls")]


def test_stream_with_an_unfinished_choice_fails() -> None:
    raw = _sse({"candidates": [{"content": {"parts": [{"text": "A"}]}, "finishReason": "STOP"},
                               {"content": {"parts": [{"text": "B"}]}, "index": 1}]})
    assert _stream(raw)[-1]["error"]["type"] == "api_error"


def test_stream_failures() -> None:
    assert _stream(b"data: [oops\n\n")[0]["error"]["message"].startswith("The provider returned a stream event")
    assert _stream(b"")[0]["error"]["message"].startswith("The provider's stream ended")
    failed = _stream(_sse({"candidates": [{"content": {"parts": [{"text": "A"}]}, "finishReason": "MALFORMED_RESPONSE"}]},
                          {"candidates": [{"content": {"parts": [{"text": "more"}]}}]}))
    assert len(failed) == 3 and "MALFORMED_RESPONSE" in failed[-1]["error"]["message"]
    limited = _stream(_sse({"error": {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED"}}))
    assert limited[0]["error"] == {"message": "Quota exceeded.", "type": "rate_limit_error", "param": None,
                                   "code": "rate_limit_exceeded"}


def test_stream_usage_only_chunk_after_finish() -> None:
    raw = _sse({"candidates": [{"content": {"parts": [{"text": "A"}]}, "finishReason": "STOP"}]},
               {"usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4}})
    stream = GeminiToOpenAIStream(TARGET, ResponseContext("r", 1, include_usage=True))
    out = stream.feed(raw) + stream.finish()
    assert out.endswith(b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4,'
                        b'"prompt_tokens_details":{"cached_tokens":0}}}\n\ndata: [DONE]\n\n')
    assert stream.usage is not None and stream.usage.total_tokens == 4


ERRORS = [
    ("retry delay", 429, {"error": {"code": 429, "message": "Quota", "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.2s"}]}}, {}, (429, "Quota", "1")),
    ("header wins", 429, {"error": {"code": 429, "message": "Quota", "details": [{"retryDelay": "30s"}]}},
     {"retry-after": "5"}, (429, "Quota", "5")),
    ("array body", 400, [{"error": {"code": 400, "message": "Bad field", "status": "INVALID_ARGUMENT"}}], {},
     (400, "Bad field", None)),
    ("permission denied", 403, {"error": {"code": 403, "message": "Vertex AI API has not been used in project 123",
                                          "status": "PERMISSION_DENIED"}}, {},
     (502, "The provider rejected the gateway's credentials for this model.", None)),
    ("expired key", 400, {"error": {"code": 400, "message": "API key expired. Please renew the API key.", "details": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_EXPIRED"}]}}, {},
     (502, "The provider rejected the gateway's credentials for this model.", None)),
    ("html", 504, "<html>Gateway Timeout</html>", {}, (504, "The provider failed to serve the request (status 504).",
                                                      None)),
]


@pytest.mark.parametrize(("status", "body", "headers", "expected"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors(status: int, body: Any, headers: dict[str, str], expected: tuple[int, str, str | None]) -> None:
    raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
    err = OpenAIToGemini().translate_error(status, raw, headers)
    assert (err.status, err.message, err.headers.get("retry-after")) == expected


EMBED_TARGET = Target("emb", "gemini-embedding-001", "gemini", 0, frozenset({"embeddings"}))


@dataclass(frozen=True)
class EncodingContext(ResponseContext):
    encoding_format: str = "float"


def test_embeddings_base64_when_the_context_asks() -> None:
    upstream = orjson.dumps({"embeddings": [{"values": [0.5, -1.25, 3.0]}]})
    ctx = EncodingContext("r", 1, encoding_format="base64")
    body, usage = OpenAIEmbeddingsToGemini().translate_response(upstream, EMBED_TARGET, ctx)
    encoded = orjson.loads(body)["data"][0]["embedding"]
    assert struct.unpack("<3f", base64.b64decode(encoded)) == (0.5, -1.25, 3.0)
    assert usage is None
    plain, _ = OpenAIEmbeddingsToGemini().translate_response(upstream, EMBED_TARGET, CTX)
    assert orjson.loads(plain)["data"][0]["embedding"] == [0.5, -1.25, 3.0]


def test_embeddings_stream_translator_buffers() -> None:
    stream = OpenAIEmbeddingsToGemini().stream_translator(EMBED_TARGET, CTX)
    raw = orjson.dumps({"embeddings": [{"values": [1.0]}], "usageMetadata": {"promptTokenCount": 2}})
    assert stream.feed(raw[:5]) == b"" and stream.feed(raw[5:]) == b""
    assert orjson.loads(stream.finish())["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    assert stream.usage is not None and stream.usage.prompt_tokens == 2


@pytest.mark.parametrize(("fields", "param"), [
    ({"input": ""}, "input"), ({"input": []}, "input"), ({"input": ["x"] * 101}, "input"), ({"input": [1, 2]}, "input"),
    ({"input": "x", "dimensions": 0}, "dimensions"), ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "extra": 1}, "extra"), ({"input": "x", "model": ""}, "model"),
])
def test_embeddings_refused(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as info:
        OpenAIEmbeddingsToGemini().translate_request({"model": "emb", **fields}, EMBED_TARGET)
    assert (info.value.status, info.value.param) == (400, param)


def test_embeddings_hundred_inputs_and_tuned_model() -> None:
    target = Target("emb", "tunedModels/t1", "gemini", 0, options=(("api_version", "v1"),))
    up = OpenAIEmbeddingsToGemini().translate_request({"model": "emb", "input": ["x"] * 100}, target)
    assert up.path == "/v1/tunedModels/t1:batchEmbedContents"
    assert len(orjson.loads(up.body)["requests"]) == 100


@pytest.mark.parametrize("body", [b"nope", b"{}", b'{"embeddings": [{"values": ["a"]}]}'])
def test_embeddings_unreadable(body: bytes) -> None:
    with pytest.raises(GatewayError) as info:
        OpenAIEmbeddingsToGemini().translate_response(body, EMBED_TARGET, EncodingContext("r", 1, encoding_format="base64"))
    assert info.value.status == 502
