"""OpenAI legacy Completions client → Mistral's native fill-in-the-middle API (provider type `mistral`).

Why Mistral (Codestral `POST /v1/fim/completions`) as the native FIM type rather than DeepSeek's
beta completions: DeepSeek's endpoint *is* OpenAI's legacy Completions with `suffix` (an `openai`
provider with `endpoint: https://api.deepseek.com`, `path_prefix: /beta` and the capability
`fim` serves it as a passthrough), while Codestral's is a different API — its own request type,
a chat-shaped answer and stream — that only a translator can serve.

Request (`mistralai` SDK's `FIMCompletionRequest`): `model` (upstream), `prompt` (one string:
an array prompt is a 400), `suffix`, `max_tokens`, `temperature`, `top_p`, `stop` (string or
array), `stream`, `random_seed` (from OpenAI's `seed`). Refused (400, they change what the
client gets back): `n` or `best_of` above 1, `logprobs`, `echo`. Dropped and named
(`x-interlock-dropped-params`): `frequency_penalty`, `presence_penalty`, `logit_bias` (sampling
hints Codestral does not take), `user`. `stream_options` is the gateway's to honour: the usage
chunk is sent when the client asked for it.

Whole answer (`FIMCompletionResponse`: `id`, `object`, `model`, `created`, `usage`, `choices` of
chat choices with `message.content`, a string or text chunks) → OpenAI `text_completion`: one
choice per Mistral choice, `text` = the content, `finish_reason` stop | length (`length` and
`model_length`; anything else is stop), usage copied (prompt, completion, total tokens).

Stream (SSE, `CompletionChunk` events with `choices[].delta.content`, the last one with
`finish_reason` and `usage`, then `data: [DONE]`) → OpenAI `text_completion` chunks: each
non-empty content delta and each finish becomes `{"choices": [{"text", "index", "logprobs":
null, "finish_reason"}]}`; with include_usage every chunk has `usage: null` and a last chunk
with `choices: []` carries the usage, then `data: [DONE]`. An error event, an unreadable event or
a body that ends before `[DONE]` ends the client's stream with one OpenAI error event. Split-safe
(`SSEDecoder`). Errors (Mistral's `{"object": "error", "message", "type", "code"}`, a 422's `message` being
`{"detail": [...]}` — the first problem is shown as `field: problem`) keep the provider's message for client mistakes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from extproc.errors import OPENAI, BadRequest, GatewayError, ProviderError, render
from extproc.translate.base import ResponseContext, Target, UpstreamRequest, Usage, provider_error
from extproc.translate.completions_openai import fim_refusal
from extproc.translate.openai_openai import usage_from_openai, whole_answer
from extproc.translate.sse import DONE, SSEDecoder, encode_event

PATH = "/v1/fim/completions"
_HEADERS = (("content-type", "application/json"),)
_DROPPED = ("frequency_penalty", "presence_penalty", "logit_bias", "user")
_COPIED = ("prompt", "suffix", "max_tokens", "temperature", "top_p", "stop")


def fim_request(body: dict[str, Any], target: Target) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The Codestral FIM body for an OpenAI Completions body, and the dropped parameters."""
    refused = fim_refusal(body, target)
    if refused is not None:
        raise refused
    if not isinstance(body["prompt"], str):
        raise BadRequest("`prompt` must be one string for this model (Mistral's FIM API takes one prompt).",
                         param="prompt")
    for name in ("n", "best_of"):
        if (body.get(name) or 1) > 1:
            raise BadRequest(f"`{name}` above 1 is not supported by this model.", param=name)
    if body.get("logprobs") is not None:
        raise BadRequest("`logprobs` is not supported by this model.", param="logprobs")
    if body.get("echo"):
        raise BadRequest("`echo` is not supported by this model.", param="echo")
    out: dict[str, Any] = {"model": target.upstream_model}
    for name in _COPIED:
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("seed") is not None:
        out["random_seed"] = body["seed"]
    if body.get("stream") is True:
        out["stream"] = True
    return out, tuple(name for name in _DROPPED if body.get(name) is not None)


def _text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(c["text"] for c in content if isinstance(c, dict) and isinstance(c.get("text"), str))
    return ""


def finish_reason(reason: Any) -> str:
    return "length" if reason in ("length", "model_length") else "stop"


