"""Anthropic `system` and `messages` → OpenAI chat messages (part of the anthropic→openai request).

Reference shapes: `anthropic` 2.13 `MessageParam` (user, assistant and system roles) and its
content blocks; `openai` 3.57 `ChatCompletionMessageParam`.

Order is kept: the top-level `system` becomes the first message; `system`-role messages stay
where they are (OpenAI takes system messages anywhere). System text blocks are joined with a
blank line into one string (OpenAI-compatible servers' chat templates expect a string).

User turns: `tool_result` blocks become `tool` messages (first, in order, since OpenAI wants them
right after the assistant's `tool_calls`), the other blocks one `user` message after them.
Blocks: text → text part; image (capability "images") base64 → `data:` URL, url → URL;
document: base64 PDF → `file` part (title → filename), plain text → text part, content source →
its parts. A user or assistant turn that is one text block is sent as a string.
Tool results: string or text blocks; `is_error` has no OpenAI field and is dropped (listed).
Assistant turns: text → content, `tool_use` → `tool_calls` (arguments = input as JSON); thinking
and redacted thinking blocks are Anthropic-model artifacts with no OpenAI field: dropped (listed).

Dropped and listed: `cache_control` anywhere (one name for every place), text `citations`
in history, `is_error`, thinking blocks, image `transformations`.
400 (naming the block): image file sources, URL or file documents, documents with citations
enabled, search results, images or documents inside tool results, server-tool blocks
(server_tool_use, *_tool_result, container_upload), blocks in the wrong role, a `tool_use` whose
input is not an object, and a conversation that ends with an assistant turn (prefill: an
OpenAI-compatible provider starts a new turn instead of continuing that one).
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.errors import BadRequest
from extproc.translate.base import Target

CACHE_CONTROL = "cache_control"
IS_ERROR = "messages[].content[].is_error"
THINKING_BLOCKS = "messages[].content[].thinking"
CITATIONS = "messages[].content[].citations"
TRANSFORMATIONS = "messages[].content[].transformations"
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def convert_messages(system: Any, messages: Any, target: Target, dropped: set[str]) -> list[dict[str, Any]]:
    """OpenAI messages for an Anthropic `system` and `messages`; adds dropped names to `dropped`."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: must be a non-empty array of messages.", param="messages")
    conv = _Conversion(target, dropped)
    out: list[dict[str, Any]] = []
    if system is not None:
        text = conv.system_text(system, "system")
        if text:
            out.append({"role": "system", "content": text})
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest(f"{where}: must be an object.", param=where)
        role = message.get("role")
        content = message.get("content")
        if role == "system":
            out.append({"role": "system", "content": conv.system_text(content, f"{where}.content")})
        elif role == "user":
            out.extend(conv.user(content, f"{where}.content"))
        elif role == "assistant":
            if i == len(messages) - 1:
                raise BadRequest(f"Model {target.public_model} cannot continue a final assistant message "
                                 "(prefill).", param=where)
            out.append(conv.assistant(content, f"{where}.content"))
        else:
            raise BadRequest(f"{where}.role: must be one of 'user', 'assistant', 'system'.", param=f"{where}.role")
    return out


def as_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{where}: must be a string.", param=where)
    return value


