"""The simulator's Anthropic API, exercised with the official `anthropic` SDK."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import orjson
import pytest

from simulator import BackgroundSimulator, count_tokens, start_background

KEY = "sk-ant-sim"
VERSION = "2026-10-21"
TOOLS: list[Any] = [{"name": "lookup", "description": "Look a word up",
                     "input_schema": {"type": "object", "properties": {"word": {"type": "string"},
                                                                       "limit": {"type": "number"}},
                                      "required": ["word", "limit"]}}]


@pytest.fixture(scope="module")
def sim() -> Iterator[BackgroundSimulator]:
    simulator = start_background()
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim: BackgroundSimulator) -> Iterator[anthropic.Anthropic]:
    sim.reset()
    with anthropic.Anthropic(base_url=sim.url, api_key=KEY, max_retries=0) as c:
        yield c


def raw_post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=orjson.dumps(body), method="POST",
                                     headers={"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def sse_events(raw: bytes) -> list[tuple[str, Any]]:
    events = []
    for frame in raw.decode().split("\n\n"):
        if not frame:
            continue
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        data = json.loads(data_line[len("data: "):])
        assert data["type"] == event_line[len("event: "):]
        events.append((data["type"], data))
    return events


def test_message_text_usage_and_headers(client: anthropic.Anthropic, sim: BackgroundSimulator) -> None:
    raw = client.messages.with_raw_response.create(
        model="claude-sim", max_tokens=100, system="Be kind.",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hello, Claude!"}]}])
    message = raw.parse()
    assert raw.headers["request-id"].startswith("req_")
    assert raw.headers["content-type"] == "application/json"
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "4000"
    assert message.id.startswith("msg_") and message.stop_reason == "end_turn"
    assert message.content[0].type == "text"
    text = message.content[0].text
    assert text.startswith("Simulated response")
    assert message.usage.input_tokens == count_tokens("Be kind.") + count_tokens("Hello, Claude!") == 7
    assert message.usage.output_tokens == count_tokens(text) == 12
    assert message.usage.cache_read_input_tokens == 0
    record = sim.requests()[-1]
    assert record["headers"]["anthropic-version"] == VERSION
    assert record["headers"]["authorization"] == f"Bearer {KEY}"
    assert record["status"] == 200


def test_stream_event_sequence_and_sdk_accumulation(client: anthropic.Anthropic, sim: BackgroundSimulator) -> None:
    request: dict[str, Any] = {"model": "claude-sim", "max_tokens": 100,
                               "messages": [{"role": "user", "content": "Stream please"}]}
    whole = client.messages.create(**request)
    with client.messages.stream(**request) as stream:
        final = stream.get_final_message()
    assert [b.model_dump() for b in whole.content] == [
        {"citations": None, "text": final.content[0].text, "type": "text"}]  # type: ignore[union-attr]
    assert final.usage.output_tokens == 12
    status, headers, body = raw_post(sim.url + "/v1/messages", {**request, "stream": True},
                                     {"x-api-key": KEY, "anthropic-version": VERSION})
    assert status == 200 and headers["content-type"] == "text/event-stream"
    events = sse_events(body)
    kinds = [k for k, _ in events]
    assert kinds[:3] == ["message_start", "content_block_start", "ping"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert kinds.count("content_block_delta") == 12
    start = events[0][1]["message"]
    assert start["stop_reason"] is None and start["content"] == [] and start["usage"]["input_tokens"] == 2
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 12


def test_limits_and_stop_sequences(client: anthropic.Anthropic) -> None:
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    cut = client.messages.create(model="c", max_tokens=4, messages=messages)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 4
    stopped = client.messages.create(model="c", max_tokens=100, messages=messages, stop_sequences=["response"])
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "response"
    assert stopped.content[0].type == "text" and stopped.content[0].text == "Simulated "


def test_tool_use_stream_then_text_after_the_result(client: anthropic.Anthropic) -> None:
    messages: list[Any] = [{"role": "user", "content": "Define 'gateway'"}]
    with client.messages.stream(model="c", max_tokens=100, messages=messages, tools=TOOLS) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds
    assert final.stop_reason == "tool_use"
    block = final.content[0]
    assert block.type == "tool_use" and block.id.startswith("toolu_") and block.name == "lookup"
    assert block.input == {"word": "example", "limit": 1}
    assert final.usage.output_tokens == count_tokens("lookup") + count_tokens(json.dumps(block.input))
    assert final.usage.input_tokens == count_tokens("Define 'gateway'") + count_tokens(json.dumps(TOOLS[0]))
    follow_up = messages + [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True)]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "a router"}]}]
    answer = client.messages.create(model="c", max_tokens=100, messages=follow_up, tools=TOOLS)
    assert answer.stop_reason == "end_turn" and answer.content[0].type == "text"
    none = client.messages.create(model="c", max_tokens=100, messages=messages, tools=TOOLS,
                                  tool_choice={"type": "none"})
    assert none.stop_reason == "end_turn"


def test_invalid_requests_are_rejected_in_anthropic_format(client: anthropic.Anthropic, sim: BackgroundSimulator) -> None:
    messages: list[Any] = [{"role": "user", "content": "x"}]
    with pytest.raises(anthropic.BadRequestError) as temperature:
        client.messages.create(model="c", max_tokens=10, messages=messages, extra_body={"temperature": 0.2})
    body: Any = temperature.value.body
    assert body["type"] == "error" and body["request_id"].startswith("req_")
    assert body["error"] == {"type": "invalid_request_error", "message": "temperature: unknown field"}
    with pytest.raises(anthropic.BadRequestError) as role:
        client.messages.create(model="c", max_tokens=10, messages=[{"role": "robot", "content": "x"}])  # type: ignore[misc,list-item]
    assert "messages[0].role: must be one of 'user', 'assistant', 'system'" in str(role.value)
    with pytest.raises(anthropic.BadRequestError) as system_image:
        client.messages.create(model="c", max_tokens=10, messages=[{"role": "system", "content": [  # type: ignore[misc,list-item]
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}])
    assert "messages[0].content[0].type: must be 'text'" in str(system_image.value)
    with pytest.raises(anthropic.BadRequestError) as orphan:
        client.messages.create(model="c", max_tokens=10, messages=[
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "r"}]}])
    assert "unexpected `tool_use_id`" in str(orphan.value)
    headers = {"x-api-key": KEY, "anthropic-version": VERSION}
    status, _, raw = raw_post(sim.url + "/v1/messages", {"model": "c", "messages": messages}, headers)
    assert status == 400 and json.loads(raw)["error"]["message"] == "max_tokens: required field missing"
    status, _, raw = raw_post(sim.url + "/v1/messages", {"model": "c", "max_tokens": 5, "messages": messages},
                              {"x-api-key": KEY})
    assert status == 400 and "anthropic-version" in json.loads(raw)["error"]["message"]


def test_authentication(sim: BackgroundSimulator) -> None:
    body = {"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    status, _, raw = raw_post(sim.url + "/v1/messages", body, {"anthropic-version": VERSION})
    assert status == 401 and json.loads(raw)["error"]["type"] == "authentication_error"
    status, _, raw = raw_post(sim.url + "/v1/messages", body, {"anthropic-version": VERSION, "x-api-key": "k"})
    assert status == 200 and json.loads(raw)["type"] == "message"
    locked = start_background(api_keys=["only-this"])
    try:
        with (anthropic.Anthropic(base_url=locked.url, api_key="other", max_retries=0) as wrong,
              pytest.raises(anthropic.AuthenticationError)):
            wrong.messages.create(model="c", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    finally:
        locked.stop()


def test_models_list(client: anthropic.Anthropic) -> None:
    client.messages.create(model="claude-listed", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    page = client.models.list()
    assert [m.id for m in page.data] == ["claude-listed"]
