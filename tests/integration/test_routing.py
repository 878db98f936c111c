"""Routing and fallback through the real Envoy (two ext_proc workers): a failing provider is
skipped and the client gets a correct answer in its own format from the next candidate in the
route's order; the cost policy picks the cheapest eligible model; raising a deployment's TTFT
shifts traffic away."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import free_port
from tests.integration.conftest import TENANT_KEY, Gateway, Simulator, sha, start_gateway

HELLO: Any = [{"role": "user", "content": "Hello"}]
FAST = {"exploration": 0.0, "affinity": False}


def routing_config(sim: Simulator) -> dict[str, Any]:
    """Three providers of different types; per scenario its own route and models, so the health
    one scenario teaches the workers does not leak into another."""
    url = sim.url
    key = {"api_key_env": "IT_PROVIDER_KEY"}
    first_byte = {"cluster": {"per_try_timeout": "1s"}}
    providers = [
        {"name": "oa", "type": "openai", "endpoint": url, **key, **first_byte},
        {"name": "an", "type": "anthropic", "endpoint": url, **key, **first_byte},
        {"name": "ge", "type": "gemini", "endpoint": url, **key, **first_byte},
        {"name": "dead", "type": "openai", "endpoint": f"http://127.0.0.1:{free_port()}", **key,
         "cluster": {"connect_timeout": "0.5s"}},
    ]
    models, routes = [], []

    def model(name: str, provider: str, price: float, quality: float) -> str:
        models.append({"name": name, "provider": provider, "upstream_model": f"{name}-upstream",
                       "price": {"input_per_mtok": price, "output_per_mtok": price * 4}, "quality": quality,
                       "max_output_tokens": 1024, "capabilities": ["tools", "images", "json"]})
        return name

    for scenario in ("s503", "s429", "s401", "s403", "hang", "stream", "anthropic"):
        routes.append({"name": f"route-{scenario}", "policy": {"kind": "objective", "minimize": "cost", **FAST},
                       "candidates": [model(f"{scenario}-cheap", "ge", 0.1, 0.9),
                                      model(f"{scenario}-mid", "oa", 1.0, 0.9),
                                      model(f"{scenario}-dear", "an", 5.0, 0.9)]})
    routes.append({"name": "route-refused", "policy": {"kind": "objective", "minimize": "cost", **FAST},
                   "candidates": [model("refused-cheap", "dead", 0.1, 0.9), model("refused-mid", "oa", 1.0, 0.9)]})
    routes.append({"name": "route-quality", "policy": {"kind": "objective", "minimize": "cost", "min_quality": 0.8,
                                                       **FAST},
                   "candidates": [model("q-cheap-weak", "ge", 0.1, 0.6), model("q-mid-good", "oa", 1.0, 0.85),
                                  model("q-dear-best", "an", 5.0, 0.95)]})
    # A latency route falls back in the order it lists its candidates (its static order: nothing
    # about latency is known from the config). Listed dearest first; with no latency observed the
    # ranking breaks the tie by cost, so its primary (cheapest) is last in the route's order and
    # its fallbacks (the route's order) differ from the ranking's (cheapest next).
    for scenario in ("order", "order3"):
        routes.append({"name": f"route-{scenario}", "policy": {"kind": "objective", "minimize": "latency", **FAST},
                       "candidates": [model(f"{scenario}-dear", "an", 5.0, 0.9),
                                      model(f"{scenario}-mid", "oa", 1.0, 0.9),
                                      model(f"{scenario}-cheap", "ge", 0.1, 0.9)]})
    # Exploration lets the router measure a deployment it has no data on yet.
    routes.append({"name": "route-latency", "policy": {"kind": "objective", "minimize": "latency",
                                                       "exploration": 0.1, "stale_after": "1s", "affinity": False},
                   "candidates": [model("lat-a", "oa", 1.0, 0.9), model("lat-b", "an", 1.0, 0.9)]})
    return {"providers": providers, "models": models, "routes": routes,
            "tenants": [{"name": "it", "api_key_sha256": [sha(TENANT_KEY)], "models": ["*"]}]}


@pytest.fixture(scope="module")
def gw(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = start_gateway(simulator, tmp_path_factory.mktemp("gw-routing"), config=routing_config(simulator))
    try:
        yield g
    finally:
        g.process.stop()


def oai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=TENANT_KEY, max_retries=0, timeout=20)


def upstream_models(sim: Simulator) -> list[str]:
    out = []
    for r in sim.requests():
        body = r.get("body") or {}
        out.append(body.get("model") or r["path"].split("/models/")[-1].split(":")[0])
    return out


@pytest.mark.parametrize("scenario,behaviour", [("s503", {"status": 503}),
                                                ("s429", {"status": 429, "retry_after_s": 30}),
                                                # the provider refuses the gateway's own credentials
                                                ("s401", {"status": 401}), ("s403", {"status": 403})])
def test_failing_provider_is_skipped(gw: Gateway, sim: Simulator, scenario: str, behaviour: dict[str, Any]) -> None:
    sim.behave(f"{scenario}-cheap-upstream", **behaviour)
    raw = oai(gw).chat.completions.with_raw_response.create(model=f"route-{scenario}", messages=HELLO)
    done = raw.parse()
    assert done.choices[0].message.content and done.choices[0].message.content.startswith("Simulated")
    assert raw.headers["x-interlock-model"] == f"{scenario}-mid"
    assert raw.headers["x-interlock-provider"] == "oa"
    assert raw.headers["x-interlock-route"] == f"route-{scenario}"
    assert raw.headers["x-interlock-attempts"] == "2"
    # The gemini-format attempt failed; the retry reached OpenAI in OpenAI's format.
    assert upstream_models(sim)[-2:] == [f"{scenario}-cheap-upstream", f"{scenario}-mid-upstream"]
    assert sim.requests()[-1]["path"] == "/v1/chat/completions"
    assert sim.requests()[-1]["headers"]["authorization"].startswith("Bearer ")
    assert "x-goog-api-key" not in sim.requests()[-1]["headers"]


@pytest.mark.parametrize("scenario,failing,answered", [
    ("order", ["cheap"], "dear"),
    ("order3", ["cheap", "dear"], "mid"),
])
def test_fallbacks_follow_the_routes_order(gw: Gateway, sim: Simulator, scenario: str, failing: list[str],
                                           answered: str) -> None:
    """The ranking picks the cheapest (gemini); when it fails, the retries go to the route's other
    providers in its static order — for a latency route the order it lists them: anthropic
    (dearest), then OpenAI — not in ranking order (before: OpenAI, the next cheapest, answered the
    first case)."""
    for m in failing:
        sim.behave(f"{scenario}-{m}-upstream", status=503)
    raw = oai(gw).chat.completions.with_raw_response.create(model=f"route-{scenario}", messages=HELLO)
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-interlock-model"] == f"{scenario}-{answered}"
    assert raw.headers["x-interlock-attempts"] == str(len(failing) + 1)
    tried = [*failing, answered]
    assert upstream_models(sim)[-len(tried):] == [f"{scenario}-{m}-upstream" for m in tried]


def test_connection_refused_is_skipped(gw: Gateway, sim: Simulator) -> None:
    raw = oai(gw).chat.completions.with_raw_response.create(model="route-refused", messages=HELLO)
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-interlock-model"] == "refused-mid"
    assert raw.headers["x-interlock-attempts"] == "2"


def test_hanging_past_first_byte_timeout_is_skipped(gw: Gateway, sim: Simulator) -> None:
    sim.behave("hang-cheap-upstream", hang=True)
    start = time.monotonic()
    raw = oai(gw).chat.completions.with_raw_response.create(model="route-hang", messages=HELLO)
    elapsed = time.monotonic() - start
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-interlock-model"] == "hang-mid"
    assert 0.9 < elapsed < 5, elapsed


def test_stream_falls_back_before_the_first_byte(gw: Gateway, sim: Simulator) -> None:
    sim.behave("stream-cheap-upstream", status=503)
    chunks = list(oai(gw).chat.completions.create(model="route-stream", messages=HELLO, stream=True,
                                                  stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Simulated") and chunks[-1].usage is not None
    assert upstream_models(sim)[-1] == "stream-mid-upstream"


def test_anthropic_client_falls_back_across_formats(gw: Gateway, sim: Simulator) -> None:
    sim.behave("anthropic-cheap-upstream", status=503)
    c = anthropic.Anthropic(base_url=gw.url, api_key=TENANT_KEY, max_retries=0)
    raw = c.messages.with_raw_response.create(model="route-anthropic", max_tokens=100, messages=HELLO)
    msg = raw.parse()
    assert msg.content[0].type == "text" and msg.content[0].text.startswith("Simulated")
    assert raw.headers["x-interlock-model"] == "anthropic-mid"
    up = sim.requests()[-1]
    assert up["path"] == "/v1/chat/completions" and up["body"]["model"] == "anthropic-mid-upstream"


def test_cost_policy_picks_cheapest_eligible(gw: Gateway, sim: Simulator) -> None:
    served = Counter(oai(gw).chat.completions.with_raw_response.create(
        model="route-quality", messages=HELLO).headers["x-interlock-model"] for _ in range(6))
    assert served == Counter({"q-mid-good": 6})  # q-cheap-weak is below the quality floor


def test_all_candidates_failing_is_a_clean_error(gw: Gateway, sim: Simulator) -> None:
    for m in ("s503-cheap", "s503-mid", "s503-dear"):
        sim.behave(f"{m}-upstream", status=503)
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "route-s503", "messages": HELLO},
                   headers={"authorization": f"Bearer {TENANT_KEY}"}, timeout=20)
    assert r.status_code == 503 and r.json()["error"]["message"]
    assert "Traceback" not in r.text


def test_raising_ttft_shifts_traffic_away(gw: Gateway, sim: Simulator) -> None:
    c = oai(gw)

    def served(n: int) -> Counter[str]:
        out: Counter[str] = Counter()
        for _ in range(n):
            # max_tokens as short as the answers: the expected generation time (time per output
            # token × tokens) then cannot drown the time-to-first-token difference under test.
            with c.chat.completions.with_streaming_response.create(
                    model="route-latency", messages=HELLO, stream=True, max_tokens=8,
                    stream_options={"include_usage": True}) as r:
                out[r.headers["x-interlock-model"]] += 1
                for _ in r.iter_lines():
                    pass
        return out

    # Both stream at the same realistic token rate: TTFT is what differs.
    sim.behave("lat-a-upstream", ttft_ms=5, tokens_per_s=50, output_tokens=6)
    sim.behave("lat-b-upstream", ttft_ms=120, tokens_per_s=50, output_tokens=6)
    served(16)  # warm-up: every worker probes both deployments (cold-start exploration)
    before = served(12)
    assert before["lat-a"] >= 7, before  # b is only explored (10 % when its estimate is stale)
    sim.behave("lat-a-upstream", ttft_ms=400)
    served(40)  # every worker sees lat-a slow down: its median TTFT crosses lat-b's
    after = served(30)
    assert after["lat-b"] >= 18, after  # the rest is exploration keeping lat-a's estimate fresh


def test_routing_headers_never_reach_the_provider(gw: Gateway, sim: Simulator) -> None:
    sim.behave("s503-cheap-upstream", status=503)
    oai(gw).chat.completions.create(model="route-quality", messages=HELLO)
    for r in sim.requests()[-2:]:
        assert not [h for h in r["headers"] if h.startswith("x-interlock-")], r["headers"]
