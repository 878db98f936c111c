"""The OpenAI passthrough: only `model` changes on the way up; bytes come back untouched."""

from __future__ import annotations

import copy

import orjson
import pytest

from extproc.errors import GatewayError
from extproc.translate.base import ResponseContext, Target, Usage
from extproc.translate.openai_openai import OpenAIToOpenAI
from tests.golden.support import GOLDEN

GPT = Target("gpt", "gpt-4o-2024-08-06", "openai", 4096, frozenset())
CTX = ResponseContext("req-1", 1767225600)
PAIR = GOLDEN / "openai-openai"


def test_request_keeps_every_field_but_model() -> None:
    body = {"model": "gpt", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0.3, "n": 2,
            "logprobs": True, "vendor_extension": {"x": 1}, "stream": True}
    frozen = copy.deepcopy(body)
    up = OpenAIToOpenAI().translate_request(body, GPT)
    assert orjson.loads(up.body) == {**body, "model": "gpt-4o-2024-08-06"}
    assert list(orjson.loads(up.body)) == list(body)
    assert (up.path, up.stream, up.dropped_params) == ("/v1/chat/completions", True, ())
    assert body == frozen


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


@pytest.mark.parametrize("case", ["stream-text", "stream-include-usage"])
def test_stream_bytes_unchanged_at_every_split(case: str) -> None:
    raw = (PAIR / case / "upstream_response.sse").read_bytes()
    for i in range(len(raw)):
        stream = OpenAIToOpenAI().stream_translator(GPT, CTX)
        assert stream.feed(raw[:i]) + stream.feed(raw[i:]) + stream.finish() == raw
        assert stream.usage == (Usage(11, 4) if case == "stream-include-usage" else None)
