"""Anthropic Messages client → Anthropic Messages provider: a passthrough.

Request: the client's body with `model` replaced by the deployment's upstream model; every other
field is kept as sent (`cache_control` included, so prompt caching works as the client set it
up), nothing is dropped, and the provider validates the rest. Path `/v1/messages`, header
`anthropic-version` = the anthropic SDK's API version (the client's own `anthropic-*` headers are
the router's business).
Responses, streamed or not, go back byte for byte; the translator only reads them: the token
usage (the Message's `usage`; in a stream, message_start's usage updated by message_delta's
cumulative counts), whether a whole answer is a Message at all (a 200 with a page or invalid JSON
is a 502, `openai_openai.whole_answer`), and whether a stream reached its end (`message_stop`, or
an `error` event, which the SDK raises): `complete`.
Errors: the Anthropic error body's message goes through `provider_error`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from extproc.errors import BadRequest, GatewayError
from extproc.translate import openai_anthropic_response as anthropic_response
from extproc.translate.base import ResponseContext, Target, UpstreamRequest, Usage
from extproc.translate.openai_anthropic import HEADERS, PATH
from extproc.translate.openai_openai import whole_answer
from extproc.translate.sse import SSEDecoder


def check_envelope(body: dict[str, Any]) -> None:
    """What the gateway itself needs of a Messages body: a model name and a list of messages."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: must be a non-empty string.", param="model")
    if not isinstance(body.get("messages"), list):
        raise BadRequest("messages: must be an array of messages.", param="messages")


def usage_from_message(body: bytes) -> Usage | None:
    """`Usage` of a whole Message body (None when it has none); a 502 when the body is not a
    Message (`whole_answer`)."""
    usage = whole_answer(body, "content", "a message").get("usage")
    return anthropic_response.usage_from_anthropic(usage) if isinstance(usage, dict) else None


# Events after which a Messages stream is over: its normal end, or the provider's error (the
# SDK raises it).
_LAST_EVENTS = ("message_stop", "error")


class AnthropicPassthroughStream:
    """Passes every byte through unchanged; reads usage from message_start and message_delta, and
    whether the stream ended as a stream must (`complete`).

    Lifetime: one per response stream. `usage` is None until message_start, then the provider's
    cumulative count so far. `complete` turns True at `message_stop` or an `error` event.
    """

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.complete = False
        self._decoder = SSEDecoder()
        self._raw: dict[str, Any] = {}

    def feed(self, chunk: bytes) -> bytes:
        for event in self._decoder.feed(chunk):
            if event.event in _LAST_EVENTS or (event.event is None and _last_by_type(event.data)):
                self.complete = True
            if '"usage"' not in event.data:
                continue
            try:
                data = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(data, dict):
                continue
            if data.get("type") == "message_start" and isinstance(data.get("message"), dict):
                raw = data["message"].get("usage")
            elif data.get("type") == "message_delta":
                raw = data.get("usage")
            else:
                continue
            if isinstance(raw, dict):
                self._raw.update({k: v for k, v in raw.items() if v is not None})
                self.usage = anthropic_response.usage_from_anthropic(self._raw)
        return chunk

    @property
    def pending(self) -> bool:
        """The stream so far ends inside an event (its start was passed on)."""
        return self._decoder.pending

    def finish(self) -> bytes:
        return b""


def _last_by_type(data: str) -> bool:
    """An event without an `event:` line that is one of `_LAST_EVENTS` by its data's `type`."""
    if '"message_stop"' not in data and '"error"' not in data:
        return False
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(parsed, dict) and parsed.get("type") in _LAST_EVENTS


class AnthropicToAnthropic:
    """The (anthropic, anthropic) translator. Stateless; share one instance."""

    passthrough = True
    # The client's beta opt-ins describe this very body: they travel with it.
    forward_client_headers = ("anthropic-beta",)

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        check_envelope(body)
        upstream = {**body, "model": target.upstream_model}
        return UpstreamRequest(path=PATH, body=orjson.dumps(upstream), headers=HEADERS,
                               stream=body.get("stream") is True)

    def translate_response(self, body: bytes, target: Target, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
        return body, usage_from_message(body)

    def stream_translator(self, target: Target, ctx: ResponseContext) -> AnthropicPassthroughStream:
        return AnthropicPassthroughStream()

    def translate_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
        return anthropic_response.translate_error(status, body, headers.get("retry-after"))
