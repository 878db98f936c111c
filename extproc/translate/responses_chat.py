"""OpenAI Responses request → OpenAI Chat Completions request, for providers that do not speak
Responses (the chat body then goes through that provider's (openai, X) translator, see
`responses_via`).

Mapped: `instructions` → a leading system message; `input` (a string → one user message; items:
messages of any role with `input_text` / `output_text` / `refusal` / `input_image` parts,
`function_call` → an assistant tool call (consecutive calls, and the assistant text just before
them, make one assistant message), `function_call_output` → a tool message); function `tools` and
`tool_choice` (none, auto, required, one function); `text.format` → `response_format` (json_schema,
json_object; text is the default); `reasoning.effort` → `reasoning_effort`; `max_output_tokens` →
`max_completion_tokens`; `temperature`, `top_p`, `parallel_tool_calls`, `user`, `safety_identifier`,
`prompt_cache_key`, `service_tier` as they are (the inner translator drops what its provider does
not take); `stream` (with usage asked for: a Responses stream always ends with it).

Stored state has no place here: an omitted `store` (the SDK's default is true) is served unstored
and named in `dropped` (so in `x-interlock-dropped-params`); `store: true`, `previous_response_id`,
`conversation`, `background`, stored `prompt` templates and `item_reference` inputs are 400s that
say what to send instead. Built-in tools (web search, file search, …) and the input items only
they produce are 400s: they are served by OpenAI-type providers only. Dropped and named: `metadata`,
`include`, `truncation: auto`, `max_tool_calls`, `text.verbosity`, `reasoning.summary`,
`reasoning` input items (OpenAI's own encrypted reasoning, which no other provider reads),
`stream_options`, `prompt_cache_retention`. A 400 for `top_logprobs` (it changes the answer).
Pure; never mutates its input.
"""

from __future__ import annotations

from typing import Any

from extproc.errors import BadRequest

STATE_HINT = ("this model's provider keeps no responses: send the whole conversation in `input` "
              "(earlier outputs as items) with `store: false`")
_PASSED = ("temperature", "top_p", "parallel_tool_calls", "user", "safety_identifier", "prompt_cache_key",
           "service_tier")
_DROPPED = ("metadata", "include", "max_tool_calls", "stream_options", "prompt_cache_retention")
# The input items only OpenAI's built-in tools produce (and their outputs).
_BUILTIN_ITEMS = frozenset({
    "file_search_call", "web_search_call", "computer_call", "computer_call_output", "image_generation_call",
    "code_interpreter_call", "local_shell_call", "local_shell_call_output", "shell_call", "shell_call_output",
    "apply_patch_call", "apply_patch_call_output", "mcp_list_tools", "mcp_approval_request",
    "mcp_approval_response", "mcp_call", "custom_tool_call", "custom_tool_call_output", "tool_search_call",
    "tool_search_output", "compaction", "compaction_trigger", "program", "program_output",
})


def refuse_state(body: dict[str, Any]) -> None:
    """The 400 for stored state and OpenAI-only features on a provider that is not OpenAI-type."""
    if body.get("store") is True:
        raise BadRequest(f"`store: true` is not available for this model: {STATE_HINT}.", param="store")
    if body.get("previous_response_id") is not None:
        raise BadRequest(f"`previous_response_id` is not available for this model: {STATE_HINT}.",
                         param="previous_response_id")
    if body.get("conversation") is not None:
        raise BadRequest(f"`conversation` is not available for this model: {STATE_HINT}.", param="conversation")
    if body.get("background") is True:
        raise BadRequest("`background` is served by OpenAI-type providers only: send the request without it "
                         "(stream it to see output as it is made).", param="background")
    if body.get("prompt") is not None:
        raise BadRequest("Stored prompt templates (`prompt`) are served by OpenAI-type providers only: send "
                         "`instructions` and `input` instead.", param="prompt")
    if body.get("top_logprobs"):
        raise BadRequest("`top_logprobs` is not available for this model.", param="top_logprobs")


def openai_only(body: dict[str, Any]) -> BadRequest | None:
    """The 400 a provider that is not OpenAI-type gives `body` for what only OpenAI-type providers
    serve (stored state, `background`, stored prompts, built-in tools); None when it has none.
    Routing reads it to keep such requests on OpenAI-type deployments."""
    try:
        refuse_state(body)
        _tools(body)
    except BadRequest as e:
        return e
    return None


