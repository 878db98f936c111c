"""Validation of Bedrock runtime Converse / ConverseStream bodies against botocore's service model.

`bedrock_converse_request_problems(body, model_id, stream)` turns the JSON body into the
parameters botocore would have serialized it from (blob members base64-decoded, `modelId` from
the path) and runs botocore's `ParamValidator` on the operation's input shape: unknown members,
missing required members, wrong types, unions with other than one member, lengths and ranges
below their minimum. Each problem is one line of botocore's report. `bedrock_output_problems`
checks a response (or one ConverseStream event payload) against an output shape the same way.
"""

from __future__ import annotations

import base64
import binascii
from functools import cache
from typing import Any

__all__ = ["bedrock_converse_request_problems", "bedrock_output_problems", "bedrock_shape"]


@cache
def _model() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("bedrock-runtime")


def bedrock_shape(operation: str, member: str | None = None) -> Any:
    """The input shape of `operation`, or the output shape (or one of its members) with `member`."""
    op = _model().operation_model(operation)
    if member is None:
        return op.input_shape
    if member == "":
        return op.output_shape
    return op.output_shape.members["stream"].members[member]


def _decode(shape: Any, value: Any, path: str, problems: list[str]) -> Any:
    kind = shape.type_name
    if kind == "blob" and isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"Invalid base64 for parameter {path}")
            return value
    if kind == "structure" and isinstance(value, dict) and not shape.is_document_type:
        return {k: _decode(shape.members[k], v, f"{path}.{k}", problems) if k in shape.members else v
                for k, v in value.items()}
    if kind == "list" and isinstance(value, list):
        return [_decode(shape.member, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if kind == "map" and isinstance(value, dict):
        return {k: _decode(shape.value, v, f"{path}.{k}", problems) for k, v in value.items()}
    return value


def _report(shape: Any, params: Any) -> list[str]:
    from botocore.validate import ParamValidator

    report = ParamValidator().validate(params, shape)
    if not report.has_errors():
        return []
    lines = report.generate_report().splitlines()
    return [line for line in lines if line and not line.startswith("Parameter validation failed")]


def bedrock_converse_request_problems(body: Any, model_id: str, stream: bool) -> list[str]:
    """Problems of a Converse (or ConverseStream) JSON body sent for `model_id`."""
    if not isinstance(body, dict):
        return ["Invalid type for parameter input, value: body, type: must be a JSON object"]
    shape = bedrock_shape("ConverseStream" if stream else "Converse")
    problems: list[str] = []
    if "modelId" in body:
        problems.append('Unknown parameter in input: "modelId" (it belongs in the path)')
    params = _decode(shape, {k: v for k, v in body.items() if k != "modelId"}, "input", problems)
    params["modelId"] = model_id
    return problems + _report(shape, params)


def bedrock_output_problems(value: Any, operation: str, member: str = "") -> list[str]:
    """Problems of a response body (`member` = "") or of one ConverseStream event payload."""
    return _report(bedrock_shape(operation, member), value)
