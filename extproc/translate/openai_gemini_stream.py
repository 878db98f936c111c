"""Gemini `streamGenerateContent?alt=sse` → OpenAI `chat.completion.chunk` SSE, incrementally.

Theory of operation. Gemini sends one `data: {GenerateContentResponse}` event per chunk and no
end event: the body simply ends. The stream translator is in one of four states:

    START ─first candidate─▶ OPEN ─body ends, every choice finished─▶ DONE
      └───────┴── error object, blocked prompt, failed finish, unreadable event,
                  or body ends with a choice unfinished ──▶ FAILED

Each chunk's candidates are choices (the candidate `index`, else its position). The first time a
choice is seen it gets its role chunk (`delta: {role: assistant, content: ""}`); text parts
(thought parts excepted) become `content` deltas; a `functionCall` part (Gemini sends each call
whole) becomes one `tool_calls` delta with index, id, type, name and the complete arguments, ids
made as for whole responses (`openai_gemini_response.tool_call`). A `finishReason` emits that
choice's finish chunk (empty delta; tool_calls when the choice made calls and stopped normally);
later parts of a finished choice are ignored. `usageMetadata`, cumulative in every chunk, is kept
from the latest chunk. When the body ends with every choice finished, the usage chunk
(`choices: []`) follows when `ctx.include_usage`, then `data: [DONE]`.

FAILED emits one OpenAI error line (`data: {"error": …}`) and nothing after it: a chunk carrying
a Google `error` object, a prompt blocked before any candidate (400 content_filter, as the whole
response), a finish reason meaning the model produced nothing usable (502), an event that is not
a JSON object, or a body that ends early. Every chunk carries the id (`responseId`, else
`chatcmpl-<request id>`), created and model (`modelVersion`, else the upstream model) of the first
chunk; with include_usage every other chunk has `usage: null`, as OpenAI sends.

`usage` is the provider's count so far (None before any usageMetadata). Lifetime: one per stream.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.errors import OPENAI, GatewayError, ProviderError, render
from extproc.translate.base import ResponseContext, Target, Usage
from extproc.translate.openai_gemini_response import (
    FAILED,
    blocked,
    candidate_index,
    error_from_body,
    failed,
    finish_reason,
    openai_usage,
    parts_of,
    tool_call,
    unreadable,
    usage_from_gemini,
)
from extproc.translate.sse import DONE, SSEDecoder, encode_event


class GeminiToOpenAIStream:
    """One Gemini SSE response stream → OpenAI chunks (see the module docstring)."""

    def __init__(self, target: Target, ctx: ResponseContext) -> None:
        self.usage: Usage | None = None
        self._ctx = ctx
        self._decoder = SSEDecoder()
        self._state = "START"
        self._id = f"chatcmpl-{ctx.request_id}"
        self._uid = ctx.request_id
        self._model = target.upstream_model
        self._raw_usage: dict[str, Any] = {}
        self._calls: dict[int, int] = {}
        self._finished: set[int] = set()

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
            self._chunk(data, out)
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        if self._state == "OPEN" and self._finished == set(self._calls):
            if self._ctx.include_usage:
                usage = self.usage or Usage()
                out.append(encode_event(orjson.dumps({**self._head(), "choices": [],
                                                      "usage": openai_usage(usage, self._raw_usage)})))
            out.append(DONE)
            self._state = "DONE"
        elif self._state in ("START", "OPEN"):
            self._fail(out, ProviderError("The provider's stream ended before the response was complete.",
                                         502, "api_error"))
        return b"".join(out)

    def _chunk(self, data: dict[str, Any], out: list[bytes]) -> None:
        if "error" in data:
            self._fail(out, error_from_body(0, data["error"], None))
            return
        if self._state == "START":
            self._id = data.get("responseId") or self._id
            self._uid = data.get("responseId") or self._uid
            self._model = data.get("modelVersion") or self._model
        if isinstance(data.get("usageMetadata"), dict):
            self._raw_usage = data["usageMetadata"]
            self.usage = usage_from_gemini(self._raw_usage)
        candidates = data.get("candidates")
        candidates = [c for c in candidates if isinstance(c, dict)] if isinstance(candidates, list) else []
        feedback = data.get("promptFeedback")
        if not candidates and isinstance(feedback, dict) and feedback.get("blockReason"):
            self._fail(out, blocked(feedback))
            return
        for position, candidate in enumerate(candidates):
            if self._candidate(candidate_index(candidate, position), candidate, out):
                return

    def _candidate(self, c: int, candidate: dict[str, Any], out: list[bytes]) -> bool:
        """Emit what one candidate of a chunk adds; True when the stream failed."""
        if c in self._finished:
            return False
        if c not in self._calls:
            self._calls[c] = 0
            self._state = "OPEN"
            self._emit(out, c, {"role": "assistant", "content": ""})
        for part in parts_of(candidate):
            if isinstance(part.get("functionCall"), dict):
                call = tool_call(part, self._uid, c, self._calls[c])
                self._emit(out, c, {"tool_calls": [{"index": self._calls[c], **call}]})
                self._calls[c] += 1
            elif isinstance(part.get("text"), str) and part["text"] and not part.get("thought"):
                self._emit(out, c, {"content": part["text"]})
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and reason:
            if reason in FAILED:
                self._fail(out, failed(reason))
                return True
            self._finished.add(c)
            self._emit(out, c, {}, finish_reason(reason, self._calls[c] > 0))
        return False

    def _fail(self, out: list[bytes], err: GatewayError) -> None:
        out.append(encode_event(render(err, OPENAI)[1]))
        self._state = "FAILED"

    def _head(self) -> dict[str, Any]:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._ctx.created,
                "model": self._model}

    def _emit(self, out: list[bytes], choice: int, delta: dict[str, Any], finish: str | None = None) -> None:
        chunk = {**self._head(),
                 "choices": [{"index": choice, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if self._ctx.include_usage:
            chunk["usage"] = None
        out.append(encode_event(orjson.dumps(chunk)))
