"""Strict validation of Gemini / Vertex AI request bodies against the `google-genai` types.

Google parses request JSON as protobuf: a field is accepted by its lowerCamelCase JSON name or
its snake_case proto name, an unknown name is a 400 naming it, a value of the wrong kind is a 400
naming its path, and further checks run on the parsed message. Every function here returns a list
of `Violation` (empty = acceptable) whose `description` reads like Google's message and whose
`field` is the snake_case path (``contents[0].parts[1]``, ``""`` for the root).

The nested messages are validated with the google-genai pydantic types (`Content`, `Tool`,
`ToolConfig`, `SafetySetting`, `GenerationConfig`, …) in JSON mode (bytes are base64), unknown
enum values included (the SDK itself would accept them with a warning).
"""

from __future__ import annotations

import enum
import re
import warnings
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
import pydantic

__all__ = ["Violation", "gemini_batch_embed_request_problems", "gemini_embed_request_problems",
           "gemini_generate_request_problems", "snake"]

_CAMEL = re.compile(r"(?<!^)([A-Z])")
_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,127}$")
_PART_DATA = ("text", "inline_data", "function_call", "function_response", "file_data", "executable_code",
              "code_execution_result", "tool_call", "tool_response")
ROLES = ("user", "model", "function")
TASK_TYPES = ("TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY",
              "CLASSIFICATION", "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY")
_KINDS = {"float_parsing": "TYPE_FLOAT", "float_type": "TYPE_FLOAT", "int_parsing": "TYPE_INT32",
          "int_type": "TYPE_INT32", "int_from_float": "TYPE_INT32", "bool_parsing": "TYPE_BOOL",
          "bool_type": "TYPE_BOOL", "string_type": "TYPE_STRING", "bytes_type": "TYPE_BYTES",
          "bytes_invalid_encoding": "TYPE_BYTES"}
_TAGS = {"str", "int", "float", "bool", "bytes", "list", "dict", "none", "any"}


@dataclass(frozen=True)
class Violation:
    """One problem: `field` is the snake_case path, `description` Google's message for it."""

    field: str
    description: str


def snake(name: str) -> str:
    """The proto (snake_case) name of a JSON field name."""
    return _CAMEL.sub(r"_\1", name).lower()


@cache
def _adapter(kind: str) -> pydantic.TypeAdapter[Any]:
    from google.genai import types

    table: dict[str, Any] = {
        "contents": list[types.Content], "content": types.Content, "tools": list[types.Tool],
        "tool_config": types.ToolConfig, "safety_settings": list[types.SafetySetting],
        "generation_config": types.GenerationConfig, "image_config": types.ImageConfig,
        "model_armor_config": types.ModelArmorConfig, "string": str, "bool": bool, "int": int,
        "labels": dict[str, str],
    }
    return pydantic.TypeAdapter(table[kind])


_GENERATE_FIELDS = {
    "model": "string", "contents": "contents", "system_instruction": "content", "tools": "tools",
    "tool_config": "tool_config", "safety_settings": "safety_settings", "generation_config": "generation_config",
    "cached_content": "string", "labels": "labels", "service_tier": "string", "store": "bool",
    "continuation_token": "string",
}
_VERTEX_ONLY = {"model_armor_config": "model_armor_config"}
_EMBED_FIELDS = {"model": "string", "content": "content", "task_type": "string", "title": "string",
                 "output_dimensionality": "int"}


def _path(parts: tuple[Any, ...]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str):
            out += ("." if out else "") + snake(part)
    return out


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(p for p in loc if isinstance(p, int) or (
        isinstance(p, str) and p[:1].islower() and p.isidentifier() and p not in _TAGS))


def _unknown(parent: str, name: str) -> Violation:
    where = f" at '{parent}'" if parent else ""
    return Violation(parent, f"Invalid JSON payload received. Unknown name \"{name}\"{where}: Cannot find field.")


def _invalid(path: str, kind: str, value: Any) -> Violation:
    shown = orjson.dumps(value).decode() if not isinstance(value, bytes) else repr(value)
    return Violation(path, f"Invalid value at '{path}' ({kind}), {shown}")


def _semantic(request: str, path: str, message: str) -> Violation:
    return Violation(path, f"* {request}.{path}: {message}\n")


