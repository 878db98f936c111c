"""Golden files for the Anthropic-client pairs and the other pairs of the same family (Azure OpenAI,
Anthropic on Vertex, embeddings): tests/golden/<dir>/<case>/, laid out as in test_translate_golden.

`DIRS` names the translator each directory exercises, its client API and its upstream API (the
composition `AnthropicVia` is exercised with the OpenAI passthrough — that is `AnthropicToOpenAI` —
and with the (openai, anthropic) and (openai, azure-openai) translators as its inner).
`REGEN=1` rewrites the expected outputs.

Checks: every stream translated whole, byte by byte and split in two at every point gives the
same bytes; client requests that translate are valid for the client SDK's param types (older
Anthropic clients' temperature/top_p/top_k allowed); upstream requests are valid for the provider
SDK's param types (Vertex: the Anthropic type minus `model`, plus `anthropic_version`); upstream
fixtures parse as the provider SDK's response types; Anthropic client answers parse as
`anthropic.types.Message` / the SDK's stream events, and a stream accumulated with the SDK's
`accumulate_event` equals the translation of the accumulated upstream stream sent whole.
"""

from __future__ import annotations

import array
import base64
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest
from anthropic._constants import ANTHROPIC_API_VERSION
from anthropic._streaming import SSEDecoder as AnthropicSSEDecoder
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types import CreateEmbeddingResponse, EmbeddingCreateParams
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from extproc.errors import GatewayError, render
from extproc.translate.anthropic_anthropic import AnthropicToAnthropic
from extproc.translate.anthropic_via import AnthropicToOpenAI, AnthropicVia
from extproc.translate.base import Translator
from extproc.translate.openai_anthropic import OpenAIToAnthropic
from extproc.translate.openai_azure import OpenAIToAzure
from extproc.translate.openai_embeddings import OpenAIEmbeddingsToOpenAI
from extproc.translate.vertex_anthropic import AnthropicToVertexAnthropic, OpenAIToVertexAnthropic
from simulator.validate import anthropic_messages_request_problems, check, openai_chat_request_problems
from tests.unit.test_translate_golden import (
    CACHE_CONTROL_EXTENSION,
    _context,
    _dump,
    _load,
    _target,
    stream_pieces,
    translate_stream,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
REGEN = os.environ.get("REGEN") == "1"
OUTPUTS = ("upstream_request.json", "upstream_meta.json", "client_response.json", "client_response.sse",
           "client_error.json", "usage.json")
# Older Anthropic SDKs send these; the 2.13 types no longer define them.
LEGACY_ANTHROPIC = ("temperature: unknown field", "top_p: unknown field", "top_k: unknown field")
DIRS: dict[str, tuple[Translator, str, str]] = {
    "anthropic-anthropic": (AnthropicToAnthropic(), "anthropic", "anthropic"),
    "anthropic-openai": (AnthropicToOpenAI(), "anthropic", "openai"),
    "anthropic-via-anthropic": (AnthropicVia(OpenAIToAnthropic()), "anthropic", "anthropic"),
    "anthropic-via-azure-openai": (AnthropicVia(OpenAIToAzure()), "anthropic", "openai"),
    "anthropic-vertex-anthropic": (AnthropicToVertexAnthropic(), "anthropic", "vertex-anthropic"),
    "openai-azure-openai": (OpenAIToAzure(), "openai", "openai"),
    "openai-vertex-anthropic": (OpenAIToVertexAnthropic(), "openai", "vertex-anthropic"),
    "openai_embeddings-openai": (OpenAIEmbeddingsToOpenAI(), "openai-embeddings", "openai-embeddings"),
}
CASES = sorted(p for d in DIRS for p in (GOLDEN / d).glob("*") if (p / "client_request.json").exists())
STREAMS = [c for c in CASES if (c / "upstream_response.sse").exists()]


def _ids(case: Path) -> str:
    return f"{case.parent.name}/{case.name}"


def _pair(case: Path) -> tuple[Translator, str, str]:
    return DIRS[case.parent.name]


def _error_doc(err: GatewayError, client_api: str) -> dict[str, Any]:
    status, body, headers = render(err, "anthropic" if client_api == "anthropic" else "openai")
    return {"status": status, "headers": headers, "body": orjson.loads(body)}


def _translate(case: Path) -> dict[str, str]:
    translator, client_api, _ = _pair(case)
    target = _target(case)
    request = _load(case / "client_request.json")
    snapshot = json.dumps(request, sort_keys=True)
    outputs: dict[str, str] = {}
    try:
        upstream = translator.translate_request(request, target)
    except GatewayError as err:
        assert json.dumps(request, sort_keys=True) == snapshot, "translate_request mutated its input"
        outputs["client_error.json"] = _dump(_error_doc(err, client_api))
        return outputs
    assert json.dumps(request, sort_keys=True) == snapshot, "translate_request mutated its input"
    assert translator.translate_request(request, target) == upstream, "translation is not deterministic"
    outputs["upstream_request.json"] = _dump(orjson.loads(upstream.body))
    outputs["upstream_meta.json"] = _dump({"path": upstream.path, "headers": dict(upstream.headers),
                                           "dropped_params": list(upstream.dropped_params),
                                           "stream": upstream.stream})
    ctx = _context(case, request)
    usage = None
    if (case / "upstream_response.json").exists():
        raw = (case / "upstream_response.json").read_bytes()
        try:
            client, usage = translator.translate_response(raw, target, ctx)
        except GatewayError as err:
            outputs["client_error.json"] = _dump(_error_doc(err, client_api))
        else:
            assert client is raw if translator.passthrough else True
            outputs["client_response.json"] = _dump(orjson.loads(client))
    elif (case / "upstream_response.sse").exists():
        raw = (case / "upstream_response.sse").read_bytes()
        client, usage = translate_stream(translator, target, ctx, [raw])
        assert client == raw if translator.passthrough else True
        outputs["client_response.sse"] = client.decode()
    elif (case / "upstream_error.json").exists():
        spec = _load(case / "upstream_error.json")
        err_body = spec["body"] if isinstance(spec["body"], str) else json.dumps(spec["body"])
        mapped = translator.translate_error(spec["status"], err_body.encode(),
                                            {"retry-after": spec["retry_after"]} if spec.get("retry_after") else {})
        outputs["client_error.json"] = _dump(_error_doc(mapped, client_api))
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


@pytest.mark.parametrize("case", STREAMS, ids=_ids)
def test_stream_split_anywhere(case: Path) -> None:
    translator = _pair(case)[0]
    target, request = _target(case), _load(case / "client_request.json")
    ctx = _context(case, request)
    raw = (case / "upstream_response.sse").read_bytes()
    whole, usage = translate_stream(translator, target, ctx, [raw])
    for pieces in stream_pieces(raw):
        assert translate_stream(translator, target, ctx, pieces) == (whole, usage), pieces


def _client_problems(client_api: str, body: dict[str, Any]) -> list[str]:
    if client_api == "anthropic":
        return [p for p in anthropic_messages_request_problems(body) if p not in LEGACY_ANTHROPIC]
    if client_api == "openai":
        return [p for p in openai_chat_request_problems(body) if not p.endswith(CACHE_CONTROL_EXTENSION)]
    return check(EmbeddingCreateParams, body)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_requests_match_sdk_types(case: Path) -> None:
    _, client_api, upstream_api = _pair(case)
    if not (case / "upstream_request.json").exists():
        assert _load(case / "client_error.json")["status"] == 400
        return
    assert _client_problems(client_api, _load(case / "client_request.json")) == []
    body = _load(case / "upstream_request.json")
    meta = _load(case / "upstream_meta.json")
    assert meta["stream"] == (body.get("stream") is True)
    if upstream_api == "openai":
        assert openai_chat_request_problems(body) == []
    elif upstream_api == "openai-embeddings":
        assert check(EmbeddingCreateParams, body) == []
    elif upstream_api == "anthropic":
        assert anthropic_messages_request_problems(body) == []
        assert meta["headers"]["anthropic-version"] == ANTHROPIC_API_VERSION
    else:
        assert "model" not in body and body["anthropic_version"] == ANTHROPIC_API_VERSION
        rest = {k: v for k, v in body.items() if k != "anthropic_version"}
        assert anthropic_messages_request_problems({**rest, "model": "m"}) == []
        assert meta["path"].endswith(":streamRawPredict" if meta["stream"] else ":rawPredict")
        assert "anthropic-version" not in meta["headers"]


def _sse(raw: bytes) -> list[Any]:
    return list(AnthropicSSEDecoder().iter_bytes(iter([raw])))


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_upstream_fixture_is_real_provider_output(case: Path) -> None:
    upstream_api = _pair(case)[2]
    if (case / "upstream_response.json").exists():
        body = _load(case / "upstream_response.json")
        if upstream_api == "openai":
            ChatCompletion.model_validate(body)
        elif upstream_api == "openai-embeddings":
            CreateEmbeddingResponse.model_validate(_decoded_embeddings(body))
        else:
            Message.model_validate(body)
    if (case / "upstream_response.sse").exists():
        for event in _sse((case / "upstream_response.sse").read_bytes()):
            if event.data == "[DONE]":
                continue
            data = json.loads(event.data)
            if upstream_api == "openai":
                # Azure's prompt-filter chunk (object "") is read by the SDK without validation.
                if "error" not in data and data["object"]:
                    ChatCompletionChunk.model_validate(data)
            else:
                assert event.event == data["type"]
                if data["type"] not in ("ping", "error"):
                    TypeAdapter(RawMessageStreamEvent).validate_python(data)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_client_sdk_reads_response(case: Path) -> None:
    client_api = _pair(case)[1]
    if (case / "client_error.json").exists():
        doc = _load(case / "client_error.json")
        assert doc["status"] >= 400
        if client_api == "anthropic":
            assert doc["body"]["type"] == "error" and set(doc["body"]["error"]) == {"type", "message"}
        else:
            assert set(doc["body"]["error"]) == {"message", "type", "param", "code"}
    if client_api == "openai-embeddings":
        if (case / "client_response.json").exists():
            CreateEmbeddingResponse.model_validate(_decoded_embeddings(_load(case / "client_response.json")))
        return
    if client_api == "openai":
        if (case / "client_response.json").exists():
            ChatCompletion.model_validate(_load(case / "client_response.json"))
        if (case / "client_response.sse").exists():
            _openai_sdk_read((case / "client_response.sse").read_bytes())
        return
    if (case / "client_response.json").exists():
        message = Message.model_validate(_load(case / "client_response.json"))
        assert (message.stop_reason == "tool_use") == any(b.type == "tool_use" for b in message.content)
    if (case / "client_response.sse").exists():
        raw = (case / "client_response.sse").read_bytes()
        accumulated = _accumulate_client_stream(raw)
        final = _anthropic_sdk_read(raw)
        assert (final.model_dump() if final else None) == (accumulated.model_dump() if accumulated else None)


def _decoded_embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """`body` with base64 embeddings decoded to floats, as the openai SDK hands them over."""
    data = [{**item, "embedding": array.array("f", base64.b64decode(item["embedding"])).tolist()}
            if isinstance(item["embedding"], str) else item for item in body["data"]]
    return {**body, "data": data}


def _transport(raw: bytes) -> httpx2.Client:
    return httpx2.Client(transport=httpx2.MockTransport(
        lambda request: httpx2.Response(200, content=raw, headers={"content-type": "text/event-stream"})))


def _openai_sdk_read(raw: bytes) -> Any:
    """What `client.chat.completions.stream()` of the openai SDK makes of a client stream."""
    client = openai.OpenAI(api_key="k", base_url="http://gateway/v1", http_client=_transport(raw))
    try:
        with client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "x"}]) as stream:
            final = stream.get_final_completion()
    except openai.APIError:
        return None
    choice = final.choices[0]
    assert choice.finish_reason is not None
    for call in choice.message.tool_calls or []:
        assert call.id and isinstance(json.loads(call.function.arguments), dict)
    return final


