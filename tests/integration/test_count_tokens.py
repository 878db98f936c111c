"""Token counting through the real Envoy, with the official `anthropic` SDK:
`client.messages.count_tokens(...)` answered by every provider type that can count (Anthropic,
Vertex-Anthropic, Gemini, Vertex-Gemini, Bedrock CountTokens, OpenAI's Responses input-token
count), each with the provider's own count — the same figure the provider reports as the input of
a generation of the same request —, a clear Anthropic-format 400 for a provider type that cannot
count, and the rate limits: counting spends the tenant's requests, never its tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.integration.conftest import (
    TENANT_KEY,
    Gateway,
    Simulator,
    every_provider_config,
    sha,
    start_gateway,
)

# public model → (provider name, the upstream path's telling part)
COUNTING = {
    "claude-haiku-4-5": ("anthropic", "/v1/messages/count_tokens"),
    "vertex-claude": ("vertex", "count-tokens:rawPredict"),
    "gemini-2.5-flash": ("gemini", ":countTokens"),
    "vertex-gemini-pro": ("vertex", ":countTokens"),
    "bedrock-claude-sonnet": ("bedrock", "/count-tokens"),
    "gpt-4o-mini": ("openai", "/v1/responses/input_tokens"),
}
COUNTER_KEY, TIGHT_KEY = "sk-it-counter", "sk-it-tight"
WEATHER: Any = {"name": "get_weather", "description": "Weather for a city.",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def count_config(sim: Simulator) -> dict[str, Any]:
    cfg = every_provider_config(sim)
    cfg["tenants"] += [
        # 20 tokens an hour: any generation of the prompts below is over it; counting never is.
        {"name": "counter", "api_key_sha256": [sha(COUNTER_KEY)], "models": ["*"],
         "limits": [{"unit": "tokens", "per": "hour", "amount": 20}]},
        {"name": "tight", "api_key_sha256": [sha(TIGHT_KEY)], "models": ["*"],
         "limits": [{"unit": "requests", "per": "hour", "amount": 2}]},
    ]
    return cfg


@pytest.fixture(scope="module")
def count_gateway(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(simulator, tmp_path_factory.mktemp("gw-count"), config=count_config(simulator))
    try:
        yield gw
    finally:
        gw.process.stop()


def ant(gw: Gateway, key: str = TENANT_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=30)


@pytest.mark.parametrize("model", COUNTING)
def test_count_tokens(count_gateway: Gateway, sim: Simulator, model: str) -> None:
    provider, path = COUNTING[model]
    c = ant(count_gateway)
    messages: Any = [{"role": "user", "content": "What is the weather in Paris today?"}]
    raw = c.messages.with_raw_response.count_tokens(model=model, system="Answer briefly.", messages=messages)
    counted = raw.parse()
    assert raw.headers["x-interlock-provider"] == provider and raw.headers["x-interlock-model"] == model
    made = c.messages.create(model=model, max_tokens=8, system="Answer briefly.", messages=messages)
    assert counted.input_tokens == made.usage.input_tokens > 0
    with_tools = c.messages.count_tokens(model=model, messages=messages, tools=[WEATHER])
    assert with_tools.input_tokens > c.messages.count_tokens(model=model, messages=messages).input_tokens
    sent = [r for r in sim.requests() if path in r["path"]]
    assert len(sent) == 3 and all(r["status"] == 200 for r in sent), sent
    assert TENANT_KEY not in json.dumps(sent)


def test_a_provider_type_that_cannot_count_is_a_400(count_gateway: Gateway, sim: Simulator) -> None:
    with pytest.raises(anthropic.BadRequestError) as e:
        ant(count_gateway).messages.count_tokens(model="azure-gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error"  # type: ignore[index]
    assert "cannot count tokens" in e.value.body["error"]["message"]  # type: ignore[index]
    assert not sim.requests()


def test_bad_count_request_is_a_400_in_anthropics_format(count_gateway: Gateway, sim: Simulator) -> None:
    with pytest.raises(anthropic.BadRequestError) as e:
        ant(count_gateway).messages.count_tokens(model="claude-haiku-4-5", messages=[])
    assert e.value.body["error"]["message"].startswith("messages:")  # type: ignore[index]
    assert not sim.requests()


def test_counting_spends_requests_not_tokens(count_gateway: Gateway, sim: Simulator) -> None:
    long: Any = [{"role": "user", "content": "Count every word of this sentence, please. " * 20}]
    counter = ant(count_gateway, COUNTER_KEY)
    for _ in range(4):  # far over 20 tokens each, and far over the budget together
        assert counter.messages.count_tokens(model="claude-haiku-4-5", messages=long).input_tokens > 20
    # A generation of the same prompt is over the tokens limit (429, or 400 when it never fits).
    with pytest.raises((anthropic.RateLimitError, anthropic.BadRequestError), match="tokens"):
        counter.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=long)
    tight = ant(count_gateway, TIGHT_KEY)
    tight.messages.count_tokens(model="claude-haiku-4-5", messages=long)
    tight.messages.count_tokens(model="claude-haiku-4-5", messages=long)
    with pytest.raises(anthropic.RateLimitError) as e:  # the third request in the hour
        tight.messages.count_tokens(model="claude-haiku-4-5", messages=long)
    assert e.value.response.headers.get("retry-after")
