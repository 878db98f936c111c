"""OpenAI Embeddings client (`POST /v1/embeddings`) → OpenAI-compatible or Azure OpenAI: passthrough.

Request: checked by hand as `openai.types.EmbeddingCreateParams` (3.63) defines it — `model` a
non-empty string, `input` a non-empty string, array of strings, array of token ids or array of
token-id arrays, `dimensions` an integer, `encoding_format` float or base64, `user` a string; a
problem is a 400 naming the field (tests compare these checks with the SDK type; the SDK is not
needed at run time). Fields the type does not define pass through (OpenAI-compatible servers
take extensions, as the chat passthrough keeps them); null counts as absent. The body goes up
with `model` = the upstream model (for Azure, the deployment name, as the SDK's AzureOpenAI
sends it), nothing dropped.
Paths: `openai` → `{path_prefix}/embeddings` (option `path_prefix`, default `/v1`);
`azure-openai` → `/openai/deployments/{deployment}/embeddings?api-version=…`.
Responses go back byte for byte; usage is the body's `usage.prompt_tokens`. Embeddings do not
stream. Errors are OpenAI-shaped and translated as for chat.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.errors import BadRequest
from extproc.translate.base import ResponseContext, Target, UpstreamRequest, Usage
from extproc.translate.openai_azure import azure_path
from extproc.translate.openai_openai import OpenAIToOpenAI

_HEADERS = (("content-type", "application/json"),)
_ENCODING_FORMATS = ("float", "base64")


def check_request(body: dict[str, Any]) -> None:
    """400 (naming the field) unless `body` is a valid EmbeddingCreateParams."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("Missing required parameter: 'model'.", param="model")
    _check_input(body.get("input"))
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool)):
        _invalid("dimensions", "must be an integer")
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in _ENCODING_FORMATS:
        _invalid("encoding_format", "must be one of 'float', 'base64'")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        _invalid("user", "must be a string")


def _invalid(field: str, message: str) -> None:
    raise BadRequest(f"Invalid value for '{field}': {message}.", param=field)


def _check_input(value: Any) -> None:
    if value is None:
        raise BadRequest("Missing required parameter: 'input'.", param="input")
    if isinstance(value, str):
        if value:
            return
    elif isinstance(value, list) and value:
        first = value[0]
        if isinstance(first, str) and all(isinstance(v, str) for v in value):
            return
        if _token_ids(value):
            return
        if isinstance(first, list) and all(isinstance(v, list) and v and _token_ids(v) for v in value):
            return
    raise BadRequest("'input' must be a non-empty string, array of strings, array of token ids or array of "
                     "token-id arrays.", param="input")


def _token_ids(values: list[Any]) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def usage_from_embeddings(body: bytes) -> Usage | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    usage = parsed.get("usage") if isinstance(parsed, dict) else None
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return Usage(prompt_tokens=tokens) if isinstance(tokens, int) else None


class OpenAIEmbeddingsToOpenAI(OpenAIToOpenAI):
    """The (openai-embeddings, openai) translator. Stateless; share one instance."""

    passthrough = True

    def path(self, target: Target) -> str:
        return target.option("path_prefix", "/v1") + "/embeddings"

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        check_request(body)
        upstream = {**body, "model": target.upstream_model}
        return UpstreamRequest(path=self.path(target), body=orjson.dumps(upstream), headers=_HEADERS)

    def translate_response(self, body: bytes, target: Target, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
        return body, usage_from_embeddings(body)


class OpenAIEmbeddingsToAzure(OpenAIEmbeddingsToOpenAI):
    """The (openai-embeddings, azure-openai) translator. Stateless; share one instance."""

    def path(self, target: Target) -> str:
        return azure_path(target, "embeddings")
