"""Upstream-side oracles of the golden runner, one per provider API: which SDK checks the upstream
request (`check_request`: simulator.validate on the openai / anthropic param types, google-genai's
types, botocore's bedrock-runtime model), which checks the recorded provider answers
(`check_fixture`), and how a provider stream adds up to its whole response (`whole`). `Feed` says
how a pair's upstream stream is stored."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import orjson
from anthropic._constants import ANTHROPIC_API_VERSION
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from botocore.eventstream import EventStream, EventStreamBuffer
from botocore.exceptions import EventStreamError as BotocoreEventStreamError
from botocore.parsers import EventStreamJSONParser
from botocore.serialize import create_serializer
from botocore.validate import ParamValidator
from google.genai import types as genai
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types import CreateEmbeddingResponse, EmbeddingCreateParams
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from extproc.translate.base import Target
from simulator.validate import anthropic_messages_request_problems, check, openai_chat_request_problems
from tests.golden.support import (
    anthropic_sse,
    boto3_params,
    decoded_embeddings,
    encode_stream,
    load,
    openai_sse,
)


@dataclass(frozen=True)
class Feed:
    """How a pair's upstream stream is stored: `file` is fed to the translator; `spec`, when set,
    is the readable source `file` is generated from."""

    file: str
    spec: str | None = None

    def source(self, case: Path) -> Path:
        return case / (self.spec or self.file)

    def generated(self, case: Path) -> bytes:
        return encode_stream(load(case / self.spec)) if self.spec else (case / self.file).read_bytes()


SSE = Feed("upstream_response.sse")
EVENTSTREAM = Feed("upstream_response.eventstream", spec="upstream_response.eventstream.json")


class OpenAIChatUpstream:
    """Chat Completions upstream (OpenAI, Azure OpenAI): the openai SDK's types."""

    def check_request(self, case: Path, body: dict[str, Any], meta: dict[str, Any], target: Target) -> None:
        assert openai_chat_request_problems(body) == []
        assert meta["stream"] == (body.get("stream") is True)

    def check_fixture(self, case: Path) -> None:
        if (case / "upstream_response.json").exists():
            ChatCompletion.model_validate(load(case / "upstream_response.json"))
        if (case / "upstream_response.sse").exists():
            for event in openai_sse((case / "upstream_response.sse").read_bytes()):
                if event.data == "[DONE]":
                    continue
                data = json.loads(event.data)
                # Azure's prompt-filter chunk (object "") is read by the SDK without validation.
                if "error" not in data and data["object"]:
                    ChatCompletionChunk.model_validate(data)

    def whole(self, case: Path, raw: bytes) -> bytes:
        state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
        usage = None
        for event in openai_sse(raw):
            if event.data != "[DONE]" and json.loads(event.data)["object"]:
                chunk = ChatCompletionChunk.model_validate_json(event.data)
                usage = chunk.usage or usage
                if chunk.choices:
                    state.handle_chunk(chunk)
        completion = state.current_completion_snapshot.model_dump(mode="json")
        return orjson.dumps({**completion, "usage": usage.model_dump(mode="json") if usage else None})


class OpenAIEmbeddingsUpstream:
    def check_request(self, case: Path, body: dict[str, Any], meta: dict[str, Any], target: Target) -> None:
        assert check(EmbeddingCreateParams, body) == []
        assert meta["stream"] == (body.get("stream") is True)

    def check_fixture(self, case: Path) -> None:
        if (case / "upstream_response.json").exists():
            CreateEmbeddingResponse.model_validate(decoded_embeddings(load(case / "upstream_response.json")))

    def whole(self, case: Path, raw: bytes) -> bytes:
        raise AssertionError("embeddings do not stream")


@dataclass(frozen=True)
class AnthropicUpstream:
    """Messages upstream: the anthropic SDK's types. On Vertex the body has no `model` and carries
    `anthropic_version`; the path names the method."""

    vertex: bool = False

    def check_request(self, case: Path, body: dict[str, Any], meta: dict[str, Any], target: Target) -> None:
        assert meta["stream"] == (body.get("stream") is True)
        if not self.vertex:
            assert anthropic_messages_request_problems(body) == []
            assert meta["headers"]["anthropic-version"] == ANTHROPIC_API_VERSION
            return
        assert "model" not in body and body["anthropic_version"] == ANTHROPIC_API_VERSION
        rest = {k: v for k, v in body.items() if k != "anthropic_version"}
        assert anthropic_messages_request_problems({**rest, "model": "m"}) == []
        assert meta["path"].endswith(":streamRawPredict" if meta["stream"] else ":rawPredict")
        assert "anthropic-version" not in meta["headers"]

    def check_fixture(self, case: Path) -> None:
        if (case / "upstream_response.json").exists():
            Message.model_validate(load(case / "upstream_response.json"), strict=False)
        if (case / "upstream_response.sse").exists():
            adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
            for event in anthropic_sse((case / "upstream_response.sse").read_bytes()):
                data = json.loads(event.data)
                assert event.event == data["type"]
                if data["type"] not in ("ping", "error"):
                    adapter.validate_python(data)

    def whole(self, case: Path, raw: bytes) -> bytes:
        snapshot: Any = None
        bufs: dict[int, bytes] = {}
        for event in anthropic_sse(raw):
            data = json.loads(event.data)
            if data["type"] != "ping":
                snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=bufs)
        return snapshot.to_json().encode()  # type: ignore[no-any-return]


