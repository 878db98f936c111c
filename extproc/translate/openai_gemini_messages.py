"""OpenAI chat messages → Gemini `systemInstruction` and `contents` (part of openai→gemini).

`system` and `developer` messages, wherever they are, become `systemInstruction.parts`: one text
part per text (empty texts are left out). The rest become turns with role `user` or `model`
(assistant); consecutive turns of one role are merged, and turns left without parts are not sent
(Gemini rejects empty turns). At least one turn must remain.

Parts: text, refusal (assistant; as text); `image_url` (capability "images"): a base64 data: URL
→ `inlineData {mimeType, data}`; an http(s) URL → `fileData {mimeType, fileUri}`, the MIME type
taken from the path's extension (png, jpg/jpeg, webp, heic, heif, gif; otherwise a 400 asking for
a data: URL); a Gemini Files API URI → `fileData {fileUri}` (the API knows the type); a gs:// URI
→ `fileData` for vertex-gemini only. `detail` other than auto is dropped and listed. `file` with
`file_data` as a base64 data: URL → `inlineData` of its type (`filename` dropped and listed);
anything else is a 400 naming the part. `cache_control` / `prompt_cache_breakpoint` on a part are
dropped and listed as `cache_control` (Gemini caches prompts implicitly).

Tool calls: an assistant `tool_calls` entry → a `functionCall {id, name, args}` part (arguments
must be a JSON object; "" counts as {}). A `tool` message → a `functionResponse {id, name,
response}` part of a user turn; the name is that of the earlier tool call with the same id (a 400
if there is none); the response is the tool's text parsed as a JSON object when it is one, else
`{"result": <text>}`.

Thought signatures: Gemini 3 requires the `thoughtSignature` it attached to a `functionCall` part
back with that part. The gateway keeps no state, so the response side appends the signature to
the tool call id it gives the client (`<id>__thought__<signature>`, see `join_call_id`); here the
id is split again: `<id>` is the functionCall/functionResponse id and the signature goes back on
the part.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import orjson

from extproc.errors import BadRequest
from extproc.translate.base import Target
from extproc.translate.openai_messages import OpenAIMessages, as_list, as_str, parse_tool_call

THOUGHT_SEPARATOR = "__thought__"
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)((?:;[^,;]*)*);base64,(.*)", re.S)
_FILES_API_URI = re.compile(r"https://(?:[a-z0-9-]+-)?generativelanguage(?:\.sandbox)?\.googleapis\.com/"
                            r"(?:v1|v1beta|v1alpha)/files/[a-z0-9-]+(?::download(?:\?alt=media)?)?")
_IMAGE_EXTENSIONS = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp",
                     "heic": "image/heic", "heif": "image/heif", "gif": "image/gif"}
System = dict[str, Any] | None


def convert_messages(messages: list[dict[str, Any]], target: Target,
                     dropped: set[str]) -> tuple[System, list[dict[str, Any]]]:
    """(systemInstruction or None, contents) for `messages`; adds dropped field names to `dropped`."""
    return _Messages(target, dropped).convert(messages)


def split_call_id(call_id: str) -> tuple[str, str | None]:
    """A client tool call id → (Gemini function call id, thought signature or None)."""
    base, sep, signature = call_id.partition(THOUGHT_SEPARATOR)
    return (base, signature) if sep and signature else (call_id, None)


def join_call_id(call_id: str, signature: Any) -> str:
    """The tool call id the client sees: the call id, with the part's thought signature appended."""
    return f"{call_id}{THOUGHT_SEPARATOR}{signature}" if isinstance(signature, str) and signature else call_id


