"""Anthropic models on Vertex AI (`publishers/anthropic`): the Messages API with another envelope.

What the anthropic SDK's Vertex client (`anthropic/lib/vertex/_client.py`, 2.13) does, and so
what this module does to a Messages request body:
- `model` leaves the body and goes into the path:
  `/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}:rawPredict`,
  `:streamRawPredict` when `stream` is true. Values are percent-encoded as path segments (`@` is
  kept, `;` is not: some servers cut a segment at `;`).
- `anthropic_version` joins the body. The 2.13 SDK sends its API version (`2026-10-21`) there,
  as the Messages API's own header carries it; Google's and Anthropic's older pages still name
  `vertex-2023-10-16`. The SDK is this project's reference, so the default is the SDK's value;
  the target option `anthropic_version` overrides it per deployment.
- no `anthropic-version` header (the SDK sends none to Vertex).
`project` and `location` come from the target's options (`location` may be `global`).
Responses, streams and errors are Anthropic's, so response translation is the same as for the
`anthropic` provider type.

`AnthropicToVertexAnthropic` passes an Anthropic client's body through like `AnthropicToAnthropic`;
`OpenAIToVertexAnthropic` runs the (openai, anthropic) translation, then this envelope.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from extproc.errors import GatewayError
from extproc.translate.anthropic_anthropic import AnthropicToAnthropic, check_envelope
from extproc.translate.base import Target, UpstreamRequest
from extproc.translate.openai_anthropic import ANTHROPIC_VERSION, OpenAIToAnthropic

_HEADERS = (("content-type", "application/json"),)
_SEGMENT_SAFE = "!$&'()*+,=:@"


def vertex_request(body: dict[str, Any], target: Target, dropped: tuple[str, ...] = ()) -> UpstreamRequest:
    """The Vertex rawPredict request for an Anthropic Messages body (its `model` is ignored)."""
    project, location = target.option("project"), target.option("location")
    if not project or not location:
        raise GatewayError(f"The deployment of model {target.public_model} has no Vertex project or location.",
                           502, "api_error", "provider_misconfigured")
    stream = body.get("stream") is True
    upstream = {k: v for k, v in body.items() if k != "model"}
    upstream["anthropic_version"] = target.option("anthropic_version", ANTHROPIC_VERSION)
    path = (f"/v1/projects/{_segment(project)}/locations/{_segment(location)}/publishers/anthropic/models/"
            f"{_segment(target.upstream_model)}:{'streamRawPredict' if stream else 'rawPredict'}")
    return UpstreamRequest(path=path, body=orjson.dumps(upstream), headers=_HEADERS, dropped_params=dropped,
                           stream=stream)


def _segment(value: str) -> str:
    return quote(value, safe=_SEGMENT_SAFE)


class AnthropicToVertexAnthropic(AnthropicToAnthropic):
    """The (anthropic, vertex-anthropic) translator: a passthrough. Stateless; share one."""

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        check_envelope(body)
        return vertex_request(body, target)


class OpenAIToVertexAnthropic(OpenAIToAnthropic):
    """The (openai, vertex-anthropic) translator. Stateless; share one."""

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        upstream = super().translate_request(body, target)
        return vertex_request(orjson.loads(upstream.body), target, upstream.dropped_params)
