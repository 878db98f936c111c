"""Request rules of the openai→anthropic translator, as tables: what is mapped, what is dropped
(and listed), and what is refused with a 400 naming the parameter."""

from __future__ import annotations

import copy
import typing
from typing import Any

import orjson
import pytest
from openai.types.chat import completion_create_params

from extproc.errors import GatewayError
from extproc.translate.base import Target
from extproc.translate.openai_anthropic import _FIELDS, OpenAIToAnthropic
from simulator.validate import anthropic_messages_request_problems

TARGET = Target("claude", "claude-sonnet-4-5", "anthropic", 4096, frozenset({"tools", "images", "json"}))
USER = [{"role": "user", "content": "Hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


def translate(target: Target = TARGET, **fields: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    body = {"model": "claude", "messages": USER, **fields}
    frozen = copy.deepcopy(body)
    up = OpenAIToAnthropic().translate_request(body, target)
    assert body == frozen
    out = orjson.loads(up.body)
    assert anthropic_messages_request_problems(out) == []
    return out, up.dropped_params


def refused(target: Target = TARGET, **fields: Any) -> GatewayError:
    body = {"model": "claude", "messages": USER, **fields}
    with pytest.raises(GatewayError) as info:
        OpenAIToAnthropic().translate_request(body, target)
    assert info.value.status == 400 and info.value.type == "invalid_request_error"
    return info.value


def test_every_openai_field_is_decided() -> None:
    openai_fields = set(typing.get_type_hints(completion_create_params.CompletionCreateParamsStreaming))
    assert openai_fields | {"top_k"} == set(_FIELDS)


MAPPED = [
    ("max_completion_tokens wins", {"max_completion_tokens": 10, "max_tokens": 20}, {"max_tokens": 10}),
    ("max_tokens", {"max_tokens": 20}, {"max_tokens": 20}),
    ("default max tokens", {}, {}),
    ("stop string", {"stop": "END"}, {"stop_sequences": ["END"]}),
    ("stop list", {"stop": ["a", "b"]}, {"stop_sequences": ["a", "b"]}),
    ("empty stop list", {"stop": []}, {}),
    ("user", {"user": "u1"}, {"metadata": {"user_id": "u1"}}),
    ("safety_identifier", {"safety_identifier": "s1"}, {"metadata": {"user_id": "s1"}}),
    ("stream", {"stream": True, "stream_options": {"include_usage": True}}, {"stream": True}),
    ("stream false", {"stream": False}, {}),
    ("tool_choice auto", {"tools": [TOOL], "tool_choice": "auto"}, {"tool_choice": {"type": "auto"}}),
    ("tool_choice none", {"tools": [TOOL], "tool_choice": "none"}, {"tool_choice": {"type": "none"}}),
    ("tool_choice required", {"tools": [TOOL], "tool_choice": "required"}, {"tool_choice": {"type": "any"}}),
    ("tool_choice named", {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "f"}}},
     {"tool_choice": {"type": "tool", "name": "f"}}),
    ("no parallel calls", {"tools": [TOOL], "parallel_tool_calls": False},
     {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}),
    ("parallel calls default", {"tools": [TOOL], "parallel_tool_calls": True}, {}),
    ("tool_choice auto without tools", {"tool_choice": "auto"}, {}),
    ("parallel_tool_calls without tools", {"parallel_tool_calls": False}, {}),
    ("empty tools", {"tools": []}, {}),
    ("response_format text", {"response_format": {"type": "text"}}, {}),
    ("json_schema", {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
     {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}),
    ("service_tier auto", {"service_tier": "auto"}, {"service_tier": "auto"}),
    ("service_tier default", {"service_tier": "default"}, {"service_tier": "standard_only"}),
    ("modalities text", {"modalities": ["text"]}, {}),
    ("n 1", {"n": 1}, {}),
    ("logprobs false", {"logprobs": False}, {}),
    ("store false", {"store": False}, {}),
    ("empty metadata", {"metadata": {}}, {}),
    ("nulls are absent", {"temperature": None, "n": None, "tools": None, "stop": None}, {}),
]


@pytest.mark.parametrize(("name", "fields", "expected"), MAPPED, ids=[m[0] for m in MAPPED])
def test_mapped(name: str, fields: dict[str, Any], expected: dict[str, Any]) -> None:
    out, dropped = translate(**fields)
    base = {"model": "claude-sonnet-4-5", "max_tokens": 4096, "messages": USER}
    assert {k: v for k, v in out.items() if base.get(k) != v and k != "tools"} == expected
    assert all(out[k] == v for k, v in base.items() if k not in expected)
    assert dropped == ()


DROPPED = [
    ({"temperature": 0.1}, ("temperature",)),
    ({"top_p": 0.5, "top_k": 3}, ("top_k", "top_p")),
    ({"seed": 1, "frequency_penalty": 0.1, "presence_penalty": 0.1}, ("frequency_penalty", "presence_penalty", "seed")),
    ({"logit_bias": {"1": 5}}, ("logit_bias",)),
    ({"prediction": {"type": "content", "content": "x"}}, ("prediction",)),
    ({"verbosity": "high"}, ("verbosity",)),
    ({"store": True}, ("store",)),
    ({"metadata": {"k": "v"}}, ("metadata",)),
    ({"prompt_cache_key": "k", "prompt_cache_retention": "24h", "prompt_cache_options": {"ttl": "30m"}},
     ("prompt_cache_key", "prompt_cache_options", "prompt_cache_retention")),
    ({"service_tier": "flex"}, ("service_tier",)),
    ({"reasoning_effort": "high"}, ("reasoning_effort",)),
    ({"user": "u", "safety_identifier": "s"}, ("user",)),
    ({"messages": [{"role": "user", "name": "bob", "content": "Hi"}]}, ("messages[].name",)),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}]}]}, ("image_url.detail",)),
]


