"""Simulated OpenAI Responses API: `POST /v1/responses` (JSON and SSE), `GET` and `DELETE
/v1/responses/{id}`, `GET /v1/responses/{id}/input_items` and `POST /v1/responses/{id}/cancel`; on
Azure the same under `/openai/v1/responses`.

Requests are validated against the `openai` SDK's `ResponseCreateParams` (streaming or not) and
answered with what the SDK's `Response` and stream event types describe. The model's answer is
planned as for chat (`openai_api.plan`) over the input's messages and function tools: a function
call when tools are offered on a user turn (and `tool_choice` is not "none"), else text — JSON
made from the schema (`textgen.example_object`) when `text.format` is a JSON schema.

Stored state: a response made with `store` true or omitted (OpenAI's default) is kept in memory
per API key (OpenAI keeps responses per organization and project: a key of another account does
not see them); `previous_response_id` must name one of the same key's responses (else 404
`previous_response_not_found`, as OpenAI answers); `GET` answers it, `DELETE` forgets it,
`input_items` pages through the input it was made from (the SDK's `ResponseItemList`: `limit`
1–100, default 20, `order` desc by default, `after` an item id). `background: true` answers at
once with a `queued` response (stored) that stays queued — the simulator runs no background work —
until `cancel` makes it `cancelled`; cancelling a response made without `background` is OpenAI's
400.
Usage counts the input's text as `openai_api.input_tokens` does for chat.

Behaviours as for chat (`simulator.state.Behaviour`): admission errors in OpenAI's (or Azure's)
error format and `hang` (`common.admit`); `fault` (`simulator.faults`: a whole answer replaced or
broken, a stream cut, stalled or reset after `fault_after` content deltas, which are
`response.output_text.delta` and `response.function_call_arguments.delta` events, an `html` or
`invalid_json` stream answered whole instead); `stream_error_after` ends the stream after that many
content deltas with OpenAI's in-stream `error` event (the SDK's `ResponseErrorEvent`: `type`
`error`, `code`, `message`, `param` null, the next `sequence_number`) for `error_status`. A
response whose answer is faulted is not stored.
"""

from __future__ import annotations

import weakref
from typing import Any

import orjson
from aiohttp import web

from simulator import faults, textgen
from simulator.azure_api import AzureMixin
from simulator.common import ClientGone, admit, bearer_token, json_response, open_stream, read_body, write
from simulator.openai_api import STATUS_ERRORS, ChatCompletions, input_tokens, plan
from simulator.openai_checks import error, problems_error
from simulator.state import SimState
from simulator.textgen import Output
from simulator.validate import body_problems, check

_STORES: weakref.WeakKeyDictionary[SimState, dict[tuple[str, str], dict[str, Any]]] = weakref.WeakKeyDictionary()
_INPUTS: weakref.WeakKeyDictionary[SimState, dict[tuple[str, str], list[dict[str, Any]]]] = weakref.WeakKeyDictionary()


def _store(state: SimState) -> dict[tuple[str, str], dict[str, Any]]:
    return _STORES.setdefault(state, {})


def _inputs(state: SimState) -> dict[tuple[str, str], list[dict[str, Any]]]:
    return _INPUTS.setdefault(state, {})


def responses_request_problems(body: Any) -> list[str]:
    from openai.types.responses import response_create_params as params

    return body_problems(_image_detail_defaulted(body) if isinstance(body, dict) else body,
                         params.ResponseCreateParamsNonStreaming, params.ResponseCreateParamsStreaming)


def _image_detail_defaulted(body: dict[str, Any]) -> dict[str, Any]:
    """`body` with `detail: "auto"` in each `input_image` part that has none: the SDK's type marks
    it required, the API defaults it to `auto` (its reference, and the SDK's own docstring)."""
    items = body.get("input")
    if not isinstance(items, list):
        return body
    fixed = []
    for item in items:
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "input_image"
                                             and "detail" not in p for p in content):
            item = {**item, "content": [{**p, "detail": "auto"} if isinstance(p, dict) and p.get("type") ==
                                        "input_image" and "detail" not in p else p for p in content]}
        fixed.append(item)
    return {**body, "input": fixed}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text") or p.get("refusal") or "" for p in content or () if isinstance(p, dict))


