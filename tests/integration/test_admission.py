"""Backpressure and admission through the real Envoy (two ext_proc workers, the pod's rate-limit
process): tenant rate limits with reservation and true-up, 429s in each client's format,
concurrency budgets with priority classes, deadlines, and steering away from a provider whose
quota runs out before it refuses anything."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.integration.conftest import Gateway, Simulator, sha, start_gateway

HELLO: Any = [{"role": "user", "content": "Hello"}]
KEYS = {name: f"sk-it-{name}" for name in ("reqs", "tokens", "cut", "budget", "deadline", "steer")}


def admission_config(sim: Simulator) -> dict[str, Any]:
    """Per scenario its own tenant and models, so no scenario's counters or statistics leak into
    another's. Limits are per hour: a window boundary during a test is unlikely."""
    key = {"api_key_env": "IT_PROVIDER_KEY"}
    providers = [{"name": "oa", "type": "openai", "endpoint": sim.url, **key},
                 {"name": "an", "type": "anthropic", "endpoint": sim.url, **key}]
    models = [
        {"name": "reqs-model", "provider": "oa", "upstream_model": "reqs-upstream"},
        {"name": "reqs-claude", "provider": "an", "upstream_model": "reqs-claude-upstream", "max_output_tokens": 1024},
        {"name": "tokens-model", "provider": "oa", "upstream_model": "tokens-upstream",
         "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        {"name": "cut-model", "provider": "oa", "upstream_model": "cut-upstream"},
        {"name": "budget-model", "provider": "oa", "upstream_model": "budget-upstream", "max_concurrency": 4},
        {"name": "deadline-model", "provider": "oa", "upstream_model": "deadline-upstream"},
        {"name": "steer-a", "provider": "oa", "upstream_model": "steer-a-upstream",
         "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.4}, "quality": 0.9},
        {"name": "steer-b", "provider": "an", "upstream_model": "steer-b-upstream", "max_output_tokens": 1024,
         "price": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}, "quality": 0.9},
    ]
    routes = [{"name": "steer", "candidates": ["steer-a", "steer-b"],
               "policy": {"kind": "objective", "minimize": "cost", "exploration": 0.0, "affinity": False}}]

    def tenant(name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "api_key_sha256": [sha(KEYS[name])], **extra}

    tenants = [
        tenant("reqs", limits=[{"unit": "requests", "per": "hour", "amount": 2}]),
        tenant("tokens", limits=[{"unit": "tokens", "per": "hour", "amount": 4000},
                                 {"unit": "usd", "per": "day", "amount": 5}]),
        tenant("cut", limits=[{"unit": "tokens", "per": "hour", "amount": 100000}]),
        tenant("budget"),
        tenant("deadline"),
        tenant("steer"),
    ]
    return {"providers": providers, "models": models, "routes": routes, "tenants": tenants,
            "admission": {"queue_timeout": "300ms", "batch_share": 0.5, "default_share": 0.75}}


@pytest.fixture(scope="module")
def gw(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = start_gateway(simulator, tmp_path_factory.mktemp("gw-admission"), config=admission_config(simulator))
    try:
        yield g
    finally:
        g.process.stop()


def oai(gw: Gateway, tenant: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=KEYS[tenant], max_retries=0, timeout=30,
                         default_headers=headers or None)


def post(gw: Gateway, tenant: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    # Sent as json.dumps writes it, so the test knows the bytes the gateway estimates from.
    return httpx.post(f"{gw.url}/v1/chat/completions", content=json.dumps(body), timeout=30,
                      headers={"authorization": f"Bearer {KEYS[tenant]}", "content-type": "application/json",
                               **headers})


def test_gateway_rate_limit_answers_429_in_each_clients_format(gw: Gateway, sim: Simulator) -> None:
    client = oai(gw, "reqs")
    for _ in range(2):
        r = client.chat.completions.with_raw_response.create(model="reqs-model", messages=HELLO)
        assert r.headers["x-ratelimit-limit-requests"] == "2"
        # The provider's own x-ratelimit-* (about the gateway's account) are not shown.
        assert "x-ratelimit-limit-tokens" not in r.headers and "," not in r.headers["x-ratelimit-limit-requests"]
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="reqs-model", messages=HELLO)
    assert e.value.status_code == 429
    assert int(e.value.response.headers["retry-after"]) >= 1
    assert e.value.response.headers["x-interlock-provider"] == "interlock"
    assert e.value.body["type"] == "rate_limit_error" and e.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    # An OpenAI client's request for a model on Anthropic goes upstream as /v1/messages: the
    # refusal still comes in OpenAI's format.
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="reqs-claude", messages=HELLO)
    assert e.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    claude = anthropic.Anthropic(base_url=gw.url, api_key=KEYS["reqs"], max_retries=0)
    for model in ("reqs-model", "reqs-claude"):  # upstream as /v1/chat/completions, and as /v1/messages
        with pytest.raises(anthropic.RateLimitError) as a:
            claude.messages.create(model=model, max_tokens=50, messages=HELLO)
        assert a.value.body["type"] == "error" and a.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert int(a.value.response.headers["retry-after"]) >= 1
    # Refused requests never reached the provider, and the provider's own rate-limit headers
    # (about the gateway's account) are not shown to tenants.
    assert len([r for r in sim.requests() if (r.get("body") or {}).get("model") == "reqs-upstream"]) == 2


def test_parallel_requests_overshoot_a_token_budget_only_by_the_reservations(gw: Gateway, sim: Simulator) -> None:
    """20 parallel requests, each reserving its prompt estimate + max_tokens (540 tokens) against
    4,000 tokens an hour: at most 7 are admitted, what they use stays within the budget, and
    the true-up gives back what they did not use, exactly."""
    # Long enough that all 20 are in flight before the first true-up gives anything back.
    sim.behave("tokens-upstream", ttft_ms=1500, output_tokens=12)
    body = {"model": "tokens-model", "max_tokens": 500, "messages": [{"role": "user", "content": "x" * 60}]}
    reserve = len(json.dumps(body).encode()) // 4 + 500
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: post(gw, "tokens", body), range(20)))
    ok = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 429]
    assert len(ok) + len(refused) == 20
    assert 1 <= len(ok) <= 4000 // reserve
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert all(r.json()["error"]["type"] == "rate_limit_error" for r in refused)
    used = sum(r.json()["usage"]["total_tokens"] for r in ok)
    assert used <= 4000
    time.sleep(0.5)  # the true-ups (Envoy's stream-done calls) land
    probe = post(gw, "tokens", body)
    assert probe.status_code == 200
    assert int(probe.headers["x-ratelimit-remaining-tokens"]) == 4000 - used - reserve
    # USD is charged too: $5 a day; a reservation is priced at the model's prices.
    assert float(probe.headers["x-ratelimit-limit-usd"]) == 5.0
    assert float(probe.headers["x-ratelimit-remaining-usd"]) < 5.0


