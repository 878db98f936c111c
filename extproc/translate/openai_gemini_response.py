"""Gemini `GenerateContentResponse` → OpenAI `chat.completion`, and Gemini errors → client errors.

Whole responses: each candidate is a choice (its `index`, else its position). A candidate's text
parts, concatenated, are `message.content` (null when it holds only function calls; thought
parts are not shown); `functionCall` parts are `tool_calls` with `arguments` = the args as JSON.
Tool call ids: Gemini's `functionCall.id` when it gives one, else `call_<uid>_<n>` (`call_<uid>_
<c>_<n>` for candidate c > 0), where uid is the response's `responseId` (the request id when
absent) and n counts the candidate's calls from 0; a part's `thoughtSignature` is appended (see
`openai_gemini_messages.join_call_id`), so ids are the same streamed or not and unique across turns.
`id` is `responseId` (else `chatcmpl-<request id>`), `model` is `modelVersion` (else the upstream
model), `created` comes from the context.

finish_reason: STOP → stop (tool_calls when the choice has calls), MAX_TOKENS → length; SAFETY,
RECITATION, LANGUAGE, BLOCKLIST, PROHIBITED_CONTENT, SPII, IMAGE_SAFETY, IMAGE_PROHIBITED_CONTENT,
IMAGE_RECITATION, MODEL_ARMOR → content_filter; MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL,
TOO_MANY_TOOL_CALLS, MISSING_THOUGHT_SIGNATURE, MALFORMED_RESPONSE (the model produced nothing
usable) → a 502 error naming the reason; anything else → stop.

A blocked prompt (`promptFeedback.blockReason`, no candidates) is a 400 `invalid_request_error`
with code `content_filter` and param `messages`, as Azure OpenAI answers a filtered prompt.

Usage: prompt_tokens = promptTokenCount + toolUsePromptTokenCount; completion_tokens =
candidatesTokenCount + thoughtsTokenCount (OpenAI counts reasoning as completion);
cached_tokens = cachedContentTokenCount; reasoning_tokens = thoughtsTokenCount.

Errors: the Google error body `{"error": {code, message, status, details}}` (or a one-element
array of it) gives the message for `provider_error`. An ErrorInfo reason saying the gateway's key
or token is bad (API_KEY_INVALID, …; Google answers those with 400) is treated as a 401. Retry
hints: the `retry-after` header, else a RetryInfo `retryDelay` ("37s" → 37, rounded up).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson

from extproc.errors import GatewayError, ProviderError
from extproc.translate.base import ResponseContext, Target, Usage, provider_error
from extproc.translate.openai_gemini_messages import join_call_id

FILTERED = frozenset({"SAFETY", "RECITATION", "LANGUAGE", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
                      "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR"})
FAILED = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS",
                    "MISSING_THOUGHT_SIGNATURE", "MALFORMED_RESPONSE"})
_CREDENTIAL_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED",
                                 "ACCESS_TOKEN_EXPIRED", "ACCESS_TOKEN_TYPE_UNSUPPORTED", "CREDENTIALS_MISSING"})
_GOOGLE_STATUS = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401,
                  "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499,
                  "INTERNAL": 500, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}


def finish_reason(reason: str, has_calls: bool) -> str:
    """The OpenAI finish_reason for a Gemini one (call only for reasons outside FAILED)."""
    if reason == "MAX_TOKENS":
        return "length"
    if reason in FILTERED:
        return "content_filter"
    return "tool_calls" if has_calls else "stop"


def failed(reason: str) -> GatewayError:
    return ProviderError(f"The model did not produce a usable response (finish reason {reason}).", 502, "api_error")


def blocked(feedback: dict[str, Any]) -> GatewayError:
    """The client error for a prompt Gemini refused (`promptFeedback` with a blockReason)."""
    message = f"The prompt was blocked by the provider's content filter ({feedback.get('blockReason')})."
    detail = feedback.get("blockReasonMessage")
    if isinstance(detail, str) and detail:
        message += f" {detail}"
    return ProviderError(message, 400, "invalid_request_error", "content_filter", "messages")


def unreadable(what: str) -> GatewayError:
    return ProviderError(f"The provider returned {what} the gateway could not read.", 502, "api_error")


def _count(raw: dict[str, Any], key: str) -> int:
    value = raw.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_from_gemini(raw: dict[str, Any]) -> Usage:
    """`Usage` from a Gemini `usageMetadata` object."""
    thoughts = _count(raw, "thoughtsTokenCount")
    return Usage(
        prompt_tokens=_count(raw, "promptTokenCount") + _count(raw, "toolUsePromptTokenCount"),
        completion_tokens=_count(raw, "candidatesTokenCount") + thoughts,
        cached_tokens=_count(raw, "cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    )


def openai_usage(usage: Usage, raw: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI `usage` object; `raw` (the usageMetadata) says whether thoughts were reported."""
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }
    if "thoughtsTokenCount" in raw:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def tool_call(part: dict[str, Any], uid: str, candidate: int, n: int) -> dict[str, Any]:
    """The OpenAI tool call for a `functionCall` part: the n-th call of `candidate`."""
    call = part["functionCall"]
    given = call.get("id")
    base = given if isinstance(given, str) and given else (
        f"call_{uid}_{n}" if candidate == 0 else f"call_{uid}_{candidate}_{n}")
    return {"id": join_call_id(base, part.get("thoughtSignature")), "type": "function",
            "function": {"name": call.get("name") or "", "arguments": orjson.dumps(call.get("args") or {}).decode()}}


