"""OpenAI's error answers and the request checks OpenAI makes beyond the type schema."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from simulator.common import json_response

_TYPE_WORDS = ("a string", "an integer", "a number", "a boolean", "an array", "an object", "null")


def error(status: int, message: str, *, type: str | None = None, param: str | None = None,
          code: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    """An answer in OpenAI's error format."""
    kind = type or ("server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return json_response(status, body, headers)


def problems_error(problems: list[str], headers: dict[str, str]) -> web.Response:
    """A 400 listing every validation problem; `param`/`code` describe the first one."""
    unknown = [p.split(":", 1)[0] for p in problems if p.endswith(": unknown field") and "." not in
               p.split(":", 1)[0] and "[" not in p.split(":", 1)[0]]
    sentences: list[str] = []
    param: str | None = None
    code: str | None = None
    if unknown:
        noun = "argument" if len(unknown) == 1 else "arguments"
        sentences.append(f"Unrecognized request {noun} supplied: {', '.join(unknown)}")
    for problem in problems:
        path, _, what = problem.partition(": ")
        if path in unknown and what == "unknown field":
            continue
        if what == "unknown field":
            sentence, kind = f"Unknown parameter: '{path}'.", "unknown_parameter"
        elif what == "required field missing":
            sentence, kind = f"Missing required parameter: '{path}'.", "missing_required_parameter"
        elif what.startswith("must be ") and what[8:] in _TYPE_WORDS:
            sentence, kind = f"Invalid type for '{path}': {what}.", "invalid_type"
        else:
            sentence, kind = f"Invalid value for '{path}': {what}.", "invalid_value"
        if param is None and not unknown:
            param, code = path, kind
        sentences.append(sentence)
    return error(400, " ".join(sentences), param=param, code=code, headers=headers)


def semantic_problems(body: dict[str, Any]) -> list[str]:
    """Problems OpenAI reports beyond the type schema (ranges, tool pairing, stream options)."""
    problems: list[str] = []
    messages = body.get("messages") or []
    if not messages:
        problems.append("messages: must contain at least one message")
    if body.get("stream_options") is not None and body.get("stream") is not True:
        problems.append("stream_options: only allowed when 'stream' is enabled")
    for name, low, high in (("temperature", 0, 2), ("top_p", 0, 1), ("presence_penalty", -2, 2),
                            ("frequency_penalty", -2, 2), ("n", 1, 128), ("max_tokens", 1, None),
                            ("max_completion_tokens", 1, None)):
        value = body.get(name)
        if value is not None and (value < low or high is not None and value > high):
            problems.append(f"{name}: must be between {low} and {high}" if high is not None
                            else f"{name}: must be at least {low}")
    tools = body.get("tools") or []
    names = {tool_name(t) for t in tools}
    choice = body.get("tool_choice")
    if choice is not None and not tools:
        problems.append("tool_choice: only allowed when 'tools' are specified")
    elif isinstance(choice, dict) and choice.get("type") in ("function", "custom"):
        wanted = (choice.get(choice["type"]) or {}).get("name")
        if wanted not in names:
            problems.append(f"tool_choice: no tool named '{wanted}' was specified in 'tools'")
    pending: dict[str, int] = {}
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            if message.get("tool_call_id") not in pending:
                problems.append(f"messages[{i}].role: messages with role 'tool' must be a response to a "
                                "preceding message with 'tool_calls'")
            pending.pop(message.get("tool_call_id"), None)
            continue
        if pending:
            problems.append(f"messages[{min(pending.values())}].role: an assistant message with 'tool_calls' "
                            "must be followed by tool messages responding to each 'tool_call_id' "
                            f"(missing: {', '.join(pending)})")
            pending = {}
        if role == "assistant":
            pending = {c.get("id"): i for c in message.get("tool_calls") or []}
    if pending:
        problems.append(f"messages[{min(pending.values())}].role: an assistant message with 'tool_calls' "
                        "must be followed by tool messages responding to each 'tool_call_id' "
                        f"(missing: {', '.join(pending)})")
    return problems


def tool_name(tool: dict[str, Any]) -> str | None:
    kind = tool.get("type")
    return (tool.get(kind) or {}).get("name") if kind in ("function", "custom") else None
