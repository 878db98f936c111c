"""The demo config (`make run`, `extproc/cmd/demo/demo.yaml`) serves each client API the README
lists — Responses, completions with fill-in-the-middle, token counting — through the real Envoy with
the official SDKs. Its models, routes and tenant as shipped; only its endpoints, keys and ports
are the test's (its own simulator; `test_lifecycle` runs the demo itself on its fixed ports)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
import yaml

from extproc.cmd.run import DEMO_CONFIG
from tests.integration.conftest import Gateway, Simulator, start_gateway

DEMO_KEY = "sk-interlock-demo"  # the demo tenant's key, as the README gives it
CHAT_MODELS = ("gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash", "bedrock-claude-sonnet")
ENV = {"INTERLOCK_SIM_API_KEY": "IT_PROVIDER_KEY", "INTERLOCK_SIM_AWS_ACCESS_KEY_ID": "IT_AWS_KEY_ID",
       "INTERLOCK_SIM_AWS_SECRET_ACCESS_KEY": "IT_AWS_SECRET"}


def demo_on(sim: Simulator) -> dict[str, Any]:
    """The demo config with the test's simulator and credentials (ports: the test's)."""
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    for key in ("listen", "admin", "metrics", "rate_limit", "extproc"):
        cfg.pop(key, None)
    for p in cfg["providers"]:
        p["endpoint"] = sim.url
        for field, value in list(p.items()):
            if field.endswith("_env"):
                p[field] = ENV[value]
    return cfg


@pytest.fixture(scope="module")
def demo(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(simulator, tmp_path_factory.mktemp("gw-demo-apis"), config=demo_on(simulator))
    try:
        yield gw
    finally:
        gw.process.stop()


def _oai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=DEMO_KEY, max_retries=0, timeout=30)


@pytest.mark.parametrize("model", [*CHAT_MODELS, "auto", "fast"])
def test_the_demo_serves_responses(demo: Gateway, sim: Simulator, model: str) -> None:
    c = _oai(demo)
    done = c.responses.create(model=model, instructions="Be brief.", input="Say hello.", max_output_tokens=100)
    assert done.status == "completed" and done.output_text and done.instructions == "Be brief."
    events = list(c.responses.create(model=model, input="Say hello.", max_output_tokens=100, stream=True))
    assert events[-1].type == "response.completed" and events[-1].response.usage  # type: ignore[union-attr]
    if model == "gpt-4o-mini":  # stored on OpenAI: read back, and continued, through the gateway
        assert c.responses.retrieve(done.id).id == done.id
        assert c.responses.create(model=model, input="And?", previous_response_id=done.id).previous_response_id == done.id


@pytest.mark.parametrize("model", ["gpt-3.5-turbo-instruct", "qwen2.5-coder"])
def test_the_demo_serves_fill_in_the_middle(demo: Gateway, sim: Simulator, model: str) -> None:
    c = _oai(demo)
    done = c.completions.create(model=model, prompt="def add(a, b):\n    ", suffix="\n    return c\n", max_tokens=16)
    assert done.choices[0].text and done.usage and done.usage.completion_tokens > 0
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model=model, prompt="def add(a, b):\n    ", suffix="\n    return c\n", max_tokens=16, stream=True)
        if ch.choices)
    assert streamed
    with pytest.raises(openai.BadRequestError) as err:  # a chat model does not fill in the middle
        c.completions.create(model="gpt-4o-mini", prompt="def f(", suffix=")", max_tokens=8)
    assert err.value.body["param"] == "suffix"  # type: ignore[index]


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_the_demo_counts_tokens(demo: Gateway, sim: Simulator, model: str) -> None:
    a = anthropic.Anthropic(base_url=demo.url, api_key=DEMO_KEY, max_retries=0, timeout=30)
    counted = a.messages.count_tokens(model=model, messages=[{"role": "user", "content": "Count these words."}])
    assert counted.input_tokens > 0


def test_the_demo_lists_which_models_serve_which_api(demo: Gateway) -> None:
    apis = {m.id: set((m.model_extra or {}).get("apis") or ()) for m in _oai(demo).models.list()}
    for model in CHAT_MODELS:
        assert {"/v1/responses", "/v1/messages/count_tokens"} <= apis[model]
    assert "/v1/completions" in apis["qwen2.5-coder"] and "/v1/completions" in apis["gpt-3.5-turbo-instruct"]
