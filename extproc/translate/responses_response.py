"""OpenAI Chat Completions answers → OpenAI Responses answers: whole, and streamed event by event.

Whole: a `chat.completion` (what a provider's (openai, X) translator made of its answer) becomes a
`response`: its id is `resp_` + the completion id less its `chatcmpl-` / `msg_` prefix (stable: the
same for a stream and for the whole answer of the same provider answer), `created_at` the
completion's `created`, `model` its model.
`output`: one `message` item (id `msg_` + the same) with an `output_text` part (or a
`refusal` part) when the choice has text, then one `function_call` item per tool call (id `fc_` +
the call id). `status`: `completed`, or `incomplete` with `incomplete_details.reason`
`max_output_tokens` (finish reason `length`) or `content_filter`. `usage`: input/output tokens with
cached and reasoning details. The request fields a `response` echoes (`ECHOED`: `instructions`,
`tools`, `tool_choice`, `text`, `reasoning`, `max_output_tokens`, …) are the request's when the
context carries them (`ResponsesContext`, made by `echoing`), else the defaults: `tools` [],
`tool_choice` "auto", `parallel_tool_calls` true; `store` is false (the answer was not stored).

Stream (theory of operation): chat chunks (`data: {…}` lines, `[DONE]`) come in; Responses events
go out, each `event: <type>` + `data: {…, "sequence_number": n}`, n counting from 0. The first
chunk opens the response (`response.created`, `response.in_progress`). Text opens the message item
(`response.output_item.added`, `response.content_part.added`) and goes on as
`response.output_text.delta` (`response.refusal.delta` for a refusal); a tool call closes the open
item and opens a `function_call` item whose arguments go on as
`response.function_call_arguments.delta`. `[DONE]` closes the open item (`…done` events, then
`response.output_item.done`) and ends the response with `response.completed` (or
`response.incomplete`) carrying the whole response and its usage. An in-stream `{"error": …}`
goes on unchanged (the SDK raises it) and ends the stream. The chunks need not align with events;
the output is the same however they are split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from extproc.translate.base import ResponseContext, Usage
from extproc.translate.openai_openai import usage_from_openai
from extproc.translate.sse import SSEDecoder, encode_event

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
# The request fields the SDK's `Response` carries back, as OpenAI echoes them.
ECHOED = ("instructions", "max_output_tokens", "max_tool_calls", "metadata", "parallel_tool_calls",
          "prompt_cache_key", "reasoning", "safety_identifier", "temperature", "text", "tool_choice", "tools",
          "top_logprobs", "top_p", "truncation", "user")


@dataclass(frozen=True)
class ResponsesContext(ResponseContext):
    """A `ResponseContext` with the request's echoed fields (`ECHOED`, those the client sent)."""

    echo: tuple[tuple[str, Any], ...] = ()


def echoing(api: str, body: dict[str, Any], ctx: ResponseContext) -> ResponseContext:
    """`ctx` with the echoed fields of a Responses request `body` (other client APIs: `ctx`)."""
    if api != "openai-responses":
        return ctx
    echo = tuple((k, body[k]) for k in ECHOED if body.get(k) is not None)
    return ResponsesContext(ctx.request_id, ctx.created, ctx.include_usage, ctx.encoding_format, echo)


def base_id(chat_id: Any, ctx: ResponseContext) -> str:
    """The part of a completion id the response and item ids share (its `chatcmpl-` / `msg_`
    prefix removed; the request id when the completion has none)."""
    text = chat_id if isinstance(chat_id, str) and chat_id else ctx.request_id
    for prefix in ("chatcmpl-", "msg_"):
        if text.startswith(prefix) and len(text) > len(prefix):
            return text[len(prefix):]
    return text


def responses_usage(usage: Any) -> dict[str, Any] | None:
    u = usage_from_openai(usage)
    if u is None:
        return None
    return {"input_tokens": u.prompt_tokens, "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": u.cache_creation_tokens},
            "output_tokens": u.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens}, "total_tokens": u.total_tokens}


def envelope(rid: str, created: Any, model: Any, status: str, ctx: ResponseContext | None = None
             ) -> dict[str, Any]:
    echo = ctx.echo if isinstance(ctx, ResponsesContext) else ()
    return {"id": rid, "object": "response", "created_at": created, "status": status, "background": False,
            "error": None, "incomplete_details": None, "instructions": None, "max_output_tokens": None,
            "model": model, "output": [], "parallel_tool_calls": True, "previous_response_id": None,
            "store": False, "temperature": None, "tool_choice": "auto", "tools": [], "top_p": None,
            "truncation": "disabled", "usage": None, "metadata": {}, **dict(echo)}


def _finished(response: dict[str, Any], finish: Any, usage: Any) -> dict[str, Any]:
    reason = _INCOMPLETE.get(finish) if isinstance(finish, str) else None
    response["status"] = "incomplete" if reason else "completed"
    response["incomplete_details"] = {"reason": reason} if reason else None
    response["usage"] = responses_usage(usage)
    return response


def message_item(item_id: str, kind: str, text: str, status: str) -> dict[str, Any]:
    part = ({"type": "output_text", "text": text, "annotations": [], "logprobs": []} if kind == "output_text"
            else {"type": "refusal", "refusal": text})
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": [part]}


def call_item(call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"id": f"fc_{call_id}", "type": "function_call", "status": status, "call_id": call_id, "name": name,
            "arguments": arguments}