@pytest.mark.parametrize(("fields", "dropped"), DROPPED, ids=[",".join(d[1]) for d in DROPPED])
def test_dropped_and_listed(fields: dict[str, Any], dropped: tuple[str, ...]) -> None:
    assert translate(**fields)[1] == dropped


def test_reasoning_effort_maps_to_effort_with_capability() -> None:
    target = Target("claude", "claude-opus-4-5", "anthropic", 4096, frozenset({"reasoning"}))
    out, dropped = translate(target, reasoning_effort="xhigh")
    assert out["output_config"] == {"effort": "xhigh"} and dropped == ()
    assert translate(target, reasoning_effort="minimal")[1] == ("reasoning_effort",)


M = "messages"
REFUSED = [
    ({"model": None}, "model"),
    ({"model": ""}, "model"),
    ({M: []}, M),
    ({M: "hi"}, M),
    ({M: ["hi"]}, "messages[0]"),
    ({M: [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({M: [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
    ({M: [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({M: [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]},
     "messages[0].content[0]"),
    ({M: [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]}, "messages[0].content[0].file"),
    ({M: [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}]},
     "messages[0].content[0]"),
    ({M: [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({M: [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA=="}}]}]},
     "messages[0].content[0].image_url.url"),
    ({M: [{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {"type": "forever"}}]}]},
     "messages[0].content[0].cache_control"),
    ({M: [*USER, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]},
     "messages[1].tool_calls[0].function.arguments"),
    ({M: [*USER, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]},
     "messages[1].tool_calls[0].function.arguments"),
    ({M: [*USER, {"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {"name": "f", "input": ""}}]}]},
     "messages[1].tool_calls[0]"),
    ({M: [*USER, {"role": "assistant", "audio": {"id": "a1"}}]}, "messages[1].audio"),
    ({M: [*USER, {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}]}, "messages[1].function_call"),
    ({M: [*USER, {"role": "tool", "content": "x"}]}, "messages[1].tool_call_id"),
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema.schema"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"function_call": "auto"}, "function_call"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"moderation": {"model": "omni-moderation-latest"}}, "moderation"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"max_completion_tokens": "many"}, "max_completion_tokens"),
    ({"stop": [1]}, "stop"),
    ({"tools": [{"type": "custom", "custom": {"name": "grammar"}}]}, "tools[0]"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]}, "tools[0].function.parameters"),
    ({"tools": "f"}, "tools"),
    ({"tools": [TOOL], "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}},
     "tool_choice"),
    ({"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [TOOL], "parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ({"user": 5}, "user"),
    ({"frobnicate": True}, "frobnicate"),
]


@pytest.mark.parametrize(("fields", "param"), REFUSED, ids=[r[1] + ":" + ",".join(r[0]) for r in REFUSED])
def test_refused_with_param(fields: dict[str, Any], param: str) -> None:
    assert refused(**fields).param == param


@pytest.mark.parametrize(("caps", "fields", "param"), [
    (frozenset(), {"tools": [TOOL]}, "tools"),
    (frozenset(), {M: [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}]},
     "messages[0].content[0]"),
    (frozenset(), {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
     "response_format"),
])
def test_capabilities(caps: frozenset[str], fields: dict[str, Any], param: str) -> None:
    assert refused(Target("m", "m", "anthropic", 100, caps), **fields).param == param


def _messages(*messages: dict[str, Any]) -> list[dict[str, Any]]:
    out, _ = translate(messages=list(messages))
    return list(out["messages"])


def test_consecutive_tool_results_share_one_user_turn() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    turns = _messages(*USER, {"role": "assistant", "content": "", "tool_calls": [call, {**call, "id": "c2"}]},
                      {"role": "tool", "tool_call_id": "c1", "content": "one"},
                      {"role": "tool", "tool_call_id": "c2", "content": ""})
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == [{"type": "tool_use", "id": "c1", "name": "f", "input": {}},
                                   {"type": "tool_use", "id": "c2", "name": "f", "input": {}}]
    assert turns[2]["content"] == [{"type": "tool_result", "tool_use_id": "c1", "content": "one"},
                                   {"type": "tool_result", "tool_use_id": "c2"}]


def test_system_anywhere_is_hoisted_in_order() -> None:
    out, _ = translate(messages=[{"role": "system", "content": "A"}, *USER, {"role": "developer", "content": "B"},
                                 {"role": "system", "content": ""}])
    assert out["system"] == "A\n\nB"
    assert out["messages"] == USER


def test_assistant_refusal_and_pdf() -> None:
    turns = _messages({"role": "user", "content": [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}]},
        {"role": "assistant", "content": None, "refusal": "I can't help with that."})
    assert turns[0]["content"] == [{"type": "document", "title": "a.pdf",
                                    "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]
    assert turns[1]["content"] == "I can't help with that."


def test_request_is_deterministic_and_input_untouched() -> None:
    body = {"model": "claude", "messages": [{"role": "user", "content": [{"type": "text", "text": "x",
                                                                          "cache_control": {"type": "ephemeral"}}]}]}
    frozen = copy.deepcopy(body)
    first = OpenAIToAnthropic().translate_request(body, TARGET)
    orjson.loads(first.body)["messages"][0]["content"][0]["cache_control"]["ttl"] = "1h"
    assert OpenAIToAnthropic().translate_request(body, TARGET) == first
    assert body == frozen
