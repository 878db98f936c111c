"""OpenAI Chat Completions responses → Anthropic Messages responses (whole bodies and the shared rules).

A `chat.completion` becomes a `Message`:
- `id`: an id that already starts with `msg_` is kept (it came from Anthropic through another
  translator); otherwise `msg_` + the OpenAI id without its `chatcmpl-` prefix
  (`msg_<request id>` when the provider sent none).
- `model`: the model the provider reports. `role` assistant, `type` message.
- `content`: the text (or the refusal text) as one text block when non-empty, then one `tool_use`
  block per tool call, `input` = the parsed arguments ("" counts as {}; anything that is not a
  JSON object is an unreadable response: 502). Reasoning text some OpenAI-compatible servers add
  (`reasoning_content`, `reasoning`) is not shown: it carries no signature, so a client could not
  send it back to an Anthropic model; its tokens are counted in `output_tokens`.
- `stop_reason`: stop → end_turn, or stop_sequence with `stop_sequence` set when the provider
  names the matched string (vLLM's `stop_reason`; OpenAI itself never says, so a stop sequence
  reads as end_turn there); length → max_tokens; tool_calls / function_call → tool_use (also
  when a server says stop but returned tool calls); content_filter or a refusal → refusal.
- `usage`: input_tokens = prompt − cached − cache-written tokens, cache_read_input_tokens =
  cached, cache_creation_input_tokens = cache-written, output_tokens = completion tokens,
  output_tokens_details.thinking_tokens = reasoning tokens when non-zero. Without a usage
  object every count is 0.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.errors import GatewayError, ProviderError
from extproc.translate.base import ResponseContext, Usage, provider_error
from extproc.translate.openai_openai import usage_from_openai

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}
ERROR_STATUS = {
    "invalid_request_error": 400, "authentication_error": 401, "permission_error": 403, "not_found_error": 404,
    "request_too_large": 413, "rate_limit_error": 429, "timeout_error": 504, "overloaded_error": 529,
}


def unreadable(what: str) -> GatewayError:
    return ProviderError(f"The provider returned {what} the gateway could not read.", 502, "api_error")


def message_id(openai_id: Any, ctx: ResponseContext) -> str:
    if not isinstance(openai_id, str) or not openai_id:
        return f"msg_{ctx.request_id}"
    if openai_id.startswith("msg_"):
        return openai_id
    return "msg_" + openai_id.removeprefix("chatcmpl-")


def tool_id(call_id: Any, n: int, ctx: ResponseContext) -> str:
    return call_id if isinstance(call_id, str) and call_id else f"toolu_{ctx.request_id}_{n}"


def stop_reason(finish: Any, matched: Any, refused: bool, has_tools: bool) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for an OpenAI finish_reason; `matched` is vLLM's stop_reason."""
    if refused:
        return "refusal", None
    reason = STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"
    if reason == "end_turn" and has_tools:
        return "tool_use", None
    if reason == "end_turn" and isinstance(matched, str) and matched:
        return "stop_sequence", matched
    return reason, None


def anthropic_usage(raw: Any) -> dict[str, Any]:
    """The Anthropic usage object for an OpenAI `usage` object (zeros when there is none)."""
    usage = usage_from_openai(raw) or Usage()
    out: dict[str, Any] = {
        "input_tokens": max(usage.prompt_tokens - usage.cached_tokens - usage.cache_creation_tokens, 0),
        "cache_creation_input_tokens": usage.cache_creation_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
    }
    if usage.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return out


def stream_error(data: dict[str, Any], trusted: bool) -> GatewayError:
    """The client-safe error for an OpenAI stream's `{"error": …}` event. `trusted` errors were
    rendered by the gateway (keep the message); others come from the provider (`provider_error`)."""
    error = data["error"] if isinstance(data.get("error"), dict) else {}
    message = error.get("message") if isinstance(error.get("message"), str) else None
    code, kind = error.get("code"), error.get("type")
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600:
        status = code
    else:
        status = ERROR_STATUS.get(kind, 502 if trusted else 500) if isinstance(kind, str) else 500
    if trusted and message:
        return ProviderError(message, status, kind if isinstance(kind, str) else "api_error")
    return provider_error(status, message, None)


def translate_response(body: bytes, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
    """A whole OpenAI `chat.completion` → an Anthropic Message body and the provider's usage."""
    try:
        completion = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise unreadable("a response") from None
    choices = completion.get("choices") if isinstance(completion, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    message = choice.get("message") if choice is not None else None
    if not isinstance(completion, dict) or choice is None or not isinstance(message, dict):
        raise unreadable("a response")
    content: list[dict[str, Any]] = []
    refusal = message.get("refusal")
    text = message.get("content") or (refusal if isinstance(refusal, str) else None)
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls") or []
    for n, call in enumerate(calls if isinstance(calls, list) else []):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise unreadable("a tool call")
        content.append({"type": "tool_use", "id": tool_id(call.get("id"), n, ctx),
                        "name": function.get("name") or "", "input": _arguments(function.get("arguments"))})
    reason, sequence = stop_reason(choice.get("finish_reason"), choice.get("stop_reason"),
                                   isinstance(refusal, str) and bool(refusal), bool(calls))
    out = {
        "id": message_id(completion.get("id"), ctx),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model") or "",
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": anthropic_usage(completion.get("usage")),
    }
    return orjson.dumps(out), usage_from_openai(completion.get("usage"))


def _arguments(arguments: Any) -> dict[str, Any]:
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) else None
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ProviderError("The provider returned tool call arguments that are not a JSON object.", 502, "api_error")
    return parsed
