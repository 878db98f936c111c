"""Simulated Gemini API (`generativelanguage`), also serving Vertex AI's `publishers/google` models.

Routes (Gemini API): ``POST /{v1|v1beta}/models/{model}:generateContent``,
``:streamGenerateContent`` (``?alt=sse``: ``data: {GenerateContentResponse}\\r\\n\\r\\n`` events;
without it a JSON array streamed element by element), ``:embedContent`` and
``:batchEmbedContents``. The key travels in ``x-goog-api-key`` or ``?key=``; a request with only
``Authorization`` is refused with 401, one with no credential with 403, an unknown key with 400
``API_KEY_INVALID``. Vertex AI authenticates before handing the request here (see `vertex_api`).

Input tokens (`promptTokenCount`) by the token rule of `textgen` over the text parts of
`systemInstruction` and `contents`, every `functionCall` (name and args as JSON) and
`functionResponse` (name and response as JSON), and each entry of `tools` as JSON.
Tool calls: when `tools` declare functions, `toolConfig.functionCallingConfig.mode` is not
``NONE`` and the last content is a user turn without a `functionResponse` (``ANY`` forces the
first allowed function). Embeddings: `textgen.embedding` of the content's text, 8 dimensions
unless `outputDimensionality`.

Injected 429s and those of a `request_limit` quota are 429 RESOURCE_EXHAUSTED (Gemini API: with
QuotaFailure and RetryInfo, the delay until the quota window resets for a quota refusal); no
rate-limit headers, as Google sends none.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from simulator import faults, textgen
from simulator.capabilities import (
    gemini_image,
    gemini_tools,
    model_capabilities,
    serves_chat,
    serves_embeddings,
)
from simulator.common import ClientGone, admit, json_response, open_stream, write
from simulator.google_errors import (
    BAD_CREDENTIALS,
    GOOGLE_HEADERS,
    TYPE_PREFIX,
    error_info,
    google_error,
    invalid_json,
    retry_info,
    violations_error,
)
from simulator.state import Behaviour, SimState
from simulator.textgen import Output, ToolCall
from simulator.validate.gemini import (
    gemini_batch_embed_request_problems,
    gemini_embed_request_problems,
    gemini_generate_request_problems,
    snake,
)

SERVICE = "generativelanguage.googleapis.com"
EMBED_DIMS = 8
FINISH = {"end": "STOP", "length": "MAX_TOKENS", "stop_sequence": "STOP", "tool": "STOP"}
METHODS = ("generateContent", "streamGenerateContent", "embedContent", "batchEmbedContents")


@dataclass(frozen=True)
class Target:
    """What a request addresses: model, method, API version, and its Vertex resource if any."""

    model: str
    method: str
    version: str
    vertex_resource: str | None = None

    @property
    def vertex(self) -> bool:
        return self.vertex_resource is not None


def _get(obj: Any, name: str) -> Any:
    if not isinstance(obj, dict):
        return None
    for key, value in obj.items():
        if snake(key) == name:
            return value
    return None


def _part_texts(part: dict[str, Any]) -> list[str]:
    texts: list[str] = []
    if isinstance(_get(part, "text"), str):
        texts.append(_get(part, "text"))
    for kind, payload in (("function_call", "args"), ("function_response", "response")):
        inner = _get(part, kind)
        if isinstance(inner, dict):
            texts.extend([str(_get(inner, "name") or ""), orjson.dumps(_get(inner, payload) or {}).decode()])
    return texts


def _content_texts(content: Any) -> list[str]:
    return [t for part in _get(content, "parts") or [] for t in _part_texts(part)]


def input_tokens(body: dict[str, Any]) -> int:
    """`promptTokenCount` by the rule in the module docstring."""
    texts = _content_texts(_get(body, "system_instruction"))
    for content in _get(body, "contents") or []:
        texts.extend(_content_texts(content))
    texts.extend(orjson.dumps(tool).decode() for tool in _get(body, "tools") or [])
    return textgen.count_all(texts)


def _json_schema(schema: Any) -> Any:
    """An OpenAPI-style Gemini `Schema` (``"type": "OBJECT"``) as JSON Schema for `textgen`."""
    if isinstance(schema, list):
        return [_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {"anyOf" if k in ("anyOf", "any_of") else snake(k): _json_schema(v) for k, v in schema.items()}
    if isinstance(out.get("type"), str):
        out["type"] = out["type"].lower()
    return out


def plan(body: dict[str, Any], model: str, behaviour: Behaviour) -> Output:
    """What the simulated model answers (function call or deterministic text)."""
    contents = _get(body, "contents")
    declarations = [d for tool in _get(body, "tools") or [] for d in _get(tool, "function_declarations") or []]
    calling = _get(_get(body, "tool_config"), "function_calling_config") or {}
    mode = str(_get(calling, "mode") or "AUTO").upper()
    last = contents[-1]
    last_is_question = _get(last, "role") in (None, "user") and not any(
        _get(p, "function_response") is not None for p in _get(last, "parts") or [])
    if declarations and mode != "NONE" and (last_is_question or mode == "ANY"):
        allowed = _get(calling, "allowed_function_names") or []
        chosen = next((d for d in declarations if _get(d, "name") in allowed), declarations[0])
        schema = _get(chosen, "parameters_json_schema") or _json_schema(_get(chosen, "parameters")) or {}
        args = textgen.example_object(schema)
        return Output([], "tool", tool_calls=[ToolCall(str(_get(chosen, "name")), orjson.dumps(args).decode())])
    last_user: dict[str, Any] = next((c for c in reversed(contents) if _get(c, "role") in (None, "user")), {})
    seed_text = "\n".join(t for p in _get(last_user, "parts") or [] if isinstance(t := _get(p, "text"), str))
    config = _get(body, "generation_config") or {}
    limit = _get(config, "max_output_tokens")
    return textgen.generate_text(model, seed_text, behaviour.output_tokens, None if limit is None else int(limit),
                                 list(_get(config, "stop_sequences") or []), behaviour.output_tokens_sigma)


class GeminiExchange:
    """One authenticated Gemini-format request (Gemini API or Vertex AI `publishers/google`)."""

    def __init__(self, state: SimState, request: web.Request, target: Target) -> None:
        self.state = state
        self.request = request
        self.target = target
        self.response_id = state.random_id(22, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")

    async def answer(self) -> web.StreamResponse:
        if self.target.method not in METHODS or (self.target.vertex and "Embed" in self.target.method):
            return google_error(404, f"Method not found: {self.target.method}")
        raw = await self.request.read()
        try:
            body = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError as exc:
            return invalid_json(f"Unexpected token.\n{raw[:40].decode(errors='replace')}\n^ ({exc})")
        if self.target.method in ("generateContent", "streamGenerateContent"):
            violations = gemini_generate_request_problems(body, vertex=self.target.vertex)
        elif self.target.method == "embedContent":
            violations = gemini_embed_request_problems(body)
        else:
            violations = gemini_batch_embed_request_problems(body, self.target.model)
        if violations:
            return violations_error(violations)
        behaviour = self.state.behaviour(self.target.model)
        refused = self.capability_refusal(body, behaviour)
        if refused is not None:
            return refused
        refused = await admit(self.state, self.request, behaviour, self.target.model,
                              lambda status: self.status_error(status, behaviour))
        if refused is not None:
            return refused
        if "mbed" in self.target.method:
            await self.state.wait_whole(behaviour, 1)
            return self._embeddings(body)
        output = plan(body, self.target.model, behaviour)
        prompt = input_tokens(body)
        count = int(_get(_get(body, "generation_config"), "candidate_count") or 1)
        if self.target.method == "streamGenerateContent":
            return await self._stream(behaviour, output, prompt, count)
        await self.state.wait_whole(behaviour, output.output_tokens, self.target.model, await self.request.read(),
                                     prompt)
        result = self._response(self._candidates(output, count, output.pieces, True), prompt,
                                output.output_tokens * count)
        return json_response(200, result, GOOGLE_HEADERS)

    def capability_refusal(self, body: dict[str, Any], behaviour: Behaviour) -> web.Response | None:
        """Google's refusal of what the model cannot do (see `simulator.capabilities`); None = it can:
        a method the model does not serve is its 404 (`... is not supported for generateContent`),
        function declarations or an image to a model without them an INVALID_ARGUMENT."""
        model = self.target.model
        if "mbed" in self.target.method:
            return None if serves_embeddings(model, behaviour) else self.status_error(404, behaviour)
        if not serves_chat(model, behaviour):
            return self.status_error(404, behaviour)
        caps = model_capabilities(model, behaviour)
        if "tools" not in caps and gemini_tools(body):
            return google_error(400, f"Function calling is not enabled for models/{model}")
        if "images" not in caps and gemini_image(body):
            return google_error(400, f"Image input modality is not enabled for models/{model}")
        return None

    def status_error(self, status: int, behaviour: Behaviour) -> web.Response:
        """The error `status` admission gave, in Google's format (429 with RetryInfo on the Gemini API:
        until the quota window resets when the quota refused the request)."""
        target = self.target
        details: list[dict[str, Any]] = []
        if status == 404:
            message = (f"Publisher Model `{target.vertex_resource}` was not found or your project does not have "
                       "access to it." if target.vertex else
                       f"models/{target.model} is not found for API version {target.version}, or is not supported "
                       f"for {target.method}. Call ListModels to see the list of available models and their "
                       "supported methods.")
        elif status == 429 and target.vertex:
            message = ("Resource exhausted. Please try again later. Please refer to "
                       "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.")
        elif status == 429:
            message = ("You exceeded your current quota, please check your plan and billing details. For more "
                       "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.")
            details = [{"@type": TYPE_PREFIX + "QuotaFailure", "violations": [{
                "quotaMetric": f"{SERVICE}/generate_content_requests",
                "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                "quotaDimensions": {"location": "global", "model": target.model}, "quotaValue": "1000"}]},
                retry_info(self.state.retry_after_s(behaviour, self.request))]
        elif status == 503:
            message = "The model is overloaded. Please try again later."
        elif status == 504:
            message = "Deadline expired before operation could complete."
        elif status == 401:
            message = BAD_CREDENTIALS
        elif status == 403:
            message = "The caller does not have permission"
        elif status == 400:
            message = "Request contains an invalid argument."
        else:
            message = ("An internal error has occurred. Please retry or report in "
                       "https://developers.generativeai.google/guide/troubleshooting" if status >= 500
                       else "Simulated error.")
        return google_error(status, message, details)

    def _candidates(self, output: Output, count: int, pieces: list[str], final: bool) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]]
        if output.tool_calls:
            parts = [{"functionCall": {"name": c.name, "args": orjson.loads(c.arguments)}} for c in output.tool_calls]
        else:
            parts = [{"text": "".join(pieces)}]
        candidates = []
        for index in range(count):
            candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
            if final:
                candidate["finishReason"] = FINISH[output.stop]
            candidate["index"] = index
            candidates.append(candidate)
        return candidates

    def _usage(self, prompt: int, output_tokens: int) -> dict[str, Any]:
        usage: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": output_tokens,
                                 "totalTokenCount": prompt + output_tokens,
                                 "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]}
        if self.target.vertex:
            usage["candidatesTokensDetails"] = [{"modality": "TEXT", "tokenCount": output_tokens}]
            usage["trafficType"] = "ON_DEMAND"
        return usage

    def _response(self, candidates: list[dict[str, Any]], prompt: int, output_tokens: int) -> dict[str, Any]:
        result: dict[str, Any] = {"candidates": candidates, "usageMetadata": self._usage(prompt, output_tokens),
                                  "modelVersion": self.target.model}
        if self.target.vertex:
            now = dt.datetime.fromtimestamp(self.state.clock(), dt.UTC)
            result["createTime"] = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        result["responseId"] = self.response_id
        return result

    async def _stream(self, behaviour: Behaviour, output: Output, prompt: int, count: int) -> web.StreamResponse:
        sse = self.request.query.get("alt") == "sse"
        if output.tool_calls or not output.pieces:
            steps = [self._response(self._candidates(output, count, output.pieces, True), prompt,
                                    output.output_tokens * count)]
        else:
            steps = []
            for i in range(len(output.pieces)):
                final = i == len(output.pieces) - 1
                emitted = textgen.count_all(output.pieces[:i + 1]) * count
                steps.append(self._response(self._candidates(output, count, output.pieces[i:i + 1], final), prompt,
                                            emitted))
        await self.state.wait_first(behaviour, self.target.model, await self.request.read(), prompt)
        if sse:
            response = await open_stream(self.request, {**GOOGLE_HEADERS, "content-disposition": "attachment"})
        else:
            response = web.StreamResponse(status=200, headers={**GOOGLE_HEADERS, "content-type": "application/json"})
            await response.prepare(self.request)
        try:
            if not sse:
                await write(response, b"[")
            for i, step in enumerate(steps):
                if i:
                    await self.state.wait_token(behaviour)
                broken = faults.stream_broken(behaviour, i)
                if broken:
                    step = orjson.loads(self.status_error(behaviour.error_status, behaviour).text or "{}")
                data = orjson.dumps(step)
                if sse:
                    await write(response, b"data: " + data + b"\r\n\r\n")
                else:
                    await write(response, (b"\n,\r\n" if i else b"") + data)
                if broken:
                    break
            if not sse:
                await write(response, b"]")
            await response.write_eof()
        except ClientGone:
            pass
        return response

    def _embeddings(self, body: dict[str, Any]) -> web.Response:
        requests = [body] if self.target.method == "embedContent" else body["requests"]
        vectors = []
        for entry in requests:
            text = "\n".join(_content_texts(_get(entry, "content")))
            dims = int(_get(entry, "output_dimensionality") or EMBED_DIMS)
            vectors.append({"values": textgen.embedding(self.target.model, text, dims)})
        result = {"embedding": vectors[0]} if self.target.method == "embedContent" else {"embeddings": vectors}
        return json_response(200, result, GOOGLE_HEADERS)


def api_key_error(request: web.Request, keys_accepted: Any, method: str) -> web.Response | None:
    """Google's answer when the Gemini API key is missing or not accepted (None = accepted)."""
    key = request.headers.get("x-goog-api-key") or request.query.get("key")
    service_method = f"google.ai.generativelanguage.v1beta.GenerativeService.{method[:1].upper()}{method[1:]}"
    if not key:
        if "authorization" in request.headers:
            return google_error(401, BAD_CREDENTIALS, [error_info("ACCESS_TOKEN_TYPE_UNSUPPORTED", SERVICE,
                                                                  method=service_method)])
        return google_error(403, "Method doesn't allow unregistered callers (callers without established identity)."
                            " Please use API Key or other form of API consumer identity to call this API.")
    if not keys_accepted(key):
        return google_error(400, "API key not valid. Please pass a valid API key.",
                            [error_info("API_KEY_INVALID", SERVICE)])
    return None


async def gemini_route(state: SimState, request: web.Request) -> web.StreamResponse:
    """`POST /{version}/models/{model}:{method}` on the Gemini API."""
    version = request.match_info["version"]
    model, _, method = request.match_info["rest"].partition(":")
    rejected = api_key_error(request, state.key_accepted, method or "generateContent")
    if rejected is not None:
        return rejected
    if version not in ("v1", "v1beta", "v1alpha") or not model or not method:
        return google_error(404, f"Method not found: {request.path}")
    if method == "countTokens":
        from simulator.count_tokens_api import gemini_count

        return await gemini_count(state, request, model, vertex=False)
    return await GeminiExchange(state, request, Target(model, method, version)).answer()

