"""Completions (fill-in-the-middle) and token counting in the stage modules, one row per rule:
the config (`capabilities: [fim]`, `fim_template`, the `mistral` type), the parsed request, which
deployments may serve them (`selection.refusal`), what they are charged (`metering`) and what
`GET /v1/models` says they serve."""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson
import pytest
import yaml

from extproc import errors
from extproc.config import load_text
from extproc.config.load import ConfigError
from extproc.runtime import Deployment, Runtime, compile_runtime
from extproc.stages import metering, models_list, request, selection
from extproc.translate.completions_fim import PRESETS
from extproc.translate.registry import default_registry

CONFIG: dict[str, Any] = {
    "providers": [
        {"name": "openai", "type": "openai", "api_key_env": "K"},
        {"name": "vllm", "type": "openai", "endpoint": "http://vllm.internal:8000", "api_key_env": "K"},
        {"name": "mistral", "type": "mistral", "api_key_env": "K"},
        {"name": "azure", "type": "azure-openai", "endpoint": "https://r.openai.azure.com", "api_key_env": "K"},
        {"name": "anthropic", "type": "anthropic", "api_key_env": "K"},
    ],
    "models": [
        {"name": "instruct", "provider": "openai", "upstream_model": "gpt-3.5-turbo-instruct", "capabilities": ["fim"]},
        {"name": "qwen", "provider": "vllm", "capabilities": ["fim"], "fim_template": "qwen"},
        {"name": "codestral", "provider": "mistral", "capabilities": ["fim"]},
        {"name": "gpt", "provider": "openai", "capabilities": ["tools"]},
        {"name": "azure-gpt", "provider": "azure", "capabilities": ["tools"]},
        {"name": "claude", "provider": "anthropic", "capabilities": ["tools"]},
        {"name": "embed", "provider": "openai", "capabilities": ["embeddings"]},
    ],
    "routes": [{"name": "code", "candidates": ["gpt", "qwen"], "policy": {"kind": "cheapest"}}],
    "tenants": [{"name": "t", "api_key_sha256": ["0" * 64]}],
}


@cache
def runtime() -> Runtime:
    return compile_runtime(load_text(yaml.safe_dump(CONFIG)), default_registry(), environ={"K": "secret"})


def dep(model: str) -> Deployment:
    return runtime().deployments[model][0]


def parsed(api: str, **body: Any) -> request.ClientRequest:
    raw = orjson.dumps(body)
    return request.client_request(api, request.parse_json(raw), raw)


def completion(model: str = "instruct", **fields: Any) -> request.ClientRequest:
    return parsed(request.OPENAI_COMPLETIONS, model=model, prompt="def f(", **fields)


def count(model: str = "claude", **fields: Any) -> request.ClientRequest:
    return parsed(request.ANTHROPIC_COUNT_TOKENS, model=model, messages=[{"role": "user", "content": "hi"}], **fields)


# --- config ----------------------------------------------------------------------------------


def test_fim_models_compile_with_their_template() -> None:
    qwen = dep("qwen")
    assert qwen.target.option("fim_template") == PRESETS["qwen"]
    assert "fim" in qwen.target.capabilities and "fim" in qwen.capabilities  # routing's capability filter reads it
    assert dep("codestral").target.provider_type == "mistral"
    assert runtime().config.provider("mistral").endpoint.authority == "api.mistral.ai"


@pytest.mark.parametrize(("model", "problem"), [
    ({"fim_template": "qwen"}, "models[0].fim_template: needs the capability fim"),
    ({"capabilities": ["fim"], "fim_template": "{suffix}{prefix}"},
     "models[0].fim_template: must be one of qwen, starcoder, codellama, deepseek or a template holding {prefix} "
     "and then {suffix} once each"),
    ({"provider": "mistral", "capabilities": ["fim"], "fim_template": "qwen"},
     "models[0].fim_template: applies to openai and azure-openai providers (prompt-only completions), not mistral"),
    ({"capabilities": ["fill"]}, "models[0].capabilities[0]: must be one of: tools, images, json, reasoning, "
                                 "embeddings, fim"),
])
def test_fim_config_errors(model: dict[str, Any], problem: str) -> None:
    cfg = {**CONFIG, "routes": [], "models": [{"name": "m", "provider": "vllm", **model}]}
    with pytest.raises(ConfigError) as e:
        load_text(yaml.safe_dump(cfg))
    assert problem in e.value.problems


def test_mistral_needs_a_key() -> None:
    cfg = {**CONFIG, "routes": [], "models": [], "providers": [{"name": "m", "type": "mistral"}]}
    with pytest.raises(ConfigError) as e:
        load_text(yaml.safe_dump(cfg))
    assert "providers[0]: needs api_key_env or api_key_file" in e.value.problems


# --- the parsed request ----------------------------------------------------------------------


def test_completion_request() -> None:
    req = completion(suffix="x", max_tokens=7, stream=True, stream_options={"include_usage": True})
    assert (req.stream, req.include_usage, req.max_output_tokens, req.needs) == (True, True, 7, frozenset({"fim"}))
    assert completion().needs == frozenset()  # no suffix: any completions model serves it
    assert req.affinity_key is None and req.est_input_tokens >= 1


