"""Anthropic Messages client → any provider, through an OpenAI-client translator.

`AnthropicVia(inner)` composes two translations, `inner` being the (openai, X) translator:

    request   Anthropic body ─anthropic_openai_request─▶ OpenAI chat body ─inner─▶ X request
    response  X body ─inner─▶ chat.completion ─anthropic_openai_response─▶ Message
    stream    X stream ─inner (include_usage on)─▶ chunk SSE ─anthropic_openai_stream─▶ Message SSE
    errors    inner.translate_error (the router renders them in Anthropic's format)

Usage is the inner translator's (the provider's own count); the OpenAI usage object is the
fallback. `dropped_params` are the client's names: this side's drops, plus the inner's renamed
from OpenAI to Anthropic fields where there is one (temperature, top_p, max_completion_tokens →
max_tokens, stop → stop_sequences, user → metadata.user_id, reasoning_effort →
output_config.effort, response_format → output_config.format, parallel_tool_calls →
tool_choice.disable_parallel_tool_use); other names pass unchanged, except `stream_options`,
which this side adds itself.

What the composition loses, whatever the provider: `cache_control` (OpenAI chat has no cache
breakpoints; a provider with prompt caching gets none of the client's breakpoints), thinking blocks
and the `thinking` config (no signatures cross OpenAI chat), tool_result `is_error`, the matched
stop sequence (OpenAI reports "stop" only; a stop sequence reads as end_turn unless the provider
names it as vLLM does), citations, server tools, and Anthropic-only response fields (stop_details,
container, diagnostics). A 400 the inner raises names an OpenAI field in `param`, which Anthropic's
error format does not show (its message does); a stream error the inner rendered reaches the
client as an `api_error` unless its OpenAI type says more.

`AnthropicToOpenAI` is the composition with the OpenAI passthrough: the (anthropic, openai) pair.
Translators are stateless and shared; stream translators are per stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from extproc.errors import GatewayError
from extproc.translate import anthropic_openai_response as response
from extproc.translate.anthropic_openai_request import to_openai
from extproc.translate.anthropic_openai_stream import OpenAIToAnthropicStream
from extproc.translate.base import (
    ResponseContext,
    StreamTranslator,
    Target,
    Translator,
    UpstreamRequest,
    Usage,
)
from extproc.translate.openai_openai import OpenAIToOpenAI

CLIENT_NAMES = {
    "max_completion_tokens": "max_tokens",
    "stop": "stop_sequences",
    "user": "metadata.user_id",
    "reasoning_effort": "output_config.effort",
    "response_format": "output_config.format",
    "parallel_tool_calls": "tool_choice.disable_parallel_tool_use",
}
_OWN = frozenset({"stream_options"})  # added by this translation, not sent by the client


class ViaStream:
    """The inner stream translator's output (OpenAI chat chunks) fed into `outer`, which turns them
    into the client's API (an `OpenAIToAnthropicStream`; the Responses API's `ChatToResponsesStream`).
    `usage` is the inner's (the provider's count), else the one the OpenAI chunks reported."""

    def __init__(self, inner: StreamTranslator, outer: StreamTranslator) -> None:
        self.usage: Usage | None = None
        self._inner = inner
        self._outer = outer

    def feed(self, chunk: bytes) -> bytes:
        out = self._outer.feed(self._inner.feed(chunk))
        self.usage = self._inner.usage or self._outer.usage
        return out

    def finish(self) -> bytes:
        out = self._outer.feed(self._inner.finish()) + self._outer.finish()
        self.usage = self._inner.usage or self._outer.usage
        return out


class AnthropicVia:
    """The (anthropic, X) translator for an (openai, X) translator `inner`. Stateless; share one."""

    passthrough = False

    def __init__(self, inner: Translator) -> None:
        self.inner = inner

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        openai_body, dropped = to_openai(body, target)
        upstream = self.inner.translate_request(openai_body, target)
        names = dropped | {CLIENT_NAMES.get(name, name) for name in upstream.dropped_params if name not in _OWN}
        return replace(upstream, dropped_params=tuple(sorted(names)))

    def translate_response(self, body: bytes, target: Target, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
        completion, usage = self.inner.translate_response(body, target, ctx)
        message, own = response.translate_response(completion, ctx)
        return message, usage if usage is not None else own

    def stream_translator(self, target: Target, ctx: ResponseContext) -> ViaStream:
        inner = self.inner.stream_translator(target, replace(ctx, include_usage=True))
        return ViaStream(inner, OpenAIToAnthropicStream(ctx, trusted=not self.inner.passthrough))

    def translate_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
        return self.inner.translate_error(status, body, headers)


class AnthropicToOpenAI(AnthropicVia):
    """The (anthropic, openai) translator: Anthropic clients on OpenAI-compatible servers."""

    def __init__(self) -> None:
        super().__init__(OpenAIToOpenAI())