def openai_usage(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


def completion_response(body: bytes, target: Target, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
    """A whole FIM answer as an OpenAI `text_completion` (502 when it is not an answer)."""
    answer = whole_answer(body, "choices", "a completion")
    usage = usage_from_openai(answer.get("usage"))
    choices = [{"text": _text(c.get("message")), "index": c.get("index", i), "logprobs": None,
                "finish_reason": finish_reason(c.get("finish_reason"))}
               for i, c in enumerate(answer["choices"]) if isinstance(c, dict)]
    out: dict[str, Any] = {"id": answer.get("id") or f"cmpl-{ctx.request_id}", "object": "text_completion",
                           "created": answer.get("created") or ctx.created,
                           "model": answer.get("model") or target.upstream_model, "choices": choices}
    if usage is not None:
        out["usage"] = openai_usage(usage)
    return orjson.dumps(out), usage


def error_message(parsed: Any) -> str | None:
    """The message of a Mistral error body (`message`, `error.message`, or a 422's `detail`)."""
    if not isinstance(parsed, dict):
        return None
    if isinstance(parsed.get("message"), str):
        return parsed["message"]
    if isinstance(parsed.get("message"), dict):  # a 422: {"object": "error", "message": {"detail": [...]}}
        return error_message(parsed["message"])
    if isinstance(parsed.get("error"), dict) and isinstance(parsed["error"].get("message"), str):
        return str(parsed["error"]["message"])
    detail = parsed.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = ".".join(str(x) for x in detail[0].get("loc", ()) if x != "body")
        return f"{loc}: {detail[0].get('msg', 'invalid')}" if loc else str(detail[0].get("msg", "invalid"))
    if isinstance(detail, str):
        return detail
    return None


class MistralFIMStream:
    """One Codestral FIM SSE stream → OpenAI `text_completion` chunks (see the module docstring).

    States: OPEN (events translated) → DONE (`[DONE]` seen and passed on) or FAILED (one error
    event sent; nothing after it). `usage` is the provider's once a chunk carried it. Lifetime:
    one per stream."""

    def __init__(self, target: Target, ctx: ResponseContext) -> None:
        self.usage: Usage | None = None
        self._ctx = ctx
        self._decoder = SSEDecoder()
        self._state = "OPEN"
        self._id = f"cmpl-{ctx.request_id}"
        self._model = target.upstream_model
        self._created = ctx.created
        self._started = False

    @property
    def complete(self) -> bool:
        return self._state != "OPEN"

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for event in self._decoder.feed(chunk):
            if self._state != "OPEN":
                break
            if event.data == "[DONE]":
                self._done(out)
                break
            try:
                data = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                data = None
            if not isinstance(data, dict):
                self._fail(out, ProviderError("The provider sent an unreadable stream event.", 502, "api_error",
                                              "provider_invalid_response"))
                break
            self._chunk(data, out)
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        if self._state == "OPEN":
            self._fail(out, ProviderError("The provider's stream ended before the response was complete.",
                                          502, "api_error"))
        return b"".join(out)

    def _chunk(self, data: dict[str, Any], out: list[bytes]) -> None:
        if data.get("object") == "error" or "error" in data or "detail" in data:
            self._fail(out, provider_error(500, error_message(data), None))
            return
        if not self._started:
            self._started = True
            self._id = data.get("id") or self._id
            self._model = data.get("model") or self._model
            self._created = data.get("created") or self._created
        usage = usage_from_openai(data.get("usage"))
        if usage is not None:
            self.usage = usage
        choices = data.get("choices")
        for i, c in enumerate(choices if isinstance(choices, list) else ()):
            if not isinstance(c, dict):
                continue
            text = _text(c.get("delta"))
            reason = c.get("finish_reason")
            if text or reason is not None:
                self._emit(out, [{"text": text, "index": c.get("index", i), "logprobs": None,
                                  "finish_reason": None if reason is None else finish_reason(reason)}])

    def _done(self, out: list[bytes]) -> None:
        if self._ctx.include_usage:
            out.append(encode_event(orjson.dumps({**self._head(), "choices": [],
                                                  "usage": openai_usage(self.usage or Usage())})))
        out.append(DONE)
        self._state = "DONE"

    def _fail(self, out: list[bytes], err: GatewayError) -> None:
        out.append(encode_event(render(err, OPENAI)[1]))
        self._state = "FAILED"

    def _head(self) -> dict[str, Any]:
        return {"id": self._id, "object": "text_completion", "created": self._created, "model": self._model}

    def _emit(self, out: list[bytes], choices: list[dict[str, Any]]) -> None:
        chunk: dict[str, Any] = {**self._head(), "choices": choices}
        if self._ctx.include_usage:
            chunk["usage"] = None
        out.append(encode_event(orjson.dumps(chunk)))


class CompletionsToMistral:
    """The (openai-completions, mistral) translator. Stateless; share one instance."""

    passthrough = False

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        upstream, dropped = fim_request(body, target)
        return UpstreamRequest(path=PATH, body=orjson.dumps(upstream), headers=_HEADERS, dropped_params=dropped,
                               stream=body.get("stream") is True)

    def translate_response(self, body: bytes, target: Target, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
        return completion_response(body, target, ctx)

    def stream_translator(self, target: Target, ctx: ResponseContext) -> MistralFIMStream:
        return MistralFIMStream(target, ctx)

    def translate_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        return provider_error(status, error_message(parsed), headers.get("retry-after"))
