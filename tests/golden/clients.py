"""Client-side oracles of the golden runner: how a client request is checked against the client
SDK's param types, and how the client SDK reads what the gateway answers (`read`) and accumulates
a translated stream (`agree`, compared with the translation of the accumulated whole response).
One oracle per client API: `OpenAIChatClient`, `AnthropicClient`, `OpenAIEmbeddingsClient`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types import CreateEmbeddingResponse, EmbeddingCreateParams
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from extproc.translate.base import ResponseContext
from simulator.validate import anthropic_messages_request_problems, check, openai_chat_request_problems
from tests.golden.support import anthropic_sse, decoded_embeddings, load, openai_sse

# --- client requests -------------------------------------------------------------------------

# Part-level `cache_control` is not an OpenAI field; the gateway accepts it (the LiteLLM convention).
CACHE_CONTROL_EXTENSION = ".cache_control: unknown field"
# Older Anthropic SDKs send these; the 2.13 types no longer define them.
LEGACY_ANTHROPIC = ("temperature: unknown field", "top_p: unknown field", "top_k: unknown field")


def openai_chat_problems(body: dict[str, Any]) -> list[str]:
    return openai_chat_request_problems(body)


def openai_chat_problems_but_cache_control(body: dict[str, Any]) -> list[str]:
    return [p for p in openai_chat_request_problems(body) if not p.endswith(CACHE_CONTROL_EXTENSION)]


def anthropic_problems_but_legacy(body: dict[str, Any]) -> list[str]:
    return [p for p in anthropic_messages_request_problems(body) if p not in LEGACY_ANTHROPIC]


def embeddings_problems(body: dict[str, Any]) -> list[str]:
    return check(EmbeddingCreateParams, body)


# --- client answers --------------------------------------------------------------------------


def tool_calls(message: Any) -> list[tuple[str, str, Any]]:
    return [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]


def _transport(raw: bytes) -> httpx2.Client:
    return httpx2.Client(transport=httpx2.MockTransport(
        lambda request: httpx2.Response(200, content=raw, headers={"content-type": "text/event-stream"})))


def _openai_error(doc: dict[str, Any]) -> None:
    assert doc["status"] >= 400
    assert set(doc["body"]["error"]) == {"message", "type", "param", "code"}


class OpenAIChatClient:
    """An openai SDK client of Chat Completions; a finish_reason of "tool_calls" comes with tool
    calls and tool calls with it."""

    api = "openai"
    complete = b"data: [DONE]\n\n"

    def read(self, case: Path, ctx: ResponseContext) -> None:
        if (case / "client_response.json").exists():
            completion = ChatCompletion.model_validate(load(case / "client_response.json"))
            for choice in completion.choices:
                calls = choice.message.tool_calls or []
                for call in calls:
                    assert call.type == "function"
                    assert isinstance(json.loads(call.function.arguments), dict)
                assert (choice.finish_reason == "tool_calls") == bool(calls)
        if (case / "client_response.sse").exists():
            raw = (case / "client_response.sse").read_bytes()
            self._check_stream(raw, ctx)
            self._sdk_read(raw)
        if (case / "client_error.json").exists():
            _openai_error(load(case / "client_error.json"))

    def _check_stream(self, raw: bytes, ctx: ResponseContext) -> None:
        events = openai_sse(raw)
        assert events, "empty stream"
        if events[0].data != "[DONE]" and "error" in json.loads(events[0].data):
            assert len(events) == 1, "an error before any chunk is the whole stream"
            assert set(json.loads(events[0].data)["error"]) == {"message", "type", "param", "code"}
            return
        final, _, ended, heads = self.accumulate(raw, ctx)
        assert ended is not None, "stream neither finished nor failed"
        assert len(heads) == 1, heads
        if ended == "done":
            for choice in final.choices:
                calls = choice.message.tool_calls or []
                assert choice.finish_reason is not None
                for call in calls:
                    assert call.id and call.function.name
                    assert isinstance(json.loads(call.function.arguments), dict)
                assert (choice.finish_reason == "tool_calls") == bool(calls)

    @staticmethod
    def accumulate(raw: bytes, ctx: ResponseContext) -> tuple[Any, Any, str | None, set[Any]]:
        """(completion snapshot or None, usage or None, "done" | "error" | None, chunk heads) of a
        client stream, accumulated the way `client.chat.completions.stream()` does."""
        state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
        usage, ended, seen, heads = None, None, False, set()
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
            if data["object"] == "" and "prompt_filter_results" in data:
                continue  # Azure's prompt-filter chunk, passed through; the SDK reads it without validation
            chunk = ChatCompletionChunk.model_validate(data)
            heads.add((chunk.id, chunk.created, chunk.model))
            assert ("usage" in data) == ctx.include_usage
            if chunk.choices:
                state.handle_chunk(chunk)
                seen = True
            else:
                assert ctx.include_usage and chunk.usage is not None
            usage = chunk.usage or usage
        return (state.current_completion_snapshot if seen else None), usage, ended, heads

    @staticmethod
    def _sdk_read(raw: bytes) -> None:
        """What `client.chat.completions.stream()` of the openai SDK makes of a client stream."""
        client = openai.OpenAI(api_key="k", base_url="http://gateway/v1", http_client=_transport(raw))
        try:
            with client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "x"}]) as stream:
                final: Any = stream.get_final_completion()
        except openai.LengthFinishReasonError as err:  # raised by the helper; the completion rides on it
            final = err.completion
        except openai.APIError:
            return
        choice = final.choices[0]
        assert choice.finish_reason is not None
        for call in choice.message.tool_calls or []:
            assert call.id and isinstance(json.loads(call.function.arguments), dict)

    def agree(self, client_stream: bytes, whole_body: bytes, ctx: ResponseContext) -> None:
        whole = ChatCompletion.model_validate_json(whole_body)
        streamed, stream_usage, ended, _ = self.accumulate(client_stream, ctx)
        assert ended == "done"
        assert (streamed.id, streamed.model, streamed.created) == (whole.id, whole.model, whole.created)
        assert len(streamed.choices) == len(whole.choices)
        for s, w in zip(streamed.choices, whole.choices, strict=True):
            assert (s.message.content or "") == (w.message.content or "")
            assert tool_calls(s.message) == tool_calls(w.message)
            assert s.finish_reason == w.finish_reason
        if ctx.include_usage:
            assert stream_usage == whole.usage


MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


class AnthropicClient:
    """An anthropic SDK client of Messages."""

    api = "anthropic"
    complete = MESSAGE_STOP

    def read(self, case: Path, ctx: ResponseContext) -> None:
        if (case / "client_error.json").exists():
            doc = load(case / "client_error.json")
            assert doc["status"] >= 400
            assert doc["body"]["type"] == "error" and set(doc["body"]["error"]) == {"type", "message"}
        if (case / "client_response.json").exists():
            message = Message.model_validate(load(case / "client_response.json"))
            assert (message.stop_reason == "tool_use") == any(b.type == "tool_use" for b in message.content)
        if (case / "client_response.sse").exists():
            raw = (case / "client_response.sse").read_bytes()
            accumulated = self.accumulate(raw)
            final = self._sdk_read(raw)
            assert (final.model_dump() if final else None) == (accumulated.model_dump() if accumulated else None)

    @staticmethod
    def accumulate(raw: bytes) -> Message | None:
        """The Message the anthropic SDK accumulates from a client stream (None if it ends in an error)."""
        snapshot: Any = None
        bufs: dict[int, bytes] = {}
        events = anthropic_sse(raw)
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

    @staticmethod
    def _sdk_read(raw: bytes) -> Message | None:
        """What `client.messages.stream()` of the anthropic SDK makes of a client stream."""
        client = anthropic.Anthropic(api_key="k", base_url="http://gateway", http_client=_transport(raw))
        try:
            with client.messages.stream(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}]) as s:
                return Message.model_validate(s.get_final_message().to_dict())
        except anthropic.APIError:
            return None

    def agree(self, client_stream: bytes, whole_body: bytes, ctx: ResponseContext) -> None:
        streamed = self.accumulate(client_stream)
        assert streamed is not None
        assert streamed.model_dump() == Message.model_validate_json(whole_body).model_dump()


class OpenAIEmbeddingsClient:
    """An openai SDK client of Embeddings (no streams)."""

    api = "openai-embeddings"
    complete = None

    def read(self, case: Path, ctx: ResponseContext) -> None:
        if (case / "client_response.json").exists():
            parsed = CreateEmbeddingResponse.model_validate(decoded_embeddings(load(case / "client_response.json")))
            assert [d.index for d in parsed.data] == list(range(len(parsed.data)))
        if (case / "client_error.json").exists():
            _openai_error(load(case / "client_error.json"))

    def agree(self, client_stream: bytes, whole_body: bytes, ctx: ResponseContext) -> None:
        raise AssertionError("embeddings do not stream")




# --- OpenAI Responses --------------------------------------------------------------------------

_RESPONSE_FINAL = ("response.completed", "response.incomplete")


def responses_problems(body: dict[str, Any]) -> list[str]:
    from simulator.responses_api import responses_request_problems

    return responses_request_problems(body)


def responses_stream_complete(raw: bytes) -> bool:
    """A Responses stream ended as it must: its last event is `response.completed` or `.incomplete`."""
    events = openai_sse(raw)
    return bool(events) and events[-1].event in _RESPONSE_FINAL


def _response_items(response: Any) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for item in response.output:
        if item.type == "message":
            out.append(("message", item.id, [(p.type, getattr(p, "text", None) or getattr(p, "refusal", None))
                                             for p in item.content]))
        elif item.type == "function_call":
            out.append(("function_call", item.id, item.call_id, item.name, json.loads(item.arguments)))
        else:
            out.append((item.type, item.id))
    return out


class ResponsesClient:
    """An openai SDK client of Responses: every event valid for `ResponseStreamEvent`, sequence
    numbers counting from 0, the SDK's stream helper accumulates it, and the deltas add up to the
    final response's output."""

    api = "openai-responses"
    complete = staticmethod(responses_stream_complete)

    def read(self, case: Path, ctx: ResponseContext) -> None:
        from openai.types.responses import Response

        if (case / "client_response.json").exists():
            response = Response.model_validate(load(case / "client_response.json"))
            for item in response.output:
                if item.type == "function_call":
                    assert isinstance(json.loads(item.arguments), dict)
        if (case / "client_response.sse").exists():
            raw = (case / "client_response.sse").read_bytes()
            final, _ = self.accumulate(raw)
            sdk = self._sdk_read(raw)
            assert (sdk is None) == (final is None)
            if final is not None and sdk is not None:
                assert _response_items(sdk) == _response_items(final)
        if (case / "client_error.json").exists():
            _openai_error(load(case / "client_error.json"))

    @staticmethod
    def accumulate(raw: bytes) -> tuple[Any, dict[str, str]]:
        """(the final event's response or None when the stream ends in an error, text and
        arguments per item id accumulated from the deltas)."""
        from openai.types.responses import ResponseStreamEvent

        adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
        events = openai_sse(raw)
        assert events, "empty stream"
        acc: dict[str, str] = {}
        final = None
        for n, event in enumerate(events):
            data = json.loads(event.data)
            if "error" in data and "type" not in data:
                assert n == len(events) - 1, "events after an error"
                assert set(data["error"]) == {"message", "type", "param", "code"}
                return None, acc
            assert event.event == data["type"] and data["sequence_number"] == n
            parsed = adapter.validate_python(data)
            if parsed.type == "error":  # the provider's own error event (passed through)
                assert n == len(events) - 1, "events after an error"
                return None, acc
            if parsed.type in ("response.output_text.delta", "response.function_call_arguments.delta",
                               "response.refusal.delta"):
                acc[parsed.item_id] = acc.get(parsed.item_id, "") + parsed.delta
            if parsed.type in _RESPONSE_FINAL:
                assert n == len(events) - 1, "events after the final one"
                final = parsed.response
        assert final is not None, "stream neither finished nor failed"
        for item in final.output:
            if item.type == "message":
                assert acc.get(item.id, "") == "".join(getattr(p, "text", None) or getattr(p, "refusal", "")
                                                       for p in item.content)
            elif item.type == "function_call":
                assert acc.get(item.id or "", "") == item.arguments
        return final, acc

    @staticmethod
    def _sdk_read(raw: bytes) -> Any:
        """What `client.responses.stream()` of the openai SDK makes of a client stream."""
        client = openai.OpenAI(api_key="k", base_url="http://gateway/v1", http_client=_transport(raw))
        last = None
        try:
            with client.responses.stream(model="m", input="x") as stream:
                for event in stream:
                    last = event
                if last is not None and last.type in ("response.incomplete", "error"):
                    return last.response if last.type == "response.incomplete" else None  # no final to ask for
                return stream.get_final_response()
        except openai.APIError:
            return None

    def agree(self, client_stream: bytes, whole_body: bytes, ctx: ResponseContext) -> None:
        from openai.types.responses import Response

        whole = Response.model_validate_json(whole_body)
        streamed, _ = self.accumulate(client_stream)
        assert streamed is not None
        assert (streamed.id, streamed.model, streamed.created_at) == (whole.id, whole.model, whole.created_at)
        assert _response_items(streamed) == _response_items(whole)
        assert (streamed.status, streamed.incomplete_details) == (whole.status, whole.incomplete_details)
        assert streamed.usage == whole.usage


Client = OpenAIChatClient | AnthropicClient | OpenAIEmbeddingsClient | ResponsesClient
