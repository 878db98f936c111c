"""A pool and a per-token provider behind one route share a fallback order (an Envoy aggregate
cluster): the pool's endpoint list (in `envoy.lb` metadata only: the provider must not see the
pool's addresses) still steers its attempt inside the aggregate, and when the
pool's server fails the answer comes from the provider, in the client's format."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.integration.conftest import TENANT_KEY, Simulator, sha, start_gateway
from tests.integration.pool_standin import StandIns

FAST = {"exploration": 0.0, "affinity": False}


@pytest.fixture
def servers() -> Iterator[StandIns]:
    s = StandIns(2, free_port(), first=91)
    try:
        yield s
    finally:
        s.close()


def test_a_pool_in_a_fallback_order(servers: StandIns, simulator: Simulator, tmp_path: Path) -> None:
    config = {
        "providers": [{"name": "gpus", "type": "pool", "endpoints": [s.address for s in servers.servers]},
                      {"name": "cloud", "type": "openai", "endpoint": simulator.url, "api_key_env": "IT_PROVIDER_KEY"}],
        "models": [{"name": "llama-self", "provider": "gpus", "upstream_model": "llama"},
                   {"name": "gpt-4o-mini", "provider": "cloud", "upstream_model": "gpt-4o-mini-2024-07-18",
                    "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}],
        "routes": [{"name": "chat", "policy": {"kind": "objective", "minimize": "cost", **FAST},
                    "candidates": ["llama-self", "gpt-4o-mini"]}],
        "tenants": [{"name": "it", "api_key_sha256": [sha(TENANT_KEY)], "models": ["*"]}],
    }
    (tmp_path / "gw").mkdir()
    gw = start_gateway(simulator, tmp_path / "gw", config=config)
    busy = servers.servers[0]
    busy.waiting = 3  # the picker puts the other server first
    body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}
    headers = {"authorization": f"Bearer {TENANT_KEY}"}
    try:
        for _ in range(50):  # until the scraper has seen both servers
            r = httpx.post(gw.base_url + "/chat/completions", json=body, headers=headers, timeout=10)
            if r.json()["choices"][0]["message"]["content"] == f"served by {servers.servers[1].address}":
                break
        assert r.status_code == 200 and r.headers["x-interlock-provider"] == "gpus"
        # The list travels in envoy.lb metadata only (a provider is in the order): Envoy follows it.
        for _ in range(6):
            r = httpx.post(gw.base_url + "/chat/completions", json=body, headers=headers, timeout=10)
            assert r.json()["choices"][0]["message"]["content"] == f"served by {servers.servers[1].address}"
        assert {seen["list"] for s in servers.servers for seen in s.served} == {None}
        for s in servers.servers:
            s.chat_status = 503
        r = httpx.post(gw.base_url + "/chat/completions", json=body, headers=headers, timeout=10)
        assert r.status_code == 200, r.text
        assert r.headers["x-interlock-provider"] == "cloud" and r.headers["x-interlock-attempts"] == "2"
        assert r.json()["object"] == "chat.completion"
    finally:
        gw.process.stop()
