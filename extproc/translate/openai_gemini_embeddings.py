"""OpenAI Embeddings client (`POST /v1/embeddings`) → Gemini API `batchEmbedContents`.

The reference shapes are `openai` 3.57 `EmbeddingCreateParams` / `CreateEmbeddingResponse` and
the Gemini API `BatchEmbedContentsRequest` / `EmbedContentResponse` (google-genai 3.6, which
itself always uses batchEmbedContents on the Gemini API: one code path for one or many inputs).

Request: `/{api_version}/models/{model}:batchEmbedContents` (api_version as for chat, default
v1beta; batchEmbedContents and outputDimensionality are in v1 too) with one request per input:
`{"model": "models/{model}", "content": {"parts": [{"text": input}]}, "outputDimensionality"?:
dimensions}` (an int32 in Gemini's EmbedContentRequest: at most 2**31 - 1). `input` is a string or an array of 1 to 100 strings (Gemini's batch limit); empty
strings, token arrays and anything else are 400s. `encoding_format` float (default) or base64.
The response translation cannot see the request: it encodes base64 (float32 little-endian,
base64-encoded, as OpenAI does) when `ResponseContext` carries `encoding_format="base64"`, and
sends float arrays otherwise — which the openai SDKs accept too (they ask for base64 by default
and decode only strings). `user` is dropped and listed. Any
other field is a 400. Vertex AI deployments (vertex-gemini) are refused with a 400: their
embedding endpoints (predict, embedContent) take one text per call or another body.

Response: `{"embeddings": [{"values": [...]}], "usageMetadata"?}` → `{"object": "list", "data":
[{"object": "embedding", "index": i, "embedding": values}], "model": upstream model, "usage":
{"prompt_tokens", "total_tokens"}}`. Token counts are the provider's `usageMetadata.
promptTokenCount` when it reports one; the Gemini API usually reports none for embeddings, and
then the client sees 0 and the gateway gets no usage (None) rather than an estimate.

Embeddings do not stream; should a stream translator be asked for anyway, it buffers the body and
translates it whole at the end.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from extproc.errors import BadRequest, GatewayError
from extproc.translate.base import ResponseContext, Target, UpstreamRequest, Usage
from extproc.translate.openai_gemini import GEMINI_API_VERSION, HEADERS, INT32_MAX
from extproc.translate.openai_gemini_response import translate_error, unreadable

MAX_INPUTS = 100
_FIELDS = frozenset({"model", "input", "dimensions", "encoding_format", "user"})


def translate_request(body: dict[str, Any], target: Target) -> UpstreamRequest:
    """OpenAI embeddings body → Gemini batchEmbedContents request (rules in the module docstring)."""
    if target.provider_type != "gemini":
        raise BadRequest(f"Embeddings are not supported for model {target.public_model} on this provider.",
                         param="model")
    fields = {k: v for k, v in body.items() if v is not None}
    for name in fields:
        if name not in _FIELDS:
            raise BadRequest(f"Unrecognized request argument supplied: {name}", param=name)
    model = fields.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("`model` must be a non-empty string.", param="model")
    texts = _inputs(fields.get("input"))
    dimensions = fields.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool)
                                   or not 1 <= dimensions <= INT32_MAX):
        raise BadRequest(f"`dimensions` must be an integer from 1 to {INT32_MAX}.", param="dimensions")
    if fields.get("encoding_format", "float") not in ("float", "base64"):
        raise BadRequest("`encoding_format` must be float or base64.", param="encoding_format")
    resource = target.upstream_model if target.upstream_model.startswith(("models/", "tunedModels/")) else (
        f"models/{target.upstream_model}")
    requests = []
    for text in texts:
        request: dict[str, Any] = {"model": resource, "content": {"parts": [{"text": text}]}}
        if dimensions is not None:
            request["outputDimensionality"] = dimensions
        requests.append(request)
    path = f"/{target.option('api_version', GEMINI_API_VERSION)}/{quote(resource)}:batchEmbedContents"
    return UpstreamRequest(path=path, body=orjson.dumps({"requests": requests}), headers=HEADERS,
                           dropped_params=("user",) if "user" in fields else ())


def _inputs(value: Any) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise BadRequest("`input` must be a string or a non-empty array of strings for this model "
                         "(token arrays are not supported).", param="input")
    if len(texts) > MAX_INPUTS:
        raise BadRequest(f"`input` may hold at most {MAX_INPUTS} strings for this model.", param="input")
    if any(not t for t in texts):
        raise BadRequest("`input` must not contain empty strings.", param="input")
    return list(texts)


def translate_response(body: bytes, target: Target, encoding: str) -> tuple[bytes, Usage | None]:
    """A batchEmbedContents response → an OpenAI embeddings list and the provider's usage."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise unreadable("a response") from None
    embeddings = parsed.get("embeddings") if isinstance(parsed, dict) else None
    if not isinstance(embeddings, list) or not all(
            isinstance(e, dict) and isinstance(e.get("values"), list) for e in embeddings):
        raise unreadable("a response")
    data = [{"object": "embedding", "index": i, "embedding": _encode(e["values"], encoding)}
            for i, e in enumerate(embeddings)]
    raw = parsed.get("usageMetadata")
    tokens = raw.get("promptTokenCount") if isinstance(raw, dict) else None
    usage = Usage(prompt_tokens=tokens) if isinstance(tokens, int) and not isinstance(tokens, bool) else None
    count = usage.prompt_tokens if usage else 0
    out = {"object": "list", "data": data, "model": target.upstream_model,
           "usage": {"prompt_tokens": count, "total_tokens": count}}
    return orjson.dumps(out), usage


def _encode(values: list[Any], encoding: str) -> list[Any] | str:
    if encoding != "base64":
        return values
    try:
        packed = struct.pack(f"<{len(values)}f", *values)
    except struct.error:
        raise unreadable("an embedding") from None
    return base64.b64encode(packed).decode()


class _BufferedEmbeddings:
    """Collects a whole embeddings body and translates it at `finish`."""

    def __init__(self, target: Target, encoding: str) -> None:
        self.usage: Usage | None = None
        self._target = target
        self._encoding = encoding
        self._body = bytearray()

    def feed(self, chunk: bytes) -> bytes:
        self._body += chunk
        return b""

    def finish(self) -> bytes:
        out, self.usage = translate_response(bytes(self._body), self._target, self._encoding)
        return out


def response_encoding(ctx: ResponseContext) -> str:
    """The `encoding_format` the client asked for, when the context carries it (else float)."""
    encoding = getattr(ctx, "encoding_format", None)
    return encoding if encoding in ("float", "base64") else "float"


class OpenAIEmbeddingsToGemini:
    """The (openai-embeddings, gemini) translator; for vertex-gemini every request is a 400.
    Stateless; share one instance."""

    passthrough = False

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        return translate_request(body, target)

    def translate_response(self, body: bytes, target: Target, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
        return translate_response(body, target, response_encoding(ctx))

    def stream_translator(self, target: Target, ctx: ResponseContext) -> _BufferedEmbeddings:
        return _BufferedEmbeddings(target, response_encoding(ctx))

    def translate_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
        return translate_error(status, body, headers)
