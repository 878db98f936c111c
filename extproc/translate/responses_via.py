"""OpenAI Responses client → a provider that does not speak Responses, through its OpenAI-client
translator.

`ResponsesVia(inner)` composes two translations, `inner` being the (openai, X) translator:

    request   Responses body ─responses_chat─▶ OpenAI chat body ─inner─▶ X request
    response  X body ─inner─▶ chat.completion ─responses_response─▶ response
    stream    X stream ─inner (usage on)─▶ chunk SSE ─responses_response─▶ Responses events
    errors    inner.translate_error (rendered in OpenAI's error format: Responses shares it)

Usage is the inner translator's (the provider's own count), else what the chat answer reported.
`dropped_params` are the client's names: this side's drops (an omitted `store` among them: the
answer is not stored, and the header says so), plus the inner's renamed from chat to Responses
fields (`max_completion_tokens` → `max_output_tokens`, `reasoning_effort` → `reasoning.effort`,
`response_format` → `text.format`); `stream_options` is this side's own. Stateless; stream
translators are per stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import orjson

from extproc.errors import GatewayError
from extproc.translate.anthropic_via import ViaStream
from extproc.translate.base import (
    ResponseContext,
    Target,
    Translator,
    UpstreamRequest,
    Usage,
)
from extproc.translate.openai_openai import usage_from_openai
from extproc.translate.responses_chat import to_chat
from extproc.translate.responses_response import ChatToResponsesStream, to_response

CLIENT_NAMES = {"max_completion_tokens": "max_output_tokens", "reasoning_effort": "reasoning.effort",
                "response_format": "text.format"}
_OWN = frozenset({"stream_options"})


class ResponsesVia:
    """The (openai-responses, X) translator for an (openai, X) translator `inner`. Stateless."""

    passthrough = False

    def __init__(self, inner: Translator) -> None:
        self.inner = inner

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        chat, dropped = to_chat(body)
        upstream = self.inner.translate_request(chat, target)
        names = dropped | {CLIENT_NAMES.get(name, name) for name in upstream.dropped_params if name not in _OWN}
        return replace(upstream, dropped_params=tuple(sorted(names)))

    def translate_response(self, body: bytes, target: Target, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
        completion, usage = self.inner.translate_response(body, target, ctx)
        parsed = orjson.loads(completion)
        response = to_response(parsed, ctx)
        return orjson.dumps(response), usage if usage is not None else usage_from_openai(parsed.get("usage"))

    def stream_translator(self, target: Target, ctx: ResponseContext) -> ViaStream:
        inner = self.inner.stream_translator(target, replace(ctx, include_usage=True))
        return ViaStream(inner, ChatToResponsesStream(ctx))

    def translate_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
        return self.inner.translate_error(status, body, headers)
