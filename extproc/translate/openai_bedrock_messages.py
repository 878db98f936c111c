"""OpenAI chat messages → Bedrock Converse `system` and `messages` (part of the openai→bedrock
translator). The reference is botocore's `bedrock-runtime` service model: every content block
is a union with exactly one key.

`system` and `developer` messages, wherever they are, become `system` text blocks. The rest
become turns; consecutive turns of one role are merged, and a message that yields no block
(empty text, no tool calls) is left out. `tool` messages become `toolResult` blocks
(`content: [{text}]`) of a user turn, so consecutive ones share one turn; Bedrock rejects blank
text, so an empty tool result is sent as the text "(empty)" (a cache breakpoint on its last part
becomes a `cachePoint` after the result). Assistant `tool_calls` become
`toolUse` blocks (arguments must be a JSON object; "" counts as {}).

Parts: text (empty text is left out), refusal (assistant; as text), `image_url` with a base64
data: URL of a JPEG, PNG, GIF or WebP image → `image {format, source {bytes}}` (capability
"images" required; http(s) URLs are a 400 since Bedrock takes image bytes only; `detail` other
than auto is dropped and listed), `file` with `file_data` → `document {format, name, source
{bytes}}` for the formats Bedrock reads (PDF, CSV, DOC(X), XLS(X), HTML, TXT, Markdown; the name
is the filename's stem reduced to the characters Bedrock allows, made unique with "-<n>", else
"document-<n>"); anything else is
a 400 naming the part. A part's `cache_control` (the LiteLLM convention) or OpenAI
`prompt_cache_breakpoint` adds a `cachePoint` block after it (ttl "1h" kept; "12h" → "1h";
otherwise Bedrock's 5 minute default). A message `name` is dropped and listed as
`messages[].name`. Base64 payloads are passed on unchanged (a REST-JSON blob is base64).
"""

from __future__ import annotations

import re
from typing import Any

from extproc.errors import BadRequest
from extproc.translate.base import Target
from extproc.translate.openai_messages import OpenAIMessages, as_list, as_str, parse_tool_call

_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)((?:;[^,;]*)*);base64,(.*)", re.S)
_IMAGE_FORMATS = {"image/jpeg": "jpeg", "image/jpg": "jpeg", "image/png": "png", "image/gif": "gif",
                  "image/webp": "webp"}
_DOCUMENT_FORMATS = {
    "application/pdf": "pdf", "text/csv": "csv", "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/html": "html", "text/plain": "txt", "text/markdown": "md",
}
_NAME_DISALLOWED = re.compile(r"[^A-Za-z0-9\s\-()\[\]]+")
EMPTY_TOOL_RESULT = "(empty)"


