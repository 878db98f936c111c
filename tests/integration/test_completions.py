"""Completions with fill-in-the-middle through the real Envoy, with the official `openai` SDK:
`client.completions.create(prompt=..., suffix=...)`, plain and streamed, for every provider type
that serves completions — an OpenAI-compatible server taking `suffix` (OpenAI, Azure OpenAI), a
prompt-only server whose model gets the gateway's FIM template (vLLM-like: the simulator refuses
`suffix` for it, as vLLM does), and the native FIM type (`mistral`, Codestral's API) — and the
400s: a suffix to a model without `fim`, completions to a provider type without a completions API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.integration.conftest import TENANT_KEY, Gateway, Simulator, every_provider_config, start_gateway

# public model → (provider name, provider's model id, how it takes the suffix)
FIM_MODELS = {
    "gpt-instruct": ("openai", "gpt-3.5-turbo-instruct", "suffix"),
    "azure-instruct": ("azure", "instruct-deployment", "suffix"),
    "qwen-coder": ("vllm", "Qwen/Qwen2.5-Coder-7B", "template"),
    "codestral": ("mistral", "codestral-latest", "native"),
}
PREFIX, SUFFIX = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"


def fim_config(sim: Simulator) -> dict[str, Any]:
    cfg = every_provider_config(sim)
    key = {"api_key_env": "IT_PROVIDER_KEY"}
    cfg["providers"] += [{"name": "vllm", "type": "openai", "endpoint": sim.url, **key},
                         {"name": "mistral", "type": "mistral", "endpoint": sim.url, **key}]
    for name, (provider, upstream, how) in FIM_MODELS.items():
        model: dict[str, Any] = {"name": name, "provider": provider, "upstream_model": upstream,
                                 "max_output_tokens": 256, "capabilities": ["fim"]}
        if how == "template":
            model["fim_template"] = "qwen"
        model["quality"] = 0.9 if how == "template" else 0.5
        cfg["models"].append(model)
    # A route whose best candidate is the prompt-only model; the native FIM type is its fallback.
    cfg["routes"] = [{"name": "code", "candidates": ["qwen-coder", "codestral"],
                      "policy": {"kind": "best_quality"}}]
    return cfg


@pytest.fixture(scope="module")
def fim_gateway(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(simulator, tmp_path_factory.mktemp("gw-fim"), config=fim_config(simulator))
    try:
        yield gw
    finally:
        gw.process.stop()


def oai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=TENANT_KEY, max_retries=0, timeout=30)


def upstream_requests(sim: Simulator, path_end: str) -> list[dict[str, Any]]:
    return [r for r in sim.requests() if r["path"].endswith(path_end)]


@pytest.mark.parametrize("model", FIM_MODELS)
def test_fim_completion(fim_gateway: Gateway, sim: Simulator, model: str) -> None:
    provider, upstream, how = FIM_MODELS[model]
    sim.behave("Qwen/Qwen2.5-Coder-7B", capabilities=["tools"])  # a prompt-only server: suffix is a 400 there
    c = oai(fim_gateway)
    raw = c.completions.with_raw_response.create(model=model, prompt=PREFIX, suffix=SUFFIX, max_tokens=16)
    done = raw.parse()
    assert raw.headers["x-interlock-provider"] == provider and raw.headers["x-interlock-model"] == model
    assert done.object == "text_completion" and done.choices[0].text.startswith("Simulated")
    assert done.choices[0].finish_reason in ("stop", "length")
    assert done.usage and done.usage.prompt_tokens > 0 and 0 < done.usage.completion_tokens <= 16

    chunks = list(c.completions.create(model=model, prompt=PREFIX, suffix=SUFFIX, max_tokens=16, stream=True,
                                       stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == done.choices[0].text
    assert [ch.usage for ch in chunks if ch.usage] == [done.usage]
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == [
        done.choices[0].finish_reason]

    sent = [r for r in sim.requests() if r["body"] and r["body"].get("model") in (upstream, None)
            and "completions" in r["path"]]
    assert len(sent) == 2 and all(r["status"] == 200 for r in sent), sent
    body = sent[0]["body"]
    if how == "template":
        assert body["prompt"] == f"<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX}<|fim_middle|>"
        assert "suffix" not in body and sent[0]["path"] == "/v1/completions"
    elif how == "native":
        assert sent[0]["path"] == "/v1/fim/completions"
        assert (body["prompt"], body["suffix"], body["model"]) == (PREFIX, SUFFIX, upstream)
    else:
        assert (body["prompt"], body["suffix"]) == (PREFIX, SUFFIX)
    assert TENANT_KEY not in json.dumps(sent)


def test_plain_completion_without_suffix(fim_gateway: Gateway, sim: Simulator) -> None:
    done = oai(fim_gateway).completions.create(model="gpt-4o-mini", prompt="Once upon a time", max_tokens=5)
    assert done.choices[0].text.startswith("Simulated")
    assert upstream_requests(sim, "/v1/completions")[0]["body"]["model"] == "gpt-4o-mini-2024-07-18"


def test_suffix_to_a_model_without_fim_is_a_400(fim_gateway: Gateway, sim: Simulator) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        oai(fim_gateway).completions.create(model="gpt-4o-mini", prompt=PREFIX, suffix=SUFFIX)
    assert e.value.body["param"] == "suffix" and "fill-in-the-middle" in e.value.body["message"]  # type: ignore[index]
    assert e.value.response.headers["x-interlock-provider"] == "interlock"
    assert not sim.requests()


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "gemini-2.5-flash", "bedrock-claude-sonnet"])
def test_completions_to_a_provider_without_completions_is_a_400(fim_gateway: Gateway, sim: Simulator,
                                                                 model: str) -> None:
    with pytest.raises(openai.BadRequestError, match="does not serve /v1/completions"):
        oai(fim_gateway).completions.create(model=model, prompt="x")
    assert not sim.requests()


def test_chat_to_the_native_fim_type_is_a_400(fim_gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError, match="serves /v1/completions only"):
        oai(fim_gateway).chat.completions.create(model="codestral", messages=[{"role": "user", "content": "x"}])


def test_template_model_refuses_an_array_prompt_with_suffix(fim_gateway: Gateway, sim: Simulator) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        oai(fim_gateway).completions.create(model="qwen-coder", prompt=["a", "b"], suffix="c")
    assert e.value.body["param"] == "prompt"  # type: ignore[index]
    assert not sim.requests()


def test_fim_route_falls_back_to_another_provider_type(fim_gateway: Gateway, sim: Simulator) -> None:
    """The primary (a prompt-only server, templated) fails with 503; Envoy retries on the native FIM
    type, for which the upstream stage translates the client's original request afresh. Then the
    failed deployment cools down: a streamed request goes to the fallback first."""
    sim.behave("Qwen/Qwen2.5-Coder-7B", capabilities=["tools"], status=503)
    c = oai(fim_gateway)
    raw = c.completions.with_raw_response.create(model="code", prompt=PREFIX, suffix=SUFFIX, max_tokens=8)
    assert raw.headers["x-interlock-provider"] == "mistral" and raw.headers["x-interlock-attempts"] == "2"
    assert raw.parse().choices[0].text.startswith("Simulated")
    first, second = [r for r in sim.requests() if "completions" in r["path"]]
    assert (first["path"], first["status"], "suffix" in first["body"]) == ("/v1/completions", 503, False)
    assert (second["path"], second["status"], second["body"]["suffix"]) == ("/v1/fim/completions", 200, SUFFIX)
    streamed = c.completions.with_raw_response.create(model="code", prompt=PREFIX, suffix=SUFFIX, max_tokens=8,
                                                      stream=True)
    assert streamed.headers["x-interlock-provider"] == "mistral"
    assert "".join(ch.choices[0].text for ch in streamed.parse() if ch.choices).startswith("Simulated")


def test_models_list_says_which_models_serve_completions(fim_gateway: Gateway) -> None:
    apis = {m.id: m.model_extra.get("apis") for m in oai(fim_gateway).models.list()}  # type: ignore[union-attr]
    assert apis["codestral"] == ["/v1/completions"]
    assert "/v1/completions" in apis["qwen-coder"] and "/v1/completions" in apis["azure-instruct"]
    assert "/v1/completions" not in apis["claude-haiku-4-5"]
    assert "/v1/messages/count_tokens" in apis["claude-haiku-4-5"]
    assert "/v1/messages/count_tokens" not in apis["azure-instruct"]