def test_count_request_spends_nothing() -> None:
    req = count(tools=[{"name": "f", "input_schema": {"type": "object"}}])
    assert (req.stream, req.max_output_tokens, req.est_input_tokens) == (False, None, 0)
    assert req.needs == frozenset({"tools"})


@pytest.mark.parametrize(("body", "message"), [
    ({"model": "m", "prompt": None}, "Invalid value for 'prompt': must not be empty."),
    ({"model": "m", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "Invalid value for 'stop': must have at most 4 items."),
    ({"model": "m", "prompt": "x", "suffix": 1}, "Invalid type for 'suffix'"),
    ({"model": "m", "prompt": "x", "logprobs": 6}, "Invalid value for 'logprobs'"),
])
def test_bad_completion_requests(body: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.BadRequest, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parsed(request.OPENAI_COMPLETIONS, **body)


def test_bad_count_request_is_worded_as_anthropic_words_it() -> None:
    with pytest.raises(errors.BadRequest, match="^messages: must not be empty$"):
        parsed(request.ANTHROPIC_COUNT_TOKENS, model="m", messages=[])


# --- who serves them -------------------------------------------------------------------------


@pytest.mark.parametrize(("req", "model", "param", "words"), [
    (lambda: completion("gpt", suffix="x"), "gpt", "suffix", "does not support fill-in-the-middle"),
    (lambda: completion("claude"), "claude", "model", "does not serve /v1/completions"),
    (lambda: count("azure-gpt"), "azure-gpt", "model", "cannot count tokens"),
    (lambda: count("codestral"), "codestral", "model", "serves /v1/completions only"),
    (lambda: parsed(request.OPENAI_CHAT, model="codestral", messages=[{"role": "user", "content": "x"}]),
     "codestral", "model", "serves /v1/completions only"),
    (lambda: completion("embed"), "embed", "model", "embeddings model"),
])
def test_refusals(req: Any, model: str, param: str, words: str) -> None:
    refused = selection.refusal(req(), dep(model))
    assert refused is not None and refused.param == param and words in refused.message


@pytest.mark.parametrize(("req", "model"), [
    (lambda: completion("instruct", suffix="x"), "instruct"),
    (lambda: completion("qwen", suffix="x"), "qwen"),
    (lambda: completion("codestral", suffix="x"), "codestral"),
    (lambda: completion("gpt"), "gpt"),
    (lambda: count("claude"), "claude"),
    (lambda: count("gpt"), "gpt"),
])
def test_served(req: Any, model: str) -> None:
    assert selection.refusal(req(), dep(model)) is None


def test_every_served_pair_has_a_translator_and_no_other() -> None:
    registry = default_registry()
    for api in (request.OPENAI_COMPLETIONS, request.ANTHROPIC_COUNT_TOKENS):
        for ptype in ("openai", "azure-openai", "anthropic", "vertex-anthropic", "gemini", "vertex-gemini",
                      "bedrock", "mistral"):
            try:
                registry.get(api, ptype)
                registered = True
            except errors.GatewayError:
                registered = False
            assert registered == (ptype in selection.SERVED_BY[api]), (api, ptype)


def test_a_route_serves_a_suffix_with_its_fim_candidate_only() -> None:
    from extproc.stages.feedback import RoutingState

    rt = runtime()
    state = RoutingState()
    route, chain, _ = selection.resolve(rt, state, completion("code", suffix="x"), rt.config.tenants[0])
    assert route is not None and [d.model for d in chain] == ["qwen"]
    _, chain, _ = selection.resolve(rt, state, completion("code"), rt.config.tenants[0])
    assert {d.model for d in chain} == {"gpt", "qwen"}


def test_the_routing_capability_filter_drops_candidates_without_fim() -> None:
    from extproc.stages.feedback import RoutingState

    rt = runtime()
    route = rt.routes["code"]
    decision, _ = RoutingState().decide(route.name, route.deployments, route.policy, selection.route_request(
        completion("code", suffix="x"), route, rt.config.tenants[0], 0.0))
    assert [route.by_id[d].model for d in decision.deployments] == ["qwen"]
    dropped = {route.by_id[d].model: (why.filter, why.reason) for d, why in decision.explanation.dropped.items()}
    assert dropped == {"gpt": ("capabilities", "lacks fim")}


# --- charges and the models list -------------------------------------------------------------


def test_counting_reserves_no_tokens() -> None:
    tenant = runtime().config.tenants[0]
    fields = metering.reservation(count(), [dep("claude")], tenant, "default")
    assert (fields["reserve_tokens"], fields["reserve_usd"], fields["usage_tokens"]) == ("0", "0", "0")
    assert metering.spent(dep("claude"), None, count().est_input_tokens, 0)["usage_tokens"] == "0"
    fields = metering.reservation(completion(max_tokens=16), [dep("instruct")], tenant, "default")
    assert int(fields["reserve_tokens"]) > 16


def test_models_list_says_which_apis_serve_each_model() -> None:
    apis = models_list.apis_by_model(runtime())
    assert apis["codestral"] == ["/v1/completions"]
    assert "/v1/completions" in apis["instruct"] and "/v1/messages/count_tokens" in apis["instruct"]
    assert "/v1/completions" not in apis["claude"] and "/v1/messages/count_tokens" in apis["claude"]
    assert "/v1/messages/count_tokens" not in apis["azure-gpt"] and "/v1/completions" in apis["azure-gpt"]
    assert apis["embed"] == ["/v1/embeddings"]
