"""Utilization-first spillover through the real Envoy: a route `fill_pool` over a self-hosted pool
(stand-in vLLM servers whose metrics the test dictates) and a per-token provider (the simulator).
An idle pool serves every class; a busy one spills batch first and keeps interactive; a queue in
the pool spills interactive too; drained, everything comes back. The decision's explanation says
which and why, and the decisions counter counts spills by route and class."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.conftest import free_port
from tests.integration.conftest import TENANT_KEY, Gateway, Simulator, sha, start_gateway
from tests.integration.pool_standin import StandIns

POOL = "gpus"

@pytest.fixture(scope="module")
def servers() -> Iterator[StandIns]:
    s = StandIns(2, free_port(), first=71)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def spill_gateway(servers: StandIns, simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Gateway]:
    config: dict[str, Any] = {
        "providers": [
            {"name": POOL, "type": "pool", "endpoints": [s.address for s in servers.servers],
             "scrape_interval_ms": 50, "cluster": {"connect_timeout": "0.5s"}},
            {"name": "openai", "type": "openai", "endpoint": simulator.url, "api_key_env": "IT_PROVIDER_KEY"},
        ],
        "models": [
            {"name": "llama-pool", "provider": POOL, "upstream_model": "llama"},
            {"name": "llama-api", "provider": "openai", "upstream_model": "gpt-4o-mini-2024-07-18",
             "price": {"input_per_mtok": 0.2, "output_per_mtok": 0.2}},
        ],
        "routes": [{"name": "llama", "candidates": ["llama-pool", "llama-api"],
                    "policy": {"kind": "fill_pool", "target_utilization": 0.8, "band": 0.05}}],
        "tenants": [{"name": "it", "api_key_sha256": [sha(TENANT_KEY)], "models": ["*"], "explain": True,
                     "priorities": ["interactive", "default", "batch"]}],
    }
    gw = start_gateway(simulator, tmp_path_factory.mktemp("gw-spill"), config=config)
    try:
        yield gw
    finally:
        gw.process.stop()


def ask(gw: Gateway, priority: str) -> tuple[str, str]:
    """(provider that answered, the decision's explanation) for one request of `priority`."""
    raw = openai.OpenAI(base_url=gw.base_url, api_key=TENANT_KEY, max_retries=0, timeout=10)
    r = raw.chat.completions.with_raw_response.create(
        model="llama", messages=[{"role": "user", "content": "hello"}], max_tokens=8,
        extra_headers={"x-interlock-priority": priority, "x-interlock-debug": "explain"})
    r.parse()
    return r.headers["x-interlock-provider"], r.headers.get("x-interlock-explain", "")


def until(gw: Gateway, priority: str, provider: str, timeout: float = 5.0, seeing: str = "") -> str:
    """Ask until a request of `priority` is answered by `provider` with `seeing` in its explanation
    (the scraper sees a change within a few of its 50 ms intervals); that answer's explanation."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        who, why = ask(gw, priority)
        if who == provider and seeing in why:
            return why
        seen.append(who)
        time.sleep(0.05)
    raise AssertionError(f"{priority} never went to {provider} (went to {seen[-3:]})")


def load(servers: StandIns, kv: float, waiting: int = 0) -> None:
    for s in servers.servers:
        s.kv, s.waiting, s.running = kv, waiting, 8


def decisions(gw: Gateway, chosen_by: str) -> float:
    port = yaml.safe_load(Path(gw.config_path).read_text())["metrics"]["port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("interlock_routing_decisions") and 'route="llama"' in line
               and f'chosen_by="{chosen_by}"' in line)


def test_saturated_pool_spills_batch_then_interactive_and_comes_back(servers: StandIns, spill_gateway: Gateway) -> None:
    gw = spill_gateway
    servers.reset()
    load(servers, kv=0.3)
    why = until(gw, "interactive", POOL, seeing="util=0.30")  # an idle pool also serves: wait for the load
    assert "policy=fill_pool(target=0.8,band=0.05,batch=spill,then=objective(cost))" in why
    assert "by=pool interactive: pool at 0.30 < 0.95" in why and f"pools={POOL}(util=0.30" in why
    assert ask(gw, "batch")[0] == POOL

    load(servers, kv=0.88)  # above batch's 0.85, below interactive's 0.95
    why = until(gw, "batch", "openai")
    assert "by=spill batch: pool at 0.88 >= 0.85" in why
    for _ in range(5):
        assert ask(gw, "interactive")[0] == POOL  # interactive keeps the pool

    load(servers, kv=0.6, waiting=3)  # a queue: interactive spills too
    why = until(gw, "interactive", "openai")
    assert "by=spill interactive: 6 waiting in the pool" in why

    load(servers, kv=0.82)  # drained below interactive's 0.85, above batch's 0.75: interactive back first
    until(gw, "interactive", POOL)
    assert ask(gw, "batch")[0] == "openai"
    load(servers, kv=0.5)
    until(gw, "batch", POOL)
    assert decisions(gw, "spill batch") >= 1 and decisions(gw, "spill interactive") >= 1
    assert decisions(gw, "pool interactive") >= 1
