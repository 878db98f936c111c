"""OpenAI Chat Completions client → OpenAI-compatible provider: a passthrough.

Request: the client's body with `model` replaced by the deployment's upstream model; every other
field is kept as sent (an OpenAI-compatible provider takes them all), so nothing is dropped.
Responses, streamed or not, go back byte for byte; the translator only reads them: the token
usage (the JSON body's `usage`, or the stream chunk that carries a non-null `usage`, which
providers send when the client asked for `stream_options.include_usage`), whether a whole answer
is a chat completion at all (a 200 with a page or invalid JSON is a 502, `whole_answer`), and
whether a stream reached its end (`data: [DONE]`, or an in-stream `{"error": …}` event, which
the SDK raises): `complete`. A stream is always asked for its usage (`include_usage`); when the
client did not ask, what that adds is removed before the client sees it
(`openai_usage_stream`), so the client's stream is the one it would have had.
Errors: the provider's OpenAI error body gives the message for `provider_error`; on a 400 its
`param` and `code` are kept too (they name the client's mistake).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from extproc.errors import BadRequest, GatewayError, ProviderError
from extproc.translate.base import ResponseContext, Target, UpstreamRequest, Usage, provider_error
from extproc.translate.openai_usage_stream import UsageAskedStream
from extproc.translate.sse import SSEDecoder

PATH = "/v1/chat/completions"
_HEADERS = (("content-type", "application/json"),)


def check_envelope(body: dict[str, Any]) -> None:
    """The fields every Chat Completions request needs: a model name and a non-empty list of
    message objects (400 naming the field otherwise)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("`model` must be a non-empty string.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("`messages` must be a non-empty array of messages.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{i}] must be an object.", param=f"messages[{i}]")


def usage_from_openai(usage: Any) -> Usage | None:
    """`Usage` from an OpenAI `usage` object (None when absent or malformed)."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens_details") or {}
    completion = usage.get("completion_tokens_details") or {}
    try:
        return Usage(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int(prompt.get("cached_tokens") or 0),
            cache_creation_tokens=int(prompt.get("cache_write_tokens") or 0),
            reasoning_tokens=int(completion.get("reasoning_tokens") or 0),
        )
    except (TypeError, ValueError, AttributeError):
        return None


def whole_answer(body: bytes, key: str, what: str) -> dict[str, Any]:
    """A provider's whole 2xx answer, parsed: a JSON object whose `key` is a list (`choices` of a
    chat completion, `data` of an embedding list, `content` of a Message). Anything else — a page,
    invalid or cut JSON, another object — is a 502: the client's SDK would read it as an empty
    answer without an error."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict) or not isinstance(parsed.get(key), list):
        raise ProviderError(f"The provider's answer is not {what} (status 200, {len(body)} bytes).", 502, "api_error",
                            "provider_invalid_response")
    return parsed


class OpenAIPassthroughStream:
    """Passes every byte through unchanged; reads `usage` from the chunk that carries it, and
    whether the stream ended as a stream must (`complete`).

    Lifetime: one per response stream. `usage` is None until a chunk with a usage object has
    been seen, and is the provider's figure from then on. `complete` turns True at `data: [DONE]`
    or at an `{"error": …}` event (the provider's own end, which the SDK raises).
    """

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.complete = False
        self._decoder = SSEDecoder()

    def feed(self, chunk: bytes) -> bytes:
        for event in self._decoder.feed(chunk):
            data = event.data
            if data == "[DONE]":
                self.complete = True
                continue
            has_usage, has_error = '"usage"' in data, '"error"' in data
            if not has_usage and not has_error:
                continue
            try:
                parsed = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(parsed, dict):
                continue
            if has_usage:
                self.usage = usage_from_openai(parsed.get("usage")) or self.usage
            if has_error and parsed.get("error") is not None and "choices" not in parsed:
                self.complete = True
        return chunk

    @property
    def pending(self) -> bool:
        """The stream so far ends inside an event (its start was passed on)."""
        return self._decoder.pending

    def finish(self) -> bytes:
        return b""


class OpenAIToOpenAI:
    """The (openai, openai) translator. Stateless; share one instance."""

    passthrough = True
    # OpenAI's beta opt-in (e.g. `assistants=v2`) reaches OpenAI-API providers, and only them.
    forward_client_headers = ("openai-beta",)

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        check_envelope(body)
        upstream = {**body, "model": target.upstream_model}
        stream = body.get("stream") is True
        opts = body.get("stream_options")
        if stream and (opts is None or isinstance(opts, dict)) and not (opts or {}).get("include_usage"):
            # The gateway needs every stream's usage: asked for here, removed from the client's
            # stream by `openai_usage_stream.UsageAskedStream` (`stream_translator`).
            upstream["stream_options"] = {**(opts or {}), "include_usage": True}
        return UpstreamRequest(path=target.option("path_prefix", "/v1") + "/chat/completions", body=orjson.dumps(upstream), headers=_HEADERS,
                               stream=stream)

    def translate_response(self, body: bytes, target: Target, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
        return body, usage_from_openai(whole_answer(body, "choices", "a chat completion").get("usage"))

    def stream_translator(self, target: Target, ctx: ResponseContext) -> OpenAIPassthroughStream | UsageAskedStream:
        # The usage the gateway asked for is removed only where this class's `translate_request`
        # asked for it (subclasses with their own leave the stream as the provider sent it).
        if not ctx.include_usage and type(self).translate_request is OpenAIToOpenAI.translate_request:
            return UsageAskedStream(OpenAIPassthroughStream())
        return OpenAIPassthroughStream()

    def translate_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
        message, param, code = None, None, None
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict):
            message = error.get("message") if isinstance(error.get("message"), str) else None
            param = error.get("param") if isinstance(error.get("param"), str) else None
            code = error.get("code") if isinstance(error.get("code"), str) else None
        elif isinstance(error, str):
            message = error
        err = provider_error(status, message or None, headers.get("retry-after"))
        if err.status == 400:
            err.param, err.code = param, code
        return err
