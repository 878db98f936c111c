"""Routing under ordinary client traffic, through the real Envoy with two ext_proc workers: requests
without `max_tokens` are priced by what answers really cost (not by the model's output cap), models
whose answers differ in length are told apart, a slowed model is left within seconds and gets its
traffic back within seconds of healing."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from tests.integration.conftest import TENANT_KEY, Gateway, Simulator, sha, start_gateway

HELLO: Any = [{"role": "user", "content": "Hello"}]
OPS_KEY = "sk-ops-may-see-explanations"


def traffic_config(sim: Simulator) -> dict[str, Any]:
    url = sim.url
    key = {"api_key_env": "IT_PROVIDER_KEY"}
    providers = [{"name": n, "type": t, "endpoint": url, **key}
                 for n, t in (("oa", "openai"), ("an", "anthropic"), ("ge", "gemini"))]
    models: list[dict[str, Any]] = []

    def model(name: str, provider: str, inp: float, out: float, cap: int) -> str:
        models.append({"name": name, "provider": provider, "upstream_model": f"{name}-upstream", "quality": 0.9,
                       "max_output_tokens": cap, "price": {"input_per_mtok": inp, "output_per_mtok": out}})
        return name

    no_explore = {"exploration": 0.0, "affinity": False}
    routes = [
        # The demo's `auto` case: the cheaper model per token has a 65,536 output cap.
        {"name": "route-caps", "policy": {"kind": "objective", "minimize": "cost", **no_explore},
         "candidates": [model("caps-small", "an", 1.0, 5.0, 8192), model("caps-large", "ge", 0.3, 2.5, 65536)]},
        # Cheaper per token but five times as talkative: dearer per answer.
        {"name": "route-lengths", "policy": {"kind": "objective", "minimize": "cost", "max_ttft": "1000ms",
                                             "exploration": 0.02, "affinity": False},
         "candidates": [model("len-verbose", "oa", 1.0, 2.0, 4096), model("len-terse", "an", 1.0, 3.0, 4096)]},
        # The cheapest eligible model slows down past the route's TTFT bound, then heals.
        {"name": "route-react", "policy": {"kind": "objective", "minimize": "cost", "max_ttft": "1000ms",
                                           "ttft_quantile": 0.9, "exploration": 0.1, "affinity": False},
         "candidates": [model("react-cheap", "oa", 1.0, 2.0, 4096), model("react-dear", "an", 3.0, 6.0, 4096)]},
    ]
    return {"providers": providers, "models": models, "routes": routes,
            "tenants": [{"name": "it", "api_key_sha256": [sha(TENANT_KEY)], "models": ["*"]},
                        {"name": "ops", "api_key_sha256": [sha(OPS_KEY)], "explain": True}]}


@pytest.fixture(scope="module")
def gw(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = start_gateway(simulator, tmp_path_factory.mktemp("gw-traffic"), config=traffic_config(simulator))
    try:
        yield g
    finally:
        g.process.stop()


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=TENANT_KEY, max_retries=0, timeout=30)


def served_by(c: openai.OpenAI, model: str, stream: bool = False) -> str:
    """One request as an SDK sends it by default (no max_tokens); the model that answered."""
    if not stream:
        return c.chat.completions.with_raw_response.create(model=model, messages=HELLO).headers["x-interlock-model"]
    with c.chat.completions.with_streaming_response.create(model=model, messages=HELLO, stream=True) as r:
        for _ in r.iter_lines():
            pass
        return r.headers["x-interlock-model"]


def test_a_request_without_max_tokens_is_not_priced_by_the_models_output_cap(gw: Gateway, sim: Simulator) -> None:
    """caps-large costs half as much per token; its 65,536-token cap says nothing about its answers."""
    for m in ("caps-small", "caps-large"):
        sim.behave(f"{m}-upstream", output_tokens=200)
    served = Counter(served_by(client(gw), "route-caps") for _ in range(20))
    assert served["caps-large"] >= 19, served


def test_models_whose_answers_differ_in_length_are_priced_by_their_own_answers(gw: Gateway, sim: Simulator) -> None:
    """len-verbose is cheaper per output token (2 vs 3 $/Mtok) but answers with 400 tokens where
    len-terse answers with 40: per answer it is the dearer. Its answers teach the router that."""
    sim.behave("len-verbose-upstream", output_tokens=400, tokens_per_s=0)
    sim.behave("len-terse-upstream", output_tokens=40, tokens_per_s=0)
    c = client(gw)
    for _ in range(16):  # both workers see both (the cold-start probe of a never-observed model)
        served_by(c, "route-lengths")
    served = Counter(served_by(c, "route-lengths") for _ in range(20))
    assert served["len-terse"] >= 17, served


def test_a_slowed_model_is_left_within_seconds_and_regains_its_traffic_within_seconds(gw: Gateway,
                                                                                      sim: Simulator) -> None:
    """Streamed requests at ~20 per second. react-cheap's time to first token goes from 10 ms to 2.5 s
    (past the route's 1 s bound): within 3 s nearly all traffic has left it — before most slow answers
    have even arrived (requests still waiting are evidence). Healed, it is probed and gets its traffic
    back within 15 s."""
    sim.behave("react-cheap-upstream", ttft_ms=10, output_tokens=5)
    sim.behave("react-dear-upstream", ttft_ms=10, output_tokens=5)
    c = client(gw)
    for _ in range(16):
        served_by(c, "route-react", stream=True)
    log: list[tuple[float, str]] = []
    lock = threading.Lock()
    t0 = time.monotonic()

    def one() -> None:
        sent = time.monotonic() - t0
        m = served_by(c, "route-react", stream=True)
        with lock:
            log.append((sent, m))

    def phase(seconds: float) -> None:
        end = time.monotonic() + seconds
        with ThreadPoolExecutor(64) as pool:
            while time.monotonic() < end:
                pool.submit(one)
                time.sleep(0.05)

    phase(2.0)
    slowed = time.monotonic() - t0
    sim.behave("react-cheap-upstream", ttft_ms=2500)
    phase(8.0)
    healed = time.monotonic() - t0
    sim.behave("react-cheap-upstream", ttft_ms=10)
    phase(20.0)

    def share(start: float, end: float) -> tuple[float, int]:
        window = [m for t, m in log if start <= t < end]
        return sum(m == "react-cheap" for m in window) / max(1, len(window)), len(window)

    before, _ = share(0.0, slowed)
    assert before >= 0.8, log
    during, n = share(slowed + 3.0, healed)
    assert n >= 50 and during <= 0.1, (during, n)  # what remains is probes (at most 10 %, one per 2 s)
    after, n = share(healed + 15.0, healed + 20.0)
    assert n >= 50 and after >= 0.8, (after, n)


def test_an_allowed_tenant_sees_why_its_request_went_where_it_went(gw: Gateway, sim: Simulator) -> None:
    ask = {"x-interlock-debug": "explain"}
    ops = openai.OpenAI(base_url=gw.base_url, api_key=OPS_KEY, max_retries=0, timeout=30)
    r = ops.chat.completions.with_raw_response.create(model="route-caps", messages=HELLO, extra_headers=ask)
    why = r.headers["x-interlock-explain"]
    assert why.startswith("route=route-caps policy=objective(cost) by=objective chain=caps-large@ge:")
    for model in ("caps-large", "caps-small"):  # every candidate with its score and the estimates behind it
        assert f"{model}@" in why and "total=" in why and "cost=$" in why and "out=" in why
    # not without asking, and never for a tenant not allowed to (the explanation names prices and accounts)
    plain = ops.chat.completions.with_raw_response.create(model="route-caps", messages=HELLO)
    assert "x-interlock-explain" not in plain.headers
    other = client(gw).chat.completions.with_raw_response.create(model="route-caps", messages=HELLO, extra_headers=ask)
    assert "x-interlock-explain" not in other.headers