def to_response(completion: dict[str, Any], ctx: ResponseContext) -> dict[str, Any]:
    """A parsed `chat.completion` (first choice) as a Responses `response`."""
    base = base_id(completion.get("id"), ctx)
    response = envelope(f"resp_{base}", completion.get("created", ctx.created), completion.get("model"), "completed",
                        ctx)
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    for kind, key in (("output_text", "content"), ("refusal", "refusal")):
        if isinstance(message.get(key), str) and message[key]:
            response["output"].append(message_item(f"msg_{base}", kind, message[key], "completed"))
            break
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        response["output"].append(call_item(call.get("id") or "", function.get("name") or "",
                                            function.get("arguments") or "", "completed"))
    return _finished(response, choice.get("finish_reason"), completion.get("usage"))


class ChatToResponsesStream:
    """Chat chunk SSE in, Responses event SSE out (see the module docstring). One per stream.
    `usage` is the usage the chunks reported (None until then)."""

    def __init__(self, ctx: ResponseContext) -> None:
        self.usage: Usage | None = None
        self._ctx = ctx
        self._decoder = SSEDecoder()
        self._seq = 0
        self._response: dict[str, Any] | None = None
        self._item: dict[str, Any] | None = None  # the open output item
        self._index = -1  # its output_index
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool-call index → its item
        self._finish: Any = None
        self._usage: Any = None
        self._ended = False
        self._base = ctx.request_id

    def _emit(self, out: list[bytes], kind: str, **fields: Any) -> None:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        out.append(encode_event(orjson.dumps(data), kind))

    def _open(self, out: list[bytes], chunk: dict[str, Any]) -> dict[str, Any]:
        if self._response is None:
            self._base = base_id(chunk.get("id"), self._ctx)
            self._response = envelope(f"resp_{self._base}", chunk.get("created", self._ctx.created), chunk.get("model"),
                                      "in_progress", self._ctx)
            self._emit(out, "response.created", response=self._response)
            self._emit(out, "response.in_progress", response=self._response)
        return self._response

    def _close_item(self, out: list[bytes]) -> None:
        item, i = self._item, self._index
        if item is None:
            return
        item["status"] = "completed"
        if item["type"] == "message":
            part = item["content"][0]
            if part["type"] == "output_text":
                self._emit(out, "response.output_text.done", item_id=item["id"], output_index=i, content_index=0,
                           text=part["text"], logprobs=[])
            else:
                self._emit(out, "response.refusal.done", item_id=item["id"], output_index=i, content_index=0,
                           refusal=part["refusal"])
            self._emit(out, "response.content_part.done", item_id=item["id"], output_index=i, content_index=0,
                       part=part)
        else:
            self._emit(out, "response.function_call_arguments.done", item_id=item["id"], output_index=i,
                       name=item["name"], arguments=item["arguments"])
        self._emit(out, "response.output_item.done", output_index=i, item=item)
        assert self._response is not None
        self._response["output"].append(item)
        self._item = None

    def _add_item(self, out: list[bytes], item: dict[str, Any]) -> None:
        self._close_item(out)
        self._item, self._index = item, self._index + 1
        self._emit(out, "response.output_item.added", output_index=self._index, item={**item, "content": []}
                   if item["type"] == "message" else dict(item))

    def _text(self, out: list[bytes], kind: str, delta: str) -> None:
        item = self._item
        if item is None or item["type"] != "message" or item["content"][0]["type"] != kind:
            item = message_item(f"msg_{self._base}", kind, "", "in_progress")
            self._add_item(out, item)
            empty = dict(item["content"][0])
            self._emit(out, "response.content_part.added", item_id=item["id"], output_index=self._index,
                       content_index=0, part=empty)
        part = item["content"][0]
        if kind == "output_text":
            part["text"] += delta
            self._emit(out, "response.output_text.delta", item_id=item["id"], output_index=self._index,
                       content_index=0, delta=delta, logprobs=[])
        else:
            part["refusal"] += delta
            self._emit(out, "response.refusal.delta", item_id=item["id"], output_index=self._index,
                       content_index=0, delta=delta)

    def _tool_call(self, out: list[bytes], call: dict[str, Any]) -> None:
        n = call.get("index", 0)
        function = call.get("function") or {}
        item = self._calls.get(n)
        if item is None:
            item = call_item(call.get("id") or f"call_{n}", function.get("name") or "", "", "in_progress")
            self._calls[n] = item
            self._add_item(out, item)
        elif item is not self._item:  # arguments of a call already closed: chat never sends them
            return
        delta = function.get("arguments")
        if isinstance(delta, str) and delta:
            item["arguments"] += delta
            self._emit(out, "response.function_call_arguments.delta", item_id=item["id"], output_index=self._index,
                       delta=delta)

    def _chunk(self, out: list[bytes], chunk: dict[str, Any]) -> None:
        self._open(out, chunk)
        if chunk.get("usage"):
            self._usage = chunk["usage"]
            self.usage = usage_from_openai(chunk["usage"]) or self.usage
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str) and delta["content"]:
                self._text(out, "output_text", delta["content"])
            if isinstance(delta.get("refusal"), str) and delta["refusal"]:
                self._text(out, "refusal", delta["refusal"])
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._tool_call(out, call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]

    def _done(self, out: list[bytes]) -> None:
        response = self._open(out, {})
        self._close_item(out)
        _finished(response, self._finish, self._usage)
        self._emit(out, "response.incomplete" if response["status"] == "incomplete" else "response.completed",
                   response=response)
        self._ended = True

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for event in self._decoder.feed(chunk):
            if self._ended:
                break
            if event.data == "[DONE]":
                self._done(out)
                continue
            try:
                data = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(data, dict):
                continue
            if data.get("error") is not None and "choices" not in data:
                out.append(encode_event(event.data))  # the SDK raises it
                self._ended = True
                continue
            self._chunk(out, data)
        return b"".join(out)

    def finish(self) -> bytes:
        return b""
