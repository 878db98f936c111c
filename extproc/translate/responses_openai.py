"""OpenAI Responses client → OpenAI and Azure OpenAI: a passthrough.

Request: the client's body with `model` replaced by the deployment's upstream model, every other
field as sent — `store`, `previous_response_id`, `background`, built-in tools and all — to
`{path_prefix}/responses` (OpenAI) or `/openai/v1/responses` (Azure OpenAI's v1 API, which takes
the deployment name as `model` in the body and needs no `api-version`; the older
`/openai/responses?api-version=…-preview` form is not used).
Stored state stays on the account that stored it, without state in the gateway: a response id
the client sees names that account. The id a provider gives (`resp_…`) goes to the client as
`resp_….il<8 hex>`, the suffix a digest of the provider account's name (`account_tag`; the
target's `account` option); a `previous_response_id` with such a suffix is sent upstream without
it, and `extproc.stages.selection.stored_on` sends the request to that account's deployment
(routing and fallback do not move it). An id without the suffix (made before, or elsewhere) goes
up as it is. Responses are passed on unchanged but for those ids (`id` and
`previous_response_id` of the whole response, and of the `response` of the stream's lifecycle
events); the translator reads the usage (`usage` of the whole response, or of the `response` in
the stream's `response.completed` / `response.incomplete` / `response.failed` event), whether a
whole answer is a response at all (a 200 with a page or invalid JSON is a 502), and whether a
stream reached its end (one of those events, or an `error` event): `complete`. Errors are
OpenAI's, translated as for chat. Without an `account` option ids pass unchanged.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

from extproc.errors import OPENAI, ProviderError, render
from extproc.translate.base import ResponseContext, Target, UpstreamRequest, Usage
from extproc.translate.openai_openai import OpenAIToOpenAI, whole_answer
from extproc.translate.sse import SSEDecoder, encode_event

_HEADERS = (("content-type", "application/json"),)
_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_TAGGED = re.compile(r"^(.+)\.(il[0-9a-f]{8})$")


def account_tag(account: str) -> str:
    """The suffix naming a provider account in the response ids the client sees."""
    return "il" + hashlib.blake2b(account.encode("utf-8"), digest_size=4).hexdigest()


def stored_by(response_id: Any) -> str | None:
    """The account tag a response id carries (None: an id without one)."""
    match = _TAGGED.match(response_id) if isinstance(response_id, str) else None
    return match.group(2) if match else None


def provider_id(response_id: str) -> str:
    """A response id as its provider knows it (the account tag removed)."""
    match = _TAGGED.match(response_id)
    return match.group(1) if match else response_id


def tag_ids(response: Any, tag: str) -> None:
    """Tag a response object's `id` and `previous_response_id` with the account tag `tag`."""
    if not isinstance(response, dict):
        return
    for key in ("id", "previous_response_id"):
        value = response.get(key)
        if isinstance(value, str) and value and stored_by(value) is None:
            response[key] = f"{value}.{tag}"


_MARKS = ("response.completed", "response.incomplete", "response.failed", '"error"')


def usage_from_responses(usage: Any) -> Usage | None:
    """`Usage` from a Responses `usage` object (None when absent or malformed)."""
    if not isinstance(usage, dict):
        return None
    inp = usage.get("input_tokens_details") or {}
    out = usage.get("output_tokens_details") or {}
    try:
        return Usage(prompt_tokens=int(usage.get("input_tokens") or 0),
                     completion_tokens=int(usage.get("output_tokens") or 0),
                     cached_tokens=int(inp.get("cached_tokens") or 0),
                     cache_creation_tokens=int(inp.get("cache_write_tokens") or 0),
                     reasoning_tokens=int(out.get("reasoning_tokens") or 0))
    except (TypeError, ValueError, AttributeError):
        return None


class ResponsesPassthroughStream:
    """Passes every event on (with `tag`, the response ids of the lifecycle events tagged, every
    event re-encoded whole, so a partial event waits for its end; without, every byte unchanged
    as it comes); reads the usage of the final event and whether it came (`complete`). One per
    response stream."""

    def __init__(self, tag: str = "") -> None:
        self.usage: Usage | None = None
        self.complete = False
        self._decoder = SSEDecoder()
        self._tag = tag

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for event in self._decoder.feed(chunk):
            text = event.data
            if self._tag:
                out.append(self._tagged(event.data, event.event))
            if not any(mark in text for mark in _MARKS):
                continue
            try:
                data = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(data, dict):
                continue
            kind = data.get("type")
            if kind in _FINAL:
                response = data.get("response")
                self.usage = usage_from_responses(response.get("usage") if isinstance(response, dict) else None)
                self.complete = True
            elif kind == "error" or (kind is None and data.get("error") is not None):
                self.complete = True
        return b"".join(out) if self._tag else chunk

    def _tagged(self, text: str, name: str | None) -> bytes:
        if '"response":{' in text:
            try:
                data = orjson.loads(text)
            except orjson.JSONDecodeError:
                data = None
            if isinstance(data, dict) and isinstance(data.get("response"), dict):
                tag_ids(data["response"], self._tag)
                return encode_event(orjson.dumps(data), name)
        return encode_event(text, name)

    @property
    def pending(self) -> bool:
        """The stream so far ends inside an event whose start was passed on (never when tagging:
        a partial event is held back)."""
        return self._decoder.pending and not self._tag

    def finish(self) -> bytes:
        """Tagging (the body is the translator's): a stream cut before its final event ends with
        the error event the gateway ends a cut passthrough stream with."""
        if not self._tag or self.complete:
            return b""
        _, body, _ = render(ProviderError("The provider's stream ended before the response was complete.", 502,
                                          "api_error"), OPENAI)
        return encode_event(body)


class ResponsesToOpenAI(OpenAIToOpenAI):
    """The (openai-responses, openai) translator. Stateless; share one instance."""

    passthrough = False  # the response ids are tagged with the account (see the module docstring)

    def path(self, target: Target) -> str:
        return target.option("path_prefix", "/v1") + "/responses"

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        upstream = {**body, "model": target.upstream_model}
        previous = body.get("previous_response_id")
        if isinstance(previous, str):
            upstream["previous_response_id"] = provider_id(previous)
        return UpstreamRequest(path=self.path(target), body=orjson.dumps(upstream), headers=_HEADERS,
                               stream=body.get("stream") is True)

    def translate_response(self, body: bytes, target: Target, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
        response = whole_answer(body, "output", "a response")
        usage = usage_from_responses(response.get("usage"))
        account = target.option("account")
        if not account:
            return body, usage
        tag_ids(response, account_tag(account))
        return orjson.dumps(response), usage

    def stream_translator(self, target: Target, ctx: ResponseContext) -> ResponsesPassthroughStream:  # type: ignore[override]
        account = target.option("account")
        return ResponsesPassthroughStream(account_tag(account) if account else "")


class ResponsesToAzure(ResponsesToOpenAI):
    """The (openai-responses, azure-openai) translator: Azure's v1 path, the deployment as `model`."""

    def path(self, target: Target) -> str:
        return "/openai/v1/responses"
