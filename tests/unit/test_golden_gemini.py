"""Golden files for the Gemini pairs: tests/golden/{openai-gemini, openai-vertex-gemini,
openai_embeddings-gemini}/<case>/, in the layout of `test_translate_golden` (inputs `target.json`,
`client_request.json` and at most one upstream answer; expected `upstream_request.json`,
`upstream_meta.json`, `client_response.json|.sse`, `client_error.json`, `usage.json`; REGEN=1
rewrites the expected outputs). Translator classes are used directly, not through the registry.

Checks: translation is deterministic and leaves its input alone; every stream gives the same bytes
whole, byte by byte and split at every point; each upstream request round-trips through the
google-genai 3.6 types (`Content`, `Tool`, `ToolConfig`, `GenerationConfig`; models that forbid
extra fields, and a round trip through their camelCase aliases rejects snake_case keys and any
value the types would change); upstream fixtures validate as `GenerateContentResponse` /
`EmbedContentResponse`; the openai SDK parses what the client gets (streams accumulated as
`client.chat.completions.stream()` does), and a stream tells the client what the whole response
accumulated from the same chunks tells it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.genai import types
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types import CreateEmbeddingResponse, embedding_create_params
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from extproc.errors import GatewayError
from extproc.translate.base import Target
from extproc.translate.openai_gemini import OpenAIToGemini
from extproc.translate.openai_gemini_embeddings import OpenAIEmbeddingsToGemini
from simulator.validate import check, openai_chat_request_problems
from tests.unit.test_translate_golden import (
    OUTPUTS,
    _context,
    _dump,
    _error_doc,
    _load,
    _sdk_events,
    stream_pieces,
    translate_stream,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
REGEN = os.environ.get("REGEN") == "1"
TRANSLATORS: dict[str, Any] = {"openai-gemini": OpenAIToGemini(), "openai-vertex-gemini": OpenAIToGemini(),
                               "openai_embeddings-gemini": OpenAIEmbeddingsToGemini()}
CHAT_PAIRS = ("openai-gemini", "openai-vertex-gemini")
CASES = sorted(p for pair in TRANSLATORS for p in (GOLDEN / pair).glob("*") if (p / "client_request.json").exists())
BODY_TYPES: dict[str, Any] = {"systemInstruction": types.Content, "toolConfig": types.ToolConfig,
                              "generationConfig": types.GenerationConfig}
EMBED_REQUEST_KEYS = {"model", "content", "outputDimensionality", "taskType", "title"}


def _ids(case: Path) -> str:
    return f"{case.parent.name}/{case.name}"


def _target(case: Path) -> Target:
    raw = _load(case / "target.json")
    return Target(**{**raw, "capabilities": frozenset(raw.get("capabilities", ())),
                     "options": tuple(tuple(o) for o in raw.get("options", ()))})


def _translate(case: Path) -> dict[str, str]:
    translator = TRANSLATORS[case.parent.name]
    target = _target(case)
    request = _load(case / "client_request.json")
    snapshot = json.dumps(request, sort_keys=True)
    outputs: dict[str, str] = {}
    try:
        upstream = translator.translate_request(request, target)
    except GatewayError as err:
        assert json.dumps(request, sort_keys=True) == snapshot, "translate_request mutated its input"
        outputs["client_error.json"] = _dump(_error_doc(err))
        return outputs
    assert json.dumps(request, sort_keys=True) == snapshot, "translate_request mutated its input"
    assert translator.translate_request(request, target) == upstream, "translation is not deterministic"
    outputs["upstream_request.json"] = _dump(orjson.loads(upstream.body))
    outputs["upstream_meta.json"] = _dump({"path": upstream.path, "headers": dict(upstream.headers),
                                           "dropped_params": list(upstream.dropped_params),
                                           "stream": upstream.stream})
    ctx = _context(case, request)
    usage = None
    try:
        if (case / "upstream_response.json").exists():
            client, usage = translator.translate_response((case / "upstream_response.json").read_bytes(), target, ctx)
            outputs["client_response.json"] = _dump(orjson.loads(client))
        elif (case / "upstream_response.sse").exists():
            client, usage = translate_stream(translator, target, ctx, [(case / "upstream_response.sse").read_bytes()])
            outputs["client_response.sse"] = client.decode()
        elif (case / "upstream_error.json").exists():
            spec = _load(case / "upstream_error.json")
            err_body = spec["body"] if isinstance(spec["body"], str) else json.dumps(spec["body"])
            headers = {"retry-after": spec["retry_after"]} if spec.get("retry_after") else {}
            outputs["client_error.json"] = _dump(_error_doc(translator.translate_error(spec["status"],
                                                                                       err_body.encode(), headers)))
    except GatewayError as err:
        outputs["client_error.json"] = _dump(_error_doc(err))
    if usage is not None:
        outputs["usage.json"] = _dump({**dataclasses.asdict(usage), "total_tokens": usage.total_tokens})
    return outputs


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_golden(case: Path) -> None:
    outputs = _translate(case)
    if REGEN:
        for name in OUTPUTS:
            (case / name).unlink(missing_ok=True)
        for name, text in outputs.items():
            (case / name).write_text(text)
    expected = {name: (case / name).read_text() for name in OUTPUTS if (case / name).exists()}
    assert outputs == expected


STREAM_CASES = [c for c in CASES if (c / "upstream_response.sse").exists()]


@pytest.mark.parametrize("case", STREAM_CASES, ids=_ids)
def test_stream_split_anywhere(case: Path) -> None:
    translator = TRANSLATORS[case.parent.name]
    target, request = _target(case), _load(case / "client_request.json")
    ctx = _context(case, request)
    raw = (case / "upstream_response.sse").read_bytes()
    whole, usage = translate_stream(translator, target, ctx, [raw])
    for pieces in stream_pieces(raw):
        assert translate_stream(translator, target, ctx, pieces) == (whole, usage), pieces


def _round_trip(model: Any, value: Any, where: str) -> None:
    """`value` validates as `model` (unknown keys forbidden) and dumps back unchanged by alias."""
    parsed = model.model_validate_json(json.dumps(value))
    assert parsed.model_dump(mode="json", by_alias=True, exclude_none=True) == value, where


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_upstream_request_matches_sdk_types(case: Path) -> None:
    if not (case / "upstream_request.json").exists():
        assert _load(case / "client_error.json")["status"] == 400
        return
    request, body = _load(case / "client_request.json"), _load(case / "upstream_request.json")
    meta = _load(case / "upstream_meta.json")
    target = _target(case)
    if case.parent.name == "openai_embeddings-gemini":
        assert check(embedding_create_params.EmbeddingCreateParams, request) == []
        assert set(body) == {"requests"} and body["requests"]
        resource = f"models/{target.upstream_model}"
        for i, item in enumerate(body["requests"]):
            assert set(item) <= EMBED_REQUEST_KEYS and item["model"] == resource
            _round_trip(types.Content, item["content"], f"requests[{i}].content")
        assert meta["path"] == f"/{target.option('api_version')}/{resource}:batchEmbedContents"
        return
    assert openai_chat_request_problems(request) == []
    assert set(body) <= {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig"}
    assert body["contents"]
    for i, content in enumerate(body["contents"]):
        assert content["role"] in ("user", "model")
        _round_trip(types.Content, content, f"contents[{i}]")
    for i, tool in enumerate(body.get("tools", [])):
        _round_trip(types.Tool, tool, f"tools[{i}]")
    for key, model in BODY_TYPES.items():
        if key in body:
            _round_trip(model, body[key], key)
    method = "streamGenerateContent?alt=sse" if meta["stream"] else "generateContent"
    if case.parent.name == "openai-gemini":
        assert meta["path"] == f"/{target.option('api_version')}/models/{target.upstream_model}:{method}"
    else:
        assert meta["path"] == (f"/v1/projects/{target.option('project')}/locations/{target.option('location')}"
                                f"/publishers/google/models/{target.upstream_model}:{method}")
    assert meta["stream"] == (request.get("stream") is True)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_upstream_fixture_is_real_provider_output(case: Path) -> None:
    model = (types.EmbedContentResponse if case.parent.name == "openai_embeddings-gemini"
             else types.GenerateContentResponse)
    if (case / "upstream_response.json").exists():
        model.model_validate_json((case / "upstream_response.json").read_bytes())
    if (case / "upstream_response.sse").exists():
        for event in _sdk_events((case / "upstream_response.sse").read_bytes()):
            data = json.loads(event.data)
            if "error" in data:
                assert set(data["error"]) >= {"code", "message", "status"}
            else:
                types.GenerateContentResponse.model_validate_json(event.data)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_client_sdk_reads_response(case: Path) -> None:
    if (case / "client_response.json").exists():
        if case.parent.name == "openai_embeddings-gemini":
            parsed = CreateEmbeddingResponse.model_validate(_load(case / "client_response.json"))
            assert [d.index for d in parsed.data] == list(range(len(parsed.data)))
            return
        completion = ChatCompletion.model_validate(_load(case / "client_response.json"))
        for choice in completion.choices:
            for call in choice.message.tool_calls or []:
                assert call.type == "function"
                assert isinstance(json.loads(call.function.arguments), dict)
            assert (choice.finish_reason == "tool_calls") == bool(choice.message.tool_calls)
    if (case / "client_response.sse").exists():
        _check_client_stream(case)
    if (case / "client_error.json").exists():
        doc = _load(case / "client_error.json")
        assert set(doc["body"]["error"]) == {"message", "type", "param", "code"}
        assert doc["status"] >= 400


def _accumulate_client(raw: bytes) -> tuple[Any, Any, str | None]:
    """(completion snapshot or None, usage or None, "done" | "error" | None) of a client stream."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    usage, ended, seen = None, None, False
    for event in _sdk_events(raw):
        assert ended is None, f"data after the end of the stream: {event.data}"
        if event.data == "[DONE]":
            ended = "done"
            continue
        data = json.loads(event.data)
        if "error" in data:
            assert set(data["error"]) == {"message", "type", "param", "code"}
            ended = "error"
            continue
        chunk = ChatCompletionChunk.model_validate(data)
        if chunk.choices:
            state.handle_chunk(chunk)
            seen = True
        usage = chunk.usage or usage
    return (state.current_completion_snapshot if seen else None), usage, ended


