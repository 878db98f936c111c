"""Anthropic token counting (`POST /v1/messages/count_tokens`) → every provider type that counts.

The client sends a `MessageCountTokensParams` body (checked by the client request check) and gets
`{"input_tokens": N}` — always the provider's own count, never an estimate:

| provider type | upstream call | request | answer read |
|---|---|---|---|
| `anthropic` | `POST /v1/messages/count_tokens` | the body, `model` = upstream (passthrough) | `input_tokens` |
| `vertex-anthropic` | `POST /v1/projects/{p}/locations/{l}/publishers/anthropic/models/count-tokens:rawPredict` | the body with `model` = upstream and `anthropic_version` (the anthropic SDK's Vertex client) | `input_tokens` |
| `gemini` | `POST /{v}/models/{m}:countTokens` | `{"generateContentRequest": {model, contents, systemInstruction, tools, toolConfig}}` | `totalTokens` |
| `vertex-gemini` | `POST /{v}/projects/{p}/locations/{l}/publishers/google/models/{m}:countTokens` | `{contents, systemInstruction, tools}` (google-genai's Vertex form) | `totalTokens` |
| `bedrock` | `POST /model/{id}/count-tokens` (botocore's `CountTokens`) | `{"input": {"converse": {messages, system, toolConfig, additionalModelRequestFields}}}` | `inputTokens` |
| `openai` | `POST {path_prefix}/responses/input_tokens` | Responses input items, `instructions`, `tools`, `tool_choice` | `input_tokens` |

The non-Anthropic requests are the same conversation as a Messages request would send
(`AnthropicVia` with that provider's chat translator, so images, tool calls and results, tools and
the system prompt are carried the same way), reshaped into the counting call. A provider type
without a counting API (`azure-openai`, `mistral`) is a 400 in Anthropic's format naming what to
do instead (`Registry.get`: no translator is registered). Errors are the provider's, translated
as for its chat answers. Counting is never streamed and spends no tokens: the answer carries no
usage (the rate limit charges the request only; see `extproc.stages.request`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import orjson

from extproc.errors import GatewayError, ProviderError
from extproc.translate.anthropic_anthropic import AnthropicToAnthropic, check_envelope
from extproc.translate.anthropic_openai_request import to_openai
from extproc.translate.anthropic_via import AnthropicVia
from extproc.translate.base import ResponseContext, Target, Translator, UpstreamRequest, Usage
from extproc.translate.openai_anthropic import ANTHROPIC_VERSION, HEADERS
from extproc.translate.openai_bedrock import OpenAIToBedrock
from extproc.translate.openai_gemini import OpenAIToGemini
from extproc.translate.openai_openai import OpenAIToOpenAI

_JSON = (("content-type", "application/json"),)
# A Messages request needs max_tokens; counting has none (it is not part of the count).
_MAX_TOKENS = 1
_SEGMENT_SAFE = "!$&'()*+,=:@"  # as `vertex_anthropic` encodes path segments


def _segment(value: str) -> str:
    return quote(value, safe=_SEGMENT_SAFE)


def count_answer(body: bytes, key: str) -> int:
    """The provider's count in a whole 2xx answer: the integer at `key` (Gemini omits `totalTokens`
    for an empty count, which is 0). A 502 when the body is no count."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    value = parsed.get(key, 0 if key == "totalTokens" else None) if isinstance(parsed, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProviderError(f"The provider's answer is not a token count (status 200, {len(body)} bytes).", 502,
                            "api_error", "provider_invalid_response")
    return value


def client_answer(tokens: int) -> bytes:
    return orjson.dumps({"input_tokens": tokens})


class _NoStream:
    """Counting never streams: the router asks for no stream translator (`stream` is False)."""

    passthrough = False

    def stream_translator(self, target: Target, ctx: ResponseContext) -> Any:
        raise GatewayError("Token counting does not stream.", 400, "invalid_request_error")


