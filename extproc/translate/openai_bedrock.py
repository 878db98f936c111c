"""OpenAI Chat Completions client → AWS Bedrock Converse provider: the request side.

The reference shapes are `openai` 3.57 `CompletionCreateParams` for the client and botocore's
`bedrock-runtime` service model (ConverseRequest / ConverseStreamRequest) for the provider.
Responses, streams and errors are translated in `openai_bedrock_response`; messages and content
parts in `openai_bedrock_messages` (rules there).

The upstream path is `/model/{model id}/converse` (or `/converse-stream` when `stream` is true)
with the model id fully percent-encoded as it goes on the wire (`:` → `%3A`, `/` → `%2F`), as
botocore sends it; the router signs that path and the body with SigV4 (`extproc.auth.sigv4`).

Every client field is decided; the table `_FIELDS` says how:
  mapped   model (→ the path's model id), messages, max_completion_tokens | max_tokens (else the
           target's max_output_tokens) → inferenceConfig.maxTokens, temperature (0–1) →
           inferenceConfig.temperature, top_p → inferenceConfig.topP, stop →
           inferenceConfig.stopSequences, tools → toolConfig.tools[].toolSpec (strict kept),
           tool_choice (auto → auto, required → any, {function} → tool; none → no toolConfig),
           response_format json_schema → outputConfig.textFormat (the schema as a JSON string;
           capability "json"), reasoning_effort (low…max → outputConfig.effort with capability
           "reasoning"; otherwise dropped), service_tier (default, flex, priority → serviceTier;
           fast → priority; auto → nothing), safety_identifier | user → requestMetadata (when
           Bedrock's metadata pattern allows the value; otherwise dropped), stream,
           stream_options (include_usage is honoured by the gateway, include_obfuscation
           ignored), modalities ["text"] (nothing to send)
  dropped  and listed in `dropped_params`: temperature above 1 (Bedrock's range is 0–1), top_k
           (its name in additionalModelRequestFields differs per model family, and a name the
           model does not know is a ValidationException), seed, frequency_penalty,
           presence_penalty, logit_bias (sampling hints), parallel_tool_calls false (Converse has
           no such switch), prediction (a latency hint), verbosity, store (only when true),
           metadata (OpenAI's stored-completion tags), prompt_cache_key, prompt_cache_options,
           prompt_cache_retention (caching hints), service_tier scale, user when
           safety_identifier wins, messages[].name, image_url.detail other than auto
  400      n > 1, logprobs, top_logprobs, audio, modalities with audio, response_format
           json_object, functions / function_call (deprecated; use tools), web_search_options,
           moderation, custom tools, allowed_tools tool choice, tools without capability
           "tools", json_schema without capability "json", images without capability "images"
           or given as http(s) URLs, a conversation holding tool calls or results while the
           request sends no tools or tool_choice none (Converse requires toolConfig with them),
           max_tokens below 1, temperature outside 0–2, top_p outside 0–1, empty stop strings,
           any field OpenAI does not define (as OpenAI does).
A null value counts as absent. The input dict is never mutated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from extproc.errors import BadRequest, GatewayError
from extproc.translate import openai_bedrock_response as response
from extproc.translate.base import ResponseContext, Target, UpstreamRequest, Usage
from extproc.translate.openai_bedrock_messages import convert_messages, has_tool_blocks
from extproc.translate.openai_bedrock_response import BedrockToOpenAIStream
from extproc.translate.openai_fields import (
    DROPPED,
    HANDLED,
    REJECTED,
    function_tool,
    json_schema_format,
    reasoning_effort,
    sort_fields,
)
from extproc.translate.openai_messages import as_list
from extproc.translate.openai_openai import check_envelope

HEADERS = (("content-type", "application/json"),)

_HANDLED, _DROPPED, _REJECTED = HANDLED, DROPPED, REJECTED
_FIELDS = {
    **dict.fromkeys(
        ["model", "messages", "max_completion_tokens", "max_tokens", "temperature", "top_p", "stop", "tools",
         "tool_choice", "parallel_tool_calls", "user", "safety_identifier", "response_format", "stream",
         "stream_options", "service_tier", "reasoning_effort", "modalities", "n", "logprobs", "top_logprobs",
         "store"], _HANDLED),
    **dict.fromkeys(
        ["top_k", "seed", "frequency_penalty", "presence_penalty", "logit_bias", "prediction", "verbosity",
         "metadata", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention"], _DROPPED),
    **dict.fromkeys(["audio", "functions", "function_call", "web_search_options", "moderation"], _REJECTED),
}
_SERVICE_TIERS = {"default": "default", "flex": "flex", "priority": "priority", "fast": "priority"}
_EMPTY_SCHEMA = {"type": "object", "properties": {}}
_METADATA_VALUE = re.compile(r"[a-zA-Z0-9\s:_@$#=/+,\-.]{1,256}")


def path_for(model_id: str, stream: bool) -> str:
    """The Converse (or ConverseStream) path for `model_id`, percent-encoded as on the wire."""
    return f"/model/{quote(model_id, safe='')}/{'converse-stream' if stream else 'converse'}"


def translate_request(body: dict[str, Any], target: Target) -> UpstreamRequest:
    """Client body → Bedrock Converse request (see the module docstring for every rule)."""
    check_envelope(body)
    fields, dropped = sort_fields(body, target, _FIELDS)
    _reject_unservable(fields)

    system, messages = convert_messages(fields["messages"], target, dropped)
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    out["inferenceConfig"] = _inference_config(fields, target, dropped)
    tool_config = _tool_config(fields, target, dropped)
    if tool_config is not None:
        out["toolConfig"] = tool_config
    elif has_tool_blocks(messages):
        raise BadRequest(f"Model {target.public_model} needs `tools` (and a tool_choice other than none) "
                         "when the conversation holds tool calls or tool results.", param="tools")
    output_config = _output_config(fields, target, dropped)
    if output_config:
        out["outputConfig"] = output_config
    tier = fields.get("service_tier")
    if tier in _SERVICE_TIERS:
        out["serviceTier"] = {"type": _SERVICE_TIERS[tier]}
    elif tier is not None and tier != "auto":
        dropped.add("service_tier")
    metadata = _request_metadata(fields, dropped)
    if metadata:
        out["requestMetadata"] = metadata
    if fields.get("store") is True:
        dropped.add("store")
    stream = fields.get("stream") is True
    return UpstreamRequest(path=path_for(target.upstream_model, stream), body=orjson.dumps(out), headers=HEADERS,
                           dropped_params=tuple(sorted(dropped)), stream=stream)


def _reject_unservable(fields: dict[str, Any]) -> None:
    n = fields.get("n")
    if n is not None and n != 1:
        raise BadRequest("Only n=1 is supported for this model.", param="n")
    if fields.get("logprobs"):
        raise BadRequest("`logprobs` is not supported for this model.", param="logprobs")
    if fields.get("top_logprobs"):
        raise BadRequest("`top_logprobs` is not supported for this model.", param="top_logprobs")
    modalities = fields.get("modalities")
    if modalities is not None and (not isinstance(modalities, list) or any(m != "text" for m in modalities)):
        raise BadRequest("Only the text output modality is supported for this model.", param="modalities")


def _number(fields: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise BadRequest(f"`{name}` must be a number from {low:g} to {high:g}.", param=name)
    return value


def _inference_config(fields: dict[str, Any], target: Target, dropped: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"maxTokens": target.max_output_tokens}
    for name in ("max_completion_tokens", "max_tokens"):
        value = fields.get(name)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadRequest(f"`{name}` must be a positive integer.", param=name)
            out["maxTokens"] = value
            break
    temperature = _number(fields, "temperature", 0, 2)
    if temperature is not None and temperature > 1:
        dropped.add("temperature")
    elif temperature is not None:
        out["temperature"] = temperature
    top_p = _number(fields, "top_p", 0, 1)
    if top_p is not None:
        out["topP"] = top_p
    stop = fields.get("stop")
    values = [stop] if isinstance(stop, str) else stop
    if values is not None:
        if not isinstance(values, list) or not all(isinstance(s, str) and s for s in values):
            raise BadRequest("`stop` must be a non-empty string or an array of non-empty strings.", param="stop")
        if values:
            out["stopSequences"] = list(values)
    return out


def _tool_config(fields: dict[str, Any], target: Target, dropped: set[str]) -> dict[str, Any] | None:
    tools = as_list(fields["tools"], "tools") if "tools" in fields else []
    if tools and "tools" not in target.capabilities:
        raise BadRequest(f"Model {target.public_model} does not support tools.", param="tools")
    parallel = fields.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise BadRequest("`parallel_tool_calls` must be a boolean.", param="parallel_tool_calls")
    choice = fields.get("tool_choice")
    if not tools:
        if choice in (None, "auto", "none"):
            return None
        raise BadRequest("`tool_choice` needs `tools`.", param="tool_choice")
    specs = [_tool(tool, i) for i, tool in enumerate(tools)]
    if choice == "none":
        return None
    if parallel is False:
        dropped.add("parallel_tool_calls")
    out: dict[str, Any] = {"tools": specs}
    if choice is None:
        return out
    if choice == "auto":
        out["toolChoice"] = {"auto": {}}
    elif choice == "required":
        out["toolChoice"] = {"any": {}}
    elif (isinstance(choice, dict) and choice.get("type") == "function"
          and isinstance(choice.get("function"), dict) and isinstance(choice["function"].get("name"), str)):
        out["toolChoice"] = {"tool": {"name": choice["function"]["name"]}}
    else:
        raise BadRequest("`tool_choice` must be auto, none, required or a named function.", param="tool_choice")
    return out


def _tool(tool: Any, i: int) -> dict[str, Any]:
    function, params = function_tool(tool, i)
    spec: dict[str, Any] = {"name": function["name"]}
    if isinstance(function.get("description"), str) and function["description"]:
        spec["description"] = function["description"]
    spec["inputSchema"] = {"json": params if params else dict(_EMPTY_SCHEMA)}
    if function.get("strict") is True:
        spec["strict"] = True
    return {"toolSpec": spec}


def _output_config(fields: dict[str, Any], target: Target, dropped: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    effort = reasoning_effort(fields, target, dropped)
    if effort is not None:
        out["effort"] = effort
    structured = json_schema_format(fields, target)
    if structured is not None:
        spec, schema = structured
        definition: dict[str, Any] = {"schema": orjson.dumps(schema).decode()}
        for name in ("name", "description"):
            if isinstance(spec.get(name), str) and spec[name]:
                definition[name] = spec[name]
        out["textFormat"] = {"type": "json_schema", "structure": {"jsonSchema": definition}}
    return out


def _request_metadata(fields: dict[str, Any], dropped: set[str]) -> dict[str, str]:
    name = "safety_identifier" if "safety_identifier" in fields else "user"
    if name == "safety_identifier" and "user" in fields:
        dropped.add("user")
    value = fields.get(name)
    if value is None:
        return {}
    if not isinstance(value, str):
        raise BadRequest(f"`{name}` must be a string.", param=name)
    if not _METADATA_VALUE.fullmatch(value):
        dropped.add(name)
        return {}
    return {name: value}


class OpenAIToBedrock:
    """The (openai, bedrock) translator. Stateless; share one instance."""

    passthrough = False

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        return translate_request(body, target)

    def translate_response(self, body: bytes, target: Target, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
        return response.translate_response(body, target, ctx)

    def stream_translator(self, target: Target, ctx: ResponseContext) -> BedrockToOpenAIStream:
        return BedrockToOpenAIStream(target, ctx)

    def translate_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
        return response.translate_error(status, body, headers)