BEDROCK = botocore.session.get_session().get_service_model("bedrock-runtime")
PADDING = "p"  # Bedrock pads every stream event's JSON with a random-length "p" string


def _botocore_valid(value: Any, shape: Any) -> None:
    report = ParamValidator().validate(value, shape)
    assert not report.has_errors(), report.generate_report()


def _botocore_events(raw: bytes) -> EventStream:
    union = BEDROCK.operation_model("ConverseStream").output_shape.members["stream"]

    class Raw:
        def stream(self) -> list[bytes]:
            return [raw]

    return EventStream(Raw(), union, EventStreamJSONParser(), "ConverseStream")


class BedrockUpstream:
    """Bedrock Converse / ConverseStream: botocore's bedrock-runtime model is the oracle."""

    def check_request(self, case: Path, body: dict[str, Any], meta: dict[str, Any], target: Target) -> None:
        operation = BEDROCK.operation_model("ConverseStream" if meta["stream"] else "Converse")
        params = boto3_params(body, target.upstream_model)
        _botocore_valid(params, operation.input_shape)
        wire = create_serializer("rest-json", include_validation=False).serialize_to_request(params, operation)
        assert wire["url_path"] == meta["path"]
        assert json.loads(wire["body"]) == body
        assert meta["headers"]["content-type"] == wire["headers"]["Content-Type"]

    def check_fixture(self, case: Path) -> None:
        streamed = EVENTSTREAM.source(case).exists()
        operation = BEDROCK.operation_model("ConverseStream" if streamed else "Converse")
        if (case / "upstream_response.json").exists():
            _botocore_valid(load(case / "upstream_response.json"), operation.output_shape)
        if (case / "upstream_error.json").exists():
            spec = load(case / "upstream_error.json")
            name = spec["headers"]["x-amzn-errortype"].split(":")[0]
            assert name in {s.name for s in operation.error_shapes} | {"InvalidSignatureException"}
            if name in BEDROCK.shape_names:
                assert BEDROCK.shape_for(name).metadata["error"]["httpStatusCode"] == spec["status"]
                _botocore_valid(spec["body"], BEDROCK.shape_for(name))
        if not streamed:
            return
        union = operation.output_shape.members["stream"]
        raw = (case / EVENTSTREAM.file).read_bytes()
        buffer = EventStreamBuffer()
        buffer.add_data(raw)
        for message in buffer:
            payload = json.loads(message.payload)
            if message.headers[":message-type"] == "event":
                payload.pop(PADDING, None)
                _botocore_valid(payload, union.members[message.headers[":event-type"]])
            else:
                _botocore_valid(payload, union.members[message.headers[":exception-type"]])
        events: list[Any] = []
        try:
            events.extend(_botocore_events(raw))
        except BotocoreEventStreamError:
            assert b"exception" in raw
        assert events or b"exception" in raw

    def whole(self, case: Path, raw: bytes) -> bytes:
        """A ConverseResponse assembled from botocore's parse of a complete ConverseStream."""
        blocks: dict[int, dict[str, Any]] = {}
        response: dict[str, Any] = {}
        for event in _botocore_events(raw):
            if "contentBlockStart" in event:
                start = event["contentBlockStart"]
                blocks[start["contentBlockIndex"]] = {"toolUse": {**start["start"]["toolUse"], "input": ""}}
            elif "contentBlockDelta" in event:
                delta = event["contentBlockDelta"]
                block = blocks.setdefault(delta["contentBlockIndex"], {})
                if "text" in delta["delta"]:
                    block["text"] = block.get("text", "") + delta["delta"]["text"]
                elif "toolUse" in delta["delta"]:
                    block["toolUse"]["input"] += delta["delta"]["toolUse"]["input"]
            elif "messageStop" in event:
                response["stopReason"] = event["messageStop"]["stopReason"]
            elif "metadata" in event:
                response["usage"] = event["metadata"]["usage"]
                response["metrics"] = event["metadata"]["metrics"]
        content = []
        for _, block in sorted(blocks.items()):
            if "toolUse" in block:
                block["toolUse"]["input"] = json.loads(block["toolUse"]["input"] or "{}")
            if block:
                content.append(block)
        assembled = {"output": {"message": {"role": "assistant", "content": content}}, **response}
        _botocore_valid(assembled, BEDROCK.operation_model("Converse").output_shape)
        return orjson.dumps(assembled)


