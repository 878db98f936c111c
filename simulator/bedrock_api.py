"""Simulated Amazon Bedrock runtime: Converse and ConverseStream.

Routes: ``POST /model/{modelId}/converse`` and ``/model/{modelId}/converse-stream`` (the model
id percent-encoded in the path). Every request must be SigV4-signed (service ``bedrock``) with
known credentials (`aws_auth`); the body is validated against botocore's input shapes
(`simulator.validate.bedrock`) and then as Bedrock does: the conversation starts with a user
message, roles alternate, tool results answer the previous turn's tool uses, a forced tool exists.
Errors: ``x-amzn-ErrorType: <Type>:http://internal.amazon.com/coral/com.amazon.bedrock/`` and
``{"message": ...}`` (ValidationException 400, AccessDeniedException 403,
ResourceNotFoundException 404, ModelTimeoutException 408, ModelErrorException 424,
ThrottlingException 429, InternalServerException 500, ServiceUnavailableException 503). A request
over a `request_limit` quota gets the ThrottlingException 429 too; Bedrock sends no rate-limit headers.

ConverseStream answers ``application/vnd.amazon.eventstream`` frames: messageStart,
contentBlockStart (tool use only), contentBlockDelta (text / toolUse.input), contentBlockStop,
messageStop {stopReason}, metadata {usage, metrics}; payloads carry Bedrock's ``p`` padding field.
A behaviour's `stream_error_after` ends the stream with an exception frame instead.

Input tokens by the token rule of `textgen` over `system` texts, message `text` blocks, `toolUse`
name and input (JSON), `toolResult` content (text, or JSON as text), and each `toolConfig.tools`
entry as JSON.
"""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from simulator import faults, textgen
from simulator.aws_auth import as_headers
from simulator.capabilities import bedrock_image, bedrock_tools, model_capabilities, serves_chat
from simulator.common import ClientGone, admit, json_response, write
from simulator.eventstream_encode import event_message, exception_message
from simulator.state import Behaviour, SimState
from simulator.textgen import Output, ToolCall
from simulator.validate.bedrock import bedrock_converse_request_problems

