"""Provider faults that Envoy's timeouts and admission control must contain, through the real
Envoy with short injected timeouts: a provider stalling on a fallback route is cut within its
own idle timeout (before its first byte: the next provider answers; after it: the stream ends),
and one provider failing does not shed another provider's traffic."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import TENANT_KEY, Gateway, Simulator, sha, start_gateway

HELLO: Any = [{"role": "user", "content": "Hello"}]
STALL_IDLE_S = 1.0  # the stalling provider's own idle timeout
# Outlier detection would eject a provider these tests fail on purpose; they measure the
# timeouts and admission control, not ejection.
NO_EJECTION = {"consecutive_5xx": 100000, "consecutive_gateway_failure": 100000}


def stalls_config(sim: Simulator) -> dict[str, Any]:
    key = {"api_key_env": "IT_PROVIDER_KEY"}
    providers = [
        {"name": "stally", "type": "openai", "endpoint": sim.url, **key,
         "cluster": {"idle_timeout": f"{STALL_IDLE_S}s", "outlier_detection": NO_EJECTION}},
        # The other provider of each fallback order waits far longer: before, the order took it.
        {"name": "steady", "type": "anthropic", "endpoint": sim.url, **key, "cluster": {"idle_timeout": "30s"}},
        {"name": "sick", "type": "openai", "endpoint": sim.url, **key, "cluster": {"outlier_detection": NO_EJECTION}},
    ]
    policy = {"kind": "objective", "minimize": "cost", "exploration": 0.0, "affinity": False}
    models: list[dict[str, Any]] = []
    routes = []
    # stall-*: the error event tests, one order per client API (a stall cools its provider down).
    for scenario in ("midstall", "hang", "stall-openai", "stall-anthropic"):
        models += [{"name": f"{scenario}-a", "provider": "stally", "upstream_model": f"{scenario}-a-upstream",
                    "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.4}},
                   {"name": f"{scenario}-b", "provider": "steady", "upstream_model": f"{scenario}-b-upstream",
                    "max_output_tokens": 1024, "price": {"input_per_mtok": 5.0, "output_per_mtok": 20.0}}]
        routes.append({"name": f"route-{scenario}", "candidates": [f"{scenario}-a", f"{scenario}-b"],
                       "policy": policy})
    models += [{"name": "sick-model", "provider": "sick", "upstream_model": "sick-upstream"},
               {"name": "well-model", "provider": "steady", "upstream_model": "well-upstream",
                "max_output_tokens": 1024}]
    return {"providers": providers, "models": models, "routes": routes,
            "tenants": [{"name": "it", "api_key_sha256": [sha(TENANT_KEY)], "models": ["*"]}]}


@pytest.fixture(scope="module")
def gw(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = start_gateway(simulator, tmp_path_factory.mktemp("gw-stalls"), config=stalls_config(simulator))
    try:
        yield g
    finally:
        g.process.stop()


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": HELLO, **extra}


AUTH = {"authorization": f"Bearer {TENANT_KEY}"}


def test_a_stall_mid_stream_on_a_fallback_route_ends_within_the_stalling_providers_idle_timeout(
        gw: Gateway, sim: Simulator) -> None:
    """The stalling provider (idle 1 s) is the primary of an order whose other provider allows
    30 s. Its stream starts, then goes quiet for 20 s: the client must not wait for that."""
    sim.behave("midstall-a-upstream", tokens_per_s=0.05, output_tokens=6)
    lines: list[str] = []
    ended_by = "end of stream"
    start = time.monotonic()
    last_byte = start
    try:
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=chat("route-midstall", stream=True),
                          headers=AUTH, timeout=httpx.Timeout(10, read=8)) as r:
            assert r.status_code == 200 and r.headers["x-interlock-model"] == "midstall-a"
            for line in r.iter_lines():
                last_byte = time.monotonic()
                if line:
                    lines.append(line)
    except httpx.TransportError as exc:  # the stream was reset: no error event (router stage)
        ended_by = type(exc).__name__
    ended = time.monotonic()
    assert any('"content":"Simulated' in line for line in lines), lines  # it did start
    assert "data: [DONE]" not in lines
    assert ended_by != "ReadTimeout", "the client waited for the stalled provider"
    # Ended within the stalling provider's own idle timeout (plus scheduling slack) of its last byte.
    assert ended - last_byte < STALL_IDLE_S + 1.5, (ended - last_byte, ended_by, lines)
    if ended_by == "end of stream":  # the router stage closed it with an error event
        assert any(json.loads(line[6:]).get("error") for line in lines if line.startswith("data: {")), lines


def test_a_stall_before_the_first_byte_fails_over_within_the_stalling_providers_idle_timeout(
        gw: Gateway, sim: Simulator) -> None:
    """No per-try (first-byte) timeout is configured: the idle timeout alone bounds the attempt,
    and as nothing reached the client yet, Envoy retries on the next provider."""
    sim.behave("hang-a-upstream", hang=True)
    start = time.monotonic()
    r = httpx.post(gw.url + "/v1/chat/completions", json=chat("route-hang"), headers=AUTH, timeout=8)
    elapsed = time.monotonic() - start
    assert r.status_code == 200, r.text
    assert r.headers["x-interlock-model"] == "hang-b" and r.headers["x-interlock-attempts"] == "2"
    assert r.json()["choices"][0]["message"]["content"].startswith("Simulated")
    assert STALL_IDLE_S * 0.9 < elapsed < STALL_IDLE_S + 2, elapsed


def test_one_failing_provider_does_not_shed_another_providers_traffic(gw: Gateway, sim: Simulator) -> None:
    """Admission control sheds per provider: a provider answering only 500s gets shed itself
    (503s it never saw), while every request to a healthy provider on the same Envoy worker
    thread (one connection: the window is per thread) still succeeds."""
    sim.behave("sick-upstream", status=500)
    sick: Counter[int] = Counter()
    with httpx.Client(base_url=gw.url, headers=AUTH, timeout=10) as client:
        # Envoy sheds once a thread's window holds 20 req/s × 30 s: 600 requests, then 80 % of them.
        deadline = time.monotonic() + 20
        while sick[503] < 20 and sum(sick.values()) < 1200 and time.monotonic() < deadline:
            sick[client.post("/v1/chat/completions", json=chat("sick-model")).status_code] += 1
        assert set(sick) <= {502, 503}, sick
        well = Counter(client.post("/v1/chat/completions", json=chat("well-model")).status_code
                       for _ in range(60))
    assert well == Counter({200: 60}), (well, sick)
    # Scoped, not dropped: the failing provider itself was shed, before it was called.
    reached = sum(1 for r in sim.requests() if (r.get("body") or {}).get("model") == "sick-upstream")
    assert sick[503] >= 20 and reached == sick[502], (sick, reached)


MESSAGES: Any = {"max_tokens": 64, "messages": HELLO, "stream": True}


@pytest.mark.parametrize("on", ["route", "model"])  # a fallback route; one model
@pytest.mark.parametrize("client_api", ["openai", "anthropic"])  # passthrough; translated
def test_a_stall_mid_stream_ends_with_an_error_event_in_the_clients_format(
        gw: Gateway, sim: Simulator, client_api: str, on: str) -> None:
    """The router stage's own idle timer ends the stream with an error event in the client's format
    just before Envoy's idle timeout would reset it (a transport error here)."""
    stalling = f"stall-{client_api}-a"
    model = f"route-stall-{client_api}" if on == "route" else stalling
    sim.behave(f"{stalling}-upstream", tokens_per_s=0.05, output_tokens=6)
    path, body = (("/v1/chat/completions", chat(model, stream=True)) if client_api == "openai"
                  else ("/v1/messages", {"model": model, **MESSAGES}))
    start = time.monotonic()
    with httpx.stream("POST", gw.url + path, json=body, headers=AUTH, timeout=httpx.Timeout(10, read=8)) as r:
        assert r.status_code == 200 and r.headers["x-interlock-model"] == stalling
        lines = list(r.iter_lines())
    assert time.monotonic() - start < STALL_IDLE_S + 2
    events = [line[6:] for line in lines if line.startswith("data: ")]
    assert "Simulated" in "".join(events[:-1]), lines  # it did start
    if client_api == "openai":
        error = json.loads(events[-1])["error"]  # OpenAI's in-stream error object, then the end
        assert error["message"] and error["type"] == "timeout_error" and "[DONE]" not in events, lines
    else:
        assert [line for line in lines if line.startswith("event: ")][-1] == "event: error", lines
        last = json.loads(events[-1])
        assert last["type"] == "error" and last["error"]["type"] == "timeout_error" and last["error"]["message"]
        assert not any('"message_stop"' in e for e in events), lines
