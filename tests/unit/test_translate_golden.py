"""Golden files per translator pair: tests/golden/<client>-<provider>/<case>/.

Inputs: `target.json`, `client_request.json`, and at most one upstream answer:
`upstream_response.json` (2xx body), `upstream_response.sse` (2xx stream) or `upstream_error.json`
({"status", "retry_after"?, "body": JSON or text}). Optional `context.json` overrides the
ResponseContext (default: request id "req-golden", created 1767225600, include_usage as the
router derives it from the client request).

Expected outputs: `upstream_request.json` (the body) and `upstream_meta.json` (path, headers,
dropped params, stream) — or `client_error.json` when the request is refused; then
`client_response.json` / `client_response.sse` / `client_error.json` ({status, headers, body}
as the client gets it) and `usage.json`. `REGEN=1` rewrites the expected outputs.

Every stream is translated whole, byte by byte and split in two at every point; all must give
the same bytes. Upstream requests are checked against the official SDK param types, upstream
answers against the provider SDK's response types, and client answers are parsed with the
openai SDK (chunks accumulated the way `client.chat.completions.stream()` does).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai._streaming import SSEDecoder as OpenAISSEDecoder
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from extproc.errors import GatewayError, render
from extproc.translate.base import ResponseContext, Target
from extproc.translate.registry import default_registry
from simulator.validate import anthropic_messages_request_problems, openai_chat_request_problems

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
REGEN = os.environ.get("REGEN") == "1"
OUTPUTS = ("upstream_request.json", "upstream_meta.json", "client_response.json", "client_response.sse",
           "client_error.json", "usage.json")
# Part-level `cache_control` is not an OpenAI field; the gateway accepts it (the LiteLLM convention).
CACHE_CONTROL_EXTENSION = ".cache_control: unknown field"
# The OpenAI-client chat pairs this runner validates; other pairs have their own runners that
# reuse the helpers below (stream_pieces, translate_stream, ...).
PAIRS = ("openai-anthropic", "openai-openai")
CASES = sorted(p for pair in PAIRS for p in (GOLDEN / pair).glob("*") if (p / "client_request.json").exists())


def _load(path: Path) -> Any:
    return json.loads(path.read_text())


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def _target(case: Path) -> Target:
    raw = _load(case / "target.json")
    return Target(**{**raw, "capabilities": frozenset(raw.get("capabilities", ()))})


def _context(case: Path, request: dict[str, Any]) -> ResponseContext:
    opts = request.get("stream_options")
    include = bool(request.get("stream") is True and isinstance(opts, dict) and opts.get("include_usage"))
    raw = {"request_id": "req-golden", "created": 1767225600, "include_usage": include}
    if (case / "context.json").exists():
        raw.update(_load(case / "context.json"))
    return ResponseContext(**raw)


def _error_doc(err: GatewayError) -> dict[str, Any]:
    status, body, headers = render(err, "openai")
    return {"status": status, "headers": headers, "body": orjson.loads(body)}


def stream_pieces(data: bytes) -> list[list[bytes]]:
    """The ways every stream is fed: whole, byte by byte, and in two pieces at every split."""
    ways = [[data], [data[i:i + 1] for i in range(len(data))]]
    ways += [[data[:i], data[i:]] for i in range(1, len(data))]
    return ways


def translate_stream(translator: Any, target: Target, ctx: ResponseContext, pieces: list[bytes]) -> tuple[bytes, Any]:
    stream = translator.stream_translator(target, ctx)
    out = b"".join(stream.feed(piece) for piece in pieces) + stream.finish()
    return out, stream.usage


def _translate(case: Path) -> dict[str, str]:
    pair = case.parent.name
    translator = default_registry().get(*pair.split("-", 1))
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
    body = orjson.loads(upstream.body)
    outputs["upstream_request.json"] = _dump(body)
    outputs["upstream_meta.json"] = _dump({"path": upstream.path, "headers": dict(upstream.headers),
                                           "dropped_params": list(upstream.dropped_params),
                                           "stream": upstream.stream})
    ctx = _context(case, request)
    usage = None
    if (case / "upstream_response.json").exists():
        client, usage = translator.translate_response((case / "upstream_response.json").read_bytes(), target, ctx)
        outputs["client_response.json"] = _dump(orjson.loads(client))
    elif (case / "upstream_response.sse").exists():
        raw = (case / "upstream_response.sse").read_bytes()
        client, usage = translate_stream(translator, target, ctx, [raw])
        outputs["client_response.sse"] = client.decode()
    elif (case / "upstream_error.json").exists():
        spec = _load(case / "upstream_error.json")
        err_body = spec["body"] if isinstance(spec["body"], str) else json.dumps(spec["body"])
        err = translator.translate_error(spec["status"], err_body.encode(),
                                         {"retry-after": spec["retry_after"]} if spec.get("retry_after") else {})
        outputs["client_error.json"] = _dump(_error_doc(err))
    if usage is not None:
        outputs["usage.json"] = _dump({**dataclasses.asdict(usage), "total_tokens": usage.total_tokens})
    return outputs


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_golden(case: Path) -> None:
    outputs = _translate(case)
    if REGEN:
        for name in OUTPUTS:
            (case / name).unlink(missing_ok=True)
        for name, text in outputs.items():
            (case / name).write_text(text)
    expected = {name: (case / name).read_text() for name in OUTPUTS if (case / name).exists()}
    assert outputs == expected


@pytest.mark.parametrize("case", [c for c in CASES if (c / "upstream_response.sse").exists()],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_stream_split_anywhere(case: Path) -> None:
    translator = default_registry().get(*case.parent.name.split("-", 1))
    target, request = _target(case), _load(case / "client_request.json")
    ctx = _context(case, request)
    raw = (case / "upstream_response.sse").read_bytes()
    whole, usage = translate_stream(translator, target, ctx, [raw])
    for pieces in stream_pieces(raw):
        assert translate_stream(translator, target, ctx, pieces) == (whole, usage), pieces


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_upstream_request_matches_sdk_types(case: Path) -> None:
    if not (case / "upstream_request.json").exists():
        assert _load(case / "client_error.json")["status"] == 400
        return
    client_problems = openai_chat_request_problems(_load(case / "client_request.json"))
    assert [p for p in client_problems if not p.endswith(CACHE_CONTROL_EXTENSION)] == []
    body = _load(case / "upstream_request.json")
    meta = _load(case / "upstream_meta.json")
    if case.parent.name == "openai-anthropic":
        assert anthropic_messages_request_problems(body) == []
        assert meta["headers"]["anthropic-version"] == _anthropic_version()
    else:
        assert openai_chat_request_problems(body) == []
    assert meta["stream"] == (body.get("stream") is True)


def _anthropic_version() -> str:
    from anthropic._constants import ANTHROPIC_API_VERSION

    return ANTHROPIC_API_VERSION


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_upstream_fixture_is_real_provider_output(case: Path) -> None:
    if case.parent.name != "openai-anthropic":
        if (case / "upstream_response.json").exists():
            ChatCompletion.model_validate(_load(case / "upstream_response.json"))
        return
    from anthropic.types import Message, RawMessageStreamEvent

    if (case / "upstream_response.json").exists():
        Message.model_validate(_load(case / "upstream_response.json"), strict=False)
    if (case / "upstream_response.sse").exists():
        adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
        for event in _sdk_events((case / "upstream_response.sse").read_bytes()):
            data = json.loads(event.data)
            assert event.event == data["type"]
            if data["type"] not in ("ping", "error"):
                adapter.validate_python(data)


def _sdk_events(raw: bytes) -> list[Any]:
    return list(OpenAISSEDecoder().iter_bytes(iter([raw])))


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_client_sdk_reads_response(case: Path) -> None:
    if (case / "client_response.json").exists():
        completion = ChatCompletion.model_validate(_load(case / "client_response.json"))
        for call in completion.choices[0].message.tool_calls or []:
            assert call.type == "function"
            assert isinstance(json.loads(call.function.arguments), dict)
        if completion.choices[0].finish_reason == "tool_calls":
            assert completion.choices[0].message.tool_calls
    if (case / "client_response.sse").exists():
        _check_client_stream(case, (case / "client_response.sse").read_bytes())
    if (case / "client_error.json").exists():
        doc = _load(case / "client_error.json")
        assert set(doc["body"]["error"]) == {"message", "type", "param", "code"}
        assert doc["status"] >= 400


def _check_client_stream(case: Path, raw: bytes) -> None:
    events = _sdk_events(raw)
    assert events, "empty stream"
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    heads = set()
    request = _load(case / "client_request.json")
    include_usage = _context(case, request).include_usage
    ended = None
    for event in events:
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
        heads.add((chunk.id, chunk.created, chunk.model))
        if include_usage:
            assert "usage" in data
        if chunk.choices:
            state.handle_chunk(chunk)
        else:
            assert include_usage and chunk.usage is not None
    assert ended is not None, "stream neither finished nor failed"
    assert len(heads) == 1, heads
    if ended == "done":
        final = state.current_completion_snapshot
        choice = final.choices[0]
        assert choice.finish_reason is not None
        calls = choice.message.tool_calls or []
        for call in calls:
            assert call.id and call.function.name
            assert isinstance(json.loads(call.function.arguments), dict)
        assert (choice.finish_reason == "tool_calls") == bool(calls) or case.parent.name == "openai-openai"


def test_cases_exist_for_every_pair() -> None:
    pairs = {c.parent.name for c in CASES}
    assert pairs == {"openai-anthropic", "openai-openai"}


COMPLETE_ANTHROPIC_STREAMS = [c for c in CASES if c.parent.name == "openai-anthropic"
                              and (c / "client_response.sse").exists()
                              and (c / "client_response.sse").read_bytes().endswith(b"data: [DONE]\n\n")]


@pytest.mark.parametrize("case", COMPLETE_ANTHROPIC_STREAMS, ids=lambda p: p.name)
def test_stream_agrees_with_whole_response(case: Path) -> None:
    """Oracle: the anthropic SDK accumulates the upstream events into a Message; translating that
    whole must tell the client what the openai SDK accumulates from the translated stream."""
    from anthropic.lib.streaming._messages import accumulate_event

    snapshot: Any = None
    json_bufs: dict[int, bytes] = {}
    for event in _sdk_events((case / "upstream_response.sse").read_bytes()):
        data = json.loads(event.data)
        if data["type"] != "ping":
            snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=json_bufs)
    translator = default_registry().get("openai", "anthropic")
    target, request = _target(case), _load(case / "client_request.json")
    ctx = _context(case, request)
    whole_body, whole_usage = translator.translate_response(snapshot.to_json().encode(), target, ctx)
    whole = ChatCompletion.model_validate_json(whole_body)

    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    stream_usage = None
    for event in _sdk_events((case / "client_response.sse").read_bytes()):
        if event.data != "[DONE]":
            chunk = ChatCompletionChunk.model_validate_json(event.data)
            if chunk.choices:
                state.handle_chunk(chunk)
            stream_usage = chunk.usage or stream_usage
    streamed = state.current_completion_snapshot

    def calls(message: Any) -> list[tuple[str, str, Any]]:
        return [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]

    assert (streamed.id, streamed.model, streamed.created) == (whole.id, whole.model, whole.created)
    assert (streamed.choices[0].message.content or "") == (whole.choices[0].message.content or "")
    assert calls(streamed.choices[0].message) == calls(whole.choices[0].message)
    assert streamed.choices[0].finish_reason == whole.choices[0].finish_reason
    translated = translator.stream_translator(target, ctx)
    translated.feed((case / "upstream_response.sse").read_bytes())
    translated.finish()
    assert translated.usage == whole_usage
    if ctx.include_usage:
        assert stream_usage == whole.usage


def test_stream_tool_call_arguments_accumulate() -> None:
    case = GOLDEN / "openai-anthropic" / "stream-tool-calls"
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for event in _sdk_events((case / "client_response.sse").read_bytes()):
        if event.data != "[DONE]":
            chunk = ChatCompletionChunk.model_validate_json(event.data)
            if chunk.choices:
                state.handle_chunk(chunk)
    message = state.current_completion_snapshot.choices[0].message
    assert message.content == "Let me check."
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []] == [
        ("toolu_04A", "get_weather", {"city": "Paris", "unit": "c"}), ("toolu_04B", "get_time", {})]
