"""Simulated completions: OpenAI legacy Completions (`POST /v1/completions`, also under an
OpenAI-compatible prefix such as DeepSeek's `/beta/completions`, and Azure's
`/openai/deployments/{deployment}/completions`) and Mistral's fill-in-the-middle API
(`POST /v1/fim/completions`, Codestral).

Requests are validated against `openai.types.CompletionCreateParams` (streaming or not) and,
for Mistral, against the `mistralai` SDK's `FIMCompletionRequest` fields (`FIMRequest` below; the
SDK is not a dependency, its type is restated field for field). What a real server refuses is
refused in its format: a `suffix` to a model whose scripted `capabilities` lack `fim` is vLLM's
400 ("suffix is not currently supported"), so a gateway that should have templated the prompt is
caught; an embeddings model is OpenAI's 404.

Output: the deterministic text of `textgen` seeded by the prompt (and suffix), cut at
`max_tokens` and `stop`; usage counts the prompt and suffix by `textgen`'s token rule. Streams pace
like chat (`ttft_ms`, `tokens_per_s`): OpenAI sends `text_completion` chunks (`choices[].text`),
`usage: null` on each with `stream_options.include_usage` and a last `choices: []` chunk with the
usage, then `data: [DONE]`; Mistral sends chat-shaped `chat.completion.chunk` events
(`choices[].delta.content`), the last with `finish_reason` and `usage`, then `data: [DONE]`.
Scripted `status` / `error_rate` errors, `hang`, `fault`s (`simulator.faults`), `stream_error_after`,
`max_concurrency` and quotas apply as for chat.
"""

from __future__ import annotations

import time
from typing import Any, Literal, NotRequired, Required

import orjson
from aiohttp import web
from typing_extensions import TypedDict

from simulator import faults, textgen
from simulator.azure_api import ACCESS_DENIED, azure_error
from simulator.capabilities import model_capabilities, serves_chat
from simulator.common import ClientGone, admit, bearer_token, json_response, open_stream, read_body, write
from simulator.openai_api import rate_headers
from simulator.openai_checks import error, problems_error
from simulator.state import QUOTA, Behaviour, SimState
from simulator.textgen import Output
from simulator.validate import body_problems

FINISH = {"end": "stop", "length": "length", "stop_sequence": "stop", "tool": "stop"}


class FIMRequest(TypedDict, total=False):
    """`mistralai.models.FIMCompletionRequestTypedDict` (the request of `POST /v1/fim/completions`)."""

    model: Required[str | None]
    prompt: Required[str]
    temperature: NotRequired[float | None]
    top_p: NotRequired[float]
    max_tokens: NotRequired[int | None]
    stream: NotRequired[bool]
    stop: NotRequired[str | list[str]]
    random_seed: NotRequired[int | None]
    suffix: NotRequired[str | None]
    min_tokens: NotRequired[int | None]


def completions_request_problems(body: Any) -> list[str]:
    """Problems of an OpenAI `POST /v1/completions` body (streaming params if `stream` is true)."""
    from openai.types import completion_create_params as params

    return body_problems(body, params.CompletionCreateParamsNonStreaming, params.CompletionCreateParamsStreaming)


def fim_request_problems(body: Any) -> list[str]:
    """Problems of a Mistral `POST /v1/fim/completions` body."""
    return body_problems(body, FIMRequest)


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return "\n".join(p if isinstance(p, str) else " ".join(map(str, p)) if isinstance(p, list) else str(p)
                         for p in prompt)
    return ""


def input_tokens(body: dict[str, Any]) -> int:
    return textgen.count_all([_prompt_text(body.get("prompt")), body.get("suffix") or ""])


def plan(body: dict[str, Any], behaviour: Behaviour) -> Output:
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    seed = _prompt_text(body.get("prompt")) + "\x00" + (body.get("suffix") or "")
    return textgen.generate_text(body["model"], seed, behaviour.output_tokens, body.get("max_tokens"), stops,
                                 behaviour.output_tokens_sigma)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


Flavour = Literal["openai", "azure", "mistral"]


