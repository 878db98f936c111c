"""OpenAI chat messages → Anthropic `system` and turns (part of the openai→anthropic translator).

`system` and `developer` messages, wherever they are, become the top-level `system`: one string
joined with blank lines, or text blocks when a part carries `cache_control` or
`prompt_cache_breakpoint`. The rest become turns; consecutive turns of one role are merged.
`tool` messages become `tool_result` blocks of a user turn (so consecutive ones share one turn);
assistant `tool_calls` become `tool_use` blocks (arguments must be a JSON object; "" counts as
{}). Parts: text, refusal (assistant; as text), `image_url` (data: URL → base64 source,
http(s) → url source; capability "images" required; `detail` other than auto is dropped and
listed), `file` with PDF `file_data` → document; anything else is a 400 naming the part. Empty
text is left out (Anthropic rejects empty text blocks); a turn that is one plain text block is
sent as a string. A part's `cache_control` (the LiteLLM convention) is passed on; OpenAI's
`prompt_cache_breakpoint` becomes `cache_control` ephemeral (ttl "12h" → "1h", else the 5m
default). A message `name` is dropped and listed as `messages[].name`.
"""

from __future__ import annotations

import re
from typing import Any

from extproc.errors import BadRequest
from extproc.translate.base import Target
from extproc.translate.openai_messages import OpenAIMessages, as_list, as_str, parse_tool_call

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)((?:;[^,;]*)*);base64,(.*)", re.S)
System = str | list[dict[str, Any]] | None


def convert_messages(messages: list[dict[str, Any]], target: Target,
                     dropped: set[str]) -> tuple[System, list[dict[str, Any]]]:
    """(system, turns) for `messages`; adds the names of dropped fields to `dropped`."""
    return _Messages(target, dropped).convert(messages)


class _Messages(OpenAIMessages):
    """OpenAI messages → (system, Anthropic turns), one conversion per request."""

    SKIP_EMPTY_TURNS = False

    def _tool_results(self, message: dict[str, Any], where: str) -> list[dict[str, Any]]:
        return [self._tool_result(message, where)]

    def _finish(self) -> tuple[System, list[dict[str, Any]]]:
        turns = [{"role": t["role"], "content": _collapse(t["content"])} for t in self._turns]
        if not self._system:
            return None, turns
        if any("cache_control" in block for block in self._system):
            return self._system, turns
        return "\n\n".join(block["text"] for block in self._system), turns

    def _parts(self, content: Any, where: str, *, text_only: bool) -> list[dict[str, Any]]:
        if isinstance(content, str):
            return [{"type": "text", "text": content}] if content else []
        if not isinstance(content, list):
            raise BadRequest("`content` must be a string or an array of content parts.", param=f"{where}.content")
        blocks = []
        for j, part in enumerate(content):
            block = self._part(part, f"{where}.content[{j}]", text_only)
            if block is not None:
                blocks.append(block)
        return blocks

    def _part(self, part: Any, where: str, text_only: bool) -> dict[str, Any] | None:
        kind = part.get("type") if isinstance(part, dict) else None
        block: dict[str, Any]
        if kind == "text" or (kind == "refusal" and not text_only):
            text = part.get(kind)
            if not isinstance(text, str):
                raise BadRequest(f"A {kind} part needs a string `{kind}`.", param=f"{where}.{kind}")
            if not text:
                return None
            block = {"type": "text", "text": text}
        elif kind == "image_url" and not text_only:
            block = self._image(part, where)
        elif kind == "file" and not text_only:
            block = _document(part, where)
        else:
            raise BadRequest(f"Content part type {kind!r} is not supported here for this model.", param=where)
        cache = _cache_control(part, where)
        if cache is not None:
            block["cache_control"] = cache
        return block

    def _image(self, part: dict[str, Any], where: str) -> dict[str, Any]:
        if "images" not in self._target.capabilities:
            raise BadRequest(f"Model {self._target.public_model} does not support images.", param=where)
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(image, dict) or not isinstance(url, str):
            raise BadRequest("`image_url.url` must be a string.", param=f"{where}.image_url.url")
        if image.get("detail") not in (None, "auto"):
            self._dropped.add("image_url.detail")
        if url.startswith(("http://", "https://")):
            return {"type": "image", "source": {"type": "url", "url": url}}
        match = _DATA_URL.fullmatch(url)
        if match is None or match.group(1).lower() not in _IMAGE_TYPES:
            raise BadRequest("Images must be http(s) URLs or base64 data: URLs of JPEG, PNG, GIF or WebP.",
                             param=f"{where}.image_url.url")
        return {"type": "image",
                "source": {"type": "base64", "media_type": match.group(1).lower(), "data": match.group(3)}}

    def _assistant(self, message: dict[str, Any], where: str) -> list[dict[str, Any]]:
        for name in ("audio", "function_call"):
            if message.get(name) is not None:
                raise BadRequest(f"Assistant `{name}` is not supported for this model.", param=f"{where}.{name}")
        content = message.get("content")
        if content is None and isinstance(message.get("refusal"), str):
            content = message["refusal"]
        blocks = self._parts(content, where, text_only=False) if content is not None else []
        calls = message.get("tool_calls")
        for j, call in enumerate(as_list(calls, f"{where}.tool_calls") if calls is not None else []):
            blocks.append(_tool_use(call, f"{where}.tool_calls[{j}]"))
        return blocks

    def _tool_result(self, message: dict[str, Any], where: str) -> dict[str, Any]:
        call_id = as_str(message.get("tool_call_id"), f"{where}.tool_call_id")
        content = message.get("content")
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
        if isinstance(content, str):
            if content:
                block["content"] = content
        else:
            parts = self._parts(content, where, text_only=True)
            if parts:
                block["content"] = parts
        return block


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    call_id, name, arguments = parse_tool_call(call, where)
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def _document(part: dict[str, Any], where: str) -> dict[str, Any]:
    file = part.get("file")
    data = file.get("file_data") if isinstance(file, dict) else None
    match = _DATA_URL.fullmatch(data) if isinstance(data, str) else None
    if not isinstance(file, dict) or match is None or match.group(1).lower() != "application/pdf":
        raise BadRequest("Files must be PDF `file_data` data: URLs for this model.", param=f"{where}.file")
    block: dict[str, Any] = {"type": "document",
                             "source": {"type": "base64", "media_type": "application/pdf", "data": match.group(3)}}
    if isinstance(file.get("filename"), str):
        block["title"] = file["filename"]
    return block


def _cache_control(part: dict[str, Any], where: str) -> dict[str, Any] | None:
    cache = part.get("cache_control")
    if cache is not None:
        if (not isinstance(cache, dict) or cache.get("type") != "ephemeral"
                or not set(cache) <= {"type", "ttl"} or cache.get("ttl", "5m") not in ("5m", "1h")):
            raise BadRequest('`cache_control` must be {"type": "ephemeral"} with an optional ttl of 5m or 1h.',
                             param=f"{where}.cache_control")
        return dict(cache)
    breakpoint_ = part.get("prompt_cache_breakpoint")
    if isinstance(breakpoint_, dict):
        return {"type": "ephemeral", "ttl": "1h"} if breakpoint_.get("ttl") == "12h" else {"type": "ephemeral"}
    return None


def _collapse(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if not blocks:
        return ""
    if len(blocks) == 1 and blocks[0]["type"] == "text" and len(blocks[0]) == 2:
        return str(blocks[0]["text"])
    return blocks
