"""Request rules of the anthropic→openai translation, as tables: what is mapped, what is dropped
(and listed), and what is refused with a 400 naming the parameter; plus the passthrough."""

from __future__ import annotations

import copy
import typing
from typing import Any

import orjson
import pytest
from anthropic.types import message_create_params

from extproc.errors import GatewayError
from extproc.translate.anthropic_anthropic import AnthropicPassthroughStream, AnthropicToAnthropic
from extproc.translate.anthropic_openai_request import _FIELDS
from extproc.translate.anthropic_via import AnthropicToOpenAI
from extproc.translate.base import Target, Usage
from simulator.validate import openai_chat_request_problems

TARGET = Target("qwen", "Qwen/Qwen3-32B", "openai", 4096, frozenset({"tools", "images", "json", "reasoning"}))
PLAIN = Target("qwen", "Qwen/Qwen3-32B", "openai", 4096)
USER = [{"role": "user", "content": "Hi"}]
TOOL = {"name": "f", "input_schema": {"type": "object", "properties": {}}}
FUNCTION = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}


def translate(target: Target = TARGET, **fields: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    body = {"model": "qwen", "max_tokens": 100, "messages": USER, **fields}
    frozen = copy.deepcopy(body)
    up = AnthropicToOpenAI().translate_request(body, target)
    assert body == frozen
    out = orjson.loads(up.body)
    assert openai_chat_request_problems(out) == []
    return out, up.dropped_params


def refused(target: Target = TARGET, **fields: Any) -> GatewayError:
    body = {"model": "qwen", "max_tokens": 100, "messages": USER, **fields}
    with pytest.raises(GatewayError) as info:
        AnthropicToOpenAI().translate_request(body, target)
    assert info.value.status == 400 and info.value.type == "invalid_request_error"
    return info.value


def test_every_anthropic_field_is_decided() -> None:
    fields = set(typing.get_type_hints(message_create_params.MessageCreateParamsStreaming))
    assert fields | {"temperature", "top_p", "top_k"} == set(_FIELDS)


BASE = {"model": "Qwen/Qwen3-32B", "messages": USER, "max_completion_tokens": 100}
MAPPED = [
    ("system string", {"system": "Be brief."}, {"messages": [{"role": "system", "content": "Be brief."}, *USER]}),
    ("system blocks joined", {"system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]},
     {"messages": [{"role": "system", "content": "A\n\nB"}, *USER]}),
    ("stop_sequences", {"stop_sequences": ["a", "b"]}, {"stop": ["a", "b"]}),
    ("empty stop_sequences", {"stop_sequences": []}, {}),
    ("metadata.user_id", {"metadata": {"user_id": "u1"}}, {"user": "u1"}),
    ("metadata without user", {"metadata": {}}, {}),
    ("temperature and top_p", {"temperature": 0.5, "top_p": 0.9}, {"temperature": 0.5, "top_p": 0.9}),
    ("stream", {"stream": True}, {"stream": True, "stream_options": {"include_usage": True}}),
    ("stream false", {"stream": False}, {}),
    ("service tier auto", {"service_tier": "auto"}, {"service_tier": "auto"}),
    ("service tier standard", {"service_tier": "standard_only"}, {"service_tier": "default"}),
    ("speed standard", {"speed": "standard"}, {}),
    ("effort", {"output_config": {"effort": "max"}}, {"reasoning_effort": "max"}),
    ("json schema", {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
     {"response_format": {"type": "json_schema",
                          "json_schema": {"name": "response", "schema": {"type": "object"}, "strict": True}}}),
    ("tool_choice auto", {"tools": [TOOL], "tool_choice": {"type": "auto"}}, {"tools": [FUNCTION], "tool_choice": "auto"}),
    ("tool_choice any", {"tools": [TOOL], "tool_choice": {"type": "any"}},
     {"tools": [FUNCTION], "tool_choice": "required"}),
    ("tool_choice tool", {"tools": [TOOL], "tool_choice": {"type": "tool", "name": "f"}},
     {"tools": [FUNCTION], "tool_choice": {"type": "function", "function": {"name": "f"}}}),
    ("tool_choice none", {"tools": [TOOL], "tool_choice": {"type": "none"}}, {"tools": [FUNCTION], "tool_choice": "none"}),
    ("no parallel", {"tools": [TOOL], "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
     {"tools": [FUNCTION], "tool_choice": "auto", "parallel_tool_calls": False}),
    ("tool_choice without tools", {"tool_choice": {"type": "auto"}}, {}),
    ("strict tool", {"tools": [{**TOOL, "strict": True, "description": "d", "type": "custom"}]},
     {"tools": [{"type": "function", "function": {"name": "f", "description": "d",
                                                  "parameters": TOOL["input_schema"], "strict": True}}]}),
    ("null fields", {"system": None, "metadata": None, "tools": None}, {}),
]


@pytest.mark.parametrize(("fields", "expected"), [m[1:] for m in MAPPED], ids=[m[0] for m in MAPPED])
def test_mapped(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    out, dropped = translate(**fields)
    assert out == {**BASE, **expected}
    assert dropped == ()


def test_max_tokens_field_option() -> None:
    target = Target("qwen", "q", "openai", 4096, options=(("max_tokens_field", "max_tokens"),))
    out, _ = translate(target)
    assert out["max_tokens"] == 100 and "max_completion_tokens" not in out


DROPPED = [
    ({"top_k": 5}, "top_k"),
    ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking"),
    ({"cache_control": {"type": "ephemeral"}}, "cache_control"),
    ({"system": [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}]}, "cache_control"),
    ({"diagnostics": {"previous_message_id": "msg_1"}}, "diagnostics"),
    ({"inference_geo": "eu"}, "inference_geo"),
    ({"speed": "fast"}, "speed"),
    ({"user_profile_id": "p"}, "user_profile_id"),
    ({"workspace_id": "w"}, "workspace_id"),
    ({"tools": [{**TOOL, "eager_input_streaming": True}]}, "tools[].eager_input_streaming"),
    ({"tools": [{**TOOL, "input_examples": [{}]}]}, "tools[].input_examples"),
    ({"tools": [{**TOOL, "cache_control": {"type": "ephemeral"}}]}, "cache_control"),
]


@pytest.mark.parametrize(("fields", "name"), DROPPED, ids=[d[1] + str(i) for i, d in enumerate(DROPPED)])
def test_dropped_and_listed(fields: dict[str, Any], name: str) -> None:
    assert translate(**fields)[1] == (name,)


def test_effort_without_reasoning_capability_is_dropped() -> None:
    target = Target("qwen", "q", "openai", 4096, frozenset({"json"}))
    out, dropped = translate(target, output_config={"effort": "low"})
    assert "reasoning_effort" not in out and dropped == ("output_config.effort",)


REFUSED = [
    ({"container": "c1"}, "container"),
    ({"unknown_field": 1}, "unknown_field"),
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"model": ""}, "model"),
    ({"temperature": "hot"}, "temperature"),
    ({"stop_sequences": "END"}, "stop_sequences"),
    ({"metadata": {"user_id": "u", "team": "t"}}, "metadata.team"),
    ({"service_tier": "priority"}, "service_tier"),
    ({"output_config": {"effort": "huge"}}, "output_config.effort"),
    ({"output_config": {"format": {"type": "json_object"}}}, "output_config.format"),
    ({"output_config": {"task_budget": 3}}, "output_config.task_budget"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
    ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, "tools[0]"),
    ({"tools": [{**TOOL, "defer_loading": True}]}, "tools[0].defer_loading"),
    ({"tools": [{**TOOL, "allowed_callers": ["code_execution_20250825"]}]}, "tools[0].allowed_callers"),
    ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
    ({"tool_choice": {"type": "any"}}, "tool_choice"),
    ({"tools": [TOOL], "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    # The assertion (a 500): the request check refuses it first, the translator too.
    ({"tools": [TOOL], "tool_choice": "x"}, "tool_choice"),
    ({"tool_choice": "x"}, "tool_choice"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "The answer is"}]}, "messages[1]"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "search_result", "source": "s", "title": "t",
                                                 "content": []}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
     "messages[0].content[0].source"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "u"}}]}]},
     "messages[0].content[0].source"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "citations": {"enabled": True},
                                                 "source": {"type": "text", "media_type": "text/plain", "data": "d"}}]}]},
     "messages[0].content[0].citations"),
    ({"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": [IMAGE]}]}]}, "messages[0].content[0].content[0]"),
    ({"messages": [{"role": "assistant", "content": [
        {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}, *USER]}, "messages[0].content[0]"),
    ({"messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": "x"}]}, *USER]}, "messages[0].content[0].input"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]},
     "messages[0].content[0]"),
]


