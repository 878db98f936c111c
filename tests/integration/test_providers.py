"""Every provider type through the real Envoy, with both official client SDKs: OpenAI Chat
Completions and Anthropic Messages clients reach OpenAI, Azure OpenAI, Anthropic, Gemini,
Vertex (Gemini and Anthropic publishers) and Bedrock deployments, streaming and not, with tools.
The simulator validates what reaches it against each provider's official types and signature."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.integration.conftest import TENANT_KEY, Gateway, Simulator

# public model → (provider name, provider's model id as the simulator sees it)
DEPLOYMENTS = {
    "gpt-4o-mini": ("openai", "gpt-4o-mini-2024-07-18"),
    "azure-gpt-4o": ("azure", "gpt4o-deployment"),
    "claude-haiku-4-5": ("anthropic", "claude-haiku-4-5-20251001"),
    "gemini-2.5-flash": ("gemini", "gemini-2.5-flash"),
    "vertex-gemini-pro": ("vertex", "gemini-2.5-pro"),
    "vertex-claude": ("vertex", "claude-sonnet-4-5@20250929"),
    "bedrock-claude-sonnet": ("bedrock", "anthropic.claude-sonnet-4-5-20250929-v1:0"),
}
WEATHER = {"name": "get_weather", "description": "Weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def oai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=TENANT_KEY, max_retries=0, timeout=30)


def ant(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=TENANT_KEY, max_retries=0, timeout=30)


@pytest.mark.parametrize("model", DEPLOYMENTS)
def test_openai_client(providers_gateway: Gateway, sim: Simulator, model: str) -> None:
    c = oai(providers_gateway)
    msgs: Any = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]
    raw = c.chat.completions.with_raw_response.create(model=model, messages=msgs)
    done = raw.parse()
    assert raw.headers["x-interlock-provider"] == DEPLOYMENTS[model][0]
    assert done.choices[0].message.content and done.choices[0].message.content.startswith("Simulated")
    assert done.usage and done.usage.prompt_tokens > 0 and done.usage.completion_tokens > 0
    chunks = list(c.chat.completions.create(model=model, messages=msgs, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == done.choices[0].message.content
    assert [ch.usage for ch in chunks if ch.usage] == [done.usage]
    upstream = [r for r in sim.requests() if DEPLOYMENTS[model][1] in json.dumps(r)]
    assert upstream and all(r["status"] == 200 for r in upstream), upstream[-1:]
    assert TENANT_KEY not in json.dumps(upstream)


@pytest.mark.parametrize("model", DEPLOYMENTS)
def test_openai_client_tools(providers_gateway: Gateway, sim: Simulator, model: str) -> None:
    c = oai(providers_gateway)
    msgs: Any = [{"role": "user", "content": "Weather in Paris?"}]
    tools: Any = [{"type": "function", "function": WEATHER}]
    done = c.chat.completions.create(model=model, messages=msgs, tools=tools, tool_choice="required")
    assert done.choices[0].finish_reason == "tool_calls"
    call = (done.choices[0].message.tool_calls or [])[0]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert "city" in json.loads(call.function.arguments)  # type: ignore[union-attr]
    args = ""
    for ch in c.chat.completions.create(model=model, messages=msgs, tools=tools, tool_choice="required", stream=True):
        for tc in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
            args += (tc.function.arguments or "") if tc.function else ""
    assert json.loads(args) == json.loads(call.function.arguments)  # type: ignore[union-attr]
    follow = c.chat.completions.create(model=model, tools=tools, messages=[
        *msgs, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "18 C"}])
    assert follow.choices[0].finish_reason == "stop" and follow.choices[0].message.content


@pytest.mark.parametrize("model", DEPLOYMENTS)
def test_anthropic_client(providers_gateway: Gateway, sim: Simulator, model: str) -> None:
    c = ant(providers_gateway)
    raw = c.messages.with_raw_response.create(model=model, max_tokens=256, system="Be brief.",
                                              messages=[{"role": "user", "content": "Say hello."}])
    msg = raw.parse()
    assert raw.headers["x-interlock-provider"] == DEPLOYMENTS[model][0]
    assert msg.content[0].type == "text" and msg.content[0].text.startswith("Simulated")
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    with c.messages.stream(model=model, max_tokens=256, system="Be brief.",
                           messages=[{"role": "user", "content": "Say hello."}]) as stream:
        final = stream.get_final_message()
    assert [b.model_dump() for b in final.content] == [b.model_dump() for b in msg.content]
    assert final.usage.output_tokens == msg.usage.output_tokens


@pytest.mark.parametrize("model", DEPLOYMENTS)
def test_anthropic_client_tools(providers_gateway: Gateway, sim: Simulator, model: str) -> None:
    c = ant(providers_gateway)
    tools: Any = [{"name": WEATHER["name"], "description": WEATHER["description"],
                   "input_schema": WEATHER["parameters"]}]
    msgs: Any = [{"role": "user", "content": "Weather in Paris?"}]
    msg = c.messages.create(model=model, max_tokens=256, tools=tools, tool_choice={"type": "any"}, messages=msgs)
    assert msg.stop_reason == "tool_use"
    use = next(b for b in msg.content if b.type == "tool_use")
    assert use.name == "get_weather" and "city" in use.input  # type: ignore[operator]
    with c.messages.stream(model=model, max_tokens=256, tools=tools, tool_choice={"type": "any"},
                           messages=msgs) as stream:
        final = stream.get_final_message()
    streamed = next(b for b in final.content if b.type == "tool_use")
    assert (streamed.name, streamed.input) == (use.name, use.input)
    follow = c.messages.create(model=model, max_tokens=256, tools=tools, messages=[
        *msgs, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C"}]}])
    assert follow.stop_reason == "end_turn"


@pytest.mark.parametrize("model", ["text-embedding-3-small", "azure-embedding", "gemini-embedding"])
def test_embeddings(providers_gateway: Gateway, sim: Simulator, model: str) -> None:
    out = oai(providers_gateway).embeddings.create(model=model, input=["hello", "world"])
    assert [d.index for d in out.data] == [0, 1]
    assert all(len(d.embedding) > 0 for d in out.data)
    assert out.data[0].embedding != out.data[1].embedding


def test_models_list_in_each_clients_format(providers_gateway: Gateway) -> None:
    openai_ids = [m.id for m in oai(providers_gateway).models.list()]
    anthropic_ids = [m.id for m in ant(providers_gateway).models.list()]
    assert openai_ids == anthropic_ids and set(DEPLOYMENTS) <= set(openai_ids)
    assert oai(providers_gateway).models.retrieve("gemini-2.5-flash").id == "gemini-2.5-flash"
    assert ant(providers_gateway).models.retrieve("gemini-2.5-flash").id == "gemini-2.5-flash"
    with pytest.raises(openai.NotFoundError):
        oai(providers_gateway).models.retrieve("gpt-7")
    with pytest.raises(anthropic.NotFoundError):
        ant(providers_gateway).models.retrieve("gpt-7")


def test_anthropic_client_errors_are_anthropic_shaped(providers_gateway: Gateway) -> None:
    r = httpx.post(providers_gateway.url + "/v1/messages", headers={"x-api-key": "wrong"}, json={})
    assert r.status_code == 401 and r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError):
        ant(providers_gateway).messages.create(model="nope", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    r = httpx.post(providers_gateway.url + "/v1/messages", headers={"x-api-key": TENANT_KEY},
                   content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


# A 1x1 PNG.
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAA"
       "AABJRU5ErkJggg==")


@pytest.mark.parametrize("model", DEPLOYMENTS)
def test_images_base64(providers_gateway: Gateway, sim: Simulator, model: str) -> None:
    done = oai(providers_gateway).chat.completions.create(model=model, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"}, {"type": "image_url", "image_url": {"url": PNG}}]}])
    assert done.choices[0].message.content
    up = sim.requests()[-1]
    assert up["status"] == 200 and "iVBORw0KGgo" in json.dumps(up["body"])
    msg = ant(providers_gateway).messages.create(model=model, max_tokens=100, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG.split(",", 1)[1]}},
        {"type": "text", "text": "What is in this image?"}]}])
    assert msg.content[0].type == "text"


def test_image_url_to_bedrock_is_a_clear_400(providers_gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        oai(providers_gateway).chat.completions.create(model="bedrock-claude-sonnet", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert isinstance(e.value.body, dict) and "image" in e.value.body["message"].lower()
