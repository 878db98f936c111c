"""Simulated OpenAI API: `POST /v1/chat/completions` (JSON and SSE) and `GET /v1/models`.

Input tokens (`usage.prompt_tokens`) are counted by the token rule of `textgen` over: the text
of every message (string content, `text` and `refusal` parts), every assistant tool call's
name and arguments (or custom input), legacy `function_call` name and arguments, and each entry
of `tools` / `functions` serialized as JSON. Images, audio and files count 0.

Rate limits: successes (streamed ones too) and 429s carry ``x-ratelimit-limit|remaining|reset-
requests|tokens`` with fixed figures. With a `request_limit` behaviour every answer to a request
that reached admission (successes, injected errors, 429s) reports the model's quota instead:
``x-ratelimit-limit-requests`` = `request_limit`, ``-remaining-requests`` = requests left in the
window after this one, ``-reset-requests`` = time until the window resets (``250ms``, ``1s``,
``1m30.5s``), and a 429 for the quota has ``retry-after`` = whole seconds until then (at least 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from simulator import faults, textgen
from simulator.capabilities import model_capabilities, openai_image, openai_tools, serves_chat
from simulator.common import (
    ClientGone,
    ModelExchange,
    bearer_token,
    duration_text,
    go_duration,
    json_response,
    open_stream,
    read_body,
    write,
)
from simulator.openai_checks import error, problems_error, semantic_problems, tool_name
from simulator.quota import QuotaView
from simulator.state import QUOTA, Behaviour, SimState
from simulator.textgen import Output, ToolCall
from simulator.validate import openai_chat_request_problems

REQUEST_LIMIT = 10_000
TOKEN_LIMIT = 30_000_000
FINISH = {"end": "stop", "length": "length", "stop_sequence": "stop", "tool": "tool_calls"}
STATUS_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Simulated bad request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to use this model.", "invalid_request_error", "model_not_allowed"),
    429: ("Rate limit reached for requests. Please try again later.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
}


def _text_of(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    texts: list[str] = []
    for part in content or []:
        if isinstance(part, dict):
            texts.extend(part[k] for k in ("text", "refusal") if isinstance(part.get(k), str))
    return texts


def input_tokens(body: dict[str, Any]) -> int:
    """`prompt_tokens` by the rule in the module docstring."""
    texts: list[str] = []
    for message in body.get("messages") or []:
        texts.extend(_text_of(message.get("content")))
        for call in message.get("tool_calls") or []:
            inner = call.get("function") or call.get("custom") or {}
            texts.extend(str(inner.get(k, "")) for k in ("name", "arguments", "input"))
        if isinstance(message.get("function_call"), dict):
            texts.extend(str(message["function_call"].get(k, "")) for k in ("name", "arguments"))
    for tool in (body.get("tools") or []) + (body.get("functions") or []):
        texts.append(orjson.dumps(tool).decode())
    return textgen.count_all(texts)


def _forced_tool(tools: list[dict[str, Any]], choice: Any) -> dict[str, Any] | None:
    if isinstance(choice, dict) and choice.get("type") in ("function", "custom"):
        wanted = (choice.get(choice["type"]) or {}).get("name")
        return next((t for t in tools if tool_name(t) == wanted), None)
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = {tool_name(t) for t in (choice.get("allowed_tools") or {}).get("tools") or []}
        return next((t for t in tools if tool_name(t) in allowed), None)
    return tools[0] if tools else None


def plan(body: dict[str, Any], behaviour: Behaviour) -> Output:
    """What the simulated model answers (tool call or deterministic text)."""
    messages = body["messages"]
    tools = [t for t in body.get("tools") or [] if tool_name(t)]
    choice = body.get("tool_choice", "auto")
    if tools and messages[-1].get("role") == "user" and choice != "none":
        tool = _forced_tool(tools, choice)
        if tool is not None:
            if tool["type"] == "custom":
                call = ToolCall(tool["custom"]["name"], "example", custom=True)
            else:
                function = tool["function"]
                args = textgen.example_object(function.get("parameters") or {})
                call = ToolCall(function["name"], orjson.dumps(args).decode())
            return Output([], "tool", tool_calls=[call])
    last_user: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    seed_text = "\n".join(_text_of(last_user.get("content")))
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    return textgen.generate_text(body["model"], seed_text, behaviour.output_tokens, limit, stops,
                                 behaviour.output_tokens_sigma)


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def rate_headers(behaviour: Behaviour, used_tokens: int, limited: bool,
                 quota: QuotaView | None = None) -> dict[str, str]:
    """OpenAI's rate-limit headers; `limited`: for a 429. Without `quota` the request figures are
    fixed (`REQUEST_LIMIT`, 0 left on a 429). With it they are the model's quota: limit, requests
    left in the window after this one, time until the window resets (`go_duration`); a 429 of the
    quota itself leaves the token figures unlimited and asks to retry when the window resets."""
    refused = quota is not None and quota.exhausted
    tokens_limited = limited and not refused
    retry = behaviour.retry_after_s
    headers = {
        "x-ratelimit-limit-requests": str(REQUEST_LIMIT),
        "x-ratelimit-remaining-requests": "0" if limited else str(REQUEST_LIMIT - 1),
        "x-ratelimit-reset-requests": duration_text(retry if limited else 0.006),
        "x-ratelimit-limit-tokens": str(TOKEN_LIMIT),
        "x-ratelimit-remaining-tokens": "0" if tokens_limited else str(TOKEN_LIMIT - used_tokens),
        "x-ratelimit-reset-tokens": duration_text(retry if tokens_limited else 0),
    }
    if quota is not None:
        headers["x-ratelimit-limit-requests"] = str(quota.limit)
        headers["x-ratelimit-remaining-requests"] = str(quota.remaining)
        headers["x-ratelimit-reset-requests"] = go_duration(quota.reset_s)
    if limited:
        headers["retry-after"] = str(quota.retry_after_s) if quota is not None and refused else f"{retry:g}"
    return headers


class ChatCompletions(ModelExchange):
    """One `POST /v1/chat/completions` exchange; subclasses adapt it to OpenAI-compatible hosts
    through `authenticate`, `prepare`, `status_error`, `rate_headers`, `decorate` and `prelude`."""

    obfuscate_by_default = True

    def __init__(self, state: SimState, request: web.Request) -> None:
        self.state = state
        self.request = request
        self.started = time.monotonic()
        self.headers = {"x-request-id": "req_" + state.random_id(32, "0123456789abcdef"),
                        "openai-version": "2020-10-01", "openai-organization": "user-simulator"}

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        elapsed = int((time.monotonic() - self.started) * 1000)
        return {**self.headers, "openai-processing-ms": str(elapsed), **(extra or {})}

    def authenticate(self) -> web.Response | None:
        """The refusal of the request's credentials (None = accepted)."""
        key = bearer_token(self.request)
        if not key:
            return error(401, "You didn't provide an API key. You need to provide your API key in an "
                         "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                         headers=self._headers())
        if not self.state.key_accepted(key):
            return error(401, f"Incorrect API key provided: {key[:3]}***{key[-4:]}.",
                         code="invalid_api_key", headers=self._headers())
        return None

    def prepare(self, body: Any) -> Any:
        """The body to validate as an OpenAI request."""
        return body

    def capability_refusal(self, body: dict[str, Any], model: str, behaviour: Behaviour) -> web.Response | None:
        """OpenAI's refusal of what `model` cannot do (see `simulator.capabilities`); None = it can:
        chat to an embeddings model is a 404, tools or an image to a model without them a 400."""
        if not serves_chat(model, behaviour):
            return error(404, "This is not a chat model and thus not supported in the v1/chat/completions "
                         "endpoint. Did you mean to use v1/completions?", param="model", headers=self._headers())
        caps = model_capabilities(model, behaviour)
        if "tools" not in caps and openai_tools(body):
            name = "tools" if body.get("tools") else "functions"
            return error(400, f"Unsupported parameter: '{name}' is not supported with this model.", param=name,
                         code="unsupported_parameter", headers=self._headers())
        image = None if "images" in caps else openai_image(body)
        if image is not None:
            return error(400, "Invalid content type. image_url is only supported by certain models.",
                         param=f"messages.[{image[0]}].content.[{image[1]}].type", headers=self._headers())
        return None

    def rate_headers(self, behaviour: Behaviour, used_tokens: int, limited: bool) -> dict[str, str]:
        """The rate-limit headers of an answer (`limited`: a 429), with the model's quota if any."""
        return rate_headers(behaviour, used_tokens, limited, self.request.get(QUOTA))

    def decorate(self, data: dict[str, Any]) -> dict[str, Any]:
        """A completion (or chunk) as this host sends it."""
        return data

    def prelude(self, envelope: dict[str, Any]) -> list[dict[str, Any]]:
        """Chunks this host streams before the first choice chunk."""
        return []

    def unparsable(self, message: str) -> web.Response:
        """OpenAI's 400 for a body that is empty or not JSON (`message`: why)."""
        return error(400, f"We could not parse the JSON body of your request: {message}", headers=self._headers())

    async def valid_body(self, problems_of: Callable[[Any], list[str]]) -> tuple[Any, web.Response | None]:
        """The request's body as this host reads it (`prepare`), or the answer that ends the exchange
        instead: the refusal of its credentials, the 400 for a body that is not JSON, or the 400
        listing `problems_of(body)`."""
        body, refused = await read_body(self.request, self.authenticate(), self.unparsable)
        if refused is not None:
            return None, refused
        body = self.prepare(body)
        problems = problems_of(body)
        if problems:
            return None, problems_error(problems, self._headers())
        return body, None

    async def answer(self) -> web.StreamResponse:
        body, refused = await self.valid_body(lambda body: openai_chat_request_problems(body)
                                              or semantic_problems(body))
        if refused is not None:
            return refused
        behaviour, prompt, refused = await self.admitted(body, input_tokens)
        if refused is not None:
            return refused
        output = plan(body, behaviour)
        n = body.get("n") or 1
        if body.get("stream") is True:
            return await self._stream(body, behaviour, output, prompt, n)
        await self.state.wait_whole(behaviour, output.output_tokens, body["model"], await self.request.read(),
                                    prompt)
        result = self.decorate(self._completion(body, output, prompt, n))
        headers = self._headers(self.rate_headers(behaviour, prompt, False))
        return await faults.whole_answer(self.state, self.request, behaviour.fault, result, headers)

    def status_error(self, status: int, behaviour: Behaviour, model: str, prompt: int) -> web.Response:
        """The error `status` admission gave; rate-limit headers on a 429, and on every status
        while the model has a quota."""
        quota = self.request.get(QUOTA) is not None
        extra = self.rate_headers(behaviour, prompt, status == 429) if status == 429 or quota else {}
        if status == 404:
            return error(404, f"The model `{model}` does not exist or you do not have access to it.",
                         code="model_not_found", headers=self._headers(extra))
        message, kind, code = STATUS_ERRORS.get(
            status, ("Simulated error.", "server_error" if status >= 500 else "invalid_request_error", None))
        if status == 503:
            extra["retry-after"] = f"{behaviour.retry_after_s:g}"
        return error(status, message, type=kind, code=code, headers=self._headers(extra))

    def _envelope(self, body: dict[str, Any], obj: str) -> dict[str, Any]:
        tier = body.get("service_tier") or "default"
        return {"id": self.completion_id, "object": obj, "created": int(self.state.clock()),
                "model": body["model"], "service_tier": "default" if tier == "auto" else tier,
                "system_fingerprint": "fp_sim0000001"}

    @property
    def completion_id(self) -> str:
        if not hasattr(self, "_completion_id"):
            self._completion_id = "chatcmpl-" + self.state.random_id(29)
        return self._completion_id

    def _calls(self, output: Output) -> list[dict[str, Any]]:
        calls = []
        for call in output.tool_calls:
            call_id = "call_" + self.state.random_id(24)
            if call.custom:
                calls.append({"id": call_id, "type": "custom", "custom": {"name": call.name, "input": call.arguments}})
            else:
                calls.append({"id": call_id, "type": "function",
                              "function": {"name": call.name, "arguments": call.arguments}})
        return calls

    def _completion(self, body: dict[str, Any], output: Output, prompt: int, n: int) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None if output.tool_calls else output.text,
                                   "refusal": None, "annotations": []}
        calls = self._calls(output)
        if calls:
            message["tool_calls"] = calls
        choices = [{"index": i, "message": message, "logprobs": None, "finish_reason": FINISH[output.stop]}
                   for i in range(n)]
        return {**self._envelope(body, "chat.completion"), "choices": choices,
                "usage": _usage(prompt, output.output_tokens * n)}

    async def _stream(self, body: dict[str, Any], behaviour: Behaviour, output: Output, prompt: int,
                      n: int) -> web.StreamResponse:
        options = body.get("stream_options") or {}
        include_usage = options.get("include_usage") is True
        obfuscate = options.get("include_obfuscation", self.obfuscate_by_default) is not False
        envelope = self._envelope(body, "chat.completion.chunk")
        calls = self._calls(output)
        opening: dict[str, Any]
        steps: list[dict[str, Any]]

        def chunk(choices: list[dict[str, Any]], usage: Any = None) -> bytes:
            data: dict[str, Any] = {**envelope, "choices": choices}
            if include_usage:
                data["usage"] = usage
            if obfuscate:
                data["obfuscation"] = self.state.random_id(1 + self.state.rng.randrange(12))
            return b"data: " + orjson.dumps(self.decorate(data)) + b"\n\n"

        def each(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return chunk([{"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
                          for i in range(n)])

        if calls:
            first = {k: v for k, v in calls[0].items() if k != calls[0]["type"]}
            inner = calls[0][calls[0]["type"]]
            arg_key = "input" if calls[0]["type"] == "custom" else "arguments"
            first[calls[0]["type"]] = {"name": inner["name"], arg_key: ""}
            opening = {"role": "assistant", "content": None, "tool_calls": [{"index": 0, **first}], "refusal": None}
            steps = [{"tool_calls": [{"index": 0, calls[0]["type"]: {arg_key: frag}}]}
                     for frag in textgen.fragments(inner[arg_key])]
        else:
            opening = {"role": "assistant", "content": "", "refusal": None}
            steps = [{"content": piece} for piece in output.pieces]
        await self.state.wait_first(behaviour, body["model"], await self.request.read(), prompt)
        headers = self._headers(self.rate_headers(behaviour, prompt, False))
        if behaviour.fault in ("html", "invalid_json"):
            return faults.whole_fault(behaviour.fault, orjson.dumps(self._completion(body, output, prompt, n)),
                                      headers) or web.Response(status=500)
        response = await open_stream(self.request, headers)
        try:
            for early in self.prelude(envelope):
                await write(response, b"data: " + orjson.dumps(early) + b"\n\n")
            await write(response, each(opening))
            for i, step in enumerate(steps):
                if i:
                    await self.state.wait_token(behaviour)
                if faults.stream_broken(behaviour, i):
                    return await faults.break_off(response, self.stream_error(behaviour.error_status))
                if behaviour.fault is not None and faults.stream_faulted(behaviour.fault, behaviour.fault_after, i):
                    await faults.strike(self.state, self.request, response, behaviour.fault)
                    return response
                await write(response, each(step))
            await write(response, each({}, FINISH[output.stop]))
            if include_usage:
                await write(response, chunk([], _usage(prompt, output.output_tokens * n)))
            await write(response, b"data: [DONE]\n\n")
            await response.write_eof()
        except ClientGone:
            pass
        return response


    def stream_error(self, status: int) -> bytes:
        """The in-stream error event that breaks off a stream (`stream_error_after`)."""
        message, kind, code = STATUS_ERRORS.get(status, ("The server had an error while processing your request.",
                                                          "server_error", None))
        payload = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return b"data: " + orjson.dumps(payload) + b"\n\n"


async def chat_completions(state: SimState, request: web.Request) -> web.StreamResponse:
    return await ChatCompletions(state, request).answer()


async def list_models(state: SimState, request: web.Request, models: list[str]) -> web.Response:
    """`GET /v1/models` in OpenAI's list format (Bearer key required)."""
    key = bearer_token(request)
    if not state.key_accepted(key):
        return error(401, "Incorrect API key provided." if key else "You didn't provide an API key.",
                     code="invalid_api_key" if key else None)
    data: list[dict[str, Any]] = [{"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "simulator"} for m in models]
    return json_response(200, {"object": "list", "data": data})
