"""Embeddings passthrough: the client request is checked against EmbeddingCreateParams; bytes come back."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from extproc.errors import GatewayError, ProviderError
from extproc.translate.base import ResponseContext, Target, Usage
from extproc.translate.openai_embeddings import OpenAIEmbeddingsToAzure, OpenAIEmbeddingsToOpenAI

TARGET = Target("embed", "text-embedding-3-small", "openai", 0)
CTX = ResponseContext("req-1", 1767225600)


@pytest.mark.parametrize("value", ["text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
def test_valid_inputs_pass_with_model_rewritten(value: Any) -> None:
    body = {"model": "embed", "input": value, "dimensions": 256, "encoding_format": "float", "user": "u",
            "truncate_prompt_tokens": 10, "dimensions_extra": None}
    frozen = copy.deepcopy(body)
    up = OpenAIEmbeddingsToOpenAI().translate_request(body, TARGET)
    assert orjson.loads(up.body) == {**body, "model": "text-embedding-3-small"}
    assert (up.path, up.stream, up.dropped_params) == ("/v1/embeddings", False, ())
    assert body == frozen


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "x"}, "model"),
    ({"model": "", "input": "x"}, "model"),
    ({"model": "embed"}, "input"),
    ({"model": "embed", "input": None}, "input"),
    ({"model": "embed", "input": ""}, "input"),
    ({"model": "embed", "input": []}, "input"),
    ({"model": "embed", "input": ["a", 1]}, "input[1]"),
    ({"model": "embed", "input": [[1], []]}, "input[1]"),
    ({"model": "embed", "input": [True]}, "input[0]"),
    ({"model": "embed", "input": 3.5}, "input"),
    ({"model": "embed", "input": "x", "dimensions": "256"}, "dimensions"),
    ({"model": "embed", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"model": "embed", "input": "x", "user": 7}, "user"),
])
def test_invalid_requests_are_400_naming_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as info:
        OpenAIEmbeddingsToOpenAI().translate_request(body, TARGET)
    assert (info.value.status, info.value.param) == (400, param)


def test_paths() -> None:
    body = {"model": "embed", "input": "x"}
    prefixed = Target("embed", "bge-m3", "openai", 0, options=(("path_prefix", "/api/v1"),))
    assert OpenAIEmbeddingsToOpenAI().translate_request(body, prefixed).path == "/api/v1/embeddings"
    azure = Target("embed", "emb-prod", "azure-openai", 0, options=(("api_version", "2024-10-21"),))
    assert OpenAIEmbeddingsToAzure().translate_request(body, azure).path == \
        "/openai/deployments/emb-prod/embeddings?api-version=2024-10-21"


def test_response_passes_through_with_usage() -> None:
    body = orjson.dumps({"object": "list", "data": [], "model": "m", "usage": {"prompt_tokens": 8, "total_tokens": 8}})
    out, usage = OpenAIEmbeddingsToOpenAI().translate_response(body, TARGET, CTX)
    assert out is body and usage == Usage(prompt_tokens=8)
    with pytest.raises(ProviderError) as info:  # an unreadable 200 is the provider's failure, not an answer
        OpenAIEmbeddingsToOpenAI().translate_response(b"not json", TARGET, CTX)
    assert info.value.status == 502
    assert OpenAIEmbeddingsToOpenAI.passthrough and OpenAIEmbeddingsToAzure.passthrough