def _anthropic_sdk_read(raw: bytes) -> Message | None:
    """What `client.messages.stream()` of the anthropic SDK makes of a client stream."""
    client = anthropic.Anthropic(api_key="k", base_url="http://gateway", http_client=_transport(raw))
    try:
        with client.messages.stream(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}]) as stream:
            return Message.model_validate(stream.get_final_message().to_dict())
    except anthropic.APIError:
        return None


def _accumulate_client_stream(raw: bytes) -> Message | None:
    """The Message the anthropic SDK accumulates from a client stream (None if it ends in an error)."""
    snapshot: Any = None
    bufs: dict[int, bytes] = {}
    events = _sse(raw)
    assert events, "empty stream"
    assert raw.count(b"event: ") == len(events) and b"\n\n\n" not in raw
    for n, event in enumerate(events):
        data = json.loads(event.data)
        assert event.event == data["type"]
        if data["type"] == "ping":
            continue
        if data["type"] == "error":
            assert n == len(events) - 1, "events after an error"
            assert set(data) == {"type", "error"} and set(data["error"]) == {"type", "message"}
            return None
        parsed = TypeAdapter(RawMessageStreamEvent).validate_python(data)
        snapshot = accumulate_event(event=parsed, current_snapshot=snapshot, json_bufs=bufs)
    assert events[-1].event == "message_stop", "stream neither finished nor failed"
    return Message.model_validate(snapshot.to_dict())


