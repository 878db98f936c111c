"""Oracles of the golden runner for the completions (fill-in-the-middle) and token-counting pairs:
the client side (`CompletionsClient`: the openai SDK's `Completion` type and its streaming reader;
`CountTokensClient`: the anthropic SDK's `MessageTokensCount`) and the upstream side (the openai
SDK's Completions types; Mistral's FIM types as the simulator restates them from the `mistralai`
SDK; for counting, the anthropic count params, google-genai's `CountTokensResponse`, botocore's
`CountTokens` shapes and the openai SDK's input-token count types)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import openai
import orjson
from anthropic.types import MessageTokensCount
from google.genai import types as genai
from openai.types import Completion
from openai.types.responses import InputTokenCountResponse

from extproc.translate.base import ResponseContext, Target
from simulator.completions_api import completions_request_problems, fim_request_problems
from simulator.count_tokens_api import (
    anthropic_count_problems,
    bedrock_count_problems,
    gemini_count_violations,
    openai_count_problems,
)
from simulator.validate.bedrock import bedrock_output_problems
from tests.golden.support import load, openai_sse

# --- clients ---------------------------------------------------------------------------------


def completions_problems(body: dict[str, Any]) -> list[str]:
    return completions_request_problems(body)


def count_problems(body: dict[str, Any]) -> list[str]:
    return anthropic_count_problems(body)


def completion_chunk(data: dict[str, Any]) -> Completion:
    """A streamed `text_completion` chunk as the openai SDK types it. Chunks carry `finish_reason:
    null` until a choice ends, which `Completion` does not allow (the SDK builds stream chunks
    without validation): null is checked as null, every other field by the type."""
    choices = data.get("choices")
    assert isinstance(choices, list)
    for c in choices:
        assert c.get("finish_reason", "missing") is None or c["finish_reason"] in ("stop", "length", "content_filter")
    chunk = Completion.model_validate({**data, "choices": [{**c, "finish_reason": c["finish_reason"] or "stop"}
                                                           for c in choices]})
    for c, raw in zip(chunk.choices, choices, strict=True):
        c.finish_reason = raw["finish_reason"]
    return chunk


def _accumulate(raw: bytes, include_usage: bool) -> tuple[dict[int, str], dict[int, str], Any, str | None]:
    """(text per choice, finish reason per choice, usage, "done" | "error" | None) of a client stream."""
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    usage, ended = None, None
    for event in openai_sse(raw):
        assert ended is None, f"data after the end of the stream: {event.data}"
        if event.data == "[DONE]":
            ended = "done"
            continue
        data = json.loads(event.data)
        if "error" in data:
            assert set(data["error"]) == {"message", "type", "param", "code"}
            ended = "error"
            continue
        chunk = completion_chunk(data)
        assert ("usage" in data) == include_usage
        if not chunk.choices:
            assert include_usage and chunk.usage is not None
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
            if c.finish_reason is not None:
                assert c.index not in finishes, "a choice finished twice"
                finishes[c.index] = c.finish_reason
        usage = chunk.usage or usage
    return texts, finishes, usage, ended


class CompletionsClient:
    """An openai SDK client of legacy Completions (`client.completions.create`)."""

    api = "openai"
    complete = b"data: [DONE]\n\n"

    def read(self, case: Path, ctx: ResponseContext) -> None:
        if (case / "client_response.json").exists():
            completion = Completion.model_validate(load(case / "client_response.json"))
            assert completion.object == "text_completion" and completion.choices
        if (case / "client_response.sse").exists():
            raw = (case / "client_response.sse").read_bytes()
            _, finishes, _, ended = _accumulate(raw, ctx.include_usage)
            assert ended is not None, "stream neither finished nor failed"
            if ended == "done":
                assert finishes, "a finished stream names its finish reason"
            client = openai.OpenAI(api_key="k", base_url="http://gateway/v1", http_client=httpx2.Client(
                transport=httpx2.MockTransport(lambda r: httpx2.Response(
                    200, content=raw, headers={"content-type": "text/event-stream"}))))
            try:
                chunks = list(client.completions.create(model="m", prompt="x", stream=True))
            except openai.APIError:
                assert ended == "error"
            else:
                assert ended == "done" and chunks
        if (case / "client_error.json").exists():
            doc = load(case / "client_error.json")
            assert doc["status"] >= 400 and set(doc["body"]["error"]) == {"message", "type", "param", "code"}

    def agree(self, client_stream: bytes, whole_body: bytes, ctx: ResponseContext) -> None:
        texts, finishes, usage, ended = _accumulate(client_stream, ctx.include_usage)
        whole = Completion.model_validate_json(whole_body)
        assert ended == "done"
        assert texts == {c.index: c.text for c in whole.choices}
        assert finishes == {c.index: c.finish_reason for c in whole.choices}
        if ctx.include_usage:
            assert usage == whole.usage


class CountTokensClient:
    """An anthropic SDK client of `client.messages.count_tokens` (never streamed)."""

    api = "anthropic"
    complete = None

    def read(self, case: Path, ctx: ResponseContext) -> None:
        if (case / "client_response.json").exists():
            MessageTokensCount.model_validate(load(case / "client_response.json"))
        if (case / "client_error.json").exists():
            doc = load(case / "client_error.json")
            assert doc["status"] >= 400 and doc["body"]["type"] == "error"
            assert set(doc["body"]["error"]) == {"type", "message"}

    def agree(self, client_stream: bytes, whole_body: bytes, ctx: ResponseContext) -> None:
        raise AssertionError("token counting does not stream")


# --- upstreams -------------------------------------------------------------------------------


def _whole_from_chunks(raw: bytes, text_of: Any, obj: str) -> dict[str, Any]:
    """A streamed answer accumulated into the provider's whole answer."""
    head: dict[str, Any] = {}
    texts: dict[int, str] = {}
    finishes: dict[int, Any] = {}
    usage = None
    for event in openai_sse(raw):
        if event.data == "[DONE]":
            continue
        data = json.loads(event.data)
        head = head or {k: data[k] for k in ("id", "created", "model") if k in data}
        for c in data.get("choices") or []:
            texts[c["index"]] = texts.get(c["index"], "") + text_of(c)
            if c.get("finish_reason"):
                finishes[c["index"]] = c["finish_reason"]
        usage = data.get("usage") or usage
    return {**head, "object": obj, "texts": texts, "finishes": finishes, "usage": usage}


