"""OpenAI Chat Completions client → Anthropic Messages provider: the request side.

The reference shapes are the official SDK types: `openai` 3.57 `CompletionCreateParams` for the
client, `anthropic` 2.13 `MessageCreateParams` for the provider. Responses, streams and errors
are translated in `openai_anthropic_response`.

Messages and content parts are converted by `openai_anthropic_messages` (rules there).

Every client field is decided; the table `_FIELDS` says how:
  mapped   model (→ upstream model), messages, max_completion_tokens | max_tokens (else the
           target's max_output_tokens), stop → stop_sequences, tools, tool_choice (auto, none,
           required → any, {function} → tool), parallel_tool_calls: false →
           tool_choice.disable_parallel_tool_use, user | safety_identifier → metadata.user_id,
           response_format (json_schema → output_config.format, text → nothing), stream,
           stream_options (include_usage is honoured by the gateway, include_obfuscation ignored),
           service_tier (auto → auto, default → standard_only; others dropped),
           reasoning_effort (low…max → output_config.effort when the target has capability
           "reasoning"; otherwise dropped), modalities ["text"] (nothing to send)
  dropped  and listed in `dropped_params`: temperature, top_p, top_k, seed, frequency_penalty,
           presence_penalty, logit_bias (sampling hints), prediction (a latency hint), verbosity,
           store (only when true), metadata (OpenAI's stored-completion tags), prompt_cache_key,
           prompt_cache_options, prompt_cache_retention (caching hints), user when
           safety_identifier wins, messages[].name, image_url.detail other than auto
  400      n > 1, logprobs, top_logprobs, audio, modalities with audio, response_format
           json_object (Anthropic's structured output cannot express "any JSON object"),
           functions / function_call (deprecated; use tools), web_search_options, moderation,
           custom tools, allowed_tools tool choice, images without capability "images", tools
           without capability "tools", json_schema without capability "json", any field OpenAI
           does not define (as OpenAI does).
A null value counts as absent. The input dict is never mutated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from extproc.errors import BadRequest, GatewayError
from extproc.translate import openai_anthropic_response as response
from extproc.translate.base import ResponseContext, Target, UpstreamRequest, Usage
from extproc.translate.openai_anthropic_messages import convert_messages
from extproc.translate.openai_anthropic_response import AnthropicToOpenAIStream
from extproc.translate.openai_fields import (
    DROPPED,
    HANDLED,
    REJECTED,
    function_tool,
    json_schema_format,
    reasoning_effort,
    sort_fields,
)
from extproc.translate.openai_messages import as_list, as_str
from extproc.translate.openai_openai import check_envelope

PATH = "/v1/messages"
ANTHROPIC_VERSION = "2026-10-21"
HEADERS = (("anthropic-version", ANTHROPIC_VERSION), ("content-type", "application/json"))

_HANDLED, _DROPPED, _REJECTED = HANDLED, DROPPED, REJECTED
_FIELDS = {
    **dict.fromkeys(
        ["model", "messages", "max_completion_tokens", "max_tokens", "stop", "tools", "tool_choice",
         "parallel_tool_calls", "user", "safety_identifier", "response_format", "stream",
         "stream_options", "service_tier", "reasoning_effort", "modalities", "n", "logprobs",
         "top_logprobs", "store"], _HANDLED),
    **dict.fromkeys(
        ["temperature", "top_p", "top_k", "seed", "frequency_penalty", "presence_penalty", "logit_bias",
         "prediction", "verbosity", "metadata", "prompt_cache_key", "prompt_cache_options",
         "prompt_cache_retention"], _DROPPED),
    **dict.fromkeys(["audio", "functions", "function_call", "web_search_options", "moderation"], _REJECTED),
}
_EMPTY_SCHEMA = {"type": "object", "properties": {}}


def translate_request(body: dict[str, Any], target: Target) -> UpstreamRequest:
    """Client body → Anthropic Messages request (see the module docstring for every rule)."""
    check_envelope(body)
    fields, dropped = sort_fields(body, target, _FIELDS)
    _reject_unservable(fields)

    out: dict[str, Any] = {"model": target.upstream_model, "max_tokens": _max_tokens(fields, target)}
    system, messages = convert_messages(fields["messages"], target, dropped)
    if system is not None:
        out["system"] = system
    out["messages"] = messages
    if fields.get("tools"):
        if "tools" not in target.capabilities:
            raise BadRequest(f"Model {target.public_model} does not support tools.", param="tools")
        out["tools"] = [_tool(tool, i) for i, tool in enumerate(as_list(fields["tools"], "tools"))]
    choice = _tool_choice(fields, bool(out.get("tools")))
    if choice is not None:
        out["tool_choice"] = choice
    stop = _stop(fields.get("stop"))
    if stop:
        out["stop_sequences"] = stop
    user_id = fields.get("safety_identifier", fields.get("user"))
    if user_id is not None:
        if "safety_identifier" in fields and "user" in fields:
            dropped.add("user")
        out["metadata"] = {"user_id": as_str(user_id, "safety_identifier" if "safety_identifier" in fields else "user")}
    output_config = _output_config(fields, target, dropped)
    if output_config:
        out["output_config"] = output_config
    tier = fields.get("service_tier")
    if tier in ("auto", "default"):
        out["service_tier"] = "auto" if tier == "auto" else "standard_only"
    elif tier is not None:
        dropped.add("service_tier")
    if fields.get("store") is True:
        dropped.add("store")
    stream = fields.get("stream") is True
    if stream:
        out["stream"] = True
    return UpstreamRequest(path=PATH, body=orjson.dumps(out), headers=HEADERS,
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


def _max_tokens(fields: dict[str, Any], target: Target) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = fields.get(name)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise BadRequest(f"`{name}` must be a non-negative integer.", param=name)
            return value
    return target.max_output_tokens


def _stop(stop: Any) -> list[str]:
    values = [stop] if isinstance(stop, str) else stop
    if values is None:
        return []
    if not isinstance(values, list) or not all(isinstance(s, str) for s in values):
        raise BadRequest("`stop` must be a string or an array of strings.", param="stop")
    return list(values)


def _tool(tool: Any, i: int) -> dict[str, Any]:
    function, params = function_tool(tool, i)
    out: dict[str, Any] = {"name": function["name"]}
    if isinstance(function.get("description"), str):
        out["description"] = function["description"]
    out["input_schema"] = params if params else dict(_EMPTY_SCHEMA)
    if function.get("strict") is True:
        out["strict"] = True
    return out


def _tool_choice(fields: dict[str, Any], has_tools: bool) -> dict[str, Any] | None:
    choice = fields.get("tool_choice")
    parallel = fields.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise BadRequest("`parallel_tool_calls` must be a boolean.", param="parallel_tool_calls")
    if not has_tools:
        if choice in (None, "auto", "none"):
            return None
        raise BadRequest("`tool_choice` needs `tools`.", param="tool_choice")
    out: dict[str, Any]
    if choice is None or choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif (isinstance(choice, dict) and choice.get("type") == "function"
          and isinstance(choice.get("function"), dict) and isinstance(choice["function"].get("name"), str)):
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise BadRequest("`tool_choice` must be auto, none, required or a named function.", param="tool_choice")
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    elif choice is None:
        return None
    return out


def _output_config(fields: dict[str, Any], target: Target, dropped: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    effort = reasoning_effort(fields, target, dropped)
    if effort is not None:
        out["effort"] = effort
    structured = json_schema_format(fields, target)
    if structured is not None:
        out["format"] = {"type": "json_schema", "schema": structured[1]}
    return out


class OpenAIToAnthropic:
    """The (openai, anthropic) translator. Stateless; share one instance."""

    passthrough = False

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        return translate_request(body, target)

    def translate_response(self, body: bytes, target: Target, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
        return response.translate_response(body, ctx)

    def stream_translator(self, target: Target, ctx: ResponseContext) -> AnthropicToOpenAIStream:
        return AnthropicToOpenAIStream(target, ctx)

    def translate_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
        return response.translate_error(status, body, headers.get("retry-after"))
