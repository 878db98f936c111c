"""A provider account's `max_concurrency` is not over-committed when replicas are added: two
gateway replicas (each its own Envoy, workers and rate-limit process, as two pods) sharing a
private Redis divide the budget between them, so the provider never sees more than the budget in
flight; once one replica stops, the other gets the whole budget back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from extproc.admission import BEAT_S, TTL_S
from tests.component.redis_server import RedisServer
from tests.conftest import free_port
from tests.integration.conftest import TENANT_KEY, Gateway, Simulator, gateway_config, start_gateway

BUDGET = 4


def budget_config(sim: Simulator, redis_url: str) -> dict[str, Any]:
    base = gateway_config(sim.port, 0, 0, 0)
    return {
        "models": [*base["models"], {"name": "budget-model", "provider": "openai", "upstream_model": "budget-upstream",
                                     "max_concurrency": BUDGET}],
        "rate_limit": {"address": "127.0.0.1", "port": free_port(), "store": "redis", "redis_url": redis_url},
        "admission": {"queue_timeout": "0s", "default_share": 1.0},  # the whole budget for the default class
    }


@pytest.fixture(scope="module")
def pods(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Gateway]]:
    redis = RedisServer(free_port())
    gateways: list[Gateway] = []
    try:
        for i in range(2):
            gateways.append(start_gateway(simulator, tmp_path_factory.mktemp(f"pod{i}"),
                                          config=budget_config(simulator, redis.url)))
        yield gateways
    finally:
        for g in gateways:
            g.process.stop()
        redis.stop()


def ask(gw: Gateway) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", timeout=30, headers={"authorization": f"Bearer {TENANT_KEY}"},
                      json={"model": "budget-model", "messages": [{"role": "user", "content": "Hello"}]})


def burst(gateways: list[Gateway], n: int) -> list[int]:
    with ThreadPoolExecutor(n) as pool:
        return [f.result().status_code for f in [pool.submit(ask, gateways[i % len(gateways)]) for i in range(n)]]


def test_two_replicas_never_exceed_the_accounts_budget(pods: list[Gateway], sim: Simulator) -> None:
    # The provider allows BUDGET in flight and refuses above it (as a real account's limit does).
    sim.behave("budget-upstream", ttft_ms=1500, max_concurrency=BUDGET)
    ask(pods[0]), ask(pods[1])  # each replica's workers have beaten at least once
    time.sleep(2 * BEAT_S + 0.5)
    codes = burst(pods, 12)
    assert codes.count(200) == BUDGET and codes.count(429) == 12 - BUDGET, codes
    stats = sim.control("GET", "/_sim/stats")["concurrency"]["budget-upstream"]
    assert stats["peak"] <= BUDGET and stats["rejected"] == 0


def test_a_stopped_replica_gives_its_share_back(pods: list[Gateway], sim: Simulator) -> None:
    sim.behave("budget-upstream", ttft_ms=1500, max_concurrency=BUDGET)
    pods[1].process.stop()
    time.sleep(TTL_S + 3 * BEAT_S)  # its heartbeat expires; the survivor sees it at two beats
    ask(pods[0])
    codes = burst(pods[:1], 8)
    assert codes.count(200) == BUDGET, codes
