"""Simulated Anthropic API: `POST /v1/messages` (JSON and SSE) and `GET /v1/models`.

Requests need a key (`x-api-key` or `Authorization: Bearer`) and an `anthropic-version` header.
Input tokens (`usage.input_tokens`) are counted by the token rule of `textgen` over: `system`
(string or text blocks), every message's string content, `text` and `thinking` blocks,
`tool_use` name and input (serialized as JSON), `tool_result` content (string or text blocks),
and each entry of `tools` serialized as JSON. Images and documents count 0.

Rate limits: successes (streamed ones too) and 429s carry ``anthropic-ratelimit-requests|tokens|
input-tokens|output-tokens-limit|remaining|reset`` with fixed figures. With a `request_limit`
behaviour every answer to a request that reached admission (successes, injected errors, 429s)
reports the model's quota in ``anthropic-ratelimit-requests-*`` instead: the limit, requests left
in the window after this one, and the window's end in RFC 3339 (whole seconds, rounded up); a 429
for the quota has ``retry-after`` = whole seconds until then (at least 1).
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from aiohttp import web

from simulator import faults, textgen
from simulator.capabilities import anthropic_image, anthropic_tools, model_capabilities, serves_chat
from simulator.common import (
    ClientGone,
    ModelExchange,
    bearer_token,
    json_response,
    open_stream,
    read_body,
    rfc3339,
    write,
)
from simulator.state import QUOTA, Behaviour, SimState
from simulator.textgen import Output, ToolCall
from simulator.validate import anthropic_messages_request_problems

REQUEST_LIMIT = 4_000
TOKEN_LIMIT = 2_000_000
STOP_REASONS = {"end": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence", "tool": "tool_use"}
ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 409: "conflict_error", 413: "request_too_large",
    429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error",
}
_STATUS_MESSAGES = {
    429: "Number of requests has exceeded your rate limit. Please try again later.",
    500: "Internal server error",
    529: "Overloaded",
}


class MessagesExchange(ModelExchange):
    """One `POST /v1/messages` (or `GET /v1/models`) exchange."""

    def __init__(self, state: SimState, request: web.Request) -> None:
        self.state = state
        self.request = request
        self.request_id = "req_011C" + state.random_id(20)

    def error(self, status: int, message: str, extra: dict[str, str] | None = None) -> web.Response:
        """An answer in Anthropic's error format."""
        kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": self.request_id}
        return json_response(status, body, {"request-id": self.request_id, **(extra or {})})

    def precheck(self) -> web.Response | None:
        """401 without an accepted key, 400 without `anthropic-version`."""
        key = self.request.headers.get("x-api-key") or bearer_token(self.request)
        if not key:
            return self.error(401, "x-api-key header is required")
        if not self.state.key_accepted(key):
            return self.error(401, "invalid x-api-key")
        if not self.request.headers.get("anthropic-version"):
            return self.error(400, "anthropic-version: header is required")
        return None

    def rate_headers(self, behaviour: Behaviour, used_tokens: int, limited: bool) -> dict[str, str]:
        """Anthropic's rate-limit headers; `limited`: for a 429. With a quota (`state.QUOTA`) the
        request figures are the model's quota and a 429 of the quota itself leaves the token
        figures unlimited."""
        quota = self.request.get(QUOTA)
        refused = quota is not None and quota.exhausted
        tokens_limited = limited and not refused
        now = self.state.clock()
        reset = rfc3339(now + (behaviour.retry_after_s if tokens_limited else 1))
        headers: dict[str, str] = {}
        for name, limit in (("requests", REQUEST_LIMIT), ("tokens", TOKEN_LIMIT),
                            ("input-tokens", TOKEN_LIMIT), ("output-tokens", TOKEN_LIMIT // 5)):
            used = 1 if name == "requests" else used_tokens if name != "output-tokens" else 0
            headers[f"anthropic-ratelimit-{name}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{name}-remaining"] = "0" if tokens_limited else str(max(0, limit - used))
            headers[f"anthropic-ratelimit-{name}-reset"] = reset
        if quota is not None:
            headers["anthropic-ratelimit-requests-limit"] = str(quota.limit)
            headers["anthropic-ratelimit-requests-remaining"] = str(quota.remaining)
            headers["anthropic-ratelimit-requests-reset"] = rfc3339(math.ceil(quota.reset_at))
        if limited:
            headers["retry-after"] = str(quota.retry_after_s) if quota is not None and refused \
                else f"{behaviour.retry_after_s:g}"
        return headers

    async def answer(self) -> web.StreamResponse:
        body, refused = await read_body(self.request, self.precheck(), lambda message: self.error(400, message))
        if refused is not None:
            return refused
        body, problems = self.prepare(body)
        if not problems:
            problems = anthropic_messages_request_problems(body)
        if not problems:
            problems = semantic_problems(body)
        if problems:
            return self.error(400, "; ".join(problems))
        behaviour, prompt, refused = await self.admitted(body, input_tokens)
        if refused is not None:
            return refused
        output = plan(body, behaviour)
        headers = {"request-id": self.request_id, **self.rate_headers(behaviour, prompt, False)}
        message = self._message(body, output, prompt)
        if body.get("stream") is True:
            return await self._stream(behaviour, message, output, headers)
        await self.state.wait_whole(behaviour, output.output_tokens, body["model"], await self.request.read(),
                                    prompt)
        return await faults.whole_answer(self.state, self.request, behaviour.fault, message, headers)

    def prepare(self, body: Any) -> tuple[Any, list[str]]:
        """The body to validate as a Messages request, or problems found before that."""
        return body, []

    def capability_refusal(self, body: dict[str, Any], model: str, behaviour: Behaviour) -> web.Response | None:
        """Anthropic's refusal of what `model` cannot do (see `simulator.capabilities`); None = it can:
        an embeddings model is no Messages model (404), tools or an image to a model without them
        are a 400."""
        if not serves_chat(model, behaviour):
            return self.error(404, f"model: {model}")
        caps = model_capabilities(model, behaviour)
        if "tools" not in caps and anthropic_tools(body):
            return self.error(400, f"tools: {model} does not support tool use.")
        image = None if "images" in caps else anthropic_image(body)
        if image is not None:
            return self.error(400, f"messages.{image[0]}.content.{image[1]}.image: {model} does not support "
                                   "image input.")
        return None

    def status_error(self, status: int, behaviour: Behaviour, model: str, prompt: int) -> web.Response:
        """The error `status` admission gave, in Anthropic's format; rate-limit headers on a 429, and
        on every status while the model has a quota."""
        text = f"model: {model}" if status == 404 else _STATUS_MESSAGES.get(status, "Simulated error")
        quota = self.request.get(QUOTA) is not None
        extra = self.rate_headers(behaviour, prompt, status == 429) if status == 429 or quota else {}
        if status == 503:
            extra["retry-after"] = f"{behaviour.retry_after_s:g}"
        return self.error(status, text, extra)

    def _message(self, body: dict[str, Any], output: Output, prompt: int) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for call in output.tool_calls:
            content.append({"type": "tool_use", "id": "toolu_01" + self.state.random_id(22),
                            "name": call.name, "input": orjson.loads(call.arguments)})
        if not output.tool_calls and output.text:
            content.append({"type": "text", "text": output.text})
        return {
            "id": "msg_01" + self.state.random_id(22), "type": "message", "role": "assistant",
            "model": body["model"], "content": content, "stop_reason": STOP_REASONS[output.stop],
            "stop_sequence": output.stop_sequence, "usage": _usage(prompt, output.output_tokens),
        }

    async def _stream(self, behaviour: Behaviour, message: dict[str, Any], output: Output,
                      headers: dict[str, str]) -> web.StreamResponse:
        def event(kind: str, data: dict[str, Any]) -> bytes:
            return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"

        start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": {**message["usage"], "output_tokens": 1}}
        await self.state.wait_first(behaviour, message["model"], await self.request.read(),
                                   message["usage"]["input_tokens"])
        if behaviour.fault in ("html", "invalid_json"):
            return faults.whole_fault(behaviour.fault, orjson.dumps(message), headers) or web.Response(status=500)
        response = await open_stream(self.request, headers)
        try:
            await write(response, event("message_start", {"message": start}))
            first = True
            for index, block in enumerate(message["content"]):
                if block["type"] == "tool_use":
                    opening = {**block, "input": {}}
                    deltas = [{"type": "input_json_delta", "partial_json": frag}
                              for frag in [""] + textgen.fragments(output.tool_calls[index].arguments)]
                else:
                    opening = {"type": "text", "text": ""}
                    deltas = [{"type": "text_delta", "text": piece} for piece in output.pieces]
                await write(response, event("content_block_start", {"index": index, "content_block": opening}))
                if first:
                    await write(response, event("ping", {}))
                for i, delta in enumerate(deltas):
                    if not first or i:
                        await self.state.wait_token(behaviour)
                    if faults.stream_broken(behaviour, i):
                        status = behaviour.error_status
                        kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
                        return await faults.break_off(response, event("error", {"error": {
                            "type": kind, "message": _STATUS_MESSAGES.get(status, "Simulated error")}}))
                    if behaviour.fault is not None and faults.stream_faulted(behaviour.fault, behaviour.fault_after,
                                                                             i):
                        await faults.strike(self.state, self.request, response, behaviour.fault)
                        return response
                    await write(response, event("content_block_delta", {"index": index, "delta": delta}))
                first = False
                await write(response, event("content_block_stop", {"index": index}))
            if first:
                await write(response, event("ping", {}))
            usage = {key: message["usage"][key] for key in
                     ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")}
            await write(response, event("message_delta", {
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]},
                "usage": usage}))
            await write(response, event("message_stop", {}))
            await response.write_eof()
        except ClientGone:
            pass
        return response


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"input_tokens": prompt, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": completion, "service_tier": "standard"}


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def _block_texts(block: dict[str, Any]) -> list[str]:
    kind = block.get("type")
    if kind == "text":
        return [block.get("text", "")]
    if kind == "thinking":
        return [block.get("thinking", "")]
    if kind == "tool_use":
        return [block.get("name", ""), orjson.dumps(block.get("input", {})).decode()]
    if kind == "tool_result":
        return [t for inner in _blocks(block.get("content")) for t in _block_texts(inner)]
    return []


def input_tokens(body: dict[str, Any]) -> int:
    """`input_tokens` by the rule in the module docstring."""
    texts = [t for b in _blocks(body.get("system")) for t in _block_texts(b)]
    for message in body.get("messages") or []:
        texts.extend(t for b in _blocks(message.get("content")) for t in _block_texts(b))
    texts.extend(orjson.dumps(tool).decode() for tool in body.get("tools") or [])
    return textgen.count_all(texts)


def _client_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in body.get("tools") or [] if "input_schema" in t and t.get("type") in (None, "custom")]