class CountTokensToAnthropic(AnthropicToAnthropic):
    """(anthropic-count-tokens, anthropic): a passthrough, read to check it is a count."""

    passthrough = True

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        check_envelope(body)
        return UpstreamRequest(path="/v1/messages/count_tokens",
                               body=orjson.dumps({**body, "model": target.upstream_model}), headers=HEADERS)

    def translate_response(self, body: bytes, target: Target, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
        count_answer(body, "input_tokens")
        return body, None


class CountTokensToVertexAnthropic(CountTokensToAnthropic):
    """(anthropic-count-tokens, vertex-anthropic): the Vertex envelope, answer passed through."""

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        check_envelope(body)
        project, location = target.option("project"), target.option("location")
        if not project or not location:
            raise GatewayError(f"The deployment of model {target.public_model} has no Vertex project or location.",
                               502, "api_error", "provider_misconfigured")
        upstream = {**body, "model": target.upstream_model,
                    "anthropic_version": target.option("anthropic_version", ANTHROPIC_VERSION)}
        path = (f"/v1/projects/{_segment(project)}/locations/{_segment(location)}/publishers/anthropic/models/"
                "count-tokens:rawPredict")
        return UpstreamRequest(path=path, body=orjson.dumps(upstream), headers=_JSON)


class _Via(_NoStream):
    """Counting through a provider's chat translation: `via` builds the request a Messages call
    would send; subclasses reshape it (`reshape`) and read the count (`key`)."""

    key = "input_tokens"

    def __init__(self, inner: Translator) -> None:
        self.inner = inner
        self.via = AnthropicVia(inner)

    def generate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        check_envelope(body)
        return self.via.translate_request({**body, "max_tokens": _MAX_TOKENS}, target)

    def translate_response(self, body: bytes, target: Target, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
        return client_answer(count_answer(body, self.key)), None

    def translate_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
        return self.inner.translate_error(status, body, headers)


class CountTokensToGemini(_Via):
    """(anthropic-count-tokens, gemini | vertex-gemini): `countTokens`."""

    key = "totalTokens"
    _KEPT = ("contents", "systemInstruction", "tools", "toolConfig")

    def __init__(self) -> None:
        super().__init__(OpenAIToGemini())

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        up = self.generate_request(body, target)
        generate = orjson.loads(up.body)
        path = up.path.rsplit(":", 1)[0] + ":countTokens"
        if target.provider_type == "vertex-gemini":
            out = {k: generate[k] for k in self._KEPT[:3] if k in generate}
        else:
            resource = path.split("/", 2)[2].rsplit(":", 1)[0]
            out = {"generateContentRequest": {"model": resource,
                                              **{k: generate[k] for k in self._KEPT if k in generate}}}
        return replace(up, path=path, body=orjson.dumps(out), dropped_params=())


class CountTokensToBedrock(_Via):
    """(anthropic-count-tokens, bedrock): `CountTokens` with the Converse form."""

    key = "inputTokens"
    _KEPT = ("messages", "system", "toolConfig", "additionalModelRequestFields")

    def __init__(self) -> None:
        super().__init__(OpenAIToBedrock())

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        up = self.generate_request(body, target)
        converse = orjson.loads(up.body)
        out = {"input": {"converse": {k: converse[k] for k in self._KEPT if k in converse}}}
        path = f"/model/{quote(target.upstream_model, safe='')}/count-tokens"
        return replace(up, path=path, body=orjson.dumps(out), dropped_params=())


def _input_part(part: Any) -> dict[str, Any]:
    if isinstance(part, dict) and part.get("type") == "image_url":
        image = part.get("image_url") or {}
        return {"type": "input_image", "image_url": image.get("url"), "detail": image.get("detail") or "auto"}
    return {"type": "input_text", "text": part.get("text", "") if isinstance(part, dict) else str(part)}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or () if isinstance(p, dict))


def responses_input(chat: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat body as the Responses input-token count request: system messages become
    `instructions`, messages `message` items (user parts `input_text` / `input_image`), assistant
    tool calls `function_call` items, tool messages `function_call_output` items; function tools
    flattened; `tool_choice` as Responses spells it."""
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    for m in chat["messages"]:
        role, content = m.get("role"), m.get("content")
        if role in ("system", "developer"):
            instructions.append(_text_of(content))
        elif role == "tool":
            items.append({"type": "function_call_output", "call_id": m.get("tool_call_id", ""),
                          "output": _text_of(content)})
        elif role == "assistant":
            text = _text_of(content)
            if text:
                items.append({"type": "message", "role": "assistant", "content": text})
            for call in m.get("tool_calls") or ():
                fn = call.get("function") or {}
                items.append({"type": "function_call", "call_id": call.get("id", ""), "name": fn.get("name", ""),
                              "arguments": fn.get("arguments", "")})
        else:
            parts = [{"type": "input_text", "text": content}] if isinstance(content, str) else [
                _input_part(p) for p in content or ()]
            items.append({"type": "message", "role": "user", "content": parts})
    out: dict[str, Any] = {"model": chat["model"], "input": items}
    if instructions:
        out["instructions"] = "\n\n".join(instructions)
    tools = [{"type": "function", "name": t["function"]["name"],
              "parameters": t["function"].get("parameters") or {"type": "object", "properties": {}},
              "strict": bool(t["function"].get("strict")),
              **({"description": t["function"]["description"]} if t["function"].get("description") else {})}
             for t in chat.get("tools") or () if t.get("type") == "function"]
    if tools:
        out["tools"] = tools
    choice = chat.get("tool_choice")
    if isinstance(choice, str):
        out["tool_choice"] = choice
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out["tool_choice"] = {"type": "function", "name": choice["function"].get("name", "")}
    if chat.get("parallel_tool_calls") is not None:
        out["parallel_tool_calls"] = chat["parallel_tool_calls"]
    return out


class CountTokensToOpenAI(_Via):
    """(anthropic-count-tokens, openai): the Responses API's input-token count."""

    def __init__(self) -> None:
        super().__init__(OpenAIToOpenAI())

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        check_envelope(body)
        chat, _ = to_openai({**body, "max_tokens": _MAX_TOKENS}, target)
        out = responses_input({**chat, "model": target.upstream_model})
        return UpstreamRequest(path=target.option("path_prefix", "/v1") + "/responses/input_tokens",
                               body=orjson.dumps(out), headers=_JSON)
