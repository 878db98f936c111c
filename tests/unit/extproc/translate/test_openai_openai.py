"""The OpenAI passthrough: only `model` changes on the way up (and a stream asks for its usage);
bytes come back untouched, but for the usage the gateway asked for and the client did not."""

from __future__ import annotations

import copy
from dataclasses import replace

import orjson
import pytest

from extproc.errors import GatewayError
from extproc.translate.base import ResponseContext, Target, Usage
from extproc.translate.openai_openai import OpenAIToOpenAI
from extproc.translate.openai_usage_stream import without_asked_usage
from tests.golden.support import GOLDEN

GPT = Target("gpt", "gpt-4o-2024-08-06", "openai", 4096, frozenset())
CTX = ResponseContext("req-1", 1767225600)
PAIR = GOLDEN / "openai-openai"


def test_request_keeps_every_field_but_model() -> None:
    body = {"model": "gpt", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0.3, "n": 2,
            "logprobs": True, "vendor_extension": {"x": 1}, "stream": True,
            "stream_options": {"include_usage": True}}
    frozen = copy.deepcopy(body)
    up = OpenAIToOpenAI().translate_request(body, GPT)
    assert orjson.loads(up.body) == {**body, "model": "gpt-4o-2024-08-06"}
    assert list(orjson.loads(up.body)) == list(body)
    assert (up.path, up.stream, up.dropped_params) == ("/v1/chat/completions", True, ())
    assert body == frozen


@pytest.mark.parametrize(("sent", "asked"), [
    (None, {"include_usage": True}),
    ({"include_usage": False}, {"include_usage": True}),
    ({"include_obfuscation": False}, {"include_obfuscation": False, "include_usage": True}),
])
def test_every_stream_asks_for_its_usage(sent: dict[str, bool] | None, asked: dict[str, bool]) -> None:
    """The gateway needs every stream's usage: a stream that did not ask for it asks for it (the
    client's other stream options kept); a whole answer always has it."""
    body = {"model": "gpt", "messages": [{"role": "user", "content": "Hi"}], "stream": True,
            **({"stream_options": sent} if sent is not None else {})}
    frozen = copy.deepcopy(body)
    assert orjson.loads(OpenAIToOpenAI().translate_request(body, GPT).body)["stream_options"] == asked
    assert body == frozen
    whole = {"model": "gpt", "messages": [{"role": "user", "content": "Hi"}]}
    assert "stream_options" not in orjson.loads(OpenAIToOpenAI().translate_request(whole, GPT).body)


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "gpt"}, "messages"),
    ({"model": "gpt", "messages": []}, "messages"),
    ({"model": "gpt", "messages": [1]}, "messages[0]"),
])
def test_request_envelope(body: dict[str, object], param: str) -> None:
    with pytest.raises(GatewayError) as info:
        OpenAIToOpenAI().translate_request(body, GPT)
    assert (info.value.status, info.value.param) == (400, param)


@pytest.mark.parametrize("case", ["plain", "tools"])
def test_response_bytes_unchanged(case: str) -> None:
    raw = (PAIR / case / "upstream_response.json").read_bytes()
    body, usage = OpenAIToOpenAI().translate_response(raw, GPT, CTX)
    assert body is raw and usage is not None


def test_stream_bytes_unchanged_at_every_split() -> None:
    """The client asked for the usage: its stream is the provider's, byte for byte."""
    raw = (PAIR / "stream-include-usage" / "upstream_response.sse").read_bytes()
    for i in range(len(raw)):
        stream = OpenAIToOpenAI().stream_translator(GPT, replace(CTX, include_usage=True))
        assert stream.feed(raw[:i]) + stream.feed(raw[i:]) + stream.finish() == raw
        assert stream.usage == Usage(11, 4)


def test_usage_the_client_did_not_ask_for_is_read_and_removed_at_every_split() -> None:
    """The client did not ask for the usage: its stream is the provider's stream as recorded
    without `include_usage` (the golden case's client file), whatever the split; the usage is read."""
    raw = (PAIR / "stream-text" / "upstream_response.sse").read_bytes()
    expected = (PAIR / "stream-text" / "client_response.sse").read_bytes()
    assert raw != expected and b'"usage":null' in raw
    for i in range(len(raw)):
        stream = OpenAIToOpenAI().stream_translator(GPT, CTX)
        first = stream.feed(raw[:i])
        assert first == b"" or first.endswith(b"\n\n")  # whole events only
        assert first + stream.feed(raw[i:]) + stream.finish() == expected
        assert stream.usage == Usage(8, 9) and stream.complete


def test_a_stream_cut_inside_an_event_gives_back_what_was_held() -> None:
    raw = (PAIR / "stream-text" / "upstream_response.sse").read_bytes()
    cut = raw[:raw.index(b"data:", 10) + 20]
    stream = OpenAIToOpenAI().stream_translator(GPT, CTX)
    out = stream.feed(cut)
    assert not stream.pending and not stream.complete
    rest = stream.finish()
    assert out + rest == cut.replace(b',"usage":null', b"") and rest.startswith(b"data:")
    assert stream.pending  # an event's start went on: the error event needs a blank line


@pytest.mark.parametrize(("event", "kept"), [
    (b'data: {"choices":[{"delta":{}}],"usage":null}\n\n', b'data: {"choices":[{"delta":{}}]}\n\n'),
    (b'data: {"usage":null,"choices":[]}\r\n\r\n', b'data: {"choices":[]}\r\n\r\n'),
    (b'data: {"choices": [{"delta": {}}], "usage": null}\n\n', b'data: {"choices": [{"delta": {}}]}\n\n'),
    (b'data: {"choices":[],"usage":{"prompt_tokens":1}}\n\n', None),
    # Usage inside a chunk with a choice is left alone (not the chunk the gateway asked for).
    (b'data: {"choices":[{"delta":{}}],"usage":{"prompt_tokens":1}}\n\n',
     b'data: {"choices":[{"delta":{}}],"usage":{"prompt_tokens":1}}\n\n'),
    (b'data: {"choices":[{"delta":{"content":"\\"usage\\":null"}}]}\n\n',
     b'data: {"choices":[{"delta":{"content":"\\"usage\\":null"}}]}\n\n'),
    (b": keep-alive\n\n", b": keep-alive\n\n"),
    (b"data: [DONE]\n\n", b"data: [DONE]\n\n"),
])
def test_without_asked_usage(event: bytes, kept: bytes | None) -> None:
    assert without_asked_usage(event) == kept