@pytest.mark.parametrize(("fields", "param"), REFUSED, ids=[r[1] + str(i) for i, r in enumerate(REFUSED)])
def test_refused(fields: dict[str, Any], param: str) -> None:
    assert refused(**fields).param == param


def test_capabilities() -> None:
    assert refused(PLAIN, tools=[TOOL]).param == "tools"
    assert refused(PLAIN, messages=[{"role": "user", "content": [IMAGE]}]).param == "messages[0].content[0]"
    fmt = {"format": {"type": "json_schema", "schema": {"type": "object"}}}
    assert refused(PLAIN, output_config=fmt).param == "output_config.format"


def test_conversation() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Look", "citations": None}, IMAGE]},
        {"role": "assistant", "content": [
            {"type": "redacted_thinking", "data": "xyz"},
            {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}, "caller": {"type": "direct"}},
            {"type": "tool_use", "id": "t2", "name": "f", "input": {}}]},
        {"role": "user", "content": [
            {"type": "text", "text": "both done"},
            {"type": "tool_result", "tool_use_id": "t1", "content": "one"},
            {"type": "tool_result", "tool_use_id": "t2"}]},
        {"role": "system", "content": [{"type": "text", "text": "Now summarize."}]},
        {"role": "user", "content": [{"type": "document", "source": {"type": "content", "content": [
            {"type": "text", "text": "p1"}, {"type": "text", "text": "p2"}]}}]},
    ]
    out, dropped = translate(messages=messages)
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Look"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
            {"id": "t2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "one"},
        {"role": "tool", "tool_call_id": "t2", "content": ""},
        {"role": "user", "content": "both done"},
        {"role": "system", "content": "Now summarize."},
        {"role": "user", "content": [{"type": "text", "text": "p1"}, {"type": "text", "text": "p2"}]},
    ]
    assert dropped == ("messages[].content[].thinking",)