class _Messages(OpenAIMessages):
    """OpenAI messages → (systemInstruction, Gemini contents), one conversion per request."""

    ASSISTANT_ROLE = "model"
    CONTENT_KEY = "parts"

    def __init__(self, target: Target, dropped: set[str]) -> None:
        super().__init__(target, dropped)
        self._call_names: dict[str, str] = {}

    def _tool_results(self, message: dict[str, Any], where: str) -> list[dict[str, Any]]:
        return [self._tool_result(message, where)]

    def _finish(self) -> tuple[System, list[dict[str, Any]]]:
        if not self._turns:
            raise BadRequest("`messages` must hold at least one user or assistant message with content.",
                             param="messages")
        return ({"parts": self._system} if self._system else None), self._turns

    def _parts(self, content: Any, where: str, *, text_only: bool) -> list[dict[str, Any]]:
        if isinstance(content, str):
            return [{"text": content}] if content else []
        if not isinstance(content, list):
            raise BadRequest("`content` must be a string or an array of content parts.", param=f"{where}.content")
        parts = []
        for j, item in enumerate(content):
            part = self._part(item, f"{where}.content[{j}]", text_only)
            if part is not None:
                parts.append(part)
        return parts

    def _part(self, part: Any, where: str, text_only: bool) -> dict[str, Any] | None:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind is not None and (part.get("cache_control") is not None
                                 or part.get("prompt_cache_breakpoint") is not None):
            self._dropped.add("cache_control")
        if kind == "text" or (kind == "refusal" and not text_only):
            text = part.get(kind)
            if not isinstance(text, str):
                raise BadRequest(f"A {kind} part needs a string `{kind}`.", param=f"{where}.{kind}")
            return {"text": text} if text else None
        if kind == "image_url" and not text_only:
            return self._image(part, where)
        if kind == "file" and not text_only:
            return self._file(part, where)
        raise BadRequest(f"Content part type {kind!r} is not supported here for this model.", param=where)

    def _image(self, part: dict[str, Any], where: str) -> dict[str, Any]:
        if "images" not in self._target.capabilities:
            raise BadRequest(f"Model {self._target.public_model} does not support images.", param=where)
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(image, dict) or not isinstance(url, str):
            raise BadRequest("`image_url.url` must be a string.", param=f"{where}.image_url.url")
        if image.get("detail") not in (None, "auto"):
            self._dropped.add("image_url.detail")
        param = f"{where}.image_url.url"
        match = _DATA_URL.fullmatch(url)
        if match is not None:
            if not match.group(1).lower().startswith("image/"):
                raise BadRequest("An image data: URL must have an image/* media type.", param=param)
            return {"inlineData": {"mimeType": match.group(1).lower(), "data": match.group(3)}}
        if _FILES_API_URI.fullmatch(url) and self._target.provider_type == "gemini":
            return {"fileData": {"fileUri": url}}
        remote = url.startswith(("http://", "https://")) or (
            url.startswith("gs://") and self._target.provider_type == "vertex-gemini")
        if not remote:
            raise BadRequest("Images must be base64 data: URLs or http(s) URLs for this model.", param=param)
        extension = urlsplit(url).path.rpartition(".")[2].lower()
        mime = _IMAGE_EXTENSIONS.get(extension)
        if mime is None:
            raise BadRequest("The image type cannot be told from this URL (it must end in .png, .jpg, .jpeg, "
                             ".webp, .heic, .heif or .gif); send the image as a base64 data: URL.", param=param)
        return {"fileData": {"mimeType": mime, "fileUri": url}}

    def _file(self, part: dict[str, Any], where: str) -> dict[str, Any]:
        file = part.get("file")
        data = file.get("file_data") if isinstance(file, dict) else None
        match = _DATA_URL.fullmatch(data) if isinstance(data, str) else None
        if not isinstance(file, dict) or match is None:
            raise BadRequest("Files must be sent as `file_data` base64 data: URLs for this model.",
                             param=f"{where}.file")
        if file.get("filename") is not None:
            self._dropped.add("file.filename")
        return {"inlineData": {"mimeType": match.group(1).lower(), "data": match.group(3)}}

    def _assistant(self, message: dict[str, Any], where: str) -> list[dict[str, Any]]:
        for name in ("audio", "function_call"):
            if message.get(name) is not None:
                raise BadRequest(f"Assistant `{name}` is not supported for this model.", param=f"{where}.{name}")
        content = message.get("content")
        if content is None and isinstance(message.get("refusal"), str):
            content = message["refusal"]
        parts = self._parts(content, where, text_only=False) if content is not None else []
        calls = message.get("tool_calls")
        for j, call in enumerate(as_list(calls, f"{where}.tool_calls") if calls is not None else []):
            parts.append(self._function_call(call, f"{where}.tool_calls[{j}]"))
        return parts

    def _function_call(self, call: Any, where: str) -> dict[str, Any]:
        call_id, name, args = parse_tool_call(call, where)
        self._call_names[call_id] = name
        base_id, signature = split_call_id(call_id)
        part: dict[str, Any] = {"functionCall": {"id": base_id, "name": name, "args": args}}
        if signature is not None:
            part["thoughtSignature"] = signature
        return part

    def _tool_result(self, message: dict[str, Any], where: str) -> dict[str, Any]:
        call_id = as_str(message.get("tool_call_id"), f"{where}.tool_call_id")
        name = self._call_names.get(call_id)
        if name is None:
            raise BadRequest(f"`tool_call_id` {call_id!r} does not match a tool call of an earlier assistant "
                             "message.", param=f"{where}.tool_call_id")
        content = message.get("content")
        text = content if isinstance(content, str) else "".join(
            p["text"] for p in self._parts(content, where, text_only=True))
        try:
            parsed = orjson.loads(text) if text.lstrip().startswith("{") else None
        except orjson.JSONDecodeError:
            parsed = None
        response = parsed if isinstance(parsed, dict) else {"result": text}
        return {"functionResponse": {"id": split_call_id(call_id)[0], "name": name, "response": response}}
