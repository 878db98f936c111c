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
KEYS = {name: f"sk-it-{name}" for name in ("reqs", "tokens", "cut", "budget", "deadline", "steer", "window", "cents",
                                            "small", "persec", "prio", "prio-all")}


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
        # gemini-2.5-flash's shape: an output cap far above a small tenant's window.
        {"name": "bigcap-model", "provider": "oa", "upstream_model": "bigcap-upstream", "max_output_tokens": 65536,
         "context_window": 1048576, "price": {"input_per_mtok": 0.3, "output_per_mtok": 2.5}},
        {"name": "prio-model", "provider": "oa", "upstream_model": "prio-upstream", "max_concurrency": 4},
        # A route whose first choice (best quality) is dear on input: $30/Mtok.
        {"name": "dear-claude", "provider": "an", "upstream_model": "dear-claude-upstream", "max_output_tokens": 1024,
         "price": {"input_per_mtok": 30.0, "output_per_mtok": 60.0}, "quality": 0.95},
    ]
    routes = [{"name": "steer", "candidates": ["steer-a", "steer-b"],
               "policy": {"kind": "objective", "minimize": "cost", "exploration": 0.0, "affinity": False}},
              {"name": "best", "candidates": ["dear-claude", "bigcap-model"],
               "policy": {"kind": "objective", "maximize": "quality", "exploration": 0.0, "affinity": False}}]

    def tenant(name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "api_key_sha256": [sha(KEYS[name])], **extra}

    tenants = [
        tenant("reqs", limits=[{"unit": "requests", "per": "hour", "amount": 2}]),
        tenant("tokens", limits=[{"unit": "tokens", "per": "hour", "amount": 4000},
                                 {"unit": "usd", "per": "day", "amount": 5}]),
        tenant("cut", limits=[{"unit": "tokens", "per": "hour", "amount": 100000}]),
        tenant("budget", priorities=["batch", "default", "interactive"]),  # its test claims interactive
        tenant("deadline"),
        tenant("steer"),
        tenant("window", limits=[{"unit": "tokens", "per": "hour", "amount": 40000}]),
        tenant("cents", limits=[{"unit": "usd", "per": "day", "amount": 0.01}]),
        tenant("small", limits=[{"unit": "tokens", "per": "hour", "amount": 1000}]),
        tenant("persec", limits=[{"unit": "tokens", "per": "second", "amount": 3000}]),
        tenant("prio"),  # priority default: may use batch and default
        tenant("prio-all", priorities=["batch", "default", "interactive"]),
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
        # The rate-limit service's reservation markers are for the worker's true-up, never shown.
        assert not any(k.startswith("x-interlock-ratelimit") for k in r.headers)
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
    4,000 tokens an hour: at most 7 are admitted whole and one more with what is left (above its
    prompt), what they use stays within the budget, and the true-up gives back what they did not
    use, exactly."""
    # Long enough that all 20 are in flight before the first true-up gives anything back.
    sim.behave("tokens-upstream", ttft_ms=1500, output_tokens=12)
    body = {"model": "tokens-model", "max_tokens": 500, "messages": [{"role": "user", "content": "x" * 60}]}
    reserve = len(json.dumps(body).encode()) // 4 + 500
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: post(gw, "tokens", body), range(20)))
    ok = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 429]
    assert len(ok) + len(refused) == 20
    assert 1 <= len(ok) <= 4000 // reserve + 1
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert all(r.json()["error"]["type"] == "rate_limit_error" for r in refused)
    used = sum(r.json()["usage"]["total_tokens"] for r in ok)
    assert used <= 4000
    time.sleep(0.5)  # the true-ups (the workers' datagrams, `extproc.limits.trueup`) land
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



# -- admission that says the truth (issue 10, point 3) -----------------------------------------


def test_a_reservation_above_the_window_is_admitted_and_trued_up_not_refused_forever(gw: Gateway, sim: Simulator
                                                                                     ) -> None:
    """40,000 tokens an hour and a model whose output cap is 65,536, called without max_tokens (as
    SDKs do): each request reserves what the window has left (never more than the window), is
    served, and is charged what it used. Before: `429, retry-after` for every request, forever."""
    client = oai(gw, "window")
    for _ in range(3):
        r = client.chat.completions.with_raw_response.create(model="bigcap-model", messages=HELLO)
        assert r.http_response.status_code == 200
        assert r.headers["x-ratelimit-limit-tokens"] == "40000"
    time.sleep(0.5)  # the true-ups land
    small = {"model": "bigcap-model", "max_tokens": 20, "messages": HELLO}
    probe = post(gw, "window", small)
    prompt = len(json.dumps(small).encode()) // 4
    # Three answers of ~25 tokens were charged, not 3 × 40,000: the window still has almost all of it.
    assert 40000 - 200 - prompt - 20 <= int(probe.headers["x-ratelimit-remaining-tokens"]) < 40000 - prompt - 20


def test_a_usd_budget_below_one_output_cap_still_serves(gw: Gateway, sim: Simulator) -> None:
    """$0.01 a day and 65,536 output tokens at $2.50/Mtok ($0.16) reserved per request: before,
    `429, retry-after: <until midnight>` with almost all of the budget left."""
    client = oai(gw, "cents")
    for _ in range(3):
        r = client.chat.completions.with_raw_response.create(model="bigcap-model", messages=HELLO)
        assert r.http_response.status_code == 200
        assert float(r.headers["x-ratelimit-limit-usd"]) == 0.01


def test_a_prompt_over_a_whole_window_is_a_400_naming_the_limit(gw: Gateway, sim: Simulator) -> None:
    """1,000 tokens an hour and a prompt of ~1,500 tokens: no wait can make it fit, so not a 429
    to retry but a 400 that says which limit and what the client sent. The provider is not called."""
    before = len(sim.requests())
    text = "y " * 3000
    with pytest.raises(openai.BadRequestError) as e:
        oai(gw, "small").chat.completions.create(model="bigcap-model", max_tokens=50,
                                                 messages=[{"role": "user", "content": text}])
    msg = e.value.message
    assert "1000 tokens per hour" in msg and "max_tokens" in msg, msg
    assert e.value.body["code"] == "rate_limit_window_too_small", e.value.body  # type: ignore[index]
    assert "retry-after" not in e.value.response.headers
    with pytest.raises(anthropic.BadRequestError) as a:
        anthropic.Anthropic(base_url=gw.url, api_key=KEYS["small"], max_retries=0).messages.create(
            model="bigcap-model", max_tokens=50, messages=[{"role": "user", "content": text}])
    assert a.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "1000 tokens per hour" in a.value.message and "max_tokens" in a.value.message, a.value.message
    # USD: the prompt alone costs more than the day's budget at the model's input price.
    with pytest.raises(openai.BadRequestError) as e:
        oai(gw, "cents").chat.completions.create(model="bigcap-model",
                                                 messages=[{"role": "user", "content": "z " * 70000}])
    assert "$0.01 per day" in e.value.message and "max_tokens" not in e.value.message, e.value.message
    assert len(sim.requests()) == before


def test_a_route_serves_a_prompt_on_a_candidate_whose_price_fits_the_budget(gw: Gateway, sim: Simulator) -> None:
    """$0.01 a day; a ~1,200-token prompt costs $0.036 on the route's first choice (dear-claude) and
    $0.0004 on bigcap-model: the route serves it on bigcap-model rather than refusing it. A model
    asked for by name, where it cannot fit, is the 400."""
    messages: Any = [{"role": "user", "content": "w " * 2400}]
    r = oai(gw, "cents").chat.completions.with_raw_response.create(model="best", messages=messages, max_tokens=5)
    assert r.http_response.status_code == 200 and r.headers["x-interlock-model"] == "bigcap-model"
    with pytest.raises(openai.BadRequestError) as e:
        oai(gw, "cents").chat.completions.create(model="dear-claude", messages=messages, max_tokens=5)
    assert "$0.01 per day" in e.value.message and "dear-claude's input price" in e.value.message, e.value.message


def test_a_429_names_the_limit_that_was_hit_in_each_clients_format(gw: Gateway, sim: Simulator) -> None:
    """1,000 tokens an hour; the first request spends ~710 of them, the second needs its ~360-token
    prompt and ~290 are left: a 429 whose body says which limit, with Retry-After and x-ratelimit-*."""
    body = {"model": "bigcap-model", "max_tokens": 10, "messages": [{"role": "user", "content": "x " * 700}]}
    assert post(gw, "small", body).status_code == 200
    time.sleep(0.5)  # the true-up lands
    r = post(gw, "small", body)
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert err["type"] == "rate_limit_error" and err["code"] == "rate_limit_exceeded"
    assert "1000 tokens per hour" in err["message"], err["message"]
    assert 1 <= int(r.headers["retry-after"]) <= 3600
    assert r.headers["x-ratelimit-limit-tokens"] == "1000"
    assert int(r.headers["x-ratelimit-remaining-tokens"]) < 400
    assert r.headers["x-interlock-provider"] == "interlock"
    assert not any(k.startswith("x-interlock-ratelimit") for k in r.headers)
    with pytest.raises(anthropic.RateLimitError) as a:
        anthropic.Anthropic(base_url=gw.url, api_key=KEYS["small"], max_retries=0).messages.create(
            model="bigcap-model", max_tokens=10, messages=[{"role": "user", "content": "x " * 700}])
    assert a.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert "1000 tokens per hour" in a.value.message, a.value.message
    # A requests limit names itself too.
    with pytest.raises(openai.RateLimitError) as e:
        for _ in range(3):
            oai(gw, "reqs").chat.completions.create(model="reqs-model", messages=HELLO)
    assert "2 requests per hour" in e.value.message, e.value.message


def test_a_client_that_honours_retry_after_gets_through(gw: Gateway, sim: Simulator) -> None:
    """3,000 tokens a second, prompts of ~1,000 (estimated; the provider counts ~2,000) and no
    max_tokens on a 65,536-token model: the SDK's own retries, which wait Retry-After, get every
    request through. Before: every request reserved 66,500 tokens, 429 `retry-after: 1` forever."""
    client = openai.OpenAI(base_url=gw.base_url, api_key=KEYS["persec"], max_retries=4, timeout=30)
    messages: Any = [{"role": "user", "content": "x " * 2000}]
    start = time.monotonic()
    for _ in range(3):
        r = client.chat.completions.with_raw_response.create(model="bigcap-model", messages=messages)
        assert r.http_response.status_code == 200
    assert time.monotonic() - start < 10


# -- priority as an entitlement (issue 10, point 4) --------------------------------------------


def test_a_priority_the_tenant_is_not_entitled_to_is_lowered_and_named(gw: Gateway, sim: Simulator) -> None:
    claimed = oai(gw, "prio", **{"x-interlock-priority": "interactive"})
    r = claimed.chat.completions.with_raw_response.create(model="prio-model", messages=HELLO)
    assert r.headers["x-interlock-priority"] == "default"
    assert r.headers["x-interlock-priority-lowered-from"] == "interactive"
    r = oai(gw, "prio").chat.completions.with_raw_response.create(model="prio-model", messages=HELLO)
    assert r.headers["x-interlock-priority"] == "default" and "x-interlock-priority-lowered-from" not in r.headers
    r = oai(gw, "prio", **{"x-interlock-priority": "batch"}).chat.completions.with_raw_response.create(
        model="prio-model", messages=HELLO)
    assert r.headers["x-interlock-priority"] == "batch" and "x-interlock-priority-lowered-from" not in r.headers
    r = oai(gw, "prio-all", **{"x-interlock-priority": "interactive"}).chat.completions.with_raw_response.create(
        model="prio-model", messages=HELLO)
    assert r.headers["x-interlock-priority"] == "interactive" and "x-interlock-priority-lowered-from" not in r.headers


@pytest.mark.parametrize(("tenant", "peak"), [("prio", 3), ("prio-all", 4)])
def test_claiming_interactive_takes_the_interactive_share_only_when_entitled(
        gw: Gateway, sim: Simulator, tenant: str, peak: int) -> None:
    """Budget 4, default_share 0.75: a tenant entitled to `default` only fills 3 slots however it
    labels its requests (the 4th waits, then is shed); one entitled to `interactive` fills all 4."""
    sim.behave("prio-upstream", ttft_ms=800)

    def call(_: int) -> httpx.Response:
        return post(gw, tenant, {"model": "prio-model", "messages": HELLO}, **{"x-interlock-priority": "interactive"})

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(call, range(4)))
    stats = sim.control("GET", "/_sim/stats")["concurrency"]["prio-upstream"]
    assert stats["peak"] == peak, stats
    assert sum(r.status_code == 200 for r in answers) == peak
    assert all(r.headers["x-interlock-priority"] == ("default" if tenant == "prio" else "interactive")
               for r in answers)
