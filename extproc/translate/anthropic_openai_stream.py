"""OpenAI `chat.completion.chunk` SSE → Anthropic Messages SSE, incrementally.

Theory of operation — one state per stream, driven by decoded OpenAI events:

    START ─first chunk with choices─▶ OPEN ─finish_reason─▶ FINISHED ─[DONE] or body end─▶ DONE
      └──────┴── error event, unreadable event, or body ends before FINISHED ──▶ FAILED

START → OPEN emits `message_start` (id, model as in `anthropic_openai_response`; usage all 0:
OpenAI reports usage only at the end). Chunks without choices and without usage (Azure's
prompt-filter chunk) are skipped. In OPEN, content (or refusal) deltas go to a text block and
each tool call (by its OpenAI `index`) to a `tool_use` block (start with id, name and input {},
then `input_json_delta`s with the argument fragments); a block opens on its first delta
(`content_block_start`) and closes (`content_block_stop`) when a delta for another block arrives
or the choice finishes. Anthropic blocks cannot interleave: a fragment for a tool call whose block
was already closed makes the stream unreadable (OpenAI, vLLM and SGLang send calls in order).
Reasoning deltas emit nothing (see `anthropic_openai_response`). finish_reason closes the open
block and fixes the stop reason; the stream then waits for the usage chunk (the upstream request
asks for `stream_options.include_usage`), and `[DONE]` — or the body ending in FINISHED — emits
`message_delta` (stop_reason, stop_sequence, cumulative usage) and `message_stop`. `[DONE]`
before any finish_reason ends the message as end_turn. FAILED emits one Anthropic `error` event
and nothing after it. Framing is exactly `event: <type>\\ndata: <json>\\n\\n`.

`usage` is the provider's count from its usage chunk; None until one arrives. Lifetime: one per
stream; not thread-safe.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.errors import ANTHROPIC, GatewayError, ProviderError, render
from extproc.translate.anthropic_openai_response import (
    anthropic_usage,
    message_id,
    stop_reason,
    stream_error,
    tool_id,
    unreadable,
)
from extproc.translate.base import ResponseContext, Usage
from extproc.translate.openai_openai import usage_from_openai
from extproc.translate.sse import SSEDecoder, encode_event

_TEXT = -1


class OpenAIToAnthropicStream:
    """OpenAI chunk SSE in, Anthropic Messages SSE out (see the module docstring).

    `trusted` says whether `{"error": …}` events were rendered by the gateway (a translator
    upstream of this one) and may be shown as they are, or come from the provider.
    """

    def __init__(self, ctx: ResponseContext, *, trusted: bool = False) -> None:
        self.usage: Usage | None = None
        self._ctx = ctx
        self._trusted = trusted
        self._decoder = SSEDecoder()
        self._state = "START"
        self._id = ""
        self._model = ""
        self._raw_usage: Any = None
        self._open: int | None = None  # the OpenAI tool index of the open block, _TEXT, or None
        self._blocks = 0
        self._tools: set[int] = set()
        self._refused = False
        self._stop: tuple[str, str | None] = ("end_turn", None)

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for event in self._decoder.feed(chunk):
            if self._state in ("DONE", "FAILED"):
                break
            if event.data == "[DONE]":
                self._finish_choice(None, None, out)
                self._close(out)
                break
            try:
                data = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                data = None
            if not isinstance(data, dict):
                self._fail(out, unreadable("a stream event"))
            elif "error" in data and not data.get("choices"):
                self._fail(out, stream_error(data, self._trusted))
            else:
                self._chunk(data, out)
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        if self._state == "FINISHED":
            self._close(out)
        elif self._state in ("START", "OPEN"):
            self._fail(out, ProviderError("The provider's stream ended before the response was complete.",
                                         502, "api_error"))
        return b"".join(out)

    def _chunk(self, data: dict[str, Any], out: list[bytes]) -> None:
        if not self._id and isinstance(data.get("id"), str):
            self._id = data["id"]
        if not self._model and isinstance(data.get("model"), str):
            self._model = data["model"]
        if isinstance(data.get("usage"), dict):
            self._raw_usage = data["usage"]
            self.usage = usage_from_openai(self._raw_usage)
        choices = data.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if choice is None or self._state == "FINISHED":
            return
        self._start(out)
        delta: dict[str, Any] = choice["delta"] if isinstance(choice.get("delta"), dict) else {}
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._refused = True
        text = delta.get("content") or refusal
        if isinstance(text, str) and text:
            self._text(text, out)
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            if self._state != "OPEN":
                return
            self._tool_delta(call, out)
        if choice.get("finish_reason") is not None and self._state == "OPEN":
            self._finish_choice(choice.get("finish_reason"), choice.get("stop_reason"), out)

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open != _TEXT:
            self._close_block(out)
            self._open = _TEXT
            self._event(out, {"type": "content_block_start", "index": self._blocks,
                              "content_block": {"type": "text", "text": ""}})
        self._event(out, {"type": "content_block_delta", "index": self._blocks,
                          "delta": {"type": "text_delta", "text": text}})

    def _tool_delta(self, call: Any, out: list[bytes]) -> None:
        if not isinstance(call, dict):
            self._fail(out, unreadable("tool calls"))
            return
        index = call.get("index")
        function = call["function"] if isinstance(call.get("function"), dict) else {}
        if not isinstance(index, int) or (index in self._tools and index != self._open):
            self._fail(out, unreadable("tool calls"))
            return
        if index not in self._tools:
            self._close_block(out)
            self._tools.add(index)
            self._open = index
            self._event(out, {"type": "content_block_start", "index": self._blocks,
                              "content_block": {"type": "tool_use", "id": tool_id(call.get("id"), len(self._tools) - 1,
                                                                                   self._ctx),
                                                "name": function.get("name") or "", "input": {}}})
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            self._event(out, {"type": "content_block_delta", "index": self._blocks,
                              "delta": {"type": "input_json_delta", "partial_json": arguments}})

    def _close_block(self, out: list[bytes]) -> None:
        if self._open is not None:
            self._event(out, {"type": "content_block_stop", "index": self._blocks})
            self._blocks += 1
            self._open = None

    def _finish_choice(self, finish: Any, matched: Any, out: list[bytes]) -> None:
        if self._state == "FINISHED":
            return
        self._start(out)
        self._close_block(out)
        self._stop = stop_reason(finish, matched, self._refused, bool(self._tools))
        self._state = "FINISHED"

    def _start(self, out: list[bytes]) -> None:
        if self._state != "START":
            return
        self._state = "OPEN"
        self._event(out, {"type": "message_start", "message": {
            "id": message_id(self._id, self._ctx), "type": "message", "role": "assistant", "model": self._model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                      "output_tokens": 0}}})

    def _close(self, out: list[bytes]) -> None:
        if self._state != "FINISHED":
            return
        reason, sequence = self._stop
        self._event(out, {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
                          "usage": anthropic_usage(self._raw_usage)})
        self._event(out, {"type": "message_stop"})
        self._state = "DONE"

    def _fail(self, out: list[bytes], err: GatewayError) -> None:
        out.append(encode_event(render(err, ANTHROPIC)[1], "error"))
        self._state = "FAILED"

    @staticmethod
    def _event(out: list[bytes], event: dict[str, Any]) -> None:
        out.append(encode_event(orjson.dumps(event), event["type"]))