def _whole_upstream(case: Path) -> bytes:
    """The upstream stream of `case` accumulated into the provider's whole response body."""
    events = _sse((case / "upstream_response.sse").read_bytes())
    if _pair(case)[2] == "openai":
        state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
        usage = None
        for event in events:
            if event.data != "[DONE]" and json.loads(event.data)["object"]:
                chunk = ChatCompletionChunk.model_validate_json(event.data)
                usage = chunk.usage or usage
                if chunk.choices:
                    state.handle_chunk(chunk)
        completion = state.current_completion_snapshot.model_dump(mode="json")
        return orjson.dumps({**completion, "usage": usage.model_dump(mode="json") if usage else None})
    snapshot: Any = None
    bufs: dict[int, bytes] = {}
    for event in events:
        if json.loads(event.data)["type"] != "ping":
            snapshot = accumulate_event(event=json.loads(event.data), current_snapshot=snapshot, json_bufs=bufs)
    return snapshot.to_json().encode()  # type: ignore[no-any-return]


MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
COMPLETE_ANTHROPIC_STREAMS = [c for c in STREAMS if _pair(c)[1] == "anthropic" and (c / "client_response.sse").exists()
                              and (c / "client_response.sse").read_bytes().endswith(MESSAGE_STOP)]


@pytest.mark.parametrize("case", COMPLETE_ANTHROPIC_STREAMS, ids=_ids)
def test_stream_agrees_with_whole_response(case: Path) -> None:
    translator = _pair(case)[0]
    target, request = _target(case), _load(case / "client_request.json")
    ctx = _context(case, request)
    whole_body, whole_usage = translator.translate_response(_whole_upstream(case), target, ctx)
    client, usage = translate_stream(translator, target, ctx, [(case / "upstream_response.sse").read_bytes()])
    streamed = _accumulate_client_stream(client)
    assert streamed is not None
    assert streamed.model_dump() == Message.model_validate_json(whole_body).model_dump()
    assert usage == whole_usage


def test_cases_exist_for_every_dir() -> None:
    assert {c.parent.name for c in CASES} == set(DIRS)
    assert len(COMPLETE_ANTHROPIC_STREAMS) >= 5