def _text_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": part.get("text", "")}
    if kind == "refusal":
        return {"type": "text", "text": part.get("refusal", "")}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise BadRequest(f"{where}: an image by `file_id` is served by OpenAI-type providers only; send "
                             "`image_url` (a URL or a data URL).", param=where)
        image: dict[str, Any] = {"url": url}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise BadRequest(f"{where}: content of type `{kind}` is served by OpenAI-type providers only.", param=where)


def _content(content: Any, where: str, role: str) -> Any:
    if isinstance(content, str):
        return content
    parts = [_text_part(p, f"{where}[{j}]") for j, p in enumerate(content or ())]
    if role == "user":
        return parts
    if any(p["type"] != "text" for p in parts):
        raise BadRequest(f"{where}: only user messages may carry images.", param=where)
    return "".join(p["text"] for p in parts)


def _messages(body: dict[str, Any], dropped: set[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        out.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        return [*out, {"role": "user", "content": items}]
    open_calls: dict[str, Any] | None = None  # the assistant message tool calls join
    for i, item in enumerate(items or ()):
        where = f"input[{i}]"
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise BadRequest(f"{where}.role: `{role}` is not a message role.", param=f"{where}.role")
            message = {"role": "system" if role == "developer" else role,
                       "content": _content(item.get("content"), f"{where}.content", role)}
            out.append(message)
            open_calls = message if role == "assistant" else None
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments", "")}}
            if open_calls is None:
                open_calls = {"role": "assistant", "content": None}
                out.append(open_calls)
            open_calls.setdefault("tool_calls", []).append(call)
        elif kind == "function_call_output":
            output = item.get("output")
            content = output if isinstance(output, str) else _content(output, f"{where}.output", "tool")
            out.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": content})
            open_calls = None
        elif kind == "reasoning":
            dropped.add("input.reasoning")
        elif kind == "item_reference":
            raise BadRequest(f"{where}: `item_reference` needs stored responses; {STATE_HINT}.", param=where)
        elif kind in _BUILTIN_ITEMS:
            raise BadRequest(f"{where}: `{kind}` items belong to tools served by OpenAI-type providers only.",
                             param=where)
        else:
            raise BadRequest(f"{where}: input items of type `{kind}` are not supported for this model.", param=where)
    if not any(m["role"] != "system" for m in out):
        raise BadRequest("`input` must hold at least one message.", param="input")
    return out


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(body.get("tools") or ()):
        if tool.get("type") != "function":
            raise BadRequest(f"tools[{i}]: the built-in tool `{tool.get('type')}` is served by OpenAI-type providers "
                             "only; declare a function tool instead.", param=f"tools[{i}].type")
        function = {"name": tool.get("name")}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice is None or choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise BadRequest(f"`tool_choice` of type `{kind}` is served by OpenAI-type providers only.", param="tool_choice")


def _response_format(text: Any, dropped: set[str]) -> dict[str, Any] | None:
    if not isinstance(text, dict):
        return None
    if text.get("verbosity") is not None:
        dropped.add("text.verbosity")
    fmt = text.get("format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    if fmt["type"] == "json_schema":
        schema = {"name": fmt.get("name"), "schema": fmt.get("schema")}
        for key in ("description", "strict"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        return {"type": "json_schema", "json_schema": schema}
    raise BadRequest(f"`text.format` of type `{fmt['type']}` is not supported for this model.", param="text.format")


def to_chat(body: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """(the Chat Completions body, the client's fields dropped). 400 for what the provider cannot
    serve (see the module docstring)."""
    refuse_state(body)
    dropped: set[str] = set()
    if "store" not in body:
        dropped.add("store")
    chat: dict[str, Any] = {"model": body["model"], "messages": _messages(body, dropped)}
    tools = _tools(body)
    if tools:
        chat["tools"] = tools
    choice = _tool_choice(body.get("tool_choice"))
    if choice is not None and tools:
        chat["tool_choice"] = choice
    fmt = _response_format(body.get("text"), dropped)
    if fmt is not None:
        chat["response_format"] = fmt
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict):
        if reasoning.get("effort") is not None:
            chat["reasoning_effort"] = reasoning["effort"]
        if reasoning.get("summary") is not None or reasoning.get("generate_summary") is not None:
            dropped.add("reasoning.summary")
    if body.get("max_output_tokens"):
        chat["max_completion_tokens"] = body["max_output_tokens"]
    for key in _PASSED:
        if body.get(key) is not None:
            chat[key] = body[key]
    dropped.update(key for key in _DROPPED if body.get(key))
    if body.get("truncation") == "auto":
        dropped.add("truncation")
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat, dropped