def test_history_details_are_dropped_and_listed() -> None:
    messages = [
        {"role": "user", "content": [{**IMAGE, "transformations": {"oversized_image": "error"}}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat.", "citations": [
            {"type": "char_location", "cited_text": "c", "document_index": 0, "document_title": None,
             "start_char_index": 0, "end_char_index": 1}]}]},
        {"role": "user", "content": "ok"}]
    assert translate(messages=messages)[1] == ("messages[].content[].citations",
                                               "messages[].content[].transformations")


def test_passthrough_keeps_everything_but_model() -> None:
    body = {"model": "claude", "max_tokens": 10, "messages": USER, "cache_control": {"type": "ephemeral"},
            "future_field": {"x": 1}, "stream": True}
    frozen = copy.deepcopy(body)
    target = Target("claude", "claude-sonnet-4-5", "anthropic", 4096)
    up = AnthropicToAnthropic().translate_request(body, target)
    assert orjson.loads(up.body) == {**body, "model": "claude-sonnet-4-5"} and list(orjson.loads(up.body)) == list(body)
    assert (up.path, up.stream, up.dropped_params) == ("/v1/messages", True, ())
    assert dict(up.headers)["anthropic-version"] == "2026-10-21"
    assert body == frozen


def test_passthrough_stream_usage_at_every_split() -> None:
    raw = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","usage":'
           b'{"input_tokens":5,"cache_read_input_tokens":7,"output_tokens":1}}}\n\n'
           b'event: ping\ndata: {"type":"ping"}\n\n'
           b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
           b'"usage":{"output_tokens":9}}\n\n')
    for i in range(len(raw)):
        stream = AnthropicPassthroughStream()
        assert stream.feed(raw[:i]) + stream.feed(raw[i:]) + stream.finish() == raw
        assert stream.usage == Usage(prompt_tokens=12, completion_tokens=9, cached_tokens=7)
