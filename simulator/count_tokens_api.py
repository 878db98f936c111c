"""Simulated token counting, one endpoint per provider API that has one:

- Anthropic `POST /v1/messages/count_tokens` → `{"input_tokens": N}` (body: the anthropic SDK's
  `MessageCountTokensParams`);
- Vertex AI Anthropic `POST …/publishers/anthropic/models/count-tokens:rawPredict` (the same
  body with `anthropic_version`; `model` stays in the body, as the SDK's Vertex client sends it);
- Gemini API `POST /{v}/models/{m}:countTokens` → `{"totalTokens": N, "promptTokensDetails"}`
  (body: `contents` alone, or `generateContentRequest`, checked as a generateContent body);
- Vertex AI Gemini `POST …/publishers/google/models/{m}:countTokens` (body: `contents`,
  `systemInstruction`, `tools`, as google-genai's Vertex client sends them);
- Bedrock `POST /model/{id}/count-tokens` → `{"inputTokens": N}` (SigV4; body checked against
  botocore's `CountTokens` input shape);
- OpenAI `POST /v1/responses/input_tokens` → `{"object": "response.input_tokens", "input_tokens": N}`
  (body: the openai SDK's `InputTokenCountParams`).

Every count uses the token rule of the same provider's generation endpoint in this simulator, so
a count equals the `input_tokens` / `promptTokenCount` / `inputTokens` a generation of the same
request reports. Authentication, scripted errors (`status`, `error_rate`) and quotas apply as for
generation; counting does not pace (no `ttft_ms`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from simulator import anthropic_api, bedrock_api, gemini_api, textgen
from simulator.anthropic_api import MessagesExchange
from simulator.aws_auth import as_headers
from simulator.common import bearer_token, json_response, parse_json_body, read_body
from simulator.google_errors import google_error, violations_error
from simulator.openai_checks import error as openai_error
from simulator.openai_checks import problems_error
from simulator.state import SimState
from simulator.validate import body_problems
from simulator.validate.bedrock import _decode, _report, bedrock_shape
from simulator.validate.gemini import Violation, gemini_generate_request_problems


def anthropic_count_problems(body: Any) -> list[str]:
    from anthropic.types import MessageCountTokensParams

    return body_problems(body, MessageCountTokensParams)


def openai_count_problems(body: Any) -> list[str]:
    from openai.types.responses import InputTokenCountParams

    return body_problems(body, InputTokenCountParams)


def bedrock_count_problems(body: Any, model_id: str) -> list[str]:
    if not isinstance(body, dict):
        return ["Invalid type for parameter input, value: body, type: must be a JSON object"]
    shape = bedrock_shape("CountTokens")
    problems: list[str] = []
    params = _decode(shape, body, "input", problems)
    params["modelId"] = model_id
    problems += _report(shape, params)
    converse = body.get("input", {}).get("converse") if isinstance(body.get("input"), dict) else None
    if not problems and not (isinstance(converse, dict) and converse.get("messages")):
        problems.append("input.converse.messages: at least one message is required")
    return problems


def gemini_count_violations(body: Any, vertex: bool) -> list[Violation]:
    """Vertex: a generateContent-shaped body. Gemini API: `contents` alone, or one
    `generateContentRequest` (a generateContent body with its `model`)."""
    if vertex or not isinstance(body, dict):
        return gemini_generate_request_problems(body, vertex=vertex)
    unknown = sorted(set(body) - {"contents", "generateContentRequest"})
    if unknown:
        return [Violation("", f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.')]
    request = body.get("generateContentRequest")
    if isinstance(request, dict):
        return gemini_generate_request_problems({k: v for k, v in request.items() if k != "model"})
    return gemini_generate_request_problems({"contents": body.get("contents")})


def _responses_texts(body: dict[str, Any]) -> list[str]:
    texts = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    items = body.get("input")
    if isinstance(items, str):
        return [*texts, items]
    for item in items or []:
        if not isinstance(item, dict):
            continue
        content = item.get("content")
        if isinstance(content, str):
            texts.append(content)
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        texts.extend(str(item[k]) for k in ("name", "arguments", "output") if isinstance(item.get(k), str))
    texts.extend(orjson.dumps(t).decode() for t in body.get("tools") or [])
    return texts


async def anthropic_count(state: SimState, request: web.Request, vertex_model: str | None = None
                          ) -> web.StreamResponse:
    """Anthropic's count; `vertex_model` set: the Vertex rawPredict form (no header version)."""
    exchange = MessagesExchange(state, request)
    body, refused = await read_body(request, exchange.precheck() if vertex_model is None else None,
                                    lambda message: exchange.error(
                                        400, f"There was an issue with your request body: {message}"))
    if refused is not None:
        return refused
    version = body.pop("anthropic_version", None) if vertex_model is not None and isinstance(body, dict) else ""
    if not isinstance(version, str):
            return exchange.error(400, "anthropic_version: Field required")
    problems = anthropic_count_problems(body)
    if problems:
        return exchange.error(400, problems[0])
    behaviour = state.behaviour(body["model"])
    status = state.admission(behaviour, body["model"], request)
    if status is not None:
        return exchange.error(status, "Simulated error.")
    return json_response(200, {"input_tokens": anthropic_api.input_tokens(body)}, {"request-id": exchange.request_id})