def candidate_index(candidate: dict[str, Any], position: int) -> int:
    index = candidate.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else position


def parts_of(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def translate_response(body: bytes, target: Target, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
    """A whole GenerateContentResponse → an OpenAI `chat.completion` body and the provider's usage."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise unreadable("a response") from None
    if not isinstance(parsed, dict):
        raise unreadable("a response")
    candidates = parsed.get("candidates")
    feedback = parsed.get("promptFeedback")
    if not candidates and isinstance(feedback, dict) and feedback.get("blockReason"):
        raise blocked(feedback)
    if not isinstance(candidates, list) or not candidates or not all(isinstance(c, dict) for c in candidates):
        raise unreadable("a response without candidates")
    uid = parsed.get("responseId") or ctx.request_id
    choices: list[tuple[int, dict[str, Any]]] = []
    for position, candidate in enumerate(candidates):
        index = candidate_index(candidate, position)
        reason = candidate.get("finishReason") or ""
        if reason in FAILED:
            raise failed(reason)
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in parts_of(candidate):
            if isinstance(part.get("functionCall"), dict):
                calls.append(tool_call(part, uid, index, len(calls)))
            elif isinstance(part.get("text"), str) and not part.get("thought"):
                texts.append(part["text"])
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None,
                                   "refusal": None}
        if calls:
            message["tool_calls"] = calls
        choices.append((index, {"index": index, "message": message, "logprobs": None,
                                "finish_reason": finish_reason(reason, bool(calls))}))
    raw_usage = parsed["usageMetadata"] if isinstance(parsed.get("usageMetadata"), dict) else {}
    usage = usage_from_gemini(raw_usage)
    out = {
        "id": parsed.get("responseId") or f"chatcmpl-{ctx.request_id}",
        "object": "chat.completion",
        "created": ctx.created,
        "model": parsed.get("modelVersion") or target.upstream_model,
        "choices": [choice for _, choice in sorted(choices, key=lambda c: c[0])],
        "usage": openai_usage(usage, raw_usage),
    }
    return orjson.dumps(out), usage if raw_usage else None


def error_from_body(status: int, error: Any, retry_after: str | None) -> GatewayError:
    """The client-safe error for a Google `error` object (`status` is the HTTP status, or 0 when the
    error came inside a 200 stream: then the object's own code or status string decides)."""
    error = error if isinstance(error, dict) else {}
    message = error.get("message") if isinstance(error.get("message"), str) else None
    if not status:
        code = error.get("code")
        status = code if isinstance(code, int) and 400 <= code < 600 else _GOOGLE_STATUS.get(error.get("status"), 500)
    details = [d for d in error.get("details") or [] if isinstance(d, dict)] if isinstance(
        error.get("details"), list) else []
    if any(d.get("reason") in _CREDENTIAL_REASONS for d in details) and status == 400:
        status = 401
    if retry_after is None:
        retry_after = next((_seconds(d.get("retryDelay")) for d in details if d.get("retryDelay")), None)
    return provider_error(status, message or None, retry_after)


def _seconds(delay: Any) -> str | None:
    if not isinstance(delay, str) or not delay.endswith("s"):
        return None
    try:
        return str(max(1, math.ceil(float(delay[:-1]))))
    except ValueError:
        return None


def translate_error(status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
    """A non-2xx Gemini response (JSON error body or not) → the client-safe error."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error_from_body(status, error, headers.get("retry-after"))
