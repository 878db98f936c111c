"""Self-hosted pools through the real Envoy (two ext_proc workers, the pool scraper): Interlock
picks each request's server from the servers' own metrics and Envoy routes to it by the Gateway
API Inference Extension's `x-gateway-destination-endpoint` list (override-host load balancing).

The servers are stand-ins whose `/metrics` each test dictates (`pool_standin`): a loaded server
is avoided, a prompt prefix stays on its server until that server saturates, a server whose
metrics go stale scores as saturated, a pool whose scrapes all fail falls back to least-request
(logged once, counted), and a pool with no server up answers 503 in the client's format."""

from __future__ import annotations

import re
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anthropic
import openai
import pytest
import yaml

from tests.conftest import free_port
from tests.integration.conftest import TENANT_KEY, Gateway, sha, start_gateway
from tests.integration.pool_standin import StandIns

POOL = "gpus"


@pytest.fixture(scope="module")
def servers() -> Iterator[StandIns]:
    s = StandIns(4, free_port())
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def pool_gateway(servers: StandIns, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {
        "providers": [{"name": POOL, "type": "pool", "endpoints": [s.address for s in servers.servers],
                       "scrape_interval_ms": 50, "cluster": {"connect_timeout": "0.5s"}}],
        "models": [{"name": "llama", "provider": POOL, "upstream_model": "meta-llama/Llama-3.1-8B-Instruct"}],
        "tenants": [{"name": "it", "api_key_sha256": [sha(TENANT_KEY)], "models": ["*"]}],
    }
    gw = start_gateway(SimpleNamespace(port=free_port()), tmp_path_factory.mktemp("gw-pool"),  # type: ignore[arg-type]
                       config=config)
    try:
        yield gw
    finally:
        gw.process.stop()


@pytest.fixture
def pool(servers: StandIns, pool_gateway: Gateway) -> Iterator[StandIns]:
    servers.reset()
    wait_metric(pool_gateway, f'interlock_pool_endpoints{{pool="{POOL}",state="ready"}}', 4)
    yield servers
    servers.reset()


def metrics_text(gw: Gateway) -> str:
    port = yaml.safe_load(Path(gw.config_path).read_text())["metrics"]["port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def metric(gw: Gateway, series: str) -> float:
    """The value of `series` (name{labels} as the pod's scrape prints it, labels in its order)."""
    text = metrics_text(gw)
    name, _, labels = series.partition("{")
    want = [x for x in labels.rstrip("}").split(",") if x]
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-z_:]+)\{(.*)\} (\S+)$", line)
        if m and m.group(1) == name and all(w in m.group(2) for w in want):
            total += float(m.group(3))
    return total


def wait_metric(gw: Gateway, series: str, value: float, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(gw, series) == value:
            return
        time.sleep(0.05)
    raise AssertionError(f"{series} never became {value} (now {metric(gw, series)})")


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=TENANT_KEY, max_retries=0, timeout=10)


def ask(gw: Gateway, text: str) -> str:
    r = client(gw).chat.completions.create(model="llama", messages=[{"role": "user", "content": text}])
    content = r.choices[0].message.content or ""
    return content.removeprefix("served by ")


def test_load_aware_picks_avoid_the_loaded_server(pool: StandIns, pool_gateway: Gateway) -> None:
    loaded = pool.servers[0]
    loaded.waiting, loaded.running = 12, 40
    for s in pool.servers[1:]:
        s.running = 3
    wait_metric(pool_gateway, f'interlock_pool_queue_depth{{pool="{POOL}"}}', 12)
    answered = Counter(ask(pool_gateway, f"question {i}") for i in range(24))
    assert loaded.address not in answered, answered
    assert sum(answered.values()) == 24
    # Each request arrived with the Inference Extension's list: the server that answered first,
    # then the others for Envoy's retries; the loaded (saturated) server last.
    for s in pool.servers[1:]:
        for seen in s.served:
            listed = seen["list"].split(",")
            assert listed[0] == s.address and sorted(listed) == sorted(x.address for x in pool.servers)
            assert listed[-1] == loaded.address
            assert seen["authorization"] is None  # a pool without a key gets none, not the client's
    picks = metric(pool_gateway, f'interlock_pool_picks_total{{pool="{POOL}",endpoint="{loaded.address}"}}')
    assert picks == 0


