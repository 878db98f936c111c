"""The simulator's OpenAI API, exercised with the official `openai` SDK."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest

from simulator import BackgroundSimulator, count_tokens, start_background

KEY = "sk-sim-test"
TOOLS: list[Any] = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "required": ["city", "days", "metric"], "properties": {
            "city": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"},
            "note": {"type": "string"}}}}},
    {"type": "function", "function": {
        "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}},
                                           "required": ["zone"]}}},
]


@pytest.fixture(scope="module")
def sim() -> Iterator[BackgroundSimulator]:
    simulator = start_background(api_keys=[KEY])
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim: BackgroundSimulator) -> Iterator[openai.OpenAI]:
    sim.reset()
    with openai.OpenAI(base_url=sim.url + "/v1", api_key=KEY, max_retries=0) as c:
        yield c


def raw_post(url: str, body: dict[str, Any], key: str | None = KEY) -> tuple[int, dict[str, str], bytes]:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=orjson.dumps(body), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def sse_chunks(raw: bytes) -> list[Any]:
    frames = [f for f in raw.decode().split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames)
    assert frames[-1] == "data: [DONE]"
    return [json.loads(f[len("data: "):]) for f in frames[:-1]]


def test_completion_text_usage_and_headers(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "system", "content": "You are terse."},
                           {"role": "user", "content": "What's up, doc?"}]
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
    completion = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    assert int(raw.headers["openai-processing-ms"]) >= 0
    assert raw.headers["x-ratelimit-remaining-requests"] == "9999"
    text = completion.choices[0].message.content or ""
    assert text.startswith("Simulated response")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == count_tokens("You are terse.") + count_tokens("What's up, doc?") == 11
    assert usage.completion_tokens == count_tokens(text) == 12
    assert usage.total_tokens == 23
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 0
    again = client.chat.completions.create(model="gpt-4o", messages=messages)
    assert again.choices[0].message.content == text


def test_stream_with_usage_matches_the_json_answer(client: openai.OpenAI, sim: BackgroundSimulator) -> None:
    messages: list[Any] = [{"role": "user", "content": "Tell me a story"}]
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    status, headers, body = raw_post(sim.url + "/v1/chat/completions", {
        "model": "gpt-4o-mini", "messages": messages, "stream": True, "stream_options": {"include_usage": True}})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    data = sse_chunks(body)
    assert all(d["usage"] is None for d in data[:-1]) and data[-1]["usage"]["completion_tokens"] == 12
    assert data[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}


def test_stream_without_usage_has_no_usage_field(sim: BackgroundSimulator) -> None:
    status, _, body = raw_post(sim.url + "/v1/chat/completions", {
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    assert status == 200
    data = sse_chunks(body)
    assert all("usage" not in d and d["object"] == "chat.completion.chunk" for d in data)
    assert data[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert sum(1 for d in data if d["choices"][0]["delta"].get("content")) == 12


def test_limits_and_stop_sequences(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "hello"}]
    cut = client.chat.completions.create(model="m", messages=messages, max_completion_tokens=5)
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage and cut.usage.completion_tokens == 5
    stopped = client.chat.completions.create(model="m", messages=messages, stop=["response"])
    assert stopped.choices[0].message.content == "Simulated "
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.usage and stopped.usage.completion_tokens == 1


def test_tool_call_then_text_after_the_result(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    completion = client.chat.completions.create(model="m", messages=messages, tools=TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = (choice.message.tool_calls or [])[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "example", "days": 1, "metric": True}
    assert completion.usage and completion.usage.completion_tokens == count_tokens(
        call.function.name) + count_tokens(call.function.arguments)
    expected_prompt = count_tokens("Weather in Paris?") + sum(count_tokens(json.dumps(t)) for t in TOOLS)
    assert completion.usage.prompt_tokens == expected_prompt
    follow_up = messages + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    answer = client.chat.completions.create(model="m", messages=follow_up, tools=TOOLS)
    assert answer.choices[0].finish_reason == "stop"
    assert (answer.choices[0].message.content or "").startswith("Simulated")


def test_streamed_tool_call_and_forced_choice(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "What time is it?"}]
    with client.chat.completions.stream(model="m", messages=messages, tools=TOOLS,
                                        tool_choice={"type": "function", "function": {"name": "get_time"}}) as stream:
        chunks = [event.chunk for event in stream if event.type == "chunk"]
        final = stream.get_final_completion()
    first = chunks[0].choices[0].delta.tool_calls
    assert first and first[0].id and first[0].function and first[0].function.arguments == ""
    assert len(chunks) > 3
    calls = final.choices[0].message.tool_calls or []
    assert calls[0].function.name == "get_time"
    assert json.loads(calls[0].function.arguments) == {"zone": "UTC"}
    assert final.choices[0].finish_reason == "tool_calls"
    none = client.chat.completions.create(model="m", messages=messages, tools=TOOLS, tool_choice="none")
    assert none.choices[0].message.tool_calls is None


def test_invalid_requests_are_rejected_in_openai_format(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(model="m", messages=messages, extra_body={"foo": 1})
    assert unknown.value.body == {"message": "Unrecognized request argument supplied: foo",
                                  "type": "invalid_request_error", "param": None, "code": None}
    with pytest.raises(openai.BadRequestError) as role:
        client.chat.completions.create(model="m", messages=[{"role": "robot", "content": "x"}])  # type: ignore[misc,list-item]
    assert role.value.param == "messages[0].role" and role.value.code == "invalid_value"
    with pytest.raises(openai.BadRequestError) as options:
        client.chat.completions.create(model="m", messages=messages, stream_options={"include_usage": True})
    assert options.value.param == "stream_options"
    with pytest.raises(openai.BadRequestError) as orphan:
        client.chat.completions.create(model="m", messages=[
            {"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_1", "content": "r"}])
    assert orphan.value.param == "messages[1].role"


def test_authentication(sim: BackgroundSimulator) -> None:
    messages: list[Any] = [{"role": "user", "content": "x"}]
    with (openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-wrong", max_retries=0) as wrong,
          pytest.raises(openai.AuthenticationError) as err):
        wrong.chat.completions.create(model="m", messages=messages)
    assert err.value.code == "invalid_api_key"
    status, _, body = raw_post(sim.url + "/v1/chat/completions", {"model": "m", "messages": messages}, key=None)
    assert status == 401 and json.loads(body)["error"]["type"] == "invalid_request_error"


def test_models_list_and_recorded_request(client: openai.OpenAI, sim: BackgroundSimulator) -> None:
    client.chat.completions.create(model="gpt-sim", messages=[{"role": "user", "content": "x"}], n=2)
    assert [m.id for m in client.models.list()] == ["gpt-sim"]
    record = [r for r in sim.requests() if r["path"] == "/v1/chat/completions"][-1]
    assert record["headers"]["authorization"] == f"Bearer {KEY}"
    assert record["body"]["n"] == 2 and record["status"] == 200
