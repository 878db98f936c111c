"""The shared walk over OpenAI chat `messages` that every non-OpenAI translator starts from.

`OpenAIMessages.convert` dispatches each message by role — system/developer → system parts,
user → a user turn, assistant → an assistant turn, tool → tool results in a user turn — and
merges consecutive turns of one role, as Anthropic, Gemini and Bedrock all require. A provider
module subclasses it and supplies the part conversions (`_parts`, `_assistant`,
`_tool_results`) and its turn shape (`ASSISTANT_ROLE`, `CONTENT_KEY`). One instance per request.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.errors import BadRequest
from extproc.translate.base import Target


def as_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise BadRequest(f"`{where}` must be an array.", param=where)
    return value


def as_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"`{where}` must be a string.", param=where)
    return value


class OpenAIMessages:
    ASSISTANT_ROLE = "assistant"
    CONTENT_KEY = "content"
    SKIP_EMPTY_TURNS = True

    def __init__(self, target: Target, dropped: set[str]) -> None:
        self._target = target
        self._dropped = dropped
        self._system: list[Any] = []
        self._turns: list[dict[str, Any]] = []

    def convert(self, messages: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
        """(system parts, turns); adds the names of dropped fields to the `dropped` set."""
        for i, message in enumerate(messages):
            where = f"messages[{i}]"
            role = message.get("role")
            if message.get("name") is not None:
                self._dropped.add("messages[].name")
            if role in ("system", "developer"):
                self._system.extend(self._parts(message.get("content"), where, text_only=True))
            elif role == "user":
                self._append("user", self._parts(message.get("content"), where, text_only=False))
            elif role == "assistant":
                self._append(self.ASSISTANT_ROLE, self._assistant(message, where))
            elif role == "tool":
                self._append("user", self._tool_results(message, where))
            elif role == "function":
                raise BadRequest("Function messages are deprecated; use tool messages.", param=f"{where}.role")
            else:
                raise BadRequest(f"Unknown message role {role!r}.", param=f"{where}.role")
        return self._finish()

    def _finish(self) -> tuple[Any, list[dict[str, Any]]]:
        """The provider's (system, turns) from the parts collected."""
        return self._system, self._turns

    def _append(self, role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks and self.SKIP_EMPTY_TURNS:
            return
        if self._turns and self._turns[-1]["role"] == role:
            self._turns[-1][self.CONTENT_KEY].extend(blocks)
        else:
            self._turns.append({"role": role, self.CONTENT_KEY: list(blocks)})

    def _parts(self, content: Any, where: str, *, text_only: bool) -> list[Any]:
        raise NotImplementedError

    def _assistant(self, message: dict[str, Any], where: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _tool_results(self, message: dict[str, Any], where: str) -> list[dict[str, Any]]:
        raise NotImplementedError


def parse_tool_call(call: Any, where: str) -> tuple[str, str, dict[str, Any]]:
    """An assistant message's tool call → (id, function name, arguments object); 400 naming the
    field when it is not a function call with a JSON-object `arguments` string ("" means {})."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(call, dict) or call.get("type", "function") != "function" or not isinstance(function, dict):
        raise BadRequest("Only function tool calls are supported for this model.", param=where)
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        raise BadRequest("`arguments` must be a JSON string.", param=f"{where}.function.arguments")
    try:
        parsed = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise BadRequest("Tool call `arguments` must be a JSON object.", param=f"{where}.function.arguments")
    return as_str(call.get("id"), f"{where}.id"), as_str(function.get("name"), f"{where}.function.name"), parsed
