"""Headers across the gateway, through the real Envoy: of the client's headers a provider gets only
the allow-list (trace context, and the beta header of its own API on a passthrough) besides what the
gateway sets; a client gets none of Envoy's `x-envoy-*` headers nor the gateway's internal ones.
The simulator records the headers each provider request arrived with."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from extproc.stages.outbound import PROVIDER_HEADERS, forwarded_headers
from extproc.translate.registry import default_registry
from tests.integration.conftest import (
    TENANT_KEY,
    Gateway,
    Simulator,
    every_provider_config,
    free_port,
    start_gateway,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "congo=t61rcWkgMzE"
BETA = "prompt-caching-2024-07-31"
# What a client may send that is not the request's business: another credential carrying its key,
# its software, forwarding and proxy headers (one naming the gateway), Envoy control headers, the
# gateway's own routing headers, beta headers of an API the provider does not speak, a cookie, and
# custom headers, one of them 16 KiB.
HOSTILE = {
    "proxy-authorization": f"Basic {TENANT_KEY}", "user-agent": "client-agent/9.9", "x-forwarded-proto": "https",
    "x-forwarded-for": "198.51.100.7", "x-forwarded-host": "client.example", "forwarded": "for=198.51.100.7",
    "via": "1.1 corp-proxy", "x-real-ip": "198.51.100.7", "x-envoy-original-host": "client.example",
    "x-envoy-max-retries": "7", "x-envoy-retry-on": "5xx", "x-interlock-cluster": "provider_nowhere",
    "x-interlock-translated-for": "nowhere", "openai-organization": "org-client", "openai-beta": "assistants=v2",
    "x-stainless-lang": "python", "cookie": "session=client-cookie", "x-custom": "client-custom",
    "x-big": "b" * 16384,
}
TRACE = {"traceparent": TRACEPARENT, "tracestate": TRACESTATE}
# The values above long enough to be found in what a provider got (the names are checked apart).
LEAKS = [v for v in HOSTILE.values() if len(v) >= 8]
# Headers a provider request may carry besides those the client sent: the gateway's (host, body
# framing, Envoy's request id) and those a translation or a credential sets for its provider type.
GATEWAY = {"host", "content-type", "content-length", "x-request-id", *PROVIDER_HEADERS} - {"anthropic-beta",
                                                                                             "openai-beta"}
# Added by Envoy after the router stage; its upstream filters are to remove them (see
# `test_envoy_adds_no_header_of_its_own_upstream`). Until then tolerated here, with their values checked.
ENVOY_UPSTREAM = {"x-forwarded-proto", "x-envoy-original-host", "x-envoy-expected-rq-timeout-ms"}

CHAT = {"messages": [{"role": "user", "content": "Say hello."}]}
MESSAGES = {"max_tokens": 64, "messages": [{"role": "user", "content": "Say hello."}]}
# public model → the API its provider speaks (the translator registry's key), as
# `every_provider_config` deploys them
MODELS = {"gpt-4o-mini": "openai", "azure-gpt-4o": "azure-openai", "claude-haiku-4-5": "anthropic",
          "gemini-2.5-flash": "gemini", "vertex-gemini-pro": "vertex-gemini", "vertex-claude": "vertex-anthropic",
          "bedrock-claude-sonnet": "bedrock"}
EMBEDDINGS = {"text-embedding-3-small": "openai", "gemini-embedding": "gemini"}


@pytest.fixture(scope="module")
def gw(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Every provider type, plus a route whose first choice is unreachable (its answer comes from a
    retry on Anthropic, prepared by the upstream stage)."""
    cfg = every_provider_config(simulator)
    cfg["providers"].append({"name": "nowhere", "type": "openai", "endpoint": f"http://127.0.0.1:{free_port()}",
                             "api_key_env": "IT_PROVIDER_KEY", "cluster": {"connect_timeout": "1s"}})
    cfg["models"] += [
        {"name": "unreachable-model", "provider": "nowhere", "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.1}},
        {"name": "fallback-claude", "provider": "anthropic", "upstream_model": "claude-haiku-4-5-20251001",
         "price": {"input_per_mtok": 5, "output_per_mtok": 5}}]
    cfg["routes"] = [{"name": "fallback-route", "policy": {"kind": "cheapest"},
                      "candidates": ["unreachable-model", "fallback-claude"]}]
    g = start_gateway(simulator, tmp_path_factory.mktemp("gw-headers"), config=cfg)
    try:
        yield g
    finally:
        g.process.stop()


def post(gw: Gateway, api: str, model: str, headers: dict[str, str], **fields: Any) -> httpx.Response:
    if api == "anthropic":
        path, body = "/v1/messages", {**MESSAGES, "model": model, **fields}
        headers = {"x-api-key": TENANT_KEY, "anthropic-version": "2023-06-01", "anthropic-beta": BETA, **headers}
    else:
        path, body = ("/v1/embeddings", {"model": model, "input": "hello"}) if "embedding" in model else (
            "/v1/chat/completions", {**CHAT, "model": model, **fields})
        headers = {"authorization": f"Bearer {TENANT_KEY}", "anthropic-beta": BETA, **headers}
    return httpx.post(gw.url + path, json=body, headers=headers, timeout=30)


def received(sim: Simulator) -> dict[str, str]:
    """The headers of the one provider request the simulator got since its reset."""
    (only,) = [r for r in sim.requests() if not r["path"].startswith("/token")]
    return dict(only["headers"])


CASES = [("openai", m) for m in MODELS] + [("anthropic", m) for m in MODELS] + [("openai", m) for m in EMBEDDINGS]


@pytest.mark.parametrize(("api", "model"), CASES, ids=[f"{a}-{m}" for a, m in CASES])
def test_a_provider_gets_only_the_allow_list_of_client_headers(gw: Gateway, sim: Simulator, api: str,
                                                               model: str) -> None:
    r = post(gw, api, model, {**HOSTILE, **TRACE})
    assert r.status_code == 200, r.text
    got = received(sim)
    pair = ("openai-embeddings", EMBEDDINGS[model]) if model in EMBEDDINGS else (api, MODELS[model])
    # Anthropic's beta header goes where the provider speaks the Anthropic API (Anthropic, Vertex).
    beta = forwarded_headers(default_registry().get(*pair))
    assert ("anthropic-beta" in beta) == (pair in (("anthropic", "anthropic"), ("anthropic", "vertex-anthropic")))
    forwarded = {**TRACE, **{k: {"anthropic-beta": BETA, **HOSTILE}[k] for k in beta}}
    assert set(got) - GATEWAY - ENVOY_UPSTREAM == set(forwarded), got
    assert {k: got[k] for k in forwarded} == forwarded
    assert got["x-request-id"] == r.headers["x-request-id"]
    # Envoy's own additions, while they last, name neither the client's values nor the gateway.
    assert got.get("x-envoy-original-host", got["host"]) == got["host"]
    text = json.dumps({k: v for k, v in got.items() if k not in forwarded})
    assert TENANT_KEY not in text and not [v for v in LEAKS if v in text]
    assert gw.url.removeprefix("http://") not in text


def test_a_retry_on_another_provider_gets_only_the_allow_list_too(gw: Gateway, sim: Simulator) -> None:
    r = post(gw, "openai", "fallback-route", {**HOSTILE, **TRACE})
    assert r.status_code == 200, r.text
    assert r.headers["x-interlock-provider"] == "anthropic"
    got = received(sim)
    assert set(got) - GATEWAY - ENVOY_UPSTREAM == set(TRACE), got
    text = json.dumps(got)
    assert TENANT_KEY not in text and not [v for v in LEAKS if v in text]
    assert gw.url.removeprefix("http://") not in text


def test_envoy_adds_no_header_of_its_own_upstream(gw: Gateway, sim: Simulator) -> None:
    # A deadline sets a route timeout, which Envoy announces in x-envoy-expected-rq-timeout-ms.
    assert post(gw, "openai", "gpt-4o-mini", {"x-interlock-deadline-ms": "20000"}).status_code == 200
    assert not ENVOY_UPSTREAM & set(received(sim))


def assert_clean(r: httpx.Response) -> None:
    """No Envoy header, no internal one; who answered and the request id are there."""
    names = set(r.headers.keys())
    assert not [k for k in names if k.startswith(("x-envoy-", "x-amz"))], sorted(names)
    assert not names & {"x-interlock-cluster", "x-interlock-translated-for", "x-interlock-client-api"}
    assert {"x-interlock-provider", "x-interlock-model", "x-request-id"} <= names


@pytest.mark.parametrize(("api", "model", "stream"), [
    ("openai", "gpt-4o-mini", False), ("openai", "gpt-4o-mini", True), ("anthropic", "claude-haiku-4-5", False),
    ("anthropic", "claude-haiku-4-5", True), ("openai", "claude-haiku-4-5", True), ("anthropic", "gpt-4o-mini", False),
    ("openai", "bedrock-claude-sonnet", False), ("openai", "text-embedding-3-small", False),
    ("openai", "fallback-route", False)])
def test_no_envoy_or_internal_header_reaches_a_client(gw: Gateway, sim: Simulator, api: str, model: str,
                                                      stream: bool) -> None:
    r = post(gw, api, model, {}, **({"stream": True} if stream else {}))
    assert r.status_code == 200, r.text
    assert_clean(r)


@pytest.mark.parametrize(("model", "upstream", "behaviour", "status"), [
    ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", {"status": 500}, 502),
    ("claude-haiku-4-5", "claude-haiku-4-5-20251001", {"status": 429}, 429),
    ("unreachable-model", None, {}, 503),
])
def test_no_envoy_or_internal_header_reaches_a_client_on_errors(gw: Gateway, sim: Simulator, model: str,
                                                                upstream: str | None, behaviour: dict[str, Any],
                                                                status: int) -> None:
    if upstream:
        sim.behave(upstream, **behaviour)
    r = post(gw, "openai", model, {})
    assert r.status_code == status, r.text
    assert_clean(r)


def test_a_client_request_id_is_replaced_by_the_gateways(gw: Gateway) -> None:
    """A client cannot choose the request id: a 16 KiB one came back in every answer's header."""
    long_id = "r" * 16_384
    for key in (TENANT_KEY, "sk-wrong-key"):
        answer = httpx.post(f"{gw.url}/v1/chat/completions", timeout=10,
                            headers={"authorization": f"Bearer {key}", "x-request-id": long_id},
                            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        rid = answer.headers["x-request-id"]
        assert rid != long_id and 0 < len(rid) <= 64, (answer.status_code, len(rid))
