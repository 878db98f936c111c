"""The simulator's OpenAI Responses API (`POST /v1/responses`, Azure's `/openai/v1/responses`, and
`GET`/`DELETE /v1/responses/{id}`, `…/input_items`, `…/cancel`), exercised with the official `openai` SDK: what it answers is
what the SDK's types describe, what it refuses is what OpenAI refuses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from simulator import BackgroundSimulator, start_background

KEY, OTHER = "sk-sim-responses", "sk-sim-other-account"
WEATHER: Any = {"type": "function", "name": "get_weather", "strict": True,
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                               "additionalProperties": False}}


@pytest.fixture(scope="module")
def sim() -> Iterator[BackgroundSimulator]:
    simulator = start_background(api_keys=[KEY, OTHER])
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim: BackgroundSimulator) -> Iterator[openai.OpenAI]:
    sim.reset()
    with openai.OpenAI(base_url=sim.url + "/v1", api_key=KEY, max_retries=0) as c:
        yield c


def test_text_tool_call_and_schema(client: openai.OpenAI) -> None:
    done = client.responses.create(model="gpt-4o-mini", input="Say hello.")
    assert done.status == "completed" and done.output_text and done.usage and done.usage.input_tokens > 0
    call = client.responses.create(model="gpt-4o-mini", input="Weather?", tools=[WEATHER], tool_choice="required")
    assert [i.type for i in call.output] == ["function_call"] and call.output[0].name == "get_weather"  # type: ignore[union-attr]
    fmt: Any = {"type": "json_schema", "name": "city", "schema": WEATHER["parameters"], "strict": True}
    parsed = client.responses.create(model="gpt-4o-mini", input="A city.", text={"format": fmt})
    assert set(json.loads(parsed.output_text)) == {"city"}


def test_stream_events_are_the_sdks_types(client: openai.OpenAI) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    events = list(client.responses.create(model="gpt-4o-mini", input="Say hello.", stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    for e in events:
        adapter.validate_python(e.model_dump(mode="json"))
    assert events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text  # type: ignore[union-attr]


def test_a_bad_body_is_openais_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="gpt-4o-mini", input="Hi", temperature="hot")  # type: ignore[arg-type]
    assert err.value.body["param"] == "temperature"  # type: ignore[index]


def test_stored_responses_belong_to_the_key_that_made_them(sim: BackgroundSimulator, client: openai.OpenAI) -> None:
    first = client.responses.create(model="gpt-4o-mini", input="Remember: blue.")
    follow = client.responses.create(model="gpt-4o-mini", input="Color?", previous_response_id=first.id)
    assert follow.previous_response_id == first.id
    assert client.responses.retrieve(first.id).id == first.id
    with openai.OpenAI(base_url=sim.url + "/v1", api_key=OTHER, max_retries=0) as other:
        with pytest.raises(openai.NotFoundError) as err:
            other.responses.create(model="gpt-4o-mini", input="Color?", previous_response_id=first.id)
        assert err.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    unstored = client.responses.create(model="gpt-4o-mini", input="Hi", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_azure_v1_path(sim: BackgroundSimulator) -> None:
    with openai.OpenAI(base_url=sim.url + "/openai/v1", api_key="unused", default_headers={"api-key": KEY},
                       max_retries=0) as azure:
        done = azure.responses.create(model="my-deployment", input="Say hello.")
        assert done.model == "my-deployment" and done.output_text
    with (openai.OpenAI(base_url=sim.url + "/openai/v1", api_key=KEY, max_retries=0) as no_key,
          pytest.raises(openai.AuthenticationError)):
        no_key.responses.create(model="my-deployment", input="Hi")


def test_input_items_are_the_sdks_page_of_the_input(client: openai.OpenAI) -> None:
    from openai.types.responses import ResponseItemList

    made = client.responses.create(model="gpt-4o-mini", input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "18 C"}], tools=[WEATHER])
    raw = client.responses.input_items.with_raw_response.list(made.id)
    page = ResponseItemList.model_validate(json.loads(raw.text))  # the SDK's own list type, strictly
    assert [i.type for i in page.data] == ["function_call_output", "function_call", "message"]  # newest first
    assert [i.type for i in client.responses.input_items.list(made.id, order="asc")] == [
        "message", "function_call", "function_call_output"]
    first = client.responses.input_items.list(made.id, order="asc", limit=1)
    assert len(first.data) == 1 and first.has_more
    rest = client.responses.input_items.list(made.id, order="asc", after=first.data[0].id)
    assert [i.type for i in rest.data] == ["function_call", "function_call_output"] and not rest.has_more
    with pytest.raises(openai.BadRequestError):
        client.responses.input_items.list(made.id, limit=101)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list("resp_unknown")


def test_a_background_response_is_queued_until_cancelled(client: openai.OpenAI) -> None:
    queued = client.responses.create(model="gpt-4o-mini", input="Write a long essay.", background=True)
    assert (queued.status, queued.background) == ("queued", True)
    cancelled = client.responses.cancel(queued.id)
    assert (cancelled.id, cancelled.status) == (queued.id, "cancelled")
    assert client.responses.retrieve(queued.id).status == "cancelled"
    done = client.responses.create(model="gpt-4o-mini", input="Hi")
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.cancel(done.id)
    assert "synchronous" in err.value.message
