"""Anthropic Messages responses → OpenAI Chat Completions responses: whole, streamed and errors.

Whole responses: the Message's text blocks, concatenated, are `message.content` (null when the
message is only tool calls); `tool_use` blocks are `tool_calls` with `arguments` = the input as
JSON; thinking and server-tool blocks are not shown. `id` is the Anthropic message id unchanged
(stable, and the handle the provider's support knows), `created` comes from the context, `model` is
the model the provider reports. Usage: prompt_tokens = input + cache read + cache creation;
`prompt_tokens_details.cached_tokens` = cache read (`cache_write_tokens` = cache creation when
non-zero); `completion_tokens_details.reasoning_tokens` = thinking tokens when reported.

Errors: the Anthropic error body's message goes through `provider_error` with the HTTP status;
a stream's `error` event is rendered the same way as one OpenAI `data: {"error": …}` line.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.errors import OPENAI, GatewayError, ProviderError, render
from extproc.translate.base import ResponseContext, Target, Usage, provider_error
from extproc.translate.sse import DONE, SSEDecoder, encode_event

FINISH_REASONS = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
    "max_tokens": "length", "model_context_window_exceeded": "length",
    "tool_use": "tool_calls", "refusal": "content_filter",
}
ERROR_STATUS = {
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
    "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
    "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529,
}


def usage_from_anthropic(raw: dict[str, Any]) -> Usage:
    """`Usage` from an Anthropic usage object (Message.usage, possibly merged with message_delta's)."""
    cache_read = raw.get("cache_read_input_tokens") or 0
    cache_creation = raw.get("cache_creation_input_tokens") or 0
    details = raw.get("output_tokens_details") or {}
    return Usage(
        prompt_tokens=(raw.get("input_tokens") or 0) + cache_read + cache_creation,
        completion_tokens=raw.get("output_tokens") or 0,
        cached_tokens=cache_read,
        cache_creation_tokens=cache_creation,
        reasoning_tokens=details.get("thinking_tokens") or 0,
    )


def openai_usage(usage: Usage, raw: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI `usage` object for `usage`; `raw` (the Anthropic usage) says which details exist."""
    prompt_details: dict[str, int] = {"cached_tokens": usage.cached_tokens}
    if usage.cache_creation_tokens:
        prompt_details["cache_write_tokens"] = usage.cache_creation_tokens
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": prompt_details,
    }
    if raw.get("output_tokens_details"):
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def unreadable(what: str) -> GatewayError:
    return ProviderError(f"The provider returned {what} the gateway could not read.", 502, "api_error")


def translate_response(body: bytes, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
    """A whole Anthropic Message → an OpenAI `chat.completion` body and the provider's usage."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise unreadable("a response") from None
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        raise unreadable("a response")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message["content"]:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"),
                                       "arguments": orjson.dumps(block.get("input") or {}).decode()}})
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None,
                             "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    raw_usage = message["usage"] if isinstance(message.get("usage"), dict) else {}
    usage = usage_from_anthropic(raw_usage)
    out = {
        "id": message.get("id") or f"chatcmpl-{ctx.request_id}",
        "object": "chat.completion",
        "created": ctx.created,
        "model": message.get("model") or "",
        "choices": [{"index": 0, "message": reply, "logprobs": None,
                     "finish_reason": FINISH_REASONS.get(message.get("stop_reason") or "", "stop")}],
        "usage": openai_usage(usage, raw_usage),
    }
    return orjson.dumps(out), usage if raw_usage else None


