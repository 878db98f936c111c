"""Anthropic on Vertex: the request must be what the anthropic SDK's own Vertex client sends."""

from __future__ import annotations

import copy
from typing import Any

import httpx2
import orjson
import pytest
from anthropic import AnthropicVertex

from extproc.errors import GatewayError
from extproc.translate.base import Target
from extproc.translate.openai_anthropic import OpenAIToAnthropic
from extproc.translate.vertex_anthropic import AnthropicToVertexAnthropic, OpenAIToVertexAnthropic

OPTIONS = (("project", "my-project"), ("location", "us-east5"))
TARGET = Target("claude", "claude-sonnet-4-5@20250929", "vertex-anthropic", 4096, frozenset({"tools"}), OPTIONS)
BODY = {"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}],
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]}


def sdk_request(body: dict[str, Any], region: str, project: str) -> httpx2.Request:
    """The request `AnthropicVertex.messages.create(**body)` sends."""
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                                          "content": [], "stop_reason": "end_turn", "stop_sequence": None,
                                          "usage": {"input_tokens": 1, "output_tokens": 1}},
                               headers={"content-type": "application/json"})

    client = AnthropicVertex(region=region, project_id=project, access_token="token",
                             http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    if body.get("stream"):
        with client.messages.stream(**{k: v for k, v in body.items() if k != "stream"}) as stream:
            stream.close()
    else:
        client.messages.create(**body)
    return seen[0]


@pytest.mark.parametrize(("model", "region", "project", "stream"), [
    ("claude-sonnet-4-5@20250929", "us-east5", "my-project", False),
    ("claude-sonnet-4-5@20250929", "global", "my-project", True),
    ("claude;v=1 x", "europe-west1", "proj:with:colons", False),
])
def test_request_is_what_the_sdk_sends(model: str, region: str, project: str, stream: bool) -> None:
    target = Target("claude", model, "vertex-anthropic", 4096, options=(("project", project), ("location", region)))
    body = {**BODY, "model": model, **({"stream": True} if stream else {})}
    frozen = copy.deepcopy(body)
    up = AnthropicToVertexAnthropic().translate_request(body, target)
    assert body == frozen
    expected = sdk_request(body, region, project)
    assert up.path == expected.url.raw_path.decode()
    assert orjson.loads(up.body) == orjson.loads(expected.content)
    assert up.stream is stream
    assert "anthropic-version" not in dict(up.headers) and "anthropic-version" not in expected.headers


def test_anthropic_version_option_overrides_the_sdk_default() -> None:
    target = Target("claude", "c@1", "vertex-anthropic", 4096, options=(*OPTIONS, ("anthropic_version", "vertex-2023-10-16")))
    assert orjson.loads(AnthropicToVertexAnthropic().translate_request(BODY, target).body)["anthropic_version"] == \
        "vertex-2023-10-16"
    assert orjson.loads(AnthropicToVertexAnthropic().translate_request(
        {**BODY, "anthropic_version": "bogus"}, TARGET).body)["anthropic_version"] == "2026-10-21"


def test_openai_client_gets_the_anthropic_translation_in_the_vertex_envelope() -> None:
    body = {"model": "claude", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0.2, "stream": True}
    plain = OpenAIToAnthropic().translate_request(body, TARGET)
    up = OpenAIToVertexAnthropic().translate_request(body, TARGET)
    expected = {k: v for k, v in orjson.loads(plain.body).items() if k != "model"}
    assert orjson.loads(up.body) == {**expected, "anthropic_version": "2026-10-21"}
    assert up.dropped_params == plain.dropped_params == ("temperature",)
    assert up.path.endswith("/models/claude-sonnet-4-5@20250929:streamRawPredict") and up.stream


@pytest.mark.parametrize("options", [(("project", "p"),), (("location", "us-east5"),), ()])
def test_missing_project_or_location_is_a_gateway_error(options: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(GatewayError) as info:
        AnthropicToVertexAnthropic().translate_request(BODY, Target("c", "c@1", "vertex-anthropic", 1, options=options))
    assert info.value.status == 502


def test_vertex_error_bodies() -> None:
    google = orjson.dumps({"error": {"code": 400, "message": "Invalid model.", "status": "INVALID_ARGUMENT"}})
    err = AnthropicToVertexAnthropic().translate_error(400, google, {})
    assert (err.status, err.message) == (400, "Invalid model.")
    err = OpenAIToVertexAnthropic().translate_error(403, google, {})
    assert err.status == 502 and "credentials" in err.message
