"""Anthropic Messages request → OpenAI Chat Completions request (the anthropic→openai request side).

The reference shapes are the official SDK types: `anthropic` 2.13 `MessageCreateParams` for the
client, `openai` 3.57 `CompletionCreateParams` for the result. `to_openai` is pure and returns
the OpenAI body (its `model` still the client's: the OpenAI-client translator that runs next
maps it) and the client fields it dropped. Messages and blocks: `anthropic_openai_messages`.

Every client field is decided; the table `_FIELDS` says how:
  mapped   model, messages, system, max_tokens → max_completion_tokens (or `max_tokens` when the
           target's option `max_tokens_field` says so, for servers that predate the new name),
           stop_sequences → stop, metadata.user_id → user, tools (custom tools → functions),
           tool_choice (auto → auto, any → required, tool → {function}, none → none;
           disable_parallel_tool_use → parallel_tool_calls false), output_config.format
           (json_schema → response_format json_schema, strict; capability "json"),
           output_config.effort → reasoning_effort (capability "reasoning"; dropped otherwise),
           service_tier (auto → auto, standard_only → default), stream (→ stream_options
           include_usage, so the provider reports usage), temperature, top_p (older clients send
           them; OpenAI takes both)
  dropped  and listed: top_k (OpenAI has none), thinking (the budget and display of Claude's
           thinking; reasoning is not returned by this translation), cache_control (prompt
           caching hints: top-level and on every block, listed once), diagnostics, inference_geo
           (the deployment decides where inference runs), speed "fast", user_profile_id,
           workspace_id (Anthropic account settings), tools[].eager_input_streaming,
           tools[].input_examples, and the block fields listed in `anthropic_openai_messages`
  400      container, server tools (web search, code execution, bash, text editor, memory,
           computer, browser, tool search, web fetch: any tool whose `type` is not custom),
           deferred tools, tools callable from code execution, tools without capability "tools",
           json_schema without capability "json", a missing or invalid max_tokens, any field
           the Messages API does not define (as Anthropic does).
A null value counts as absent. The input dict is never mutated.
"""

from __future__ import annotations

from typing import Any

from extproc.errors import BadRequest
from extproc.translate.anthropic_openai_messages import CACHE_CONTROL, as_str, convert_messages
from extproc.translate.base import Target
from extproc.translate.openai_fields import DROPPED, EFFORTS, HANDLED, REJECTED, sort_fields

_FIELDS = {
    **dict.fromkeys(
        ["model", "max_tokens", "messages", "system", "stop_sequences", "stream", "metadata", "output_config",
         "service_tier", "tool_choice", "tools", "temperature", "top_p", "speed"], HANDLED),
    **dict.fromkeys(
        ["top_k", "thinking", "cache_control", "diagnostics", "inference_geo", "user_profile_id",
         "workspace_id"], DROPPED),
    **dict.fromkeys(["container"], REJECTED),
}
_TIERS = {"auto": "auto", "standard_only": "default"}


def to_openai(body: dict[str, Any], target: Target) -> tuple[dict[str, Any], set[str]]:
    """(OpenAI chat body, dropped client field names) for an Anthropic Messages body."""
    fields, dropped = sort_fields(body, target, _FIELDS, "{name}: Extra inputs are not permitted")
    model = fields.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: must be a non-empty string.", param="model")

    out: dict[str, Any] = {"model": model,
                           "messages": convert_messages(fields.get("system"), fields.get("messages"), target, dropped)}
    out[target.option("max_tokens_field", "max_completion_tokens")] = _max_tokens(fields.get("max_tokens"))
    for name in ("temperature", "top_p"):
        if name in fields:
            value = fields[name]
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise BadRequest(f"{name}: must be a number.", param=name)
            out[name] = value
    stop = fields.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise BadRequest("stop_sequences: must be an array of strings.", param="stop_sequences")
        if stop:
            out["stop"] = list(stop)
    tools = fields.get("tools")
    if tools:
        if "tools" not in target.capabilities:
            raise BadRequest(f"Model {target.public_model} does not support tools.", param="tools")
        if not isinstance(tools, list):
            raise BadRequest("tools: must be an array.", param="tools")
        out["tools"] = [_tool(tool, f"tools[{i}]", target, dropped) for i, tool in enumerate(tools)]
    out.update(_tool_choice(fields.get("tool_choice"), bool(tools)))
    user = _user(fields.get("metadata"))
    if user is not None:
        out["user"] = user
    out.update(_output_config(fields.get("output_config"), target, dropped))
    tier = fields.get("service_tier")
    if tier is not None:
        if tier not in _TIERS:
            raise BadRequest("service_tier: must be one of 'auto', 'standard_only'.", param="service_tier")
        out["service_tier"] = _TIERS[tier]
    speed = fields.get("speed")
    if speed not in (None, "standard"):
        dropped.add("speed")
    stream = fields.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("stream: must be a boolean.", param="stream")
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out, dropped


