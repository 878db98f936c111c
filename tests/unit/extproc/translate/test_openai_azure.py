"""Azure OpenAI: requests must be what the openai SDK's AzureOpenAI client sends; answers pass through."""

from __future__ import annotations

import copy
from typing import Any

import httpx2
import orjson
import pytest
from openai import AzureOpenAI

from extproc.errors import GatewayError
from extproc.translate.base import ResponseContext, Target, Usage
from extproc.translate.openai_azure import DEFAULT_API_VERSION, OpenAIToAzure
from extproc.translate.openai_embeddings import OpenAIEmbeddingsToAzure

CTX = ResponseContext("req-1", 1767225600)
MESSAGES = [{"role": "user", "content": "Hi"}]


def target(deployment: str = "gpt4o-prod", api_version: str | None = "2024-10-21") -> Target:
    options = (("api_version", api_version),) if api_version else ()
    return Target("gpt-4o", deployment, "azure-openai", 4096, options=options)


def sdk_request(operation: str, deployment: str, api_version: str, **params: Any) -> httpx2.Request:
    """The request AzureOpenAI sends for `client.<operation>.create(model=deployment, **params)`."""
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(500, json={"error": {"message": "stop here"}})

    client = AzureOpenAI(azure_endpoint="https://res.openai.azure.com", api_key="k", api_version=api_version,
                         max_retries=0, http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    api = client.chat.completions if operation == "chat" else client.embeddings
    with pytest.raises(Exception):  # noqa: B017 - the mock answers 500 once the request is captured
        api.create(model=deployment, **params)
    return seen[0]


@pytest.mark.parametrize(("deployment", "version", "stream"), [
    ("gpt4o-prod", "2024-10-21", False), ("gpt4o-prod", "2025-04-01-preview", True), ("my deploy/1", "2024-10-21", False)])
def test_chat_request_is_what_the_sdk_sends(deployment: str, version: str, stream: bool) -> None:
    body = {"model": "gpt-4o", "messages": MESSAGES, "temperature": 0.1, **({"stream": True} if stream else {})}
    frozen = copy.deepcopy(body)
    up = OpenAIToAzure().translate_request(body, target(deployment, version))
    assert body == frozen
    expected = sdk_request("chat", deployment, version, messages=MESSAGES, temperature=0.1,
                           **({"stream": True} if stream else {}))
    assert up.path == expected.url.raw_path.decode()
    assert orjson.loads(up.body) == orjson.loads(expected.content)
    assert (up.stream, up.dropped_params) == (stream, ())


def test_embeddings_request_is_what_the_sdk_sends() -> None:
    body = {"model": "embed", "input": ["a", "b"], "encoding_format": "base64"}
    up = OpenAIEmbeddingsToAzure().translate_request(body, target("emb-prod"))
    expected = sdk_request("embeddings", "emb-prod", "2024-10-21", input=["a", "b"])
    assert up.path == expected.url.raw_path.decode()
    assert orjson.loads(up.body) == orjson.loads(expected.content)


def test_api_version_defaults_to_the_config_default() -> None:
    up = OpenAIToAzure().translate_request({"model": "gpt-4o", "messages": MESSAGES}, target(api_version=None))
    assert up.path == f"/openai/deployments/gpt4o-prod/chat/completions?api-version={DEFAULT_API_VERSION}"


def test_answers_pass_through_with_usage() -> None:
    translator = OpenAIToAzure()
    assert translator.passthrough
    body = orjson.dumps({"id": "c", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3,
                                                             "total_tokens": 12}})
    out, usage = translator.translate_response(body, target(), CTX)
    assert out is body and usage == Usage(9, 3)


def test_azure_error_bodies() -> None:
    filtered = orjson.dumps({"error": {"message": "Filtered.", "type": None, "param": "prompt", "code": "content_filter",
                                       "status": 400, "innererror": {"code": "ResponsibleAIPolicyViolation"}}})
    err = OpenAIToAzure().translate_error(400, filtered, {})
    assert (err.status, err.message, err.param, err.code) == (400, "Filtered.", "prompt", "content_filter")
    missing = orjson.dumps({"error": {"code": "DeploymentNotFound", "message": "The API deployment does not exist."}})
    err = OpenAIToAzure().translate_error(404, missing, {})
    assert (err.status, err.message) == (404, "The API deployment does not exist.")
    assert OpenAIToAzure().translate_error(401, b'{"error": {"code": "401", "message": "Access denied"}}', {}).status == 502


def test_chat_envelope_is_checked() -> None:
    with pytest.raises(GatewayError) as info:
        OpenAIToAzure().translate_request({"model": "gpt-4o", "messages": []}, target())
    assert info.value.param == "messages"