def as_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The request as the chat planner reads it: messages (text only) and function tools."""
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    for item in items if isinstance(items, list) else ():
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item.get("role"), "content": _text(item.get("content"))})
        elif kind == "function_call":
            messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": item.get("call_id"), "type": "function",
                 "function": {"name": item.get("name"), "arguments": item.get("arguments")}}]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": _text(item.get("output"))})
    tools = [{"type": "function", "function": {"name": t["name"], "parameters": t.get("parameters") or {}}}
             for t in body.get("tools") or () if t.get("type") == "function"]
    choice = body.get("tool_choice", "auto")
    if isinstance(choice, dict) and choice.get("type") == "function":
        choice = {"type": "function", "function": {"name": choice.get("name")}}
    return {"model": body["model"], "messages": messages or [{"role": "user", "content": ""}], "tools": tools,
            "tool_choice": choice, "max_completion_tokens": body.get("max_output_tokens")}


class Responses(ChatCompletions):
    """One `POST /v1/responses` exchange (OpenAI; `AzureResponses` for Azure)."""

    def key(self) -> str:
        return bearer_token(self.request) or ""

    def model_of(self, body: dict[str, Any]) -> str:
        return str(body["model"])

    async def answer(self) -> web.StreamResponse:
        body, refused = await read_body(self.request, self.authenticate(), self.unparsable)
        if refused is not None:
            return refused
        problems = responses_request_problems(body)
        if not problems and "model" not in body:
            problems = ["model: required field missing"]
        if problems:
            return problems_error(problems, self._headers())
        body = {**body, "model": self.model_of(body)}
        previous = body.get("previous_response_id")
        if previous is not None and (self.key(), previous) not in _store(self.state):
            return error(404, f"Previous response with id '{previous}' not found.", param="previous_response_id",
                         code="previous_response_not_found", headers=self._headers())
        model = body["model"]
        behaviour = self.state.behaviour(model)
        chat = as_chat(body)
        refused = self.capability_refusal(chat, model, behaviour)
        if refused is not None:
            return refused
        prompt = input_tokens(chat)
        refused = await admit(self.state, self.request, behaviour, model,
                              lambda status: self.status_error(status, behaviour, model, prompt))
        if refused is not None:
            return refused
        output = plan(chat, behaviour)
        fmt = (body.get("text") or {}).get("format") or {}
        if not output.tool_calls and fmt.get("type") == "json_schema":
            text = orjson.dumps(textgen.example_object(fmt.get("schema") or {})).decode()
            output = Output(textgen.fragments(text), "end")
        self.rid = "resp_" + self.state.random_id(48, "0123456789abcdef")
        self.items = self._items(output)
        if body.get("background") is True:  # queued, and stays so (no background work here)
            queued = {**self._response(body, "queued", None, prompt), "background": True}
            self._keep({**body, "store": True}, queued)
            return json_response(200, queued, self._headers(self.rate_headers(behaviour, prompt, False)))
        if body.get("stream") is True:
            return await self._stream_response(body, behaviour, output, prompt)
        await self.state.wait_whole(behaviour, output.output_tokens, model, await self.request.read(), prompt)
        result = self._response(body, "completed", output, prompt)
        if behaviour.fault is None:
            self._keep(body, result)
        headers = self._headers(self.rate_headers(behaviour, prompt, False))
        return await faults.whole_answer(self.state, self.request, behaviour.fault, result, headers)

    def _items(self, output: Output) -> list[dict[str, Any]]:
        if output.tool_calls:
            return [{"id": "fc_" + self.state.random_id(40, "0123456789abcdef"), "type": "function_call",
                     "status": "completed", "call_id": "call_" + self.state.random_id(24), "name": c.name,
                     "arguments": c.arguments} for c in output.tool_calls]
        return [{"id": "msg_" + self.state.random_id(40, "0123456789abcdef"), "type": "message",
                 "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": output.text, "annotations": [], "logprobs": []}]}]

    def _response(self, body: dict[str, Any], status: str, output: Output | None, prompt: int) -> dict[str, Any]:
        done = output is not None
        incomplete = done and output is not None and output.stop == "length"
        usage = None
        if output is not None:
            usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                     "output_tokens": output.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                     "total_tokens": prompt + output.output_tokens}
        return {
            "id": self.rid, "object": "response", "created_at": int(self.state.clock()),
            "status": "incomplete" if incomplete else status, "background": False, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
            "model": body["model"], "output": self.items if done else [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"), "reasoning": {"effort": None, "summary": None},
            "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0), "truncation": body.get("truncation") or "disabled",
            "usage": usage, "user": body.get("user"), "metadata": body.get("metadata") or {},
        }

    def _keep(self, body: dict[str, Any], result: dict[str, Any]) -> None:
        if body.get("store", True) is not False:
            _store(self.state)[(self.key(), self.rid)] = result
            _inputs(self.state)[(self.key(), self.rid)] = self._input_items(body.get("input"))

    def _input_items(self, items: Any) -> list[dict[str, Any]]:
        """The request's input as the stored items `input_items` lists (the SDK's `ResponseItem`s)."""
        out: list[dict[str, Any]] = []
        for item in [{"role": "user", "content": items}] if isinstance(items, str) else items or ():
            kind = item.get("type", "message")
            new_id = self.state.random_id(40, "0123456789abcdef")
            if kind == "message":
                content = item.get("content")
                parts = [{"type": "input_text", "text": content}] if isinstance(content, str) else content
                out.append({"id": item.get("id") or "msg_" + new_id, "type": "message", "role": item.get("role"),
                            "status": "completed", "content": parts})
            elif kind == "function_call_output":
                out.append({"id": item.get("id") or "fco_" + new_id, "status": "completed", **item})
            else:
                out.append({"id": item.get("id") or "item_" + new_id, "status": "completed", **item})
        return out

    async def _stream_response(self, body: dict[str, Any], behaviour: Any, output: Output, prompt: int
                               ) -> web.StreamResponse:
        seq = 0

        def event(kind: str, **fields: Any) -> bytes:
            nonlocal seq
            data = {"type": kind, "sequence_number": seq, **fields}
            seq += 1
            return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

        deltas = 0

        async def broken() -> bool:
            """Before the next content delta: True when `stream_error_after` or a stream fault
            ended the stream there (the error event written, or the fault struck)."""
            if faults.stream_broken(behaviour, deltas):
                await faults.break_off(response, self._error_event(behaviour.error_status, seq))
                return True
            if faults.stream_faulted(behaviour.fault, behaviour.fault_after, deltas):
                await faults.strike(self.state, self.request, response, behaviour.fault)
                return True
            return False

        await self.state.wait_first(behaviour, body["model"], await self.request.read(), prompt)
        headers = self._headers(self.rate_headers(behaviour, prompt, False))
        if behaviour.fault in ("html", "invalid_json"):
            whole = orjson.dumps(self._response(body, "completed", output, prompt))
            return faults.whole_fault(behaviour.fault, whole, headers) or web.Response(status=500)
        response = await open_stream(self.request, headers)
        opening = self._response(body, "in_progress", None, prompt)
        try:
            await write(response, event("response.created", response=opening))
            await write(response, event("response.in_progress", response=opening))
            for i, item in enumerate(self.items):
                if item["type"] == "message":
                    await write(response, event("response.output_item.added", output_index=i,
                                                item={**item, "status": "in_progress", "content": []}))
                    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                    await write(response, event("response.content_part.added", item_id=item["id"], output_index=i,
                                                content_index=0, part=part))
                    for n, piece in enumerate(output.pieces):
                        if n:
                            await self.state.wait_token(behaviour)
                        if await broken():
                            return response
                        deltas += 1
                        await write(response, event("response.output_text.delta", item_id=item["id"],
                                                    output_index=i, content_index=0, delta=piece, logprobs=[]))
                    text = item["content"][0]["text"]
                    await write(response, event("response.output_text.done", item_id=item["id"], output_index=i,
                                                content_index=0, text=text, logprobs=[]))
                    await write(response, event("response.content_part.done", item_id=item["id"], output_index=i,
                                                content_index=0, part=item["content"][0]))
                else:
                    await write(response, event("response.output_item.added", output_index=i,
                                                item={**item, "status": "in_progress", "arguments": ""}))
                    for n, piece in enumerate(textgen.fragments(item["arguments"])):
                        if n:
                            await self.state.wait_token(behaviour)
                        if await broken():
                            return response
                        deltas += 1
                        await write(response, event("response.function_call_arguments.delta", item_id=item["id"],
                                                    output_index=i, delta=piece))
                    await write(response, event("response.function_call_arguments.done", item_id=item["id"],
                                                output_index=i, name=item["name"], arguments=item["arguments"]))
                await write(response, event("response.output_item.done", output_index=i, item=item))
            final = self._response(body, "completed", output, prompt)
            self._keep(body, final)
            kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
            await write(response, event(kind, response=final))
            await response.write_eof()
        except ClientGone:
            pass
        return response

    def _error_event(self, status: int, sequence_number: int) -> bytes:
        """The `error` event (the SDK's `ResponseErrorEvent`) that breaks off a Responses stream
        (`stream_error_after`) for the error `status`."""
        message, kind, code = STATUS_ERRORS.get(status, ("The server had an error while processing your request.",
                                                          "server_error", None))
        data = {"type": "error", "code": code or kind, "message": message, "param": None,
                "sequence_number": sequence_number}
        return b"event: error\ndata: " + orjson.dumps(data) + b"\n\n"


class AzureResponses(AzureMixin, Responses):
    """Azure's v1 Responses: the deployment is the body's `model`; Azure's key, headers and errors."""

    def __init__(self, state: SimState, request: web.Request) -> None:
        super().__init__(state, request)
        self._azure_init()

    def key(self) -> str:
        return self.request.headers.get("api-key", "")

    def model_of(self, body: dict[str, Any]) -> str:
        return str(body["model"])


async def responses(state: SimState, request: web.Request) -> web.StreamResponse:
    azure = request.path.startswith("/openai/")
    return await (AzureResponses(state, request) if azure else Responses(state, request)).answer()


async def stored_response(state: SimState, request: web.Request) -> web.Response:
    """`GET` (the stored response) or `DELETE` (forget it) `/v1/responses/{id}`; `GET
    …/{id}/input_items` (a page of its input items); `POST …/{id}/cancel` (a background one)."""
    azure = request.path.startswith("/openai/")
    key = request.headers.get("api-key", "") if azure else bearer_token(request) or ""
    if not state.key_accepted(key):
        return error(401, "Incorrect API key provided.", code="invalid_api_key")
    rid = request.match_info["id"]
    stored = _store(state).get((key, rid))
    if stored is None:
        return error(404, f"Response with id '{rid}' not found.", param="response_id", code="not_found")
    if request.path.endswith("/input_items"):
        return _input_items_page(_inputs(state).get((key, rid), []), request)
    if request.path.endswith("/cancel"):
        if not stored.get("background"):
            return error(400, "Cannot cancel a synchronous response.", param="response_id")
        if stored["status"] in ("queued", "in_progress"):
            stored["status"] = "cancelled"
        return json_response(200, stored)
    if request.method == "DELETE":
        del _store(state)[(key, rid)]
        _inputs(state).pop((key, rid), None)
        return json_response(200, {"id": rid, "object": "response.deleted", "deleted": True})
    return json_response(200, stored)


def _input_items_page(items: list[dict[str, Any]], request: web.Request) -> web.Response:
    """A `ResponseItemList` page of `items` for the query (`InputItemListParams`, as OpenAI reads it)."""
    from openai.types.responses.input_item_list_params import InputItemListParams

    query: dict[str, Any] = dict(request.query)
    if "limit" in query:
        query["limit"] = int(query["limit"]) if query["limit"].isdigit() else query["limit"]
    query.pop("include[]", None)
    problems = check(InputItemListParams, query)
    limit = query.get("limit", 20)
    if not problems and not 1 <= limit <= 100:
        problems = ["limit: must be between 1 and 100"]
    if problems:
        return problems_error(problems, {})
    ordered = list(reversed(items)) if query.get("order", "desc") == "desc" else list(items)
    after = query.get("after")
    if after is not None:
        ids = [i["id"] for i in ordered]
        ordered = ordered[ids.index(after) + 1:] if after in ids else []
    page = ordered[:limit]
    return json_response(200, {"object": "list", "data": page, "first_id": page[0]["id"] if page else "",
                               "last_id": page[-1]["id"] if page else "", "has_more": len(ordered) > limit})