def _max_tokens(value: Any) -> int:
    if value is None:
        raise BadRequest("max_tokens: Field required", param="max_tokens")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest("max_tokens: must be a non-negative integer.", param="max_tokens")
    return value


def _tool(tool: Any, where: str, target: Target, dropped: set[str]) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise BadRequest(f"{where}: must be an object.", param=where)
    kind = tool.get("type")
    if kind not in (None, "custom"):
        raise BadRequest(f"Server tool {kind!r} is not supported for model {target.public_model}; only custom "
                         "tools are.", param=where)
    if tool.get("defer_loading"):
        raise BadRequest(f"Deferred tools need tool search, which model {target.public_model} does not "
                         "support.", param=f"{where}.defer_loading")
    callers = tool.get("allowed_callers")
    if callers is not None and callers != ["direct"]:
        raise BadRequest(f"Model {target.public_model} only supports direct tool calls.",
                         param=f"{where}.allowed_callers")
    schema = tool.get("input_schema")
    if not isinstance(schema, dict):
        raise BadRequest(f"{where}.input_schema: must be a JSON Schema object.", param=f"{where}.input_schema")
    function: dict[str, Any] = {"name": as_str(tool.get("name"), f"{where}.name")}
    if tool.get("description") is not None:
        function["description"] = as_str(tool["description"], f"{where}.description")
    function["parameters"] = schema
    if tool.get("strict") is True:
        function["strict"] = True
    if tool.get("cache_control") is not None:
        dropped.add(CACHE_CONTROL)
    for name in ("eager_input_streaming", "input_examples"):
        if tool.get(name):
            dropped.add(f"tools[].{name}")
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, has_tools: bool) -> dict[str, Any]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if choice is None or (not has_tools and kind in ("auto", "none")):
        return {}
    if not isinstance(choice, dict):
        raise BadRequest("tool_choice: must be an object.", param="tool_choice")
    if not has_tools:
        raise BadRequest("tool_choice: requires `tools`.", param="tool_choice")
    out: dict[str, Any]
    if kind == "auto":
        out = {"tool_choice": "auto"}
    elif kind == "any":
        out = {"tool_choice": "required"}
    elif kind == "tool":
        out = {"tool_choice": {"type": "function",
                               "function": {"name": as_str(choice.get("name"), "tool_choice.name")}}}
    elif kind == "none":
        return {"tool_choice": "none"}
    else:
        raise BadRequest("tool_choice.type: must be one of 'auto', 'any', 'tool', 'none'.", param="tool_choice.type")
    disable = choice.get("disable_parallel_tool_use")
    if disable is not None and not isinstance(disable, bool):
        raise BadRequest("tool_choice.disable_parallel_tool_use: must be a boolean.",
                         param="tool_choice.disable_parallel_tool_use")
    if disable:
        out["parallel_tool_calls"] = False
    return out


def _user(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise BadRequest("metadata: must be an object.", param="metadata")
    for key in metadata:
        if key != "user_id":
            raise BadRequest(f"metadata.{key}: Extra inputs are not permitted", param=f"metadata.{key}")
    user = metadata.get("user_id")
    return None if user is None else as_str(user, "metadata.user_id")


def _output_config(config: Any, target: Target, dropped: set[str]) -> dict[str, Any]:
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise BadRequest("output_config: must be an object.", param="output_config")
    for key in config:
        if key not in ("effort", "format"):
            raise BadRequest(f"output_config.{key}: Extra inputs are not permitted", param=f"output_config.{key}")
    out: dict[str, Any] = {}
    effort = config.get("effort")
    if effort is not None:
        if effort not in EFFORTS:
            raise BadRequest("output_config.effort: must be one of 'low', 'medium', 'high', 'xhigh', 'max'.",
                             param="output_config.effort")
        if "reasoning" in target.capabilities:
            out["reasoning_effort"] = effort
        else:
            dropped.add("output_config.effort")
    fmt = config.get("format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
            raise BadRequest("output_config.format: must be {\"type\": \"json_schema\", \"schema\": {...}}.",
                             param="output_config.format")
        if "json" not in target.capabilities:
            raise BadRequest(f"Model {target.public_model} does not support structured output.",
                             param="output_config.format")
        out["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": "response", "schema": fmt["schema"], "strict": True}}
    return out
