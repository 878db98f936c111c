"""OpenAI chat fields whose checks are the same whatever the provider: reasoning effort and
structured output (`response_format`). Each translator shapes the result its own way."""

from __future__ import annotations

from typing import Any

from extproc.errors import BadRequest
from extproc.translate.base import Target

HANDLED, DROPPED, REJECTED = "handled", "dropped", "rejected"


def sort_fields(body: dict[str, Any], target: Target, table: dict[str, str],
                unknown: str = "Unrecognized request argument supplied: {name}") -> tuple[dict[str, Any], set[str]]:
    """(the non-null fields, the names dropped) by the translator's `table` (field → HANDLED,
    DROPPED or REJECTED): an unknown field is a 400 with the client API's `unknown` message
    (OpenAI's by default); a rejected one is a 400 naming it; an empty `metadata` is not counted
    as dropped."""
    fields = {k: v for k, v in body.items() if v is not None}
    dropped: set[str] = set()
    for name in fields:
        kind = table.get(name)
        if kind is None:
            raise BadRequest(unknown.format(name=name), param=name)
        if kind == REJECTED:
            raise BadRequest(f"`{name}` is not supported for model {target.public_model}.", param=name)
        if kind == DROPPED and (name != "metadata" or fields[name]):
            dropped.add(name)
    return fields, dropped


# The effort levels Anthropic's and Bedrock's Claude models take (`output_config.effort`).
EFFORTS = frozenset({"low", "medium", "high", "xhigh", "max"})


def reasoning_effort(fields: dict[str, Any], target: Target, dropped: set[str]) -> str | None:
    """The effort to send, or None (a hint the target does not take is dropped and named)."""
    effort = fields.get("reasoning_effort")
    if effort is None:
        return None
    if effort in EFFORTS and "reasoning" in target.capabilities:
        return str(effort)
    dropped.add("reasoning_effort")
    return None


def json_schema_format(fields: dict[str, Any], target: Target) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(json_schema spec, its schema) when the client asks for structured output; None for none
    or `text`. `json_object` and anything else is a 400: no provider here can promise "any JSON
    object" faithfully."""
    fmt = fields.get("response_format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        if "json" not in target.capabilities:
            raise BadRequest(f"Model {target.public_model} does not support structured output.",
                             param="response_format")
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(spec, dict) or not isinstance(schema, dict):
            raise BadRequest("`response_format.json_schema.schema` must be a JSON Schema object.",
                             param="response_format.json_schema.schema")
        return spec, schema
    if kind == "json_object":
        raise BadRequest(f"Model {target.public_model} does not support the `json_object` response format; "
                         "use `json_schema`.", param="response_format")
    if kind != "text":
        raise BadRequest("`response_format.type` must be text or json_schema.", param="response_format")
    return None


def function_tool(tool: Any, i: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """`tools[i]` → (its validated `function` object with a string `name`, its `parameters`
    JSON Schema or None); 400 naming the field for anything but a well-formed function tool."""
    where = f"tools[{i}]"
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise BadRequest("Only function tools are supported for this model.", param=where)
    function = tool.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise BadRequest("A function tool needs `function.name`.", param=f"{where}.function")
    params = function.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise BadRequest("`parameters` must be a JSON Schema object.", param=f"{where}.function.parameters")
    return function, params