def semantic_problems(body: dict[str, Any]) -> list[str]:
    """Problems Anthropic reports beyond the type schema (tool pairing, tool choice, limits)."""
    problems: list[str] = []
    messages = body.get("messages") or []
    if not messages:
        problems.append("messages: at least one message is required")
    if body.get("max_tokens", 0) < 0:
        problems.append("max_tokens: must be greater than or equal to 0")
    choice = body.get("tool_choice")
    if choice is not None and choice.get("type") != "none" and not body.get("tools"):
        problems.append("tool_choice: may only be specified while providing tools")
    elif (choice is not None and choice.get("type") == "tool"
          and choice.get("name") not in {t.get("name") for t in body.get("tools") or []}):
        problems.append(f"tool_choice.name: tool '{choice.get('name')}' not found in tools")
    previous_uses: set[str] = set()
    for i, message in enumerate(messages):
        if message.get("role") == "system":
            continue
        blocks = _blocks(message.get("content"))
        results = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
        unexpected = sorted(str(r) for r in results - previous_uses)
        if unexpected:
            problems.append(f"messages[{i}].content: unexpected `tool_use_id` found in `tool_result` blocks: "
                            f"{', '.join(unexpected)}. Each `tool_result` block must have a corresponding "
                            "`tool_use` block in the previous message.")
        missing = sorted(previous_uses - results)
        if missing:
            problems.append(f"messages[{i - 1}]: `tool_use` ids were found without `tool_result` blocks "
                            f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                            "corresponding `tool_result` block in the next message.")
        previous_uses = {str(b.get("id")) for b in blocks if b.get("type") == "tool_use"}
    return problems


