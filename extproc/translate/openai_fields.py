"""OpenAI chat fields whose checks are the same whatever the provider: reasoning effort and
structured output (`response_format`). Each translator shapes the result its own way."""

from __future__ import annotations

from typing import Any

from extproc.errors import BadRequest
from extproc.translate.base import Target

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