def _enum_problems(value: Any, path: str, out: list[Violation]) -> None:
    if isinstance(value, enum.Enum):
        if value.name not in type(value).__members__:
            out.append(_invalid(path, f"type.googleapis.com/{type(value).__name__}", value.value))
    elif isinstance(value, pydantic.BaseModel):
        for name in type(value).model_fields:
            _enum_problems(getattr(value, name), f"{path}.{name}" if path else name, out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _enum_problems(item, f"{path}[{i}]", out)


def _check_value(kind: str, value: Any, path: str, out: list[Violation]) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = _adapter(kind).validate_json(orjson.dumps(value))
    except pydantic.ValidationError as exc:
        for err in exc.errors():
            loc = _clean_loc(err["loc"])
            if err["type"] == "extra_forbidden":
                parent = _path((path, *loc[:-1])) if path else _path(loc[:-1])
                out.append(_unknown(parent, str(loc[-1])))
                continue
            at = _path((path, *loc))
            model = err.get("ctx", {}).get("class_name") if err["type"] == "model_attributes_type" else None
            proto = _KINDS.get(err["type"]) or (f"type.googleapis.com/google.ai.generativelanguage.{model}"
                                                if model else "TYPE_MESSAGE")
            out.append(_invalid(at, proto, err.get("input")))
        return None
    _enum_problems(parsed, path, out)
    return parsed


def _check_object(fields: dict[str, str], body: Any, path: str, out: list[Violation]) -> dict[str, Any]:
    """Validate the fields of a JSON object; returns them by snake_case name."""
    if not isinstance(body, dict):
        out.append(_invalid(path, "TYPE_MESSAGE", body))
        return {}
    found: dict[str, Any] = {}
    for key, value in body.items():
        name = snake(key)
        if name not in fields:
            out.append(_unknown(path, key))
            continue
        found[name] = value
        _check_value(fields[name], value, f"{path}.{name}" if path else name, out)
    return found


def _content_problems(request: str, content: dict[str, Any], path: str, roles: bool, out: list[Violation]) -> None:
    role = content.get("role")
    if roles and role is not None and role not in ROLES:
        out.append(Violation(f"{path}.role", "Please use a valid role: user, model."))
    parts = content.get("parts") or []
    if not parts:
        out.append(_semantic(request, f"{path}.parts", "contents.parts must not be empty."))
    for j, part in enumerate(parts):
        data = [snake(k) for k in part if snake(k) in _PART_DATA]
        if not data:
            out.append(_semantic(request, f"{path}.parts[{j}].data",
                                 "required oneof field 'data' must have one initialized field"))
        elif len(data) > 1:
            out.append(Violation(f"{path}.parts[{j}]", "Invalid JSON payload received. oneof field 'data' is "
                                 f"already set. Cannot set '{data[1]}'"))


def _get(obj: Any, name: str) -> Any:
    if not isinstance(obj, dict):
        return None
    camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
    return obj.get(camel, obj.get(name))


def function_names(body: dict[str, Any]) -> list[str]:
    """Names of the function declarations of a (valid) generateContent body, in order."""
    names: list[str] = []
    for tool in _get(body, "tools") or []:
        names.extend(str(_get(d, "name")) for d in _get(tool, "function_declarations") or [])
    return names


def _turn_problems(contents: list[dict[str, Any]], out: list[Violation]) -> None:
    calls_before = 0
    for i, content in enumerate(contents):
        parts = content.get("parts") or []
        calls = sum(1 for p in parts if _get(p, "function_call") is not None)
        responses = sum(1 for p in parts if _get(p, "function_response") is not None)
        if responses and not calls_before:
            out.append(Violation(f"contents[{i}]", "Please ensure that function response turn comes immediately "
                                 "after a function call turn."))
        elif responses and responses != calls_before:
            out.append(Violation(f"contents[{i}]", "Please ensure that the number of function response parts is "
                                 "equal to the number of function call parts of the function call turn."))
        calls_before = calls


def gemini_generate_request_problems(body: Any, *, vertex: bool = False) -> list[Violation]:
    """Problems of a `:generateContent` / `:streamGenerateContent` body (Vertex fields if `vertex`)."""
    fields = {**_GENERATE_FIELDS, **(_VERTEX_ONLY if vertex else {})}
    out: list[Violation] = []
    config = body.get("generationConfig", body.get("generation_config")) if isinstance(body, dict) else None
    if isinstance(config, dict):
        image = {k: v for k, v in config.items() if snake(k) == "image_config"}
        body = {**body, "generationConfig": {k: v for k, v in config.items() if k not in image}}
        for value in image.values():
            _check_value("image_config", value, "generation_config.image_config", out)
    found = _check_object(fields, body, "", out)
    if out:
        return out
    request = "GenerateContentRequest"
    contents = found.get("contents") or []
    if not contents:
        out.append(_semantic(request, "contents", "contents is not specified"))
    for i, content in enumerate(contents):
        _content_problems(request, content, f"contents[{i}]", True, out)
    if found.get("system_instruction") is not None:
        _content_problems(request, found["system_instruction"], "system_instruction", False, out)
    names = function_names(found)
    for i, tool in enumerate(found.get("tools") or []):
        for j, declaration in enumerate(_get(tool, "function_declarations") or []):
            if not _FUNCTION_NAME.match(str(_get(declaration, "name") or "")):
                out.append(_semantic(request, f"tools[{i}].function_declarations[{j}].name",
                                     "Invalid function name. Must start with a letter or an underscore. Must be "
                                     "a-z, A-Z, 0-9, or contain underscores, dots, colons and dashes, with a "
                                     "maximum length of 128."))
    calling = _get(found.get("tool_config"), "function_calling_config") or {}
    allowed = _get(calling, "allowed_function_names") or []
    mode = _get(calling, "mode") or "AUTO"
    if allowed and mode not in ("ANY", "VALIDATED"):
        out.append(_semantic(request, "tool_config.function_calling_config.allowed_function_names",
                             "allowed_function_names may only be set when mode is ANY or VALIDATED."))
    for name in allowed:
        if name not in names:
            out.append(_semantic(request, "tool_config.function_calling_config.allowed_function_names",
                                 f"Function name '{name}' is not declared in tools."))
    if mode == "ANY" and not names:
        out.append(_semantic(request, "tool_config.function_calling_config.mode",
                             "mode ANY requires function declarations in tools."))
    generation = found.get("generation_config") or {}
    for name, low, high in (("temperature", 0, 2), ("top_p", 0, 1), ("candidate_count", 1, 8)):
        value = _get(generation, name)
        if value is not None and not low <= float(value) <= high:
            out.append(_semantic(request, f"generation_config.{name}", f"must be in [{low}, {high}]."))
    if not out:
        _turn_problems(contents, out)
    return out


def gemini_embed_request_problems(body: Any, request: str = "EmbedContentRequest", path: str = "") -> list[Violation]:
    """Problems of an `:embedContent` body (or of one entry of a batch, at `path`)."""
    out: list[Violation] = []
    found = _check_object(_EMBED_FIELDS, body, path, out)
    if out:
        return out
    prefix = f"{path}." if path else ""
    if found.get("content") is None:
        out.append(_semantic(request, f"{prefix}content", "content is not specified"))
    else:
        _content_problems(request, found["content"], f"{prefix}content", False, out)
    task = found.get("task_type")
    if task is not None and task not in TASK_TYPES:
        out.append(_invalid(f"{prefix}task_type", "type.googleapis.com/google.ai.generativelanguage.TaskType", task))
    dims = found.get("output_dimensionality")
    if dims is not None and int(dims) < 1:
        out.append(_semantic(request, f"{prefix}output_dimensionality", "must be positive."))
    return out


def gemini_batch_embed_request_problems(body: Any, model: str) -> list[Violation]:
    """Problems of a `:batchEmbedContents` body; every request must name `models/{model}`."""
    out: list[Violation] = []
    if not isinstance(body, dict):
        return [_invalid("", "TYPE_MESSAGE", body)]
    for key in body:
        if snake(key) != "requests":
            out.append(_unknown("", key))
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        out.append(_semantic("BatchEmbedContentsRequest", "requests", "requests is not specified"))
        return out
    for i, entry in enumerate(requests):
        problems = gemini_embed_request_problems(entry, "BatchEmbedContentsRequest", f"requests[{i}]")
        out.extend(problems)
        if not problems and entry.get("model") != f"models/{model}":
            out.append(_semantic("BatchEmbedContentsRequest", f"requests[{i}].model",
                                 f"Model names should match, found: {entry.get('model')!r}, expected: "
                                 f"'models/{model}'."))
    return out