class _Conversion:
    """The per-request conversion: holds the target (capabilities) and the dropped names."""

    def __init__(self, target: Target, dropped: set[str]) -> None:
        self._target = target
        self._dropped = dropped

    def system_text(self, content: Any, where: str) -> str:
        if isinstance(content, str):
            return content
        return "\n\n".join(part["text"] for part in self._blocks(content, where, _TEXT_ONLY))

    def user(self, content: Any, where: str) -> list[dict[str, Any]]:
        if isinstance(content, str):
            return [{"role": "user", "content": content}]
        results: list[dict[str, Any]] = []
        parts: list[dict[str, Any]] = []
        for j, block in enumerate(_block_list(content, where)):
            at = f"{where}[{j}]"
            if block.get("type") == "tool_result":
                results.append(self._tool_result(block, at))
            else:
                parts.extend(self._block(block, at, _USER))
        if parts or not results:
            results.append({"role": "user", "content": _collapse(parts)})
        return results

    def assistant(self, content: Any, where: str) -> dict[str, Any]:
        if isinstance(content, str):
            return {"role": "assistant", "content": content}
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for j, block in enumerate(_block_list(content, where)):
            at = f"{where}[{j}]"
            kind = block.get("type")
            if kind == "tool_use":
                calls.append(_tool_call(block, at, self._dropped))
            elif kind in ("thinking", "redacted_thinking"):
                self._dropped.add(THINKING_BLOCKS)
            else:
                parts.extend(self._block(block, at, _ASSISTANT))
        message: dict[str, Any] = {"role": "assistant"}
        if parts or not calls:
            message["content"] = _collapse(parts)
        if calls:
            message["tool_calls"] = calls
        return message

    def _blocks(self, content: Any, where: str, allowed: frozenset[str]) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        for j, block in enumerate(_block_list(content, where)):
            parts.extend(self._block(block, f"{where}[{j}]", allowed))
        return parts

    def _block(self, block: dict[str, Any], where: str, allowed: frozenset[str]) -> list[dict[str, Any]]:
        kind = block.get("type")
        if kind not in allowed:
            raise BadRequest(f"{where}: content block type {kind!r} is not supported here for model "
                             f"{self._target.public_model}.", param=where)
        if block.get("cache_control") is not None:
            self._dropped.add(CACHE_CONTROL)
        if kind == "text":
            if block.get("citations"):
                self._dropped.add(CITATIONS)
            return [{"type": "text", "text": as_str(block.get("text"), f"{where}.text")}]
        if kind == "image":
            return [self._image(block, where)]
        return self._document(block, where)

    def _image(self, block: dict[str, Any], where: str) -> dict[str, Any]:
        if "images" not in self._target.capabilities:
            raise BadRequest(f"Model {self._target.public_model} does not support images.", param=where)
        if block.get("transformations"):
            self._dropped.add(TRANSFORMATIONS)
        source = block.get("source")
        kind = source.get("type") if isinstance(source, dict) else None
        if kind == "url" and isinstance(source, dict):
            return {"type": "image_url", "image_url": {"url": as_str(source.get("url"), f"{where}.source.url")}}
        if kind == "base64" and isinstance(source, dict):
            media = source.get("media_type")
            if media not in _IMAGE_TYPES:
                raise BadRequest(f"{where}.source.media_type: must be one of {', '.join(sorted(_IMAGE_TYPES))}.",
                                 param=f"{where}.source.media_type")
            data = as_str(source.get("data"), f"{where}.source.data")
            return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
        raise BadRequest(f"{where}.source: only base64 and url image sources are supported for model "
                         f"{self._target.public_model}.", param=f"{where}.source")

    def _document(self, block: dict[str, Any], where: str) -> list[dict[str, Any]]:
        citations = block.get("citations")
        if isinstance(citations, dict) and citations.get("enabled"):
            raise BadRequest(f"Model {self._target.public_model} does not support citations.",
                             param=f"{where}.citations")
        source = block.get("source")
        kind = source.get("type") if isinstance(source, dict) else None
        if kind == "base64" and isinstance(source, dict) and source.get("media_type") == "application/pdf":
            data = as_str(source.get("data"), f"{where}.source.data")
            title = block.get("title")
            return [{"type": "file", "file": {"file_data": f"data:application/pdf;base64,{data}",
                                              "filename": title if isinstance(title, str) and title
                                              else "document.pdf"}}]
        if kind == "text" and isinstance(source, dict):
            return [{"type": "text", "text": as_str(source.get("data"), f"{where}.source.data")}]
        if kind == "content" and isinstance(source, dict):
            inner = source.get("content")
            if isinstance(inner, str):
                return [{"type": "text", "text": inner}]
            return self._blocks(inner, f"{where}.source.content", _DOCUMENT_CONTENT)
        raise BadRequest(f"{where}.source: only base64 PDF, text and content document sources are supported "
                         f"for model {self._target.public_model}.", param=f"{where}.source")

    def _tool_result(self, block: dict[str, Any], where: str) -> dict[str, Any]:
        call_id = as_str(block.get("tool_use_id"), f"{where}.tool_use_id")
        if block.get("cache_control") is not None:
            self._dropped.add(CACHE_CONTROL)
        if block.get("is_error"):
            self._dropped.add(IS_ERROR)
        content = block.get("content")
        if content is None or isinstance(content, str):
            return {"role": "tool", "tool_call_id": call_id, "content": content or ""}
        parts = self._blocks(content, f"{where}.content", _TEXT_ONLY)
        text: str | list[dict[str, Any]] = parts[0]["text"] if len(parts) == 1 else parts
        return {"role": "tool", "tool_call_id": call_id, "content": text if parts else ""}


_TEXT_ONLY = frozenset({"text"})
_DOCUMENT_CONTENT = frozenset({"text", "image"})
_USER = frozenset({"text", "image", "document"})
_ASSISTANT = frozenset({"text"})


def _block_list(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        raise BadRequest(f"{where}: must be a string or an array of content blocks.", param=where)
    for j, block in enumerate(content):
        if not isinstance(block, dict):
            raise BadRequest(f"{where}[{j}]: must be an object.", param=f"{where}[{j}]")
    return content


def _tool_call(block: dict[str, Any], where: str, dropped: set[str]) -> dict[str, Any]:
    tool_input = block.get("input")
    if not isinstance(tool_input, dict):
        raise BadRequest(f"{where}.input: must be an object.", param=f"{where}.input")
    caller = block.get("caller")
    if caller is not None and (not isinstance(caller, dict) or caller.get("type") != "direct"):
        raise BadRequest(f"{where}.caller: only direct tool calls are supported for this model.",
                         param=f"{where}.caller")
    if block.get("toolset_name") is not None:
        raise BadRequest(f"{where}.toolset_name: toolsets are not supported for this model.",
                         param=f"{where}.toolset_name")
    if block.get("cache_control") is not None:
        dropped.add(CACHE_CONTROL)
    return {"id": as_str(block.get("id"), f"{where}.id"), "type": "function",
            "function": {"name": as_str(block.get("name"), f"{where}.name"),
                         "arguments": orjson.dumps(tool_input).decode()}}


def _collapse(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if not parts:
        return ""
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts
