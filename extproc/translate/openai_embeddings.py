"""OpenAI Embeddings client (`POST /v1/embeddings`) → OpenAI-compatible or Azure OpenAI: passthrough.

Request: checked as `openai.types.EmbeddingCreateParams` defines it, by the client request
check (`extproc.translate.schema`: `model` a non-empty string, `input` a non-empty string, array
of strings, array of token ids or array of token-id arrays of at most 2048 entries, `dimensions`
an integer of at least 1, `encoding_format` float or base64, `user` a string; a problem is a 400
naming the field). Fields the type does not define pass through (OpenAI-compatible servers take
extensions, as the chat passthrough keeps them); null counts as absent. The body goes up
with `model` = the upstream model (for Azure, the deployment name, as the SDK's AzureOpenAI
sends it), nothing dropped.
Paths: `openai` → `{path_prefix}/embeddings` (option `path_prefix`, default `/v1`);
`azure-openai` → `/openai/deployments/{deployment}/embeddings?api-version=…`.
Responses go back byte for byte; usage is the body's `usage.prompt_tokens`; a 200 that is not an
embedding list (a page, invalid JSON) is a 502 (`openai_openai.whole_answer`). Embeddings do not
stream. Errors are OpenAI-shaped and translated as for chat.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.translate.base import ResponseContext, Target, UpstreamRequest, Usage
from extproc.translate.openai_azure import azure_path
from extproc.translate.openai_openai import OpenAIToOpenAI, whole_answer
from extproc.translate.schema import check_request as check_client_request

_HEADERS = (("content-type", "application/json"),)


def check_request(body: dict[str, Any]) -> None:
    """400 (naming the field) unless `body` is a valid EmbeddingCreateParams, by the client
    request check (`extproc.translate.schema`, which the router stage already ran)."""
    check_client_request("openai-embeddings", body)


def usage_from_embeddings(body: bytes) -> Usage | None:
    """`Usage` of an embedding list (None when it has none); a 502 when the body is not one."""
    usage = whole_answer(body, "data", "an embedding list").get("usage")
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