def plan(body: dict[str, Any], behaviour: Behaviour) -> Output:
    """What the simulated model answers (tool call or deterministic text)."""
    messages = body["messages"]
    tools = _client_tools(body)
    choice = body.get("tool_choice") or {"type": "auto"}
    last = messages[-1]
    last_is_question = last.get("role") == "user" and not any(
        b.get("type") == "tool_result" for b in _blocks(last.get("content")))
    if tools and last_is_question and choice.get("type") != "none":
        wanted = choice.get("name") if choice.get("type") == "tool" else None
        tool = next((t for t in tools if t["name"] == wanted), tools[0])
        args = textgen.example_object(tool.get("input_schema") or {})
        return Output([], "tool", tool_calls=[ToolCall(tool["name"], orjson.dumps(args).decode())])
    last_user: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    seed_text = "\n".join(t for b in _blocks(last_user.get("content")) for t in _block_texts(b))
    return textgen.generate_text(body["model"], seed_text, behaviour.output_tokens, body.get("max_tokens"),
                                 list(body.get("stop_sequences") or []), behaviour.output_tokens_sigma)


async def messages(state: SimState, request: web.Request) -> web.StreamResponse:
    return await MessagesExchange(state, request).answer()


async def list_models(state: SimState, request: web.Request, models: list[str]) -> web.Response:
    """`GET /v1/models` in Anthropic's paginated list format."""
    exchange = MessagesExchange(state, request)
    rejected = exchange.precheck()
    if rejected is not None:
        return rejected
    data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z",
             "lifecycle": "active", "deprecated_at": None, "retires_at": None} for m in models]
    page = {"data": data, "has_more": False, "first_id": models[0] if models else None,
            "last_id": models[-1] if models else None}
    return json_response(200, page, {"request-id": exchange.request_id})
