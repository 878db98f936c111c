"""A pool of simulated vLLM and SGLang servers (`simulator.modelserver`, continuous batching with
their real metric names) behind the real Envoy: the scraper reads both flavours, answers stream
with usage, and under concurrent load a server slowed to a fifth of its speed gets less of the
traffic than an even share; a prefix-cache hit shows in the access log, which the capacity
planner reads."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import openai
import pytest

from extproc.cmd.supervisor import wait_until
from routing import capacity
from simulator.modelserver import MODEL, pool_specs
from simulator.modelserver.pool import BackgroundPool
from tests.conftest import free_port
from tests.integration.conftest import TENANT_KEY, Gateway, sha, start_gateway
from tests.integration.test_pool import metric, wait_metric


@pytest.fixture
def sims() -> Iterator[tuple[BackgroundPool, BackgroundPool]]:
    vllm = BackgroundPool(pool_specs(3, seed=7, flavor="vllm"), first_octet=101)
    try:
        sglang = BackgroundPool(pool_specs(2, seed=8, flavor="sglang"), first_octet=111)
        try:
            yield vllm, sglang
        finally:
            sglang.close()
    finally:
        vllm.close()


def test_simulated_vllm_and_sglang_pools(sims: tuple[BackgroundPool, BackgroundPool], tmp_path: Path) -> None:
    vllm, sglang = sims
    address = {s.host + ":" + str(s.port): s for s in vllm.servers}
    config = {
        "providers": [
            {"name": "v", "type": "pool", "endpoints": list(address)},
            {"name": "s", "type": "pool", "metrics": "sglang",
             "endpoints": [f"{s.host}:{s.port}" for s in sglang.servers]}],
        "models": [{"name": "llama", "provider": "v", "upstream_model": MODEL},
                   {"name": "llama-sglang", "provider": "s", "upstream_model": MODEL}],
        "tenants": [{"name": "it", "api_key_sha256": [sha(TENANT_KEY)], "models": ["*"]}],
    }
    (tmp_path / "gw").mkdir()
    gw: Gateway = start_gateway(SimpleNamespace(port=free_port()), tmp_path / "gw", config=config)  # type: ignore[arg-type]
    try:
        wait_metric(gw, 'interlock_pool_endpoints{pool="v",state="ready"}', 3)
        wait_metric(gw, 'interlock_pool_endpoints{pool="s",state="ready"}', 2)
        client = openai.OpenAI(base_url=gw.base_url, api_key=TENANT_KEY, max_retries=0, timeout=30)
        r = client.chat.completions.create(model="llama-sglang", max_tokens=8,
                                           messages=[{"role": "user", "content": "hello"}])
        assert r.usage is not None and r.usage.completion_tokens > 0
        chunks = list(client.chat.completions.create(model="llama", max_tokens=16, stream=True,
                                                     stream_options={"include_usage": True},
                                                     messages=[{"role": "user", "content": "count to ten"}]))
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
        slow = vllm.servers[0]
        slow.set_speed(0.2)
        before = {a: metric(gw, f'interlock_pool_picks_total{{pool="v",endpoint="{a}"}}') for a in address}

        def one(i: int) -> None:
            client.chat.completions.create(model="llama", max_tokens=48,
                                           messages=[{"role": "user", "content": f"request {i}: " + "words " * 60}])
        with ThreadPoolExecutor(12) as pool:
            list(pool.map(one, range(36)))
        picks = Counter({a: metric(gw, f'interlock_pool_picks_total{{pool="v",endpoint="{a}"}}') - before[a]
                         for a in address})
        assert sum(picks.values()) == 36
        assert picks[f"{slow.host}:{slow.port}"] < 36 / 3, picks
    finally:
        gw.process.stop()


def test_prefix_cache_hits_reach_the_access_log_and_the_capacity_planner(tmp_path: Path) -> None:
    sims = BackgroundPool(pool_specs(1, seed=9, flavor="vllm"), first_octet=121)
    try:
        s = sims.servers[0]
        config = {
            "providers": [{"name": "v", "type": "pool", "endpoints": [f"{s.host}:{s.port}"]}],
            "models": [{"name": "llama", "provider": "v", "upstream_model": MODEL}],
            "tenants": [{"name": "it", "api_key_sha256": [sha(TENANT_KEY)], "models": ["*"]}],
        }
        (tmp_path / "gw").mkdir()
        gw: Gateway = start_gateway(SimpleNamespace(port=free_port()), tmp_path / "gw", config=config)  # type: ignore[arg-type]
        try:
            wait_metric(gw, 'interlock_pool_endpoints{pool="v",state="ready"}', 1)
            client = openai.OpenAI(base_url=gw.base_url, api_key=TENANT_KEY, max_retries=0, timeout=30)
            prompt = [{"role": "user", "content": "a shared system prompt " * 80}]
            ids, cached = [], []
            for _ in range(2):
                raw = client.chat.completions.with_raw_response.create(model="llama", max_tokens=4, messages=prompt)
                r = raw.parse()
                ids.append(raw.headers["x-request-id"])
                details = r.usage.prompt_tokens_details if r.usage else None
                cached.append(details.cached_tokens if details and details.cached_tokens else 0)
            assert cached[0] == 0 and cached[1] > 0, cached  # the second prompt found its prefix cached

            def logged() -> dict[str, dict]:
                lines = (json.loads(x) for x in gw.process.text().splitlines()
                         if x.startswith("{") and '"request_id"' in x)
                return {e["request_id"]: e for e in lines if e.get("request_id") in ids}

            assert wait_until(lambda: len(logged()) == 2, 10, 0.2)
            entries = logged()
            assert [int(entries[i]["cached_tokens"]) for i in ids] == cached
            records = capacity.parse_traffic([json.dumps(entries[i]) for i in ids]).records
            assert sorted(r.cached_tokens for r in records) == sorted(cached)
        finally:
            gw.process.stop()
    finally:
        sims.close()
