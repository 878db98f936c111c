"""Two gateway replicas (each its own Envoy, workers and rate-limit process) share one tenant
budget through a private Redis; when Redis goes away, the configured failure mode applies and
the failures are counted."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.component.redis_server import RedisServer
from tests.conftest import free_port
from tests.integration.conftest import Gateway, Simulator, sha, start_gateway

KEY = "sk-it-replicated"


def replica_config(redis_url: str, metrics_port: int) -> dict[str, Any]:
    return {
        "tenants": [{"name": "replicated", "api_key_sha256": [sha(KEY)],
                     "limits": [{"unit": "requests", "per": "hour", "amount": 10}]}],
        "rate_limit": {"address": "127.0.0.1", "port": free_port(), "store": "redis", "redis_url": redis_url,
                       "failure_mode": "open", "timeout": "200ms", "metrics_port": metrics_port},
    }


@pytest.fixture(scope="module")
def replicas(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[RedisServer, list[Gateway], list[int]]]:
    redis = RedisServer(free_port())
    gateways: list[Gateway] = []
    metrics = [free_port(), free_port()]
    try:
        for i in range(2):
            gateways.append(start_gateway(simulator, tmp_path_factory.mktemp(f"replica{i}"),
                                          config=replica_config(redis.url, metrics[i])))
        yield redis, gateways, metrics
    finally:
        for g in gateways:
            g.process.stop()
        redis.stop()


def ask(gw: Gateway) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", timeout=30, headers={"authorization": f"Bearer {KEY}"},
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]})


def counters(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_replicas_share_one_budget_through_redis(replicas: tuple[RedisServer, list[Gateway], list[int]],
                                                 sim: Simulator) -> None:
    _, (a, b), _ = replicas
    answers = [ask(a if i % 2 else b) for i in range(16)]
    assert [r.status_code for r in answers].count(200) == 10
    refused = [r for r in answers if r.status_code == 429]
    assert len(refused) == 6 and all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert {r.headers["x-ratelimit-remaining-requests"] for r in answers[:10]} == {str(n) for n in range(10)}


def test_without_redis_the_failure_mode_applies_and_is_counted(
        replicas: tuple[RedisServer, list[Gateway], list[int]], sim: Simulator) -> None:
    redis, (a, b), metrics = replicas
    redis.stop()
    # Fail open: the budget is spent, yet with Redis gone every request is let through.
    assert [ask(a).status_code for _ in range(3)] == [200, 200, 200]
    assert ask(b).status_code == 200
    seen = counters(metrics[0])
    assert seen["interlock_ratelimit_store_failures_total"] >= 3
    assert seen["interlock_ratelimit_degraded_total"] >= 3 and seen["interlock_ratelimit_store_healthy"] == 0
    log = (a.config_path.parent / "gateway.log").read_text()
    assert "failing open until it answers again" in log
