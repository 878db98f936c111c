"""simulator.validate.strict against the installed openai / anthropic SDK param types."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, Optional, Required, TypedDict, Union

from simulator.validate import anthropic_messages_request_problems as anthropic_problems
from simulator.validate import check
from simulator.validate import openai_chat_request_problems as openai_problems

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


class _Inner(TypedDict):
    kind: Literal["a", "b"]
    n: NotRequired[int]


class _Outer(TypedDict, total=False):
    name: Required[str]
    ratio: float
    flag: bool
    items: list[_Inner]
    maybe: Optional[str]  # noqa: UP045 - exercising typing.Optional


class _Text(TypedDict):
    type: Literal["text"]
    text: str


class _Image(TypedDict):
    type: Literal["image"]
    url: str


class _Open(TypedDict, total=False):
    type: Required[Literal["object"]]


_Open.__pydantic_config__ = {"extra": "allow"}  # type: ignore[attr-defined]


def test_primitives_and_paths() -> None:
    assert check(_Outer, {"name": "x", "ratio": 1, "flag": True, "items": [{"kind": "a"}], "maybe": None}) == []
    assert check(_Outer, {"name": "x", "ratio": True, "flag": 1}) == [
        "ratio: must be a number", "flag: must be a boolean"]
    assert check(_Outer, {"items": [{"kind": "c", "n": 1.5, "x": 0}]}) == [
        "name: required field missing",
        "items[0].kind: must be one of 'a', 'b'",
        "items[0].n: must be an integer",
        "items[0].x: unknown field",
    ]
    assert check(_Outer, "nope") == ["(root): must be an object"]
    assert check(list[int], [1, True], "xs") == ["xs[1]: must be an integer"]
    assert check(dict[str, int], {"a": "b"}, "m") == ["m.a: must be an integer"]
    assert check(Any, {"anything": [1]}) == []
    assert check(object, None) == []


def test_unions_report_the_discriminated_member() -> None:
    block = Union[_Text, _Image]  # noqa: UP007
    assert check(block, {"type": "image", "url": 3}, "c") == ["c.url: must be a string"]
    assert check(block, {"type": "video"}, "c") == ["c.type: must be one of 'text', 'image'"]
    assert check(Union[str, list[_Text]], 5, "c") == ["c: must be a string or an array"]  # noqa: UP007
    assert check(Optional[int], None) == []  # noqa: UP045


def test_extra_allow_config_is_honoured() -> None:
    assert check(_Open, {"type": "object", "anything": 1}) == []
    assert check(_Open, {"anything": 1}) == ["type: required field missing"]


OPENAI_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_openai_valid_requests() -> None:
    assert openai_problems({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}) == []
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "tools": [OPENAI_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_completion_tokens": 50,
        "temperature": 0.2,
        "stop": ["END"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert openai_problems(body) == []


def test_openai_rejections() -> None:
    assert openai_problems({"model": "m", "messages": [{"role": "user", "content": "x"}], "foo": 1}) == [
        "foo: unknown field"]
    assert openai_problems({"model": "m", "messages": [{"role": "bot", "content": "x"}]}) == [
        "messages[0].role: must be one of 'developer', 'system', 'user', 'assistant', 'tool', 'function'"]
    assert openai_problems({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "txt", "text": "b"}]}]}) == [
        "messages[0].content[1].type: must be one of 'text', 'image_url', 'input_audio', 'file'"]
    assert openai_problems({"messages": [], "max_tokens": "10", "stream": False}) == [
        "model: required field missing", "max_tokens: must be an integer or null"]
    assert openai_problems({"model": "m", "messages": [], "stream_options": {"include_usage": "yes"},
                            "stream": True}) == ["stream_options.include_usage: must be a boolean"]


ANTHROPIC_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                     "additionalProperties": False},
}


def test_anthropic_valid_requests() -> None:
    assert anthropic_problems({"model": "claude-x", "max_tokens": 10,
                               "messages": [{"role": "user", "content": "hi"}]}) == []
    body = {
        "model": "claude-x",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "checking"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]}]},
        ],
        "tools": [ANTHROPIC_TOOL],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u1"},
        "stream": True,
    }
    assert anthropic_problems(body) == []


def test_anthropic_rejections() -> None:
    base: dict[str, Any] = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    assert anthropic_problems({**base, "temperature": 0.5}) == ["temperature: unknown field"]
    assert anthropic_problems({**base, "top_p": 0.5, "top_k": 3}) == ["top_p: unknown field", "top_k: unknown field"]
    assert anthropic_problems({"model": "claude-x", "messages": base["messages"]}) == [
        "max_tokens: required field missing"]
    assert anthropic_problems({**base, "messages": [{"role": "bot", "content": "x"}]}) == [
        "messages[0].role: must be one of 'user', 'assistant', 'system'"]
    assert anthropic_problems({**base, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "a", "foo": 1}]}]}) == ["messages[0].content[0].foo: unknown field"]
    assert anthropic_problems({**base, "tools": [{**ANTHROPIC_TOOL, "parameters": {}}]}) == [
        "tools[0].parameters: unknown field"]
    assert anthropic_problems({**base, "tool_choice": {"type": "required"}}) == [
        "tool_choice.type: must be one of 'auto', 'any', 'tool', 'none'"]


def test_anthropic_system_role_messages_follow_the_sdk() -> None:
    """anthropic 2.13 declares SystemMessageParam (role "system", text only) in MessageParam."""
    base: dict[str, Any] = {"model": "claude-x", "max_tokens": 10}
    assert anthropic_problems({**base, "messages": [
        {"role": "system", "content": "rules"}, {"role": "user", "content": "x"}]}) == []
    problems = anthropic_problems({**base, "messages": [{"role": "system", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}]})
    assert problems == ["messages[0].content[0].type: must be 'text'"]
