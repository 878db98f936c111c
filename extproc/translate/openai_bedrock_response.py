"""Bedrock Converse responses → OpenAI Chat Completions responses: whole, streamed and errors.

Whole responses (ConverseResponse): `output.message.content` text blocks, concatenated, are
`message.content` (null when the message is only tool calls); `toolUse` blocks are `tool_calls`
with `arguments` = the input as JSON; reasoning, citation and other blocks are not shown. Bedrock
gives no response id in the body, so `id` is `chatcmpl-<request id>`; `model` is the target's
upstream model; `created` comes from the context; `serviceTier` default/flex/priority is
`service_tier`. Usage: Bedrock's `inputTokens` excludes cache reads and writes, so prompt_tokens
= input + cacheRead + cacheWrite (= totalTokens − outputTokens), `cached_tokens` = cacheRead,
`cache_write_tokens` = cacheWrite when non-zero.

Errors are named by the `x-amzn-errortype` header (`ValidationException:http://…`; else the
body's `__type` or `code`) and carry `{"message"}` (or `Message`). `_ERRORS` gives each name the
status `provider_error` should treat it as: ValidationException 400 keeps its message,
Throttling/ServiceQuotaExceeded 429, the credential and signature errors (AccessDenied,
UnrecognizedClient, ExpiredToken, InvalidSignature, …) 403 → 502, ModelTimeout 408 → 504,
ModelNotReady and ServiceUnavailable 503, InternalServer, ModelError and ModelStreamError (424 on
the wire: the model failed, not the client) → 502. ResourceNotFoundException names the
deployment's model id or ARN (which holds the AWS account id), not anything the client sent, so
it is a 502 with a fixed message. Any other name falls back to the HTTP status. Mid-stream
exception events use the same table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from extproc.errors import OPENAI, GatewayError, ProviderError, render
from extproc.translate.base import ResponseContext, Target, Usage, provider_error
from extproc.translate.eventstream import EventStreamDecoder, EventStreamError, Message
from extproc.translate.openai_anthropic_response import openai_usage, unreadable
from extproc.translate.sse import DONE, encode_event

FINISH_REASONS = {
    "end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
    "model_context_window_exceeded": "length", "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter", "content_filtered": "content_filter",
    "malformed_model_output": "stop", "malformed_tool_use": "stop",
}
_CREDENTIALS = 403
_ERRORS = {
    "validationexception": 400,
    "throttlingexception": 429, "servicequotaexceededexception": 429,
    **dict.fromkeys(["accessdeniedexception", "unrecognizedclientexception", "expiredtokenexception",
                     "invalidsignatureexception", "incompletesignatureexception",
                     "missingauthenticationtokenexception", "invalidclienttokenid", "signaturedoesnotmatch"],
                    _CREDENTIALS),
    "modeltimeoutexception": 408,
    "modelnotreadyexception": 503, "serviceunavailableexception": 503,
    "internalserverexception": 500, "modelerrorexception": 500, "modelstreamerrorexception": 500,
}
_SERVICE_TIERS = frozenset({"default", "flex", "priority"})


def usage_from_bedrock(raw: dict[str, Any]) -> Usage:
    """`Usage` from a Bedrock TokenUsage object."""
    cache_read = _count(raw.get("cacheReadInputTokens"))
    cache_write = _count(raw.get("cacheWriteInputTokens"))
    return Usage(prompt_tokens=_count(raw.get("inputTokens")) + cache_read + cache_write,
                 completion_tokens=_count(raw.get("outputTokens")), cached_tokens=cache_read,
                 cache_creation_tokens=cache_write)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def translate_response(body: bytes, target: Target, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
    """A whole ConverseResponse → an OpenAI `chat.completion` body and the provider's usage."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise unreadable("a response") from None
    output = parsed.get("output") if isinstance(parsed, dict) else None
    message = output.get("message") if isinstance(output, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        raise unreadable("a response")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            calls.append({"id": use.get("toolUseId"), "type": "function",
                          "function": {"name": use.get("name"),
                                       "arguments": orjson.dumps(use.get("input") or {}).decode()}})
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None,
                             "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    raw_usage = parsed["usage"] if isinstance(parsed.get("usage"), dict) else None
    usage = usage_from_bedrock(raw_usage or {})
    out: dict[str, Any] = {
        "id": f"chatcmpl-{ctx.request_id}",
        "object": "chat.completion",
        "created": ctx.created,
        "model": target.upstream_model,
        "choices": [{"index": 0, "message": reply, "logprobs": None,
                     "finish_reason": FINISH_REASONS.get(parsed.get("stopReason") or "", "stop")}],
        "usage": openai_usage(usage, {}),
    }
    tier = parsed.get("serviceTier")
    if isinstance(tier, dict) and tier.get("type") in _SERVICE_TIERS:
        out["service_tier"] = tier["type"]
    return orjson.dumps(out), usage if raw_usage is not None else None


def error_for(name: str | None, status: int, message: str | None, retry_after: str | None) -> GatewayError:
    """The client-safe error for a Bedrock error `name` (an exception shape name in any case,
    e.g. ThrottlingException or throttlingException) that came with HTTP `status`."""
    key = (name or "").lower()
    if key == "resourcenotfoundexception":
        return ProviderError("The provider does not know the model this deployment is configured with.",
                            502, "api_error")
    effective = _ERRORS.get(key, status)
    return provider_error(effective, message, retry_after)


def translate_error(status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
    """A non-2xx Bedrock response (lowercased headers; JSON error body or not) → the client error."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    doc = parsed if isinstance(parsed, dict) else {}
    name = headers.get("x-amzn-errortype") or doc.get("__type") or doc.get("code")
    if isinstance(name, str):
        name = name.split(":", 1)[0].rsplit("#", 1)[-1]
    message = doc.get("message", doc.get("Message"))
    return error_for(name if isinstance(name, str) else None, status,
                     message if isinstance(message, str) and message else None, headers.get("retry-after"))


class BedrockToOpenAIStream:
    """ConverseStream (AWS event stream) → OpenAI `chat.completion.chunk` SSE, incrementally.

    Theory of operation — one state per stream, driven by decoded event-stream messages:

        START ─messageStart─▶ OPEN ─messageStop─▶ STOPPED ─metadata─▶ DONE
          └──────┴── exception message, unreadable bytes, or body ends before STOPPED ──▶ FAILED

    START → OPEN emits the role chunk (`delta: {role: assistant, content: ""}`); a content event
    arriving first opens the stream too. In OPEN, `contentBlockDelta` text becomes `content`
    deltas; `contentBlockStart` with `toolUse` opens tool call n (n counts tool blocks: OpenAI's
    index) with id, name and `arguments: ""`; `toolUse.input` deltas append to its arguments, and
    a call whose input never arrived gets "{}" at its `contentBlockStop`. Reasoning and citation
    deltas and unknown events emit nothing. messageStop emits the finish chunk (empty delta,
    mapped finish_reason). ConverseStream reports usage only in the `metadata` event that
    follows messageStop, so DONE waits for it: metadata (or the body ending in STOPPED) emits the
    usage chunk (`choices: []`) when `ctx.include_usage`, then `data: [DONE]`. FAILED emits one
    OpenAI error line (mapped like HTTP errors, by `:exception-type`) and nothing after it. Every
    chunk carries the same id (`chatcmpl-<request id>`), created and model; with include_usage
    every other chunk has `usage: null`, as OpenAI sends.

    `usage` is None until the metadata event, then the provider's count. Lifetime: one per stream.
    """

    def __init__(self, target: Target, ctx: ResponseContext) -> None:
        self.usage: Usage | None = None
        self._ctx = ctx
        self._decoder = EventStreamDecoder()
        self._state = "START"
        self._head = {"id": f"chatcmpl-{ctx.request_id}", "object": "chat.completion.chunk",
                      "created": ctx.created, "model": target.upstream_model}
        self._tools: dict[Any, int] = {}
        self._tools_without_input: set[Any] = set()

    def feed(self, chunk: bytes) -> bytes:
        if self._state in ("DONE", "FAILED"):
            return b""
        out: list[bytes] = []
        try:
            messages = self._decoder.feed(chunk)
        except EventStreamError as err:
            self._messages(err.messages, out)
            if self._state not in ("DONE", "FAILED"):
                self._fail(out, unreadable("a stream"))
            return b"".join(out)
        self._messages(messages, out)
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        if self._state == "STOPPED":
            self._close(out)
        elif self._state in ("START", "OPEN"):
            self._fail(out, ProviderError("The provider's stream ended before the response was complete.",
                                         502, "api_error"))
        return b"".join(out)

    def _messages(self, messages: list[Message], out: list[bytes]) -> None:
        for message in messages:
            if self._state in ("DONE", "FAILED"):
                return
            kind = message.headers.get(":message-type")
            if kind == "exception":
                name = message.headers.get(":exception-type")
                self._fail(out, error_for(name if isinstance(name, str) else None, 500,
                                          _message_text(message.payload), None))
            elif kind == "error":
                self._fail(out, provider_error(500, None, None))
            elif kind == "event":
                try:
                    data = orjson.loads(message.payload)
                except orjson.JSONDecodeError:
                    data = None
                if not isinstance(data, dict):
                    self._fail(out, unreadable("a stream event"))
                    return
                self._event(message.headers.get(":event-type"), data, out)

    def _event(self, kind: Any, data: dict[str, Any], out: list[bytes]) -> None:
        if kind == "messageStart":
            self._open(out)
        elif kind == "contentBlockStart":
            self._open(out)
            start = data.get("start")
            use = start.get("toolUse") if isinstance(start, dict) else None
            if isinstance(use, dict):
                index = data.get("contentBlockIndex")
                n = self._tools[index] = len(self._tools)
                self._tools_without_input.add(index)
                self._emit(out, {"tool_calls": [{"index": n, "id": use.get("toolUseId"), "type": "function",
                                                 "function": {"name": use.get("name"), "arguments": ""}}]})
        elif kind == "contentBlockDelta":
            self._open(out)
            self._delta(data.get("contentBlockIndex"), data.get("delta"), out)
        elif kind == "contentBlockStop":
            index = data.get("contentBlockIndex")
            if index in self._tools_without_input:
                self._tools_without_input.discard(index)
                self._emit(out, {"tool_calls": [{"index": self._tools[index], "function": {"arguments": "{}"}}]})
        elif kind == "messageStop":
            self._open(out)
            if self._state == "OPEN":
                self._emit(out, {}, FINISH_REASONS.get(data.get("stopReason") or "", "stop"))
                self._state = "STOPPED"
        elif kind == "metadata":
            if isinstance(data.get("usage"), dict):
                self.usage = usage_from_bedrock(data["usage"])
            if self._state == "STOPPED":
                self._close(out)

    def _delta(self, index: Any, delta: Any, out: list[bytes]) -> None:
        if not isinstance(delta, dict):
            return
        if isinstance(delta.get("text"), str) and delta["text"]:
            self._emit(out, {"content": delta["text"]})
        use = delta.get("toolUse")
        if isinstance(use, dict) and isinstance(use.get("input"), str) and use["input"] and index in self._tools:
            self._tools_without_input.discard(index)
            self._emit(out, {"tool_calls": [{"index": self._tools[index], "function": {"arguments": use["input"]}}]})

    def _open(self, out: list[bytes]) -> None:
        if self._state == "START":
            self._state = "OPEN"
            self._emit(out, {"role": "assistant", "content": ""})

    def _close(self, out: list[bytes]) -> None:
        if self._ctx.include_usage:
            usage = self.usage or Usage()
            out.append(encode_event(orjson.dumps({**self._head, "choices": [], "usage": openai_usage(usage, {})})))
        out.append(DONE)
        self._state = "DONE"

    def _fail(self, out: list[bytes], err: GatewayError) -> None:
        out.append(encode_event(render(err, OPENAI)[1]))
        self._state = "FAILED"

    def _emit(self, out: list[bytes], delta: dict[str, Any], finish: str | None = None) -> None:
        chunk: dict[str, Any] = {**self._head,
                                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if self._ctx.include_usage:
            chunk["usage"] = None
        out.append(encode_event(orjson.dumps(chunk)))


def _message_text(payload: bytes) -> str | None:
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    message = parsed.get("message", parsed.get("Message")) if isinstance(parsed, dict) else None
    return message if isinstance(message, str) and message else None
