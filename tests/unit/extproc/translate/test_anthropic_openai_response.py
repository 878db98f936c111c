"""OpenAI answers → Anthropic answers (whole and streamed), and the composition `AnthropicVia` with a
stub inner translator: what it hands the inner, and what it makes of the inner's output."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from anthropic.types import Message

from extproc.errors import GatewayError
from extproc.translate.anthropic_openai_response import translate_response
from extproc.translate.anthropic_openai_stream import OpenAIToAnthropicStream
from extproc.translate.anthropic_via import AnthropicVia
from extproc.translate.base import ResponseContext, Target, UpstreamRequest, Usage
from extproc.translate.sse import SSEDecoder

CTX = ResponseContext("req-1", 1767225600)
TARGET = Target("m", "up-model", "gemini", 1024, frozenset({"tools"}))


def completion(message: dict[str, Any], finish: str = "stop", **extra: Any) -> bytes:
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}], **extra}
    return orjson.dumps(body)


def call(arguments: str, id_: str | None = "c1") -> dict[str, Any]:
    return {"id": id_, "type": "function", "function": {"name": "f", "arguments": arguments}}


def test_whole_message_rules() -> None:
    body, usage = translate_response(completion({"content": "", "tool_calls": [call(""), call('{"a": 1}', None)]},
                                                "stop"), CTX)
    message = Message.model_validate_json(body)
    assert message.id == "msg_1" and message.stop_reason == "tool_use" and usage is None
    assert [(b.id, b.input) for b in message.content if b.type == "tool_use"] == [("c1", {}), ("toolu_req-1_1", {"a": 1})]
    assert message.usage.input_tokens == 0 and message.usage.output_tokens == 0


def test_whole_usage_with_cache_reads_and_writes() -> None:
    usage_in = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30},
                "completion_tokens_details": {"reasoning_tokens": 5}}
    body, usage = translate_response(completion({"content": "x"}, id="msg_keep", usage=usage_in), CTX)
    out = orjson.loads(body)
    assert out["id"] == "msg_keep"
    assert out["usage"] == {"input_tokens": 10, "cache_read_input_tokens": 60, "cache_creation_input_tokens": 30,
                            "output_tokens": 20, "output_tokens_details": {"thinking_tokens": 5}}
    assert usage == Usage(100, 20, 60, 30, 5)


@pytest.mark.parametrize("raw", [b"not json", b"{}", b'{"choices": []}', completion({"tool_calls": [call("[1]")]}),
                                 completion({"tool_calls": [call("{oops")]})])
def test_unreadable_whole_response_is_502(raw: bytes) -> None:
    with pytest.raises(GatewayError) as info:
        translate_response(raw, CTX)
    assert info.value.status == 502


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices,
            **extra}


def sse(*chunks: dict[str, Any] | str) -> bytes:
    return b"".join(b"data: " + (c.encode() if isinstance(c, str) else orjson.dumps(c)) + b"\n\n" for c in chunks)


def events(raw: bytes, *, trusted: bool = False) -> tuple[list[dict[str, Any]], OpenAIToAnthropicStream]:
    stream = OpenAIToAnthropicStream(CTX, trusted=trusted)
    out = stream.feed(raw) + stream.finish()
    decoded = SSEDecoder().feed(out)
    assert all(e.event == json.loads(e.data)["type"] for e in decoded)
    return [json.loads(e.data) for e in decoded], stream


def kinds(evs: list[dict[str, Any]]) -> list[str]:
    return [e["type"] + (":" + e["content_block"]["type"] if e["type"] == "content_block_start" else "") for e in evs]


def test_stream_text_after_tool_call_opens_a_new_block() -> None:
    evs, stream = events(sse(chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f"}}]}),
                             chunk({"content": "then text"}), chunk({}, "tool_calls"), "[DONE]"))
    assert kinds(evs) == ["message_start", "content_block_start:tool_use", "content_block_stop",
                          "content_block_start:text", "content_block_delta", "content_block_stop",
                          "message_delta", "message_stop"]
    assert evs[-2]["delta"]["stop_reason"] == "tool_use" and stream.usage is None


def test_stream_interleaved_tool_fragments_fail() -> None:
    evs, _ = events(sse(chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{"}}]}),
                        chunk({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}]}),
                        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}), "[DONE]"))
    assert evs[-1]["type"] == "error" and evs[-1]["error"]["type"] == "api_error"
    assert sum(e["type"] == "error" for e in evs) == 1


def test_stream_done_without_finish_reason_ends_the_turn() -> None:
    evs, _ = events(sse(chunk({"content": "hi"}), "[DONE]", chunk({"content": "ignored"})))
    assert kinds(evs)[-2:] == ["message_delta", "message_stop"] and evs[-2]["delta"]["stop_reason"] == "end_turn"
    assert sum(e["type"] == "content_block_delta" for e in evs) == 1


def test_stream_refusal_and_vllm_stop_string() -> None:
    evs, _ = events(sse(chunk({"refusal": "No."}), chunk({}, "stop"), "[DONE]"))
    assert evs[-2]["delta"] == {"stop_reason": "refusal", "stop_sequence": None}
    evs, _ = events(sse(chunk({"content": "x"}), {**chunk({}, "stop"), "choices": [
        {"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "###"}]}, "[DONE]"))
    assert evs[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "###"}


def test_stream_body_ending_after_finish_completes_and_empty_body_fails() -> None:
    evs, _ = events(sse(chunk({"content": "x"}), chunk({}, "length")))
    assert evs[-2]["delta"]["stop_reason"] == "max_tokens" and evs[-1]["type"] == "message_stop"
    evs, _ = events(b"")
    assert kinds(evs) == ["error"]


@pytest.mark.parametrize(("error", "trusted", "expected"), [
    ({"message": "prompt too long", "type": "BadRequestError", "param": None, "code": 400}, False,
     ("invalid_request_error", "prompt too long")),
    ({"message": "internal details", "type": "server_error", "code": None}, False,
     ("api_error", "The provider failed to serve the request (status 500).")),
    ({"message": "Slow down.", "type": "rate_limit_error", "code": "rate_limit_exceeded"}, True,
     ("rate_limit_error", "Slow down.")),
    ({"message": "The provider's stream ended early.", "type": "api_error", "code": None}, True,
     ("api_error", "The provider's stream ended early.")),
])
def test_stream_error_events(error: dict[str, Any], trusted: bool, expected: tuple[str, str]) -> None:
    evs, _ = events(sse(chunk({"content": "x"}), {"error": error}, chunk({"content": "after"})), trusted=trusted)
    assert kinds(evs)[-1] == "error" and (evs[-1]["error"]["type"], evs[-1]["error"]["message"]) == expected


class StubInner:
    """An (openai, X) translator that records what it is given and answers from fixed OpenAI bytes."""

    passthrough = False

    def __init__(self, stream_out: bytes = b"") -> None:
        self.requests: list[dict[str, Any]] = []
        self.contexts: list[ResponseContext] = []
        self.stream_out = stream_out

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        self.requests.append(body)
        return UpstreamRequest("/x", b"{}", dropped_params=("temperature", "stop", "reasoning_effort", "seed",
                                                                     "stream_options"))

    def translate_response(self, body: bytes, target: Target, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
        return completion({"content": "hi"}, usage={"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}), \
            Usage(prompt_tokens=99)

    def stream_translator(self, target: Target, ctx: ResponseContext) -> Any:
        self.contexts.append(ctx)
        inner = self

        class Stream:
            usage = Usage(prompt_tokens=7)

            def feed(self, chunk: bytes) -> bytes:
                return b""

            def finish(self) -> bytes:
                return inner.stream_out

        return Stream()

    def translate_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
        return GatewayError(f"inner {status} {headers.get('retry-after')}", status)


def test_via_hands_the_inner_an_openai_body_and_renames_its_drops() -> None:
    inner = StubInner()
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "top_k": 1,
            "stream": True}
    up = AnthropicVia(inner).translate_request(body, TARGET)
    assert inner.requests == [{"model": "m", "messages": [{"role": "user", "content": "hi"}],
                               "max_completion_tokens": 5, "stream": True, "stream_options": {"include_usage": True}}]
    assert up.dropped_params == ("output_config.effort", "seed", "stop_sequences", "temperature", "top_k")
    assert up.path == "/x"


def test_via_response_usage_and_errors_come_from_the_inner() -> None:
    via = AnthropicVia(StubInner())
    body, usage = via.translate_response(b"provider bytes", TARGET, CTX)
    assert Message.model_validate_json(body).content[0].type == "text" and usage == Usage(prompt_tokens=99)
    err = via.translate_error(429, b"", {"retry-after": "3"})
    assert (err.message, err.status) == ("inner 429 3", 429)


def test_via_stream_asks_the_inner_for_usage_and_trusts_its_errors() -> None:
    inner = StubInner(sse({"error": {"message": "The provider's stream ended early.", "type": "api_error"}}))
    stream = AnthropicVia(inner).stream_translator(TARGET, CTX)
    out = stream.feed(b"anything") + stream.finish()
    assert inner.contexts[0].include_usage is True and CTX.include_usage is False
    assert b"The provider's stream ended early." in out and stream.usage == Usage(prompt_tokens=7)
