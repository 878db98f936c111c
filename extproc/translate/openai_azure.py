"""OpenAI Chat Completions client → Azure OpenAI: a passthrough with Azure's deployment paths.

What the openai SDK's `AzureOpenAI` client (3.57) sends, and so what this module sends:
`POST /openai/deployments/{deployment}/chat/completions?api-version={api_version}` with the
client's body, whose `model` is the deployment name (the SDK keeps `model` in the body and sets
it to the deployment; Azure routes by the path). The deployment is the target's upstream model;
`api_version` is the target option of that name (default `DEFAULT_API_VERSION`, the newest GA
version, as the config defaults it). The router adds the `api-key` header.
Responses and streams are OpenAI's, passed through byte for byte (usage read, and a 200 that is
not a chat completion or a stream without its end caught, as for OpenAI);
errors are OpenAI-shaped (`{"error": {"code", "message", …}}`; a content-filter 400 keeps its
`code`), translated as for OpenAI.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from extproc.translate.base import Target, UpstreamRequest
from extproc.translate.openai_openai import OpenAIToOpenAI, check_envelope

DEFAULT_API_VERSION = "2024-10-21"
_HEADERS = (("content-type", "application/json"),)


def azure_path(target: Target, operation: str) -> str:
    """`/openai/deployments/{deployment}/{operation}?api-version=…` for the target."""
    deployment = quote(target.upstream_model, safe="")
    version = quote(target.option("api_version") or DEFAULT_API_VERSION, safe="")
    return f"/openai/deployments/{deployment}/{operation}?api-version={version}"


class OpenAIToAzure(OpenAIToOpenAI):
    """The (openai, azure-openai) translator. Stateless; share one instance."""

    passthrough = True

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        check_envelope(body)
        upstream = {**body, "model": target.upstream_model}
        return UpstreamRequest(path=azure_path(target, "chat/completions"), body=orjson.dumps(upstream),
                               headers=_HEADERS, stream=body.get("stream") is True)