def test_a_stream_cut_short_is_trued_up_with_what_it_produced(gw: Gateway, sim: Simulator) -> None:
    sim.behave("cut-upstream", output_tokens=400, tokens_per_s=40)
    body = {"model": "cut-model", "max_tokens": 2000, "stream": True,
            "messages": [{"role": "user", "content": "tell me a long story"}]}
    prompt = len(json.dumps(body).encode()) // 4
    events = 0
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", content=json.dumps(body), timeout=30,
                      headers={"authorization": f"Bearer {KEYS['cut']}", "content-type": "application/json"}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                events += 1
                if events == 5:
                    break  # the client goes away mid-stream
    time.sleep(1.5)
    small = {"model": "cut-model", "max_tokens": 10, "messages": HELLO}
    sim.behave("cut-upstream", output_tokens=3)
    probe = post(gw, "cut", small)
    spent_by_cut = 100000 - int(probe.headers["x-ratelimit-remaining-tokens"]) - (len(json.dumps(small).encode()) // 4 + 10)
    # Kept: the prompt and the events produced before the client left — not the 2,000 reserved.
    assert prompt + events <= spent_by_cut <= prompt + 60, (spent_by_cut, prompt, events)


def test_concurrency_budget_holds_across_workers_and_sheds_batch_first(gw: Gateway, sim: Simulator) -> None:
    """Budget 4 (the provider allows 4, and refuses above): batch may fill half of it. A burst of
    batch requests gets 2 slots and 429s with Retry-After; interactive requests keep flowing."""
    sim.behave("budget-upstream", ttft_ms=600, max_concurrency=4)

    def call(priority: str) -> httpx.Response:
        return post(gw, "budget", {"model": "budget-model", "messages": HELLO}, **{"x-interlock-priority": priority})

    with ThreadPoolExecutor(16) as pool:
        batch = [pool.submit(call, "batch") for _ in range(12)]
        time.sleep(0.2)
        interactive = [pool.submit(call, "interactive") for _ in range(2)]
        b = [f.result() for f in batch]
        i = [f.result() for f in interactive]
    assert [r.status_code for r in i] == [200, 200]
    shed = [r for r in b if r.status_code == 429]
    assert 2 <= sum(r.status_code == 200 for r in b) <= 4 and len(shed) >= 8
    for r in shed:
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        # The gateway answered, before any provider.
        assert r.headers["x-interlock-provider"] == "interlock" and r.headers["x-interlock-model"] == "budget-model"
    stats = sim.control("GET", "/_sim/stats")["concurrency"]["budget-upstream"]
    assert stats["peak"] <= 4 and stats["rejected"] == 0


def test_priority_and_deadline_headers_are_validated(gw: Gateway, sim: Simulator) -> None:
    for headers, word in (({"x-interlock-priority": "urgent"}, "x-interlock-priority"),
                          ({"x-interlock-deadline-ms": "soon"}, "x-interlock-deadline-ms"),
                          ({"x-interlock-deadline-ms": "0"}, "x-interlock-deadline-ms")):
        r = post(gw, "deadline", {"model": "deadline-model", "messages": HELLO}, **headers)
        assert r.status_code == 400 and word in r.json()["error"]["message"]
    claude = anthropic.Anthropic(base_url=gw.url, api_key=KEYS["deadline"], max_retries=0,
                                 default_headers={"x-interlock-priority": "urgent"})
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model="deadline-model", max_tokens=50, messages=HELLO)