def _genai_round_trip(model: Any, value: Any, where: str) -> None:
    """`value` validates as `model` (unknown keys forbidden) and dumps back unchanged by alias, so
    snake_case keys and any value the types would change are rejected."""
    parsed = model.model_validate_json(json.dumps(value))
    assert parsed.model_dump(mode="json", by_alias=True, exclude_none=True) == value, where


GEMINI_BODY_TYPES: dict[str, Any] = {"systemInstruction": genai.Content, "toolConfig": genai.ToolConfig,
                                     "generationConfig": genai.GenerationConfig}


@dataclass(frozen=True)
class GeminiUpstream:
    """generateContent / streamGenerateContent on the Gemini API or Vertex: google-genai's types."""

    vertex: bool = False

    def check_request(self, case: Path, body: dict[str, Any], meta: dict[str, Any], target: Target) -> None:
        assert set(body) <= {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig"}
        assert body["contents"]
        for i, content in enumerate(body["contents"]):
            assert content["role"] in ("user", "model")
            _genai_round_trip(genai.Content, content, f"contents[{i}]")
        for i, tool in enumerate(body.get("tools", [])):
            _genai_round_trip(genai.Tool, tool, f"tools[{i}]")
        for key, model in GEMINI_BODY_TYPES.items():
            if key in body:
                _genai_round_trip(model, body[key], key)
        method = "streamGenerateContent?alt=sse" if meta["stream"] else "generateContent"
        if not self.vertex:
            assert meta["path"] == f"/{target.option('api_version')}/models/{target.upstream_model}:{method}"
        else:
            assert meta["path"] == (f"/v1/projects/{target.option('project')}/locations/{target.option('location')}"
                                    f"/publishers/google/models/{target.upstream_model}:{method}")

    def check_fixture(self, case: Path) -> None:
        if (case / "upstream_response.json").exists():
            genai.GenerateContentResponse.model_validate_json((case / "upstream_response.json").read_bytes())
        if (case / "upstream_response.sse").exists():
            for event in openai_sse((case / "upstream_response.sse").read_bytes()):
                data = json.loads(event.data)
                if "error" in data:
                    assert set(data["error"]) >= {"code", "message", "status"}
                else:
                    genai.GenerateContentResponse.model_validate_json(event.data)

    def whole(self, case: Path, raw: bytes) -> bytes:
        """The whole GenerateContentResponse the stream chunks add up to."""
        whole: dict[str, Any] = {"candidates": []}
        by_index: dict[int, dict[str, Any]] = {}
        for event in openai_sse(raw):
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
        whole = {k: v for k, v in whole.items() if v is not None}
        genai.GenerateContentResponse.model_validate(whole)
        return orjson.dumps(whole)


GEMINI_EMBED_REQUEST_KEYS = {"model", "content", "outputDimensionality", "taskType", "title"}


class GeminiEmbeddingsUpstream:
    """batchEmbedContents: google-genai's types."""

    def check_request(self, case: Path, body: dict[str, Any], meta: dict[str, Any], target: Target) -> None:
        assert set(body) == {"requests"} and body["requests"]
        resource = f"models/{target.upstream_model}"
        for i, item in enumerate(body["requests"]):
            assert set(item) <= GEMINI_EMBED_REQUEST_KEYS and item["model"] == resource
            _genai_round_trip(genai.Content, item["content"], f"requests[{i}].content")
        assert meta["path"] == f"/{target.option('api_version')}/{resource}:batchEmbedContents"

    def check_fixture(self, case: Path) -> None:
        if (case / "upstream_response.json").exists():
            genai.EmbedContentResponse.model_validate_json((case / "upstream_response.json").read_bytes())

    def whole(self, case: Path, raw: bytes) -> bytes:
        raise AssertionError("embeddings do not stream")


Upstream = (OpenAIChatUpstream | OpenAIEmbeddingsUpstream | AnthropicUpstream | BedrockUpstream | GeminiUpstream
            | GeminiEmbeddingsUpstream)


class OpenAIResponsesUpstream:
    """Responses upstream (OpenAI, Azure OpenAI): the openai SDK's request params, `Response` and
    stream event types; a stream adds up to the response of its final event."""

    def check_request(self, case: Path, body: dict[str, Any], meta: dict[str, Any], target: Target) -> None:
        from simulator.responses_api import responses_request_problems

        assert responses_request_problems(body) == []
        assert meta["stream"] == (body.get("stream") is True)

    def check_fixture(self, case: Path) -> None:
        from openai.types.responses import Response, ResponseStreamEvent

        if (case / "upstream_response.json").exists():
            Response.model_validate(load(case / "upstream_response.json"))
        if (case / "upstream_response.sse").exists():
            adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
            for event in openai_sse((case / "upstream_response.sse").read_bytes()):
                data = json.loads(event.data)
                if "error" not in data or "type" in data:
                    adapter.validate_python(data)

    def whole(self, case: Path, raw: bytes) -> bytes:
        final = [json.loads(e.data) for e in openai_sse(raw) if e.event in ("response.completed", "response.incomplete")]
        return orjson.dumps(final[-1]["response"])