def translate_error(status: int, body: bytes, retry_after: str | None) -> GatewayError:
    """A non-2xx Anthropic response (JSON error body or not) → the client-safe error."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return provider_error(status, message if isinstance(message, str) and message else None, retry_after)


class AnthropicToOpenAIStream:
    """Anthropic Messages SSE → OpenAI `chat.completion.chunk` SSE, incrementally.

    Theory of operation — one state per stream, driven by decoded Anthropic events:

        START ─message_start─▶ OPEN ─message_delta─▶ STOPPED ─message_stop─▶ DONE
          └──────┴── error event, unreadable event, or body ends before STOPPED ──▶ FAILED

    START → OPEN emits the role chunk (`delta: {role: assistant, content: ""}`); a content event
    arriving first opens the stream too. In OPEN, text deltas become `content` deltas; a
    `tool_use` block start becomes a `tool_calls` delta opening call n (n counts tool blocks:
    OpenAI's index), with id, name and `arguments: ""`; `input_json_delta`s append to its
    arguments, and a call whose input never arrived gets "{}" when its block stops. Thinking,
    signature, citation and `ping` events emit nothing. message_delta emits the finish chunk
    (empty delta, mapped finish_reason); message_stop (or the body ending in STOPPED) emits the
    usage chunk (`choices: []`) when `ctx.include_usage`, then `data: [DONE]`. FAILED emits one
    OpenAI error line and nothing after it. Every chunk carries the id, created and model of the
    first; with include_usage every other chunk has `usage: null`, as OpenAI sends.

    `usage` is the provider's count so far (message_start's input and cache tokens, updated by
    message_delta's cumulative counts); None before message_start. Lifetime: one per stream.
    """

    def __init__(self, target: Target, ctx: ResponseContext) -> None:
        self.usage: Usage | None = None
        self._ctx = ctx
        self._decoder = SSEDecoder()
        self._state = "START"
        self._id = f"chatcmpl-{ctx.request_id}"
        self._model = target.upstream_model
        self._raw_usage: dict[str, Any] = {}
        self._tools: dict[int, int] = {}
        self._tools_without_input: set[int] = set()

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for event in self._decoder.feed(chunk):
            if self._state in ("DONE", "FAILED"):
                break
            try:
                data = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                data = None
            if not isinstance(data, dict):
                self._fail(out, unreadable("a stream event"))
                break
            self._event(data, out)
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        if self._state == "STOPPED":
            self._close(out)
        elif self._state in ("START", "OPEN"):
            self._fail(out, ProviderError("The provider's stream ended before the response was complete.",
                                         502, "api_error"))
        return b"".join(out)

    def _event(self, data: dict[str, Any], out: list[bytes]) -> None:
        kind = data.get("type")
        if kind == "message_start":
            message = data.get("message") or {}
            self._id = message.get("id") or self._id
            self._model = message.get("model") or self._model
            self._update_usage(message.get("usage"))
            self._open(out)
        elif kind == "content_block_start":
            self._open(out)
            self._block_start(data.get("index"), data.get("content_block") or {}, out)
        elif kind == "content_block_delta":
            self._open(out)
            self._block_delta(data.get("index"), data.get("delta") or {}, out)
        elif kind == "content_block_stop":
            index = data.get("index")
            if index in self._tools_without_input:
                self._tools_without_input.discard(index)
                self._emit(out, {"tool_calls": [{"index": self._tools[index], "function": {"arguments": "{}"}}]})
        elif kind == "message_delta":
            self._open(out)
            self._update_usage(data.get("usage"))
            if self._state == "OPEN":
                reason = (data.get("delta") or {}).get("stop_reason") or ""
                self._emit(out, {}, FINISH_REASONS.get(reason, "stop"))
                self._state = "STOPPED"
        elif kind == "message_stop":
            self._open(out)
            if self._state == "OPEN":
                self._emit(out, {}, "stop")
            self._close(out)
        elif kind == "error":
            error = data["error"] if isinstance(data.get("error"), dict) else {}
            status = ERROR_STATUS.get(error.get("type") or "", 500)
            message = error.get("message")
            self._fail(out, provider_error(status, message if isinstance(message, str) else None, None))

    def _block_start(self, index: Any, block: dict[str, Any], out: list[bytes]) -> None:
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            self._emit(out, {"content": block["text"]})
        elif kind == "tool_use":
            n = self._tools[index] = len(self._tools)
            given = block.get("input")
            arguments = orjson.dumps(given).decode() if given else ""
            if not arguments:
                self._tools_without_input.add(index)
            self._emit(out, {"tool_calls": [{"index": n, "id": block.get("id"), "type": "function",
                                             "function": {"name": block.get("name"), "arguments": arguments}}]})

    def _block_delta(self, index: Any, delta: dict[str, Any], out: list[bytes]) -> None:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            self._emit(out, {"content": delta["text"]})
        elif kind == "input_json_delta" and delta.get("partial_json") and index in self._tools:
            self._tools_without_input.discard(index)
            self._emit(out, {"tool_calls": [{"index": self._tools[index],
                                             "function": {"arguments": delta["partial_json"]}}]})

    def _update_usage(self, raw: Any) -> None:
        if isinstance(raw, dict):
            self._raw_usage.update({k: v for k, v in raw.items() if v is not None})
            self.usage = usage_from_anthropic(self._raw_usage)

    def _open(self, out: list[bytes]) -> None:
        if self._state == "START":
            self._state = "OPEN"
            self._emit(out, {"role": "assistant", "content": ""})

    def _close(self, out: list[bytes]) -> None:
        if self._ctx.include_usage:
            usage = self.usage or Usage()
            out.append(encode_event(orjson.dumps({**self._head(), "choices": [],
                                                  "usage": openai_usage(usage, self._raw_usage)})))
        out.append(DONE)
        self._state = "DONE"

    def _fail(self, out: list[bytes], err: GatewayError) -> None:
        out.append(encode_event(render(err, OPENAI)[1]))
        self._state = "FAILED"

    def _head(self) -> dict[str, Any]:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._ctx.created,
                "model": self._model}

    def _emit(self, out: list[bytes], delta: dict[str, Any], finish: str | None = None) -> None:
        chunk = {**self._head(),
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if self._ctx.include_usage:
            chunk["usage"] = None
        out.append(encode_event(orjson.dumps(chunk)))