def _check_client_stream(case: Path) -> None:
    raw = (case / "client_response.sse").read_bytes()
    include_usage = _context(case, _load(case / "client_request.json")).include_usage
    heads = set()
    for event in _sdk_events(raw):
        if event.data != "[DONE]" and "error" not in json.loads(event.data):
            chunk = ChatCompletionChunk.model_validate_json(event.data)
            heads.add((chunk.id, chunk.created, chunk.model))
            assert ("usage" in json.loads(event.data)) == include_usage
            assert chunk.choices or (include_usage and chunk.usage is not None)
    assert len(heads) <= 1, heads
    final, _, ended = _accumulate_client(raw)
    assert ended is not None, "stream neither finished nor failed"
    if ended == "done":
        for choice in final.choices:
            calls = choice.message.tool_calls or []
            assert choice.finish_reason is not None
            assert (choice.finish_reason == "tool_calls") == bool(calls)
            for call in calls:
                assert call.id and call.function.name
                assert isinstance(json.loads(call.function.arguments), dict)


def _accumulate_upstream(raw: bytes) -> dict[str, Any]:
    """The whole GenerateContentResponse the Gemini stream chunks add up to."""
    whole: dict[str, Any] = {"candidates": []}
    by_index: dict[int, dict[str, Any]] = {}
    for event in _sdk_events(raw):
        data = json.loads(event.data)
        for key in ("responseId", "modelVersion"):
            whole.setdefault(key, data.get(key))
        if "usageMetadata" in data:
            whole["usageMetadata"] = data["usageMetadata"]
        for position, candidate in enumerate(data.get("candidates", [])):
            index = candidate.get("index", position)
            into = by_index.setdefault(index, {"index": index, "content": {"role": "model", "parts": []}})
            whole["candidates"] = [by_index[i] for i in sorted(by_index)]
            parts = into["content"]["parts"]
            for part in candidate.get("content", {}).get("parts", []):
                if "text" in part and parts and set(parts[-1]) == {"text"} and set(part) == {"text"}:
                    parts[-1] = {"text": parts[-1]["text"] + part["text"]}
                else:
                    parts.append(part)
            if candidate.get("finishReason"):
                into["finishReason"] = candidate["finishReason"]
    return {k: v for k, v in whole.items() if v is not None}


