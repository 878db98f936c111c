"""OpenAI Chat Completions client → Gemini `generateContent` (Gemini API and Vertex AI): requests.

The reference shapes are the official SDK types: `openai` 3.57 `CompletionCreateParams` for the
client, `google-genai` 3.6 (`Content`, `Part`, `Tool`, `FunctionDeclaration`, `ToolConfig`,
`GenerationConfig`; REST JSON in camelCase) for the provider. Responses, streams and errors are
translated in `openai_gemini_response` and `openai_gemini_stream`; messages by `openai_gemini_messages` (rules there).

Paths (the router prefixes the endpoint's base path and adds credentials):
  gemini         /{api_version}/models/{model}:generateContent, or
                 :streamGenerateContent?alt=sse when streaming; api_version from the target
                 option `api_version`, default `v1beta`: the stable v1 surface has no
                 systemInstruction, tools, toolConfig, fileData or function-call parts, nor
                 responseMimeType / response schemas, seed or thinkingConfig.
  vertex-gemini  /{api_version}/projects/{project}/locations/{location}/publishers/google/models/
                 {model}:generateContent (same body); api_version defaults to `v1`. A model that
                 contains "/" (`endpoints/123`, `publishers/x/models/y`) is used as given after the
                 location.
The body is the same for every version; `models/` and `tunedModels/` prefixes are kept.

Every client field is decided; `_FIELDS` says how:
  mapped   model (→ path), messages, max_completion_tokens | max_tokens → maxOutputTokens (unset
           otherwise: the model's own limit, as OpenAI does), temperature, top_p → topP, top_k →
           topK, seed (each an int32 for Gemini, as max tokens and n are: a larger value is a
           400), presence_penalty, frequency_penalty, stop → stopSequences, n > 1 → candidateCount
           (every candidate is a choice), tools → one Tool of functionDeclarations
           (parameters → parametersJsonSchema, passed as given), tool_choice (auto → AUTO, none →
           NONE, required → ANY, {function} → ANY + allowedFunctionNames, allowed_tools → only
           those declarations, AUTO or ANY), response_format (json_object → responseMimeType
           application/json; json_schema → + responseJsonSchema; text → nothing), reasoning_effort
           (minimal…xhigh → thinkingConfig.thinkingLevel when the target has capability
           "reasoning", else dropped), stream, stream_options (include_usage is honoured by the
           gateway), modalities ["text"] (nothing to send)
  dropped  and listed in `dropped_params`: logit_bias, prediction, verbosity, metadata, store
           (when true), user, safety_identifier, service_tier, prompt_cache_key,
           prompt_cache_options, prompt_cache_retention, parallel_tool_calls (when false: Gemini
           has no switch for it), tools[].function.strict (Gemini has no strict mode), and those
           the messages list (messages[].name, image_url.detail, file.filename, cache_control)
  400      logprobs, top_logprobs, audio, modalities with audio, functions / function_call
           (deprecated; use tools), web_search_options, moderation, custom tools, tools without
           capability "tools", images without capability "images", response_format json_object
           or json_schema without capability "json", any field OpenAI does not define.
A null value counts as absent. The input dict is never mutated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from extproc.errors import BadRequest, GatewayError
from extproc.translate import openai_gemini_response as response
from extproc.translate.base import ResponseContext, Target, UpstreamRequest, Usage
from extproc.translate.openai_fields import DROPPED, HANDLED, REJECTED, function_tool, sort_fields
from extproc.translate.openai_gemini_messages import convert_messages
from extproc.translate.openai_gemini_stream import GeminiToOpenAIStream
from extproc.translate.openai_messages import as_list
from extproc.translate.openai_openai import check_envelope

HEADERS = (("content-type", "application/json"),)
GEMINI_API_VERSION = "v1beta"
VERTEX_API_VERSION = "v1"

_HANDLED, _DROPPED, _REJECTED = HANDLED, DROPPED, REJECTED
_FIELDS = {
    **dict.fromkeys(
        ["model", "messages", "max_completion_tokens", "max_tokens", "temperature", "top_p", "top_k", "seed",
         "presence_penalty", "frequency_penalty", "stop", "n", "tools", "tool_choice", "parallel_tool_calls",
         "response_format", "reasoning_effort", "stream", "stream_options", "modalities", "logprobs",
         "top_logprobs", "store"], _HANDLED),
    **dict.fromkeys(
        ["metadata", "logit_bias", "prediction", "verbosity", "user", "safety_identifier", "service_tier",
         "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention"], _DROPPED),
    **dict.fromkeys(["audio", "functions", "function_call", "web_search_options", "moderation"], _REJECTED),
}
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_NUMBERS = {"temperature": "temperature", "top_p": "topP", "presence_penalty": "presencePenalty",
            "frequency_penalty": "frequencyPenalty"}
_INTEGERS = {"top_k": "topK", "seed": "seed"}
_EFFORTS = frozenset({"minimal", "low", "medium", "high", "xhigh"})


def translate_request(body: dict[str, Any], target: Target) -> UpstreamRequest:
    """Client body → Gemini generateContent request (see the module docstring for every rule)."""
    check_envelope(body)
    fields, dropped = sort_fields(body, target, _FIELDS)
    _reject_unservable(fields)
    if fields.get("store") is True:
        dropped.add("store")

    system, contents = convert_messages(fields["messages"], target, dropped)
    out: dict[str, Any] = {"contents": contents}
    if system is not None:
        out["systemInstruction"] = system
    declarations = _declarations(fields, target, dropped)
    config = _tool_config(fields, declarations, dropped)
    if declarations:
        out["tools"] = [{"functionDeclarations": declarations}]
    if config is not None:
        out["toolConfig"] = config
    generation = _generation_config(fields, target, dropped)
    if generation:
        out["generationConfig"] = generation
    stream = fields.get("stream") is True
    return UpstreamRequest(path=upstream_path(target, stream), body=orjson.dumps(out), headers=HEADERS,
                           dropped_params=tuple(sorted(dropped)), stream=stream)


def upstream_path(target: Target, stream: bool) -> str:
    """The generateContent (or streaming) path of `target`, per its provider type."""
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    model = target.upstream_model
    if target.provider_type == "gemini":
        resource = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
        return f"/{target.option('api_version', GEMINI_API_VERSION)}/{quote(resource)}:{method}"
    if target.provider_type == "vertex-gemini":
        project, location = target.option("project"), target.option("location")
        if not project or not location:
            raise GatewayError(f"The deployment of model {target.public_model} has no Vertex AI project or "
                               "location configured.", 500, "api_error")
        resource = model if "/" in model else f"publishers/google/models/{model}"
        version = target.option("api_version", VERTEX_API_VERSION)
        return f"/{version}/projects/{quote(project)}/locations/{quote(location)}/{quote(resource)}:{method}"
    raise GatewayError(f"Provider type {target.provider_type!r} does not speak the Gemini API.", 500, "api_error")


def _reject_unservable(fields: dict[str, Any]) -> None:
    if fields.get("logprobs"):
        raise BadRequest("`logprobs` is not supported for this model.", param="logprobs")
    if fields.get("top_logprobs"):
        raise BadRequest("`top_logprobs` is not supported for this model.", param="top_logprobs")
    modalities = fields.get("modalities")
    if modalities is not None and (not isinstance(modalities, list) or any(m != "text" for m in modalities)):
        raise BadRequest("Only the text output modality is supported for this model.", param="modalities")


def _integer(fields: dict[str, Any], name: str, minimum: int = INT32_MIN) -> int | None:
    """An integer field that becomes an int32 of Gemini's GenerationConfig (candidateCount,
    maxOutputTokens, topK, seed are `int32` in google.ai.generativelanguage's proto): a value past
    32 bits is a 400 naming the client's field rather than the provider's refusal."""
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= INT32_MAX:
        raise BadRequest(f"`{name}` must be an integer from {minimum} to {INT32_MAX}.", param=name)
    return value


def _generation_config(fields: dict[str, Any], target: Target, dropped: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("max_completion_tokens", "max_tokens"):
        limit = _integer(fields, name, 1)
        if limit is not None:
            out["maxOutputTokens"] = limit
            break
    for name, key in _NUMBERS.items():
        value = fields.get(name)
        if value is not None:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise BadRequest(f"`{name}` must be a number.", param=name)
            out[key] = value
    for name, key in _INTEGERS.items():
        integer = _integer(fields, name)
        if integer is not None:
            out[key] = integer
    stop = fields.get("stop")
    stops = [stop] if isinstance(stop, str) else stop
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        raise BadRequest("`stop` must be a string or an array of strings.", param="stop")
    if stops:
        out["stopSequences"] = list(stops)
    n = _integer(fields, "n", 1)
    if n is not None and n > 1:
        out["candidateCount"] = n
    out.update(_response_format(fields, target))
    effort = fields.get("reasoning_effort")
    if effort is not None:
        if effort in _EFFORTS and "reasoning" in target.capabilities:
            out["thinkingConfig"] = {"thinkingLevel": effort.upper()}
        else:
            dropped.add("reasoning_effort")
    return out


def _response_format(fields: dict[str, Any], target: Target) -> dict[str, Any]:
    fmt = fields.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        return {}
    if kind not in ("json_object", "json_schema"):
        raise BadRequest("`response_format.type` must be text, json_object or json_schema.", param="response_format")
    if "json" not in target.capabilities:
        raise BadRequest(f"Model {target.public_model} does not support JSON output.", param="response_format")
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise BadRequest("`response_format.json_schema.schema` must be a JSON Schema object.",
                         param="response_format.json_schema.schema")
    return {"responseMimeType": "application/json", "responseJsonSchema": schema}


def _declarations(fields: dict[str, Any], target: Target, dropped: set[str]) -> list[dict[str, Any]]:
    tools = as_list(fields["tools"], "tools") if "tools" in fields else []
    if tools and "tools" not in target.capabilities:
        raise BadRequest(f"Model {target.public_model} does not support tools.", param="tools")
    out = []
    for i, tool in enumerate(tools):
        function, params = function_tool(tool, i)
        declaration: dict[str, Any] = {"name": function["name"]}
        if isinstance(function.get("description"), str):
            declaration["description"] = function["description"]
        if params:
            declaration["parametersJsonSchema"] = params
        if function.get("strict") is True:
            dropped.add("tools[].function.strict")
        out.append(declaration)
    return out


def _tool_config(fields: dict[str, Any], declarations: list[dict[str, Any]],
                 dropped: set[str]) -> dict[str, Any] | None:
    """The functionCallingConfig for `tool_choice`; narrows `declarations` in place for allowed_tools."""
    choice = fields.get("tool_choice")
    parallel = fields.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise BadRequest("`parallel_tool_calls` must be a boolean.", param="parallel_tool_calls")
    if parallel is False and declarations:
        dropped.add("parallel_tool_calls")
    if not declarations:
        if choice in (None, "auto", "none"):
            return None
        raise BadRequest("`tool_choice` needs `tools`.", param="tool_choice")
    names = [d["name"] for d in declarations]
    config: dict[str, Any]
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        config = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if name not in names:
            raise BadRequest("`tool_choice.function.name` must name one of the `tools`.",
                             param="tool_choice.function.name")
        config = {"mode": "ANY", "allowedFunctionNames": [name]}
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        config, allowed = _allowed_tools(choice.get("allowed_tools"), names)
        declarations[:] = [d for d in declarations if d["name"] in allowed]
    else:
        raise BadRequest("`tool_choice` must be auto, none, required, a named function or allowed_tools.",
                         param="tool_choice")
    return {"functionCallingConfig": config}


def _allowed_tools(spec: Any, names: list[str]) -> tuple[dict[str, Any], set[str]]:
    where = "tool_choice.allowed_tools"
    mode = spec.get("mode") if isinstance(spec, dict) else None
    tools = spec.get("tools") if isinstance(spec, dict) else None
    if mode not in ("auto", "required") or not isinstance(tools, list) or not tools:
        raise BadRequest("`allowed_tools` needs a mode (auto or required) and a non-empty `tools` list.",
                         param=where)
    allowed = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        name = function.get("name") if isinstance(function, dict) else None
        if name not in names:
            raise BadRequest("Each allowed tool must be a function named in `tools`.", param=f"{where}.tools[{i}]")
        allowed.append(name)
    if mode == "required":
        return {"mode": "ANY", "allowedFunctionNames": allowed}, set(allowed)
    return {"mode": "AUTO"}, set(allowed)


class OpenAIToGemini:
    """The (openai, gemini) and (openai, vertex-gemini) translator; the path follows
    `target.provider_type`. Stateless; share one instance."""

    passthrough = False

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        return translate_request(body, target)

    def translate_response(self, body: bytes, target: Target, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
        return response.translate_response(body, target, ctx)

    def stream_translator(self, target: Target, ctx: ResponseContext) -> GeminiToOpenAIStream:
        return GeminiToOpenAIStream(target, ctx)

    def translate_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
        return response.translate_error(status, body, headers)