def test_a_prompt_prefix_stays_on_its_server_until_it_saturates(pool: StandIns, pool_gateway: Gateway) -> None:
    prefix = "You are a contract lawyer. " + " ".join(f"Clause {i}: the party shall comply." for i in range(120))
    home = ask(pool_gateway, prefix + " Question 0?")
    # Its server gets busier than the others, but not saturated: the prefix stays.
    by_address = pool.by_address()
    by_address[home].waiting, by_address[home].kv = 2, 0.5
    wait_metric(pool_gateway, f'interlock_pool_queue_depth{{pool="{POOL}"}}', 2)
    answered = [ask(pool_gateway, prefix + f" Question {i}?") for i in range(1, 9)]
    assert set(answered) == {home}, answered
    others = {ask(pool_gateway, f"short and new {i}") for i in range(6)}
    assert home not in others  # without the prefix, the busier server is avoided
    # Saturated (a queue of 5 or more): the prefix moves, and stays on its new server.
    by_address[home].waiting = 8
    wait_metric(pool_gateway, f'interlock_pool_queue_depth{{pool="{POOL}"}}', 8)
    moved = [ask(pool_gateway, prefix + f" Question {i}?") for i in range(10, 16)]
    assert home not in moved and len(set(moved)) == 1, moved  # the workers share one prefix table


def test_a_server_whose_metrics_go_stale_scores_as_saturated(pool: StandIns, pool_gateway: Gateway) -> None:
    stale = pool.servers[1]
    for s in pool.servers:
        s.running = 0 if s is stale else 5  # the stale one looked the least loaded
        s.kv = 0.0 if s is stale else 0.4
    stale.metrics_delay = 5.0  # its scrapes now time out: its last data ages
    wait_metric(pool_gateway, f'interlock_pool_endpoints{{pool="{POOL}",state="stale"}}', 1)
    answered = Counter(ask(pool_gateway, f"stale {i}") for i in range(16))
    assert stale.address not in answered, answered
    assert metric(pool_gateway, f'interlock_pool_scrape_failures_total{{pool="{POOL}",endpoint="{stale.address}"}}') > 0


def test_every_scrape_failing_falls_back_to_least_request(pool: StandIns, pool_gateway: Gateway) -> None:
    before = metric(pool_gateway, f'interlock_pool_fallback_picks_total{{pool="{POOL}"}}')
    for s in pool.servers:
        s.metrics_status = 500
    wait_metric(pool_gateway, f'interlock_pool_scrape_fallback{{pool="{POOL}"}}', 1)
    answered = Counter(ask(pool_gateway, f"fallback {i}") for i in range(12))
    assert sum(answered.values()) == 12  # served, not refused
    assert metric(pool_gateway, f'interlock_pool_fallback_picks_total{{pool="{POOL}"}}') - before == 12
    for s in pool.servers:
        s.metrics_status = 200
    wait_metric(pool_gateway, f'interlock_pool_scrape_fallback{{pool="{POOL}"}}', 0)
    log = pool_gateway.process.text()
    assert log.count(f"pool {POOL}: no endpoint has fresh metrics (every scrape failing)") >= 1
    assert log.count(f"pool {POOL}: metrics fresh again") >= 1


def test_a_pool_with_no_server_up_answers_503_in_the_clients_format(pool: StandIns, pool_gateway: Gateway) -> None:
    for i in range(4):
        pool.stop(i)
    try:
        wait_metric(pool_gateway, f'interlock_pool_endpoints{{pool="{POOL}",state="down"}}', 4)
        with pytest.raises(openai.APIStatusError) as oe:
            ask(pool_gateway, "anyone?")
        assert oe.value.status_code == 503
        body: Any = oe.value.body
        assert "pool `gpus`" in body["message"] and body["type"] == "api_error"
        an = anthropic.Anthropic(base_url=pool_gateway.url, api_key=TENANT_KEY, max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as ae:
            an.messages.create(model="llama", max_tokens=50, messages=[{"role": "user", "content": "anyone?"}])
        assert ae.value.status_code == 503
        assert ae.value.body["type"] == "error" and "pool `gpus`" in ae.value.body["error"]["message"]
    finally:
        for i in range(4):
            pool.start(i)
    wait_metric(pool_gateway, f'interlock_pool_endpoints{{pool="{POOL}",state="ready"}}', 4)
    assert ask(pool_gateway, "back?")


def test_envoy_walks_the_list_when_the_first_server_fails(pool: StandIns, pool_gateway: Gateway) -> None:
    """The picker's first choice resets the connection (its metrics look fine): Envoy's retry
    takes the next endpoint of the list, and the client never sees the failure."""
    for s in pool.servers[1:]:
        s.waiting = 3  # server 0 is everyone's first choice
    wait_metric(pool_gateway, f'interlock_pool_queue_depth{{pool="{POOL}"}}', 9)
    pool.servers[0].chat_reset = True
    answered = ask(pool_gateway, "who is there?")
    assert answered != pool.servers[0].address
    seen = pool.by_address()[answered].served[-1]
    assert seen["list"].split(",")[0] == pool.servers[0].address  # the first choice was the failing one