COMPLETE_STREAMS = [c for c in STREAM_CASES if c.parent.name in CHAT_PAIRS
                    and (c / "client_response.sse").exists()
                    and (c / "client_response.sse").read_bytes().endswith(b"data: [DONE]\n\n")]


@pytest.mark.parametrize("case", COMPLETE_STREAMS, ids=_ids)
def test_stream_agrees_with_whole_response(case: Path) -> None:
    """Oracle: the chunks accumulated into one response and translated whole must tell the client
    what the openai SDK accumulates from the translated stream."""
    translator, target = TRANSLATORS[case.parent.name], _target(case)
    ctx = _context(case, _load(case / "client_request.json"))
    upstream_whole = _accumulate_upstream((case / "upstream_response.sse").read_bytes())
    types.GenerateContentResponse.model_validate(upstream_whole)
    body, whole_usage = translator.translate_response(orjson.dumps(upstream_whole), target,
                                                      dataclasses.replace(ctx, include_usage=False))
    whole = ChatCompletion.model_validate_json(body)
    streamed, stream_usage, ended = _accumulate_client((case / "client_response.sse").read_bytes())
    assert ended == "done"

    def calls(message: Any) -> list[tuple[str, str, Any]]:
        return [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]

    assert (streamed.id, streamed.model, streamed.created) == (whole.id, whole.model, whole.created)
    assert len(streamed.choices) == len(whole.choices)
    for s, w in zip(streamed.choices, whole.choices, strict=True):
        assert (s.message.content or "") == (w.message.content or "")
        assert calls(s.message) == calls(w.message)
        assert s.finish_reason == w.finish_reason
    assert translate_stream(translator, target, ctx, [(case / "upstream_response.sse").read_bytes()])[1] == whole_usage
    if ctx.include_usage:
        assert stream_usage == whole.usage


def test_cases_exist_for_every_pair() -> None:
    assert {c.parent.name for c in CASES} == set(TRANSLATORS)