async def gemini_count(state: SimState, request: web.Request, model: str, vertex: bool) -> web.StreamResponse:
    body, parse_error = await parse_json_body(request)
    if parse_error:
        return google_error(400, f"Invalid JSON payload received. {parse_error}")
    violations = gemini_count_violations(body, vertex)
    if violations:
        return violations_error(violations)
    status = state.admission(state.behaviour(model), model, request)
    if status is not None:
        return google_error(status, "Simulated error.")
    counted = body.get("generateContentRequest", body)
    tokens = gemini_api.input_tokens(counted)
    answer: dict[str, Any] = {"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT",
                                                                              "tokenCount": tokens}]}
    return json_response(200, answer)


async def bedrock_count(state: SimState, request: web.Request) -> web.StreamResponse:
    exchange_id = "sim-" + state.random_id(12)
    raw_path = request.raw_path.split("?", 1)[0]
    model = unquote(raw_path[len("/model/"):].rpartition("/")[0])
    raw = await request.read()
    refusal = state.aws.verify(request.method, request.raw_path, as_headers(request.headers.items()), raw,
                               state.clock())
    if refusal is not None:
        return bedrock_api.error(*refusal, exchange_id)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return bedrock_api.error(400, "ValidationException", "Malformed input request.", exchange_id)
    problems = bedrock_count_problems(body, model)
    if problems:
        return bedrock_api.error(400, "ValidationException", "; ".join(problems), exchange_id)
    status = state.admission(state.behaviour(model), model, request)
    if status is not None:
        kind, message = bedrock_api.ERRORS.get(status, bedrock_api.ERRORS[500])
        return bedrock_api.error(status, kind, message, exchange_id)
    tokens = bedrock_api.input_tokens(body["input"]["converse"])
    return json_response(200, {"inputTokens": tokens}, {"x-amzn-RequestId": exchange_id})


async def openai_count(state: SimState, request: web.Request) -> web.StreamResponse:
    accepted = state.key_accepted(bearer_token(request))
    body, refused = await read_body(
        request, None if accepted else openai_error(401, "Incorrect API key provided.", code="invalid_api_key"),
        lambda message: openai_error(400, f"We could not parse the JSON body of your request: {message}"))
    if refused is not None:
        return refused
    problems = openai_count_problems(body)
    if problems:
        return problems_error(problems, {})
    model = body.get("model") or ""
    status = state.admission(state.behaviour(model), model, request)
    if status is not None:
        return openai_error(status, "Simulated error.")
    tokens = textgen.count_all(_responses_texts(body))
    return json_response(200, {"object": "response.input_tokens", "input_tokens": tokens})