def convert_messages(messages: list[dict[str, Any]], target: Target,
                     dropped: set[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, turns) for `messages`; adds the names of dropped fields to `dropped`."""
    return _Messages(target, dropped).convert(messages)


def has_tool_blocks(turns: list[dict[str, Any]]) -> bool:
    return any("toolUse" in block or "toolResult" in block for turn in turns for block in turn["content"])


class _Messages(OpenAIMessages):
    """OpenAI messages → (system, Converse turns), one conversion per request."""

    def __init__(self, target: Target, dropped: set[str]) -> None:
        super().__init__(target, dropped)
        self._document_names: set[str] = set()

    def _tool_results(self, message: dict[str, Any], where: str) -> list[dict[str, Any]]:
        return self._tool_result(message, where)

    def _parts(self, content: Any, where: str, *, text_only: bool) -> list[dict[str, Any]]:
        if isinstance(content, str):
            return [{"text": content}] if content else []
        if not isinstance(content, list):
            raise BadRequest("`content` must be a string or an array of content parts.", param=f"{where}.content")
        blocks: list[dict[str, Any]] = []
        for j, part in enumerate(content):
            self._part(part, f"{where}.content[{j}]", text_only, blocks)
        return blocks

    def _part(self, part: Any, where: str, text_only: bool, blocks: list[dict[str, Any]]) -> None:
        kind = part.get("type") if isinstance(part, dict) else None
        before = len(blocks)
        if kind == "text" or (kind == "refusal" and not text_only):
            text = part.get(kind)
            if not isinstance(text, str):
                raise BadRequest(f"A {kind} part needs a string `{kind}`.", param=f"{where}.{kind}")
            if text:
                blocks.append({"text": text})
        elif kind == "image_url" and not text_only:
            blocks.append(self._image(part, where))
        elif kind == "file" and not text_only:
            blocks.append(self._document(part, where))
        else:
            raise BadRequest(f"Content part type {kind!r} is not supported here for this model.", param=where)
        cache = _cache_point(part, where)
        if cache is not None and len(blocks) > before:
            blocks.append(cache)

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
            raise BadRequest(f"Model {self._target.public_model} takes images as base64 data: URLs only, "
                             "not http(s) URLs.", param=f"{where}.image_url.url")
        match = _DATA_URL.fullmatch(url)
        fmt = _IMAGE_FORMATS.get(match.group(1).lower()) if match else None
        if match is None or fmt is None or not match.group(3):
            raise BadRequest("Images must be base64 data: URLs of JPEG, PNG, GIF or WebP.",
                             param=f"{where}.image_url.url")
        return {"image": {"format": fmt, "source": {"bytes": match.group(3)}}}

    def _document(self, part: dict[str, Any], where: str) -> dict[str, Any]:
        file = part.get("file")
        data = file.get("file_data") if isinstance(file, dict) else None
        match = _DATA_URL.fullmatch(data) if isinstance(data, str) else None
        fmt = _DOCUMENT_FORMATS.get(match.group(1).lower()) if match else None
        if not isinstance(file, dict) or match is None or fmt is None or not match.group(3):
            raise BadRequest("Files must be `file_data` data: URLs of PDF, CSV, DOC, DOCX, XLS, XLSX, HTML, "
                             "TXT or Markdown documents for this model.", param=f"{where}.file")
        return {"document": {"format": fmt, "name": self._document_name(file.get("filename")),
                             "source": {"bytes": match.group(3)}}}

    def _document_name(self, filename: Any) -> str:
        stem = filename.rsplit(".", 1)[0] if isinstance(filename, str) else ""
        clean = " ".join(_NAME_DISALLOWED.sub("-", stem).split())[:180]
        base = clean or "document"
        name, n = (clean, 1) if clean else (f"{base}-1", 1)
        while name in self._document_names:
            n += 1
            name = f"{base}-{n}"
        self._document_names.add(name)
        return name

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

    def _tool_result(self, message: dict[str, Any], where: str) -> list[dict[str, Any]]:
        call_id = as_str(message.get("tool_call_id"), f"{where}.tool_call_id")
        blocks = self._parts(message.get("content"), where, text_only=True)
        texts = [block for block in blocks if "text" in block]
        result = {"toolResult": {"toolUseId": call_id, "content": texts or [{"text": EMPTY_TOOL_RESULT}]}}
        return [result, *blocks[-1:]] if blocks and "cachePoint" in blocks[-1] else [result]


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    call_id, name, arguments = parse_tool_call(call, where)
    return {"toolUse": {"toolUseId": call_id, "name": name, "input": arguments}}


def _cache_point(part: dict[str, Any], where: str) -> dict[str, Any] | None:
    cache = part.get("cache_control")
    if cache is not None:
        if (not isinstance(cache, dict) or cache.get("type") != "ephemeral"
                or not set(cache) <= {"type", "ttl"} or cache.get("ttl", "5m") not in ("5m", "1h")):
            raise BadRequest('`cache_control` must be {"type": "ephemeral"} with an optional ttl of 5m or 1h.',
                             param=f"{where}.cache_control")
        return {"cachePoint": {"type": "default", "ttl": "1h"}} if cache.get("ttl") == "1h" else \
            {"cachePoint": {"type": "default"}}
    breakpoint_ = part.get("prompt_cache_breakpoint")
    if isinstance(breakpoint_, dict):
        return {"cachePoint": {"type": "default", "ttl": "1h"}} if breakpoint_.get("ttl") == "12h" else \
            {"cachePoint": {"type": "default"}}
    return None