STOP_REASONS = {"end": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence", "tool": "tool_use"}
ERRORS: dict[int, tuple[str, str]] = {
    400: ("ValidationException", "The provided request is not valid."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    404: ("ResourceNotFoundException", "Could not resolve the foundation model from the provided model identifier."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request. Try your request again."),
    424: ("ModelErrorException", "The model encountered an error processing the request. Try your request again."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The system encountered an unexpected error during processing. "
                                     "Try your request again."),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}
STREAM_EXCEPTIONS = {400: "validationException", 429: "throttlingException", 503: "serviceUnavailableException",
                     500: "internalServerException"}
CORAL = "http://internal.amazon.com/coral/com.amazon.bedrock/"
STREAM_TYPE = "application/vnd.amazon.eventstream"


def error(status: int, kind: str, message: str, request_id: str) -> web.Response:
    """An answer in Bedrock's error format."""
    return json_response(status, {"message": message}, {"x-amzn-ErrorType": f"{kind}:{CORAL}",
                                                        "x-amzn-RequestId": request_id})


def _texts(blocks: Any) -> list[str]:
    texts: list[str] = []
    for block in blocks or []:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        if isinstance(block.get("json"), (dict, list)):
            texts.append(orjson.dumps(block["json"]).decode())
        use = block.get("toolUse")
        if isinstance(use, dict):
            texts.extend([str(use.get("name", "")), orjson.dumps(use.get("input")).decode()])
        result = block.get("toolResult")
        if isinstance(result, dict):
            texts.extend(_texts(result.get("content")))
    return texts


def input_tokens(body: dict[str, Any]) -> int:
    """`usage.inputTokens` by the rule in the module docstring."""
    texts = _texts(body.get("system"))
    for message in body["messages"]:
        texts.extend(_texts(message.get("content")))
    texts.extend(orjson.dumps(t).decode() for t in (body.get("toolConfig") or {}).get("tools") or [])
    return textgen.count_all(texts)


def _tool_specs(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [t["toolSpec"] for t in (body.get("toolConfig") or {}).get("tools") or [] if "toolSpec" in t]


def semantic_problems(body: dict[str, Any]) -> list[str]:
    """What Bedrock refuses beyond the input shape."""
    messages = body["messages"]
    if not messages or messages[0]["role"] != "user":
        return ["A conversation must start with a user message. Try again with a conversation that starts with a "
                "user message."]
    for previous, message in zip(messages, messages[1:], strict=False):
        if previous["role"] == message["role"]:
            return ["A conversation must alternate between user and assistant roles. Make sure the conversation "
                    "alternates between user and assistant roles and try again."]
    pending: list[str] = []
    for i, message in enumerate(messages):
        results = [b["toolResult"]["toolUseId"] for b in message["content"] if "toolResult" in b]
        if len(results) > len(pending):
            return [f"The number of toolResult blocks at messages.{i}.content exceeds the number of toolUse "
                    "blocks of previous turn."]
        missing = [u for u in pending if u not in results]
        if missing:
            return [f"Expected toolResult blocks at messages.{i}.content for the following Ids: {', '.join(missing)}"]
        pending = [b["toolUse"]["toolUseId"] for b in message["content"] if "toolUse" in b]
    if pending and body.get("toolConfig") is None:
        return ["The toolConfig field must be defined when using toolUse and toolResult content blocks."]
    forced = ((body.get("toolConfig") or {}).get("toolChoice") or {}).get("tool")
    if forced and forced.get("name") not in {s["name"] for s in _tool_specs(body)}:
        return ["The tool specified in toolChoice is not defined in the tools list."]
    return []


def plan(body: dict[str, Any], model: str, behaviour: Behaviour) -> Output:
    """What the simulated model answers (tool use or deterministic text)."""
    specs = _tool_specs(body)
    last = body["messages"][-1]
    asks = last["role"] == "user" and not any("toolResult" in b for b in last["content"])
    if specs and asks:
        forced = ((body.get("toolConfig") or {}).get("toolChoice") or {}).get("tool") or {}
        spec = next((s for s in specs if s["name"] == forced.get("name")), specs[0])
        args = textgen.example_object((spec.get("inputSchema") or {}).get("json") or {})
        return Output([], "tool", tool_calls=[ToolCall(spec["name"], orjson.dumps(args).decode())])
    last_user: dict[str, Any] = next((m for m in reversed(body["messages"]) if m["role"] == "user"), {})
    seed = "\n".join(b["text"] for b in last_user.get("content", []) if isinstance(b.get("text"), str))
    config = body.get("inferenceConfig") or {}
    return textgen.generate_text(model, seed, behaviour.output_tokens, config.get("maxTokens"),
                                 list(config.get("stopSequences") or []), behaviour.output_tokens_sigma)


class ConverseExchange:
    """One Converse / ConverseStream request."""

    def __init__(self, state: SimState, request: web.Request, model: str, stream: bool) -> None:
        self.state = state
        self.request = request
        self.model = model
        self.stream = stream
        self.request_id = str(uuid.UUID(int=state.rng.getrandbits(128), version=4))
        self.started = time.monotonic()

    def error(self, status: int, message: str | None = None) -> web.Response:
        kind, default = ERRORS.get(status, ERRORS[500] if status >= 500 else ERRORS[400])
        return error(status, kind, message or default, self.request_id)

    async def answer(self) -> web.StreamResponse:
        raw = await self.request.read()
        refusal = self.state.aws.verify(self.request.method, self.request.raw_path,
                                        as_headers(self.request.headers.items()), raw, self.state.clock())
        if refusal is not None:
            return error(*refusal, self.request_id)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self.error(400, "Malformed input request, please reformat your input and try again.")
        problems = bedrock_converse_request_problems(body, self.model, self.stream)
        if not problems:
            problems = semantic_problems(body)
        if problems:
            count = len(problems)
            return self.error(400, problems[0] if count == 1 else
                              f"{count} validation errors detected: " + "; ".join(problems))
        behaviour = self.state.behaviour(self.model)
        refused = self.capability_refusal(body, behaviour)
        if refused is not None:
            return refused
        refused = await admit(self.state, self.request, behaviour, self.model, self.error)
        if refused is not None:
            return refused
        output = plan(body, self.model, behaviour)
        prompt = input_tokens(body)
        if self.stream:
            return await self._stream(behaviour, output, prompt)
        await self.state.wait_whole(behaviour, output.output_tokens, self.model, await self.request.read(), prompt)
        content: list[dict[str, Any]] = [{"toolUse": {"toolUseId": self._tool_use_id(), "name": c.name,
                                                      "input": orjson.loads(c.arguments)}}
                                         for c in output.tool_calls]
        if not output.tool_calls:
            content = [{"text": output.text}]
        result = {"output": {"message": {"role": "assistant", "content": content}},
                  "stopReason": STOP_REASONS[output.stop], "usage": self._usage(prompt, output.output_tokens),
                  "metrics": {"latencyMs": self._latency()}}
        return json_response(200, result, {"x-amzn-RequestId": self.request_id})

    def capability_refusal(self, body: dict[str, Any], behaviour: Behaviour) -> web.Response | None:
        """Bedrock's ValidationException for what the model cannot do (see `simulator.capabilities`);
        None = it can."""
        if not serves_chat(self.model, behaviour):
            return self.error(400, "This action doesn't support the model that you provided. Try again with a "
                                   "supported text or chat model.")
        caps = model_capabilities(self.model, behaviour)
        if "tools" not in caps and bedrock_tools(body):
            return self.error(400, "This model doesn't support tool use.")
        image = None if "images" in caps else bedrock_image(body)
        if image is not None:
            return self.error(400, f"messages.{image[0]}.content.{image[1]}.image: This model doesn't support "
                                   "image content blocks. Remove the image content block and try again.")
        return None

    def _tool_use_id(self) -> str:
        return "tooluse_" + self.state.random_id(22)

    def _latency(self) -> int:
        return max(1, int((time.monotonic() - self.started) * 1000))

    @staticmethod
    def _usage(prompt: int, completion: int) -> dict[str, int]:
        return {"inputTokens": prompt, "outputTokens": completion, "totalTokens": prompt + completion}

    def _event(self, kind: str, payload: dict[str, Any]) -> bytes:
        padding = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[:1 + self.state.rng.randrange(40)]
        return event_message(kind, orjson.dumps({**payload, "p": padding}))

    async def _stream(self, behaviour: Behaviour, output: Output, prompt: int) -> web.StreamResponse:
        head = [self._event("messageStart", {"role": "assistant"})]
        if output.tool_calls:
            call = output.tool_calls[0]
            start = {"toolUse": {"toolUseId": self._tool_use_id(), "name": call.name}}
            head.append(self._event("contentBlockStart", {"start": start, "contentBlockIndex": 0}))
            deltas: list[dict[str, Any]] = [{"toolUse": {"input": frag}} for frag in textgen.fragments(call.arguments)]
        else:
            deltas = [{"text": piece} for piece in output.pieces]
        tail = [self._event("contentBlockStop", {"contentBlockIndex": 0}),
                self._event("messageStop", {"stopReason": STOP_REASONS[output.stop]})]
        await self.state.wait_first(behaviour, self.model, await self.request.read(), prompt)
        response = web.StreamResponse(status=200, headers={"content-type": STREAM_TYPE,
                                                           "x-amzn-RequestId": self.request_id})
        await response.prepare(self.request)
        try:
            for frame in head:
                await write(response, frame)
            for i, delta in enumerate(deltas):
                if i:
                    await self.state.wait_token(behaviour)
                if faults.stream_broken(behaviour, i):
                    return await faults.break_off(response, self._stream_exception(behaviour.error_status))
                await write(response, self._event("contentBlockDelta", {"delta": delta, "contentBlockIndex": 0}))
            for frame in tail:
                await write(response, frame)
            await write(response, self._event("metadata", {"usage": self._usage(prompt, output.output_tokens),
                                                           "metrics": {"latencyMs": self._latency()}}))
            await response.write_eof()
        except ClientGone:
            pass
        return response

    def _stream_exception(self, status: int) -> bytes:
        kind = STREAM_EXCEPTIONS.get(status)
        if kind is None:
            payload: dict[str, Any] = {"message": "The model encountered an error while streaming.", "originalStatusCode": status,
                       "originalMessage": ERRORS.get(status, ERRORS[500])[1]}
            return exception_message("modelStreamErrorException", orjson.dumps(payload))
        return exception_message(kind, orjson.dumps({"message": ERRORS[status][1]}))


async def bedrock_route(state: SimState, request: web.Request) -> web.StreamResponse:
    """`POST /model/{modelId}/converse` and `/converse-stream` (model id taken from the raw path)."""
    raw = request.raw_path.split("?", 1)[0]
    encoded, _, action = raw[len("/model/"):].rpartition("/")
    model = unquote(encoded)
    if action == "count-tokens" and model:
        from simulator.count_tokens_api import bedrock_count

        return await bedrock_count(state, request)
    exchange = ConverseExchange(state, request, model, action == "converse-stream")
    if action not in ("converse", "converse-stream") or not model:
        return error(404, "UnknownOperationException", "UnknownOperationException", exchange.request_id)
    return await exchange.answer()