class OpenAICompletionsUpstream:
    """Legacy Completions upstream (OpenAI-compatible servers, Azure OpenAI): the openai SDK's types."""

    def check_request(self, case: Path, body: dict[str, Any], meta: dict[str, Any], target: Target) -> None:
        assert completions_request_problems(body) == []
        assert meta["path"].split("?", 1)[0].endswith("/completions")

    def check_fixture(self, case: Path) -> None:
        if (case / "upstream_response.json").exists():
            Completion.model_validate(load(case / "upstream_response.json"))
        if (case / "upstream_response.sse").exists():
            for event in openai_sse((case / "upstream_response.sse").read_bytes()):
                if event.data != "[DONE]" and "error" not in json.loads(event.data):
                    completion_chunk(json.loads(event.data))

    def whole(self, case: Path, raw: bytes) -> bytes:
        acc = _whole_from_chunks(raw, lambda c: c.get("text", ""), "text_completion")
        choices = [{"text": t, "index": i, "logprobs": None, "finish_reason": acc["finishes"].get(i)}
                   for i, t in sorted(acc["texts"].items())]
        return orjson.dumps({k: acc[k] for k in ("id", "created", "model", "object")} |
                            {"choices": choices, "usage": acc["usage"]})


class MistralFIMUpstream:
    """Codestral `POST /v1/fim/completions`: the `mistralai` SDK's request type (restated by the
    simulator, `simulator.completions_api.FIMRequest`) and its response shape."""

    def check_request(self, case: Path, body: dict[str, Any], meta: dict[str, Any], target: Target) -> None:
        assert fim_request_problems(body) == []
        assert meta["path"] == "/v1/fim/completions"

    def check_fixture(self, case: Path) -> None:
        if (case / "upstream_response.json").exists():
            answer = load(case / "upstream_response.json")
            assert {"id", "object", "model", "usage"} <= set(answer)  # FIMCompletionResponse's required fields
            for c in answer["choices"]:
                assert {"index", "message", "finish_reason"} <= set(c)
        if (case / "upstream_response.sse").exists():
            for event in openai_sse((case / "upstream_response.sse").read_bytes()):
                if event.data != "[DONE]":
                    chunk = json.loads(event.data)
                    assert {"id", "model", "choices"} <= set(chunk)  # CompletionChunk's required fields
                    for c in chunk["choices"]:
                        assert {"index", "delta", "finish_reason"} <= set(c)

    def whole(self, case: Path, raw: bytes) -> bytes:
        acc = _whole_from_chunks(raw, lambda c: (c.get("delta") or {}).get("content") or "", "chat.completion")
        choices = [{"index": i, "message": {"role": "assistant", "content": t},
                    "finish_reason": acc["finishes"].get(i)} for i, t in sorted(acc["texts"].items())]
        return orjson.dumps({k: acc[k] for k in ("id", "created", "model", "object", "usage")} | {"choices": choices})


@dataclass(frozen=True)
class CountUpstream:
    """A provider's token-counting call: `kind` is anthropic, vertex-anthropic, gemini,
    vertex-gemini, bedrock or openai."""

    kind: str

    def check_request(self, case: Path, body: dict[str, Any], meta: dict[str, Any], target: Target) -> None:
        assert not meta["stream"]
        if self.kind in ("anthropic", "vertex-anthropic"):
            if self.kind == "vertex-anthropic":
                assert isinstance(body.get("anthropic_version"), str)
                assert meta["path"].endswith("/publishers/anthropic/models/count-tokens:rawPredict")
                body = {k: v for k, v in body.items() if k != "anthropic_version"}
            assert anthropic_count_problems(body) == []
        elif self.kind in ("gemini", "vertex-gemini"):
            assert meta["path"].endswith(":countTokens")
            assert gemini_count_violations(body, self.kind == "vertex-gemini") == []
        elif self.kind == "bedrock":
            assert meta["path"].endswith("/count-tokens")
            assert bedrock_count_problems(body, target.upstream_model) == []
        else:
            assert meta["path"].endswith("/responses/input_tokens")
            assert openai_count_problems(body) == []

    def check_fixture(self, case: Path) -> None:
        if not (case / "upstream_response.json").exists():
            return
        answer = load(case / "upstream_response.json")
        if self.kind in ("anthropic", "vertex-anthropic"):
            MessageTokensCount.model_validate(answer)
        elif self.kind in ("gemini", "vertex-gemini"):
            # The REST answer also details the count per modality, which google-genai 3.6's type drops.
            assert set(answer) <= {"totalTokens", "cachedContentTokenCount", "promptTokensDetails",
                                   "cacheTokensDetails"}, answer
            for detail in answer.get("promptTokensDetails", []):
                genai.ModalityTokenCount.model_validate(detail)
            genai.CountTokensResponse.model_validate({k: v for k, v in answer.items() if not k.endswith("Details")})
        elif self.kind == "bedrock":
            assert bedrock_output_problems(answer, "CountTokens") == []
        else:
            InputTokenCountResponse.model_validate(answer)

    def whole(self, case: Path, raw: bytes) -> bytes:
        raise AssertionError("token counting does not stream")