class CompletionsExchange:
    """One completions request, in the wire format of `flavour`."""

    def __init__(self, state: SimState, request: web.Request, flavour: Flavour) -> None:
        self.state = state
        self.request = request
        self.flavour = flavour
        self.started = time.monotonic()
        self.id = ("cmpl-" if flavour != "mistral" else "") + state.random_id(29 if flavour != "mistral" else 32,
                                                                              "0123456789abcdef")
        self.headers = {"x-request-id": "req_" + state.random_id(32, "0123456789abcdef")}

    def error(self, status: int, message: str, param: str | None = None, code: str | None = None,
              extra: dict[str, str] | None = None) -> web.Response:
        headers = {**self.headers, **(extra or {})}
        if self.flavour == "mistral":
            kind = "invalid_request_error" if status < 500 else "internal_server_error"
            return json_response(status, {"object": "error", "message": message, "type": kind, "param": param,
                                          "code": code}, headers)
        if self.flavour == "azure" and status in (401, 404, 429):
            return azure_error(status, str(status), message, headers)
        return error(status, message, param=param, code=code, headers=headers)

    def authenticate(self) -> web.Response | None:
        if self.flavour == "azure":
            if not self.state.key_accepted(self.request.headers.get("api-key")):
                return azure_error(401, "401", ACCESS_DENIED, self.headers)
            return None
        key = bearer_token(self.request)
        if not key or not self.state.key_accepted(key):
            return self.error(401, "Unauthorized" if self.flavour == "mistral" else "Incorrect API key provided.",
                              code="invalid_api_key")
        return None

    async def answer(self) -> web.StreamResponse:
        body, refused = await read_body(self.request, self.authenticate(), lambda message: self.error(
            400, f"We could not parse the JSON body of your request: {message}"))
        if refused is not None:
            return refused
        if self.flavour == "azure" and isinstance(body, dict):
            body = {**body, "model": self.request.match_info["deployment"]}
        problems = fim_request_problems(body) if self.flavour == "mistral" else completions_request_problems(body)
        if problems:
            if self.flavour == "mistral":
                return self.error(422, "; ".join(problems))
            return problems_error(problems, self.headers)
        model = body["model"]
        behaviour = self.state.behaviour(model)
        if not serves_chat(model, behaviour):
            return self.error(404, f"The model `{model}` does not exist or does not serve completions.",
                              param="model", code="model_not_found")
        if body.get("suffix") is not None and behaviour.capabilities is not None and \
                "fim" not in model_capabilities(model, behaviour):
            return self.error(400, "suffix is not currently supported", param="suffix")
        prompt = input_tokens(body)
        refused = await admit(self.state, self.request, behaviour, model,
                              lambda status: self.status_error(status, behaviour, prompt))
        if refused is not None:
            return refused
        output = plan(body, behaviour)
        headers = {**self.headers, **rate_headers(behaviour, prompt, False, self.request.get(QUOTA))}
        if body.get("stream") is True:
            return await self._stream(body, behaviour, output, prompt, headers)
        await self.state.wait_whole(behaviour, output.output_tokens, model, await self.request.read(), prompt)
        return await faults.whole_answer(self.state, self.request, behaviour.fault, self._whole(body, output, prompt),
                                         headers)

    def status_error(self, status: int, behaviour: Behaviour, prompt: int) -> web.Response:
        """The error `status` admission gave (rate-limit headers on a 429)."""
        extra = rate_headers(behaviour, prompt, status == 429, self.request.get(QUOTA)) if status == 429 else {}
        return self.error(status, "Simulated error." if status != 429 else "Rate limit reached.", extra=extra)

    def _head(self, body: dict[str, Any], obj: str) -> dict[str, Any]:
        head = {"id": self.id, "object": obj, "created": int(self.state.clock()), "model": body["model"]}
        if self.flavour != "mistral":
            head["system_fingerprint"] = "fp_sim0000001"
        return head

    def _whole(self, body: dict[str, Any], output: Output, prompt: int) -> dict[str, Any]:
        finish = FINISH[output.stop]
        usage = _usage(prompt, output.output_tokens)
        if self.flavour == "mistral":
            return {**self._head(body, "chat.completion"), "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": output.text, "tool_calls": None},
                 "finish_reason": finish}]}
        n = body.get("n") or 1
        return {**self._head(body, "text_completion"),
                "choices": [{"text": output.text, "index": i, "logprobs": None, "finish_reason": finish}
                            for i in range(n)],
                "usage": _usage(prompt, output.output_tokens * n)}

    def _chunk(self, body: dict[str, Any], text: str, finish: str | None, usage: dict[str, int] | None,
               include_usage: bool) -> bytes:
        if self.flavour == "mistral":
            data: dict[str, Any] = {**self._head(body, "chat.completion.chunk"), "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": finish}]}
            if usage is not None:
                data["usage"] = usage
        else:
            data = {**self._head(body, "text_completion"),
                    "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                data["usage"] = None
        return b"data: " + orjson.dumps(data) + b"\n\n"

    async def _stream(self, body: dict[str, Any], behaviour: Behaviour, output: Output, prompt: int,
                      headers: dict[str, str]) -> web.StreamResponse:
        options = body.get("stream_options") or {}
        include_usage = self.flavour != "mistral" and options.get("include_usage") is True
        await self.state.wait_first(behaviour, body["model"], await self.request.read(), prompt)
        if behaviour.fault in ("html", "invalid_json"):
            return faults.whole_fault(behaviour.fault, orjson.dumps(self._whole(body, output, prompt)),
                                      headers) or web.Response(status=500)
        response = await open_stream(self.request, headers)
        usage = _usage(prompt, output.output_tokens)
        pieces = output.pieces or [""]
        try:
            for i, piece in enumerate(pieces):
                if i:
                    await self.state.wait_token(behaviour)
                if faults.stream_broken(behaviour, i):
                    return await faults.break_off(response, b'data: {"error": {"message": "The server had an '
                                                  b'error.", "type": "server_error", "param": null, "code": null}}\n\n')
                if behaviour.fault is not None and faults.stream_faulted(behaviour.fault, behaviour.fault_after, i):
                    await faults.strike(self.state, self.request, response, behaviour.fault)
                    return response
                last = i == len(pieces) - 1
                if last and self.flavour == "mistral":
                    await write(response, self._chunk(body, piece, FINISH[output.stop], usage, False))
                else:
                    await write(response, self._chunk(body, piece, None, None, include_usage))
            if self.flavour != "mistral":
                await write(response, self._chunk(body, "", FINISH[output.stop], None, include_usage))
            if include_usage:
                data = {**self._head(body, "text_completion"), "choices": [], "usage": usage}
                await write(response, b"data: " + orjson.dumps(data) + b"\n\n")
            await write(response, b"data: [DONE]\n\n")
            await response.write_eof()
        except ClientGone:
            pass
        return response


async def openai_completions(state: SimState, request: web.Request) -> web.StreamResponse:
    return await CompletionsExchange(state, request, "openai").answer()


async def azure_completions(state: SimState, request: web.Request) -> web.StreamResponse:
    return await CompletionsExchange(state, request, "azure").answer()


async def mistral_fim(state: SimState, request: web.Request) -> web.StreamResponse:
    return await CompletionsExchange(state, request, "mistral").answer()
