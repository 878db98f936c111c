"""OpenAI Responses (`POST /v1/responses`) through the real Envoy with the official `openai` SDK as
the client, to every provider type: plain, streamed, a function-calling round trip, a JSON schema,
and stored state (passed through to OpenAI-type providers; served unstored, or a 400 saying what
to send instead, elsewhere; retrieve, delete, input items and cancel on the account that stored the
response, as request-limited calls). The simulator validates what reaches it against each provider's
official types."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.integration.conftest import TENANT_KEY, Gateway, Simulator, sha, start_gateway
from tests.integration.test_providers import DEPLOYMENTS, oai

OPENAI_TYPE = ("gpt-4o-mini", "azure-gpt-4o")
WEATHER: Any = {"type": "function", "name": "get_weather", "description": "Weather for a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                               "additionalProperties": False}, "strict": True}
SCHEMA: Any = {"type": "json_schema", "name": "city", "strict": True,
               "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
                          "additionalProperties": False}}


def _upstream(sim: Simulator, model: str) -> list[dict[str, Any]]:
    return [r for r in sim.requests() if DEPLOYMENTS[model][1] in json.dumps(r)]


@pytest.mark.parametrize("model", DEPLOYMENTS)
def test_plain_and_streamed(providers_gateway: Gateway, sim: Simulator, model: str) -> None:
    c = oai(providers_gateway)
    raw = c.responses.with_raw_response.create(model=model, instructions="Be brief.", input="Say hello.",
                                               max_output_tokens=200)
    done = raw.parse()
    assert raw.headers["x-interlock-provider"] == DEPLOYMENTS[model][0]
    assert done.status == "completed" and done.output_text.startswith("Simulated")
    assert done.usage and done.usage.input_tokens > 0 and done.usage.output_tokens > 0
    assert (done.instructions, done.max_output_tokens) == ("Be brief.", 200)  # the request, echoed
    if model not in OPENAI_TYPE:  # the SDK's default `store` is true: served unstored, and said so
        assert "store" in raw.headers["x-interlock-dropped-params"].split(",")
    events = list(c.responses.create(model=model, instructions="Be brief.", input="Say hello.",
                                     max_output_tokens=200, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response  # type: ignore[union-attr]
    assert text == final.output_text == done.output_text
    assert (final.instructions, final.max_output_tokens) == ("Be brief.", 200)
    assert final.usage == done.usage
    with c.responses.stream(model=model, input="Say hello.", max_output_tokens=200) as stream:
        assert stream.get_final_response().output_text == done.output_text
    upstream = _upstream(sim, model)
    assert upstream and all(r["status"] == 200 for r in upstream), upstream[-1:]


@pytest.mark.parametrize("model", DEPLOYMENTS)
def test_function_calling_round_trip(providers_gateway: Gateway, sim: Simulator, model: str) -> None:
    c = oai(providers_gateway)
    first = c.responses.create(model=model, input="Weather in Paris?", tools=[WEATHER], tool_choice="required",
                               store=False)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert first.tool_choice == "required" and [t.name for t in first.tools] == ["get_weather"]  # type: ignore[union-attr]
    assert "city" in json.loads(calls[0].arguments)
    args = ""
    for event in c.responses.create(model=model, input="Weather in Paris?", tools=[WEATHER], tool_choice="required",
                                    store=False, stream=True):
        if event.type == "response.function_call_arguments.delta":
            args += event.delta
        if event.type == "response.completed":
            streamed = [i for i in event.response.output if i.type == "function_call"]
    assert json.loads(args) == json.loads(calls[0].arguments) == json.loads(streamed[0].arguments)
    follow = c.responses.create(model=model, tools=[WEATHER], store=False, input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18 C"}])
    assert follow.status == "completed" and follow.output_text
    assert not [i for i in follow.output if i.type == "function_call"]


@pytest.mark.parametrize("model", DEPLOYMENTS)
def test_json_schema(providers_gateway: Gateway, sim: Simulator, model: str) -> None:
    c = oai(providers_gateway)
    done = c.responses.create(model=model, input="A city, please.", text={"format": SCHEMA}, store=False)
    assert done.status == "completed"
    if model in OPENAI_TYPE:  # the simulator answers JSON of the schema for OpenAI-type providers
        assert set(json.loads(done.output_text)) == {"name"}
    upstream = json.dumps(_upstream(sim, model)[-1])  # the schema went up (Bedrock: as a JSON string)
    assert "additionalProperties" in upstream or "additional_properties" in upstream


@pytest.mark.parametrize("model", [m for m in DEPLOYMENTS if m not in OPENAI_TYPE])
def test_stored_state_elsewhere_is_a_clear_400(providers_gateway: Gateway, sim: Simulator, model: str) -> None:
    c = oai(providers_gateway)
    with pytest.raises(openai.BadRequestError) as err:
        c.responses.create(model=model, input="Hi", store=True)
    assert err.value.body["param"] == "store" and "store: false" in err.value.message  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        c.responses.create(model=model, input="Hi", previous_response_id="resp_123")
    assert err.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        c.responses.create(model=model, input="Hi", store=False, tools=[{"type": "web_search"}])
    assert "OpenAI-type providers only" in err.value.message
    assert not _upstream(sim, model)


@pytest.mark.parametrize("model", OPENAI_TYPE)
def test_stored_state_passes_through(providers_gateway: Gateway, sim: Simulator, model: str) -> None:
    c = oai(providers_gateway)
    first = c.responses.create(model=model, input="Remember: blue.")
    second = c.responses.create(model=model, input="What did I say?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    with pytest.raises(openai.NotFoundError):
        c.responses.create(model=model, input="Hi", previous_response_id="resp_unknown")


def test_models_list_says_which_apis_serve_each_model(providers_gateway: Gateway) -> None:
    listed = {m.id: (m.model_extra or {}).get("apis") for m in oai(providers_gateway).models.list()}
    for model in DEPLOYMENTS:
        assert {"/v1/chat/completions", "/v1/messages", "/v1/responses"} <= set(listed[model])
    assert "/v1/responses" not in listed["text-embedding-3-small"]
    assert "/v1/embeddings" in listed["text-embedding-3-small"]


# --- stored state stays on the account that stored it -------------------------------------------

CALLS_KEY, TOKENS_KEY = "sk-it-responses-calls", "sk-it-responses-tokens"


def _keyed(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30)

def _pin_config(sim: Simulator) -> dict[str, Any]:
    key = {"api_key_env": "IT_PROVIDER_KEY"}
    fast = {"exploration": 0.0, "affinity": False}
    models = [{"name": f"pin-{n}", "provider": p, "upstream_model": f"pin-{n}-upstream", "max_output_tokens": 1024,
               "price": {"input_per_mtok": price, "output_per_mtok": price}, "capabilities": ["tools", "json"]}
              for n, p, price in (("cheap", "oa1", 0.1), ("dear", "oa2", 1.0), ("claude", "an", 0.5),
                                  ("first", "oa1", 0.01))]
    return {"providers": [{"name": "oa1", "type": "openai", "endpoint": sim.url, **key},
                          {"name": "oa2", "type": "openai", "endpoint": sim.url, **key},
                          {"name": "an", "type": "anthropic", "endpoint": sim.url, **key}],
            "models": models,
            "routes": [{"name": "route-stored", "policy": {"kind": "objective", "minimize": "cost", **fast},
                        "candidates": ["pin-cheap", "pin-dear"]},
                       {"name": "route-other", "policy": {"kind": "objective", "minimize": "cost", **fast},
                        "candidates": ["pin-dear", "pin-claude"]},
                       {"name": "route-fallback", "policy": {"kind": "objective", "minimize": "cost", **fast},
                        "candidates": ["pin-first", "pin-claude"]}],
            "tenants": [{"name": "it", "api_key_sha256": [sha(TENANT_KEY)], "models": ["*"]},
                        {"name": "calls", "api_key_sha256": [sha(CALLS_KEY)], "models": ["*"],
                         "limits": [{"unit": "requests", "per": "hour", "amount": 3}]},
                        {"name": "tokens", "api_key_sha256": [sha(TOKENS_KEY)], "models": ["*"],
                         "limits": [{"unit": "tokens", "per": "hour", "amount": 5}]}]}


@pytest.fixture(scope="module")
def pin_gateway(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(simulator, tmp_path_factory.mktemp("gw-responses-pin"), config=_pin_config(simulator))
    try:
        yield gw
    finally:
        gw.process.stop()


def test_a_follow_up_stays_on_the_account_that_stored_it(pin_gateway: Gateway, sim: Simulator) -> None:
    c = oai(pin_gateway)
    raw = c.responses.with_raw_response.create(model="route-stored", input="Remember: blue.")
    first = raw.parse()
    assert raw.headers["x-interlock-provider"] == "oa1"
    sim.behave("pin-cheap-upstream", status=503)
    moved = c.responses.with_raw_response.create(model="route-stored", input="Hello")
    assert moved.headers["x-interlock-provider"] == "oa2"  # what routing and fallback do without a stored response
    with pytest.raises(openai.APIStatusError) as err:
        c.responses.create(model="route-stored", input="What did I say?", previous_response_id=first.id)
    assert err.value.status_code == 503 and err.value.response.headers["x-interlock-provider"] == "oa1"
    assert all(r["body"].get("previous_response_id") is None
               for r in sim.requests() if "pin-dear-upstream" in json.dumps(r))
    sim.behave("pin-cheap-upstream", status=None)
    events = list(c.responses.create(model="route-stored", input="What did I say?", previous_response_id=first.id,
                                     stream=True))
    final = events[-1].response  # type: ignore[union-attr]
    assert final.previous_response_id == first.id and final.id.endswith(first.id[-11:])
    upstream = sim.requests()[-1]["body"]
    assert upstream["previous_response_id"] == first.id.rsplit(".", 1)[0]  # as the provider knows it
    with pytest.raises(openai.BadRequestError) as bad:
        c.responses.create(model="route-other", input="Hi", previous_response_id=first.id)
    assert bad.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_get_and_delete_reach_the_account_that_stored_it(pin_gateway: Gateway, sim: Simulator) -> None:
    c = oai(pin_gateway)
    made = c.responses.with_raw_response.create(model="route-stored", input="Remember: blue.")
    first = made.parse()
    raw = c.responses.with_raw_response.retrieve(first.id)
    assert raw.headers["x-interlock-provider"] == made.headers["x-interlock-provider"]
    got = raw.parse()
    assert got.id == first.id and got.output_text == first.output_text  # tagged as the create path tags it
    provider_id = first.id.rsplit(".", 1)[0]
    assert sim.requests()[-1]["method"] == "GET" and sim.requests()[-1]["path"].endswith("/v1/responses/" + provider_id)
    assert TENANT_KEY not in json.dumps(sim.requests()[-1])
    assert not {k for k in raw.headers if k.startswith("openai-")}  # the provider's own headers stay behind
    follow = c.responses.with_raw_response.create(model="route-stored", input="And?", previous_response_id=got.id)
    assert follow.headers["x-interlock-provider"] == made.headers["x-interlock-provider"]
    assert follow.parse().previous_response_id == first.id
    deleted = c.responses.with_raw_response.delete(first.id)
    assert json.loads(deleted.text) == {"id": first.id, "object": "response.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(first.id)
    unstored = c.responses.create(model="pin-claude", input="Hi", store=False)
    with pytest.raises(openai.BadRequestError) as err:
        c.responses.retrieve(unstored.id)
    assert "unstored" in err.value.message
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve("resp_1." + "il00000000")


def test_a_route_keeps_what_only_openai_serves_on_openai_type_deployments(pin_gateway: Gateway,
                                                                          sim: Simulator) -> None:
    c = oai(pin_gateway)
    unstored = c.responses.with_raw_response.create(model="route-other", input="Hi")  # the cheapest: Claude
    assert unstored.headers["x-interlock-provider"] == "an"
    assert "store" in unstored.headers["x-interlock-dropped-params"].split(",")
    for extra in ({"store": True}, {"store": False, "tools": [{"type": "web_search"}]}):
        raw = c.responses.with_raw_response.create(model="route-other", input="Hi", **extra)  # type: ignore[arg-type]
        assert raw.headers["x-interlock-provider"] == "oa2", extra


def test_input_items_and_cancel_reach_the_account_that_stored_it(pin_gateway: Gateway, sim: Simulator) -> None:
    c = oai(pin_gateway)
    made = c.responses.with_raw_response.create(model="route-stored", input=[
        {"role": "user", "content": "Remember: blue."}, {"role": "user", "content": "And green."}])
    first = made.parse()
    raw = c.responses.input_items.with_raw_response.list(first.id, order="asc", limit=1)
    assert raw.headers["x-interlock-provider"] == made.headers["x-interlock-provider"]
    page = raw.parse()
    assert [i.type for i in page.data] == ["message"] and page.has_more
    assert sim.requests()[-1]["path"].endswith(f"/v1/responses/{first.id.rsplit('.', 1)[0]}/input_items")
    assert [i.content[0].text for i in c.responses.input_items.list(first.id)] == [  # type: ignore[union-attr]
        "And green.", "Remember: blue."]  # every page, through the SDK's cursor
    background = c.responses.with_raw_response.create(model="route-stored", input="Write a long essay.",
                                                      background=True)
    queued = background.parse()
    assert queued.status == "queued"
    raw_cancel = c.responses.with_raw_response.cancel(queued.id)
    assert raw_cancel.headers["x-interlock-provider"] == background.headers["x-interlock-provider"]
    cancelled = raw_cancel.parse()
    assert (cancelled.id, cancelled.status) == (queued.id, "cancelled")
    assert sim.requests()[-1]["method"] == "POST" and sim.requests()[-1]["path"].endswith("/cancel")
    with pytest.raises(openai.BadRequestError) as err:  # the provider's own refusal, in OpenAI's format
        c.responses.cancel(first.id)
    assert "synchronous" in err.value.message
    with pytest.raises(openai.APIStatusError) as wrong:
        c.post(f"/responses/{first.id}/input_items", cast_to=object)
    assert wrong.value.status_code == 405


def test_the_dropped_store_is_said_after_a_fallback(pin_gateway: Gateway, sim: Simulator) -> None:
    c = oai(pin_gateway)
    sim.behave("pin-first-upstream", status=503)
    try:
        raw = c.responses.with_raw_response.create(model="route-fallback", input="Hi")  # `store` omitted
    finally:
        sim.behave("pin-first-upstream", status=None)
    assert raw.headers["x-interlock-provider"] == "an" and raw.headers["x-interlock-attempts"] == "2"
    assert "store" in raw.headers["x-interlock-dropped-params"].split(",")
    assert raw.parse().store is False


def test_stored_response_calls_spend_requests_not_tokens(pin_gateway: Gateway, sim: Simulator) -> None:
    first = oai(pin_gateway).responses.create(model="pin-cheap", input="Remember: blue.")
    tokens = _keyed(pin_gateway, TOKENS_KEY)  # 5 tokens an hour: far less than any generation
    for _ in range(4):
        assert tokens.responses.retrieve(first.id).id == first.id
        tokens.responses.input_items.list(first.id)
    calls = _keyed(pin_gateway, CALLS_KEY)  # 3 requests an hour
    calls.responses.retrieve(first.id)
    calls.responses.input_items.list(first.id)
    calls.responses.retrieve(first.id)
    with pytest.raises(openai.RateLimitError) as err:
        calls.responses.retrieve(first.id)
    assert err.value.response.headers.get("retry-after")
    assert "requests" in err.value.message


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku-4-5"])
def test_an_image_without_detail_is_served(providers_gateway: Gateway, sim: Simulator, model: str) -> None:
    pixel = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    done = oai(providers_gateway).responses.create(model=model, store=False, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": pixel}]}])
    assert done.status == "completed"
    assert _upstream(sim, model)[-1]["status"] == 200