def test_a_request_past_its_deadline_ends_with_504_and_one_that_cannot_make_it_is_refused_early(
        gw: Gateway, sim: Simulator) -> None:
    sim.behave("deadline-upstream", ttft_ms=800)
    start = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        oai(gw, "deadline", **{"x-interlock-deadline-ms": "300"}).chat.completions.create(
            model="deadline-model", messages=HELLO)
    assert e.value.status_code == 504 and time.monotonic() - start < 0.8
    assert e.value.body["code"] == "deadline_exceeded"  # type: ignore[index]
    # Each worker learns the deployment's time to first token from streams...
    client = oai(gw, "deadline")
    for _ in range(16):
        list(client.chat.completions.create(model="deadline-model", messages=HELLO, stream=True))
    before = len(sim.requests())
    start = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        oai(gw, "deadline", **{"x-interlock-deadline-ms": "200"}).chat.completions.create(
            model="deadline-model", messages=HELLO)
    # ...and refuses at once a deadline shorter than it, without calling the provider: the answer
    # says why (Envoy's route timeout would have said "did not complete within its deadline"
    # after the whole 200 ms), and arrives well inside the deadline.
    assert e.value.status_code == 504 and time.monotonic() - start < 0.2
    assert "shorter than the expected time to first token" in e.value.message, e.value.message
    assert len(sim.requests()) == before


def test_traffic_leaves_a_provider_whose_quota_runs_out_before_it_refuses(gw: Gateway, sim: Simulator) -> None:
    """steer-a is the cheapest and takes everything until its provider's x-ratelimit-remaining
    falls to 10 %; then the route moves to steer-b. The provider never answers 429 and no client
    sees an error."""
    sim.behave("steer-a-upstream", request_limit=10, request_window_s=3600)
    served = []
    client = oai(gw, "steer")
    for _ in range(24):
        r = client.chat.completions.with_raw_response.create(model="steer", messages=HELLO)
        served.append(r.headers["x-interlock-model"])
    quota = sim.control("GET", "/_sim/stats")["quota"]["steer-a-upstream"]
    assert quota["rejected"] == 0
    assert 8 <= served.count("steer-a") <= 10
    assert served[-6:] == ["steer-b"] * 6

