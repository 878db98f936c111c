"""`max_concurrency` across replicas: pods sharing one Redis (a real redis-server) divide each
budget by the live pod count from their heartbeats, so the account never sees more than its
budget in flight however many pods the HPA adds; a pod that stops gives its share back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from extproc import errors
from extproc.admission import TTL_S, Board, Candidate, Gate, Replicas
from extproc.config import validate
from extproc.config.model import Admission
from extproc.limits.store import Heartbeat
from tests.component.redis_server import RedisServer
from tests.conftest import free_port

BUDGET = 5
DEPLOYMENT = Candidate("gpt@openai:gpt-4o", BUDGET, ttft_s=0.1, service_s=1.0)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(free_port())
    yield server
    server.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def pod(url: str, name: str, clock: Clock, key: str) -> tuple[Gate, Replicas]:
    """One simulated pod: its own board (its workers' counters) and its heartbeat."""
    replicas = Replicas(Heartbeat(url, name, key=key, ttl_s=TTL_S), clock=clock)
    settings = Admission(queue_timeout=0.0)
    return Gate(Board(), lambda: settings, clock, replicas=replicas), replicas


async def fill(gate: Gate) -> int:
    """Requests the pod admits before it sheds (none released)."""
    n = 0
    while True:
        try:
            await gate.admit([DEPLOYMENT], "interactive", None)
        except errors.RateLimited:
            return n
        n += 1


def test_pods_divide_a_budget_and_a_stopped_pod_gives_its_share_back(redis_server: RedisServer) -> None:
    async def scenario() -> tuple[list[int], list[int], int, int]:
        clock = Clock()
        pods = [pod(redis_server.url, f"gw-{i}", clock, "t1:pods") for i in range(3)]
        for _, replicas in pods:
            await replicas.beat()
        admitted = [await fill(gate) for gate, _ in pods]
        counts = [replicas.count for _, replicas in pods]
        # gw-2 dies (no more beats); the others beat on; after TTL_S it no longer counts.
        clock.now += TTL_S + 1
        for _ in range(2):  # a fall in the count is believed when the next beat agrees
            for _, replicas in pods[:2]:
                await replicas.beat()
            clock.now += 1
        fresh = [pod(redis_server.url, f"gw-{i}", clock, "t1:pods")[0] for i in range(2)]
        for gate, (_, replicas) in zip(fresh, pods[:2], strict=True):
            gate.replicas = replicas
        after = [await fill(gate) for gate in fresh]
        for _, replicas in pods:
            await replicas.heartbeat.close()
        return admitted, counts, sum(after), pods[0][1].count

    admitted, counts, after, live = asyncio.run(scenario())
    assert counts == [3, 3, 3]
    assert sorted(admitted, reverse=True) == [2, 2, 1] and sum(admitted) == BUDGET  # 5 // 3, the first 5 % 3 get +1
    assert live == 2 and after == BUDGET  # 3 + 2


def test_without_redis_answers_a_pod_keeps_its_last_count(redis_server: RedisServer) -> None:
    async def scenario() -> tuple[int, int]:
        clock = Clock()
        a, ra = pod(redis_server.url, "a", clock, "t2:pods")
        _, rb = pod(redis_server.url, "b", clock, "t2:pods")
        await rb.beat()
        await ra.beat()
        dead = Replicas(Heartbeat(f"redis://127.0.0.1:{free_port()}/0", "a", key="t2:pods"), clock=clock)
        dead.count, dead.rank = ra.count, ra.rank
        await dead.beat()  # refused: logged, the last count stands
        a.replicas = dead
        n = await fill(a)
        for r in (ra, rb, dead):
            await r.heartbeat.close()
        return dead.count, n

    count, admitted = asyncio.run(scenario())
    assert count == 2 and admitted in (2, 3)


def test_the_gate_beats_by_itself_when_the_config_shares_a_redis(redis_server: RedisServer) -> None:
    cfg = validate({"providers": [], "models": [], "tenants": [],
                    "rate_limit": {"store": "redis", "redis_url": redis_server.url}})
    assert cfg.admission.replicas_redis_url == redis_server.url
    assert validate({"providers": [], "models": [], "tenants": []}).admission.replicas_redis_url is None

    async def scenario() -> tuple[int, int]:
        other = Heartbeat(redis_server.url, "another-pod")  # a second pod, already beating
        import time

        await other.beat(time.time())
        gate = Gate(Board(), lambda: Admission(queue_timeout=0.0, replicas_redis_url=redis_server.url), time.time)
        n = await fill(gate)  # the first admission waits for the gate's first heartbeat
        assert gate.replicas is not None
        count = gate.replicas.count
        await gate.replicas.stop()
        await other.leave()
        await other.close()
        return count, n

    count, admitted = asyncio.run(scenario())
    assert count == 2 and admitted in (2, 3)


def test_after_an_outage_the_first_pod_back_does_not_take_the_whole_budget(redis_server: RedisServer) -> None:
    async def scenario() -> list[int]:
        clock = Clock()
        pods = [pod(redis_server.url, f"p{i}", clock, "t4:pods")[1] for i in range(2)]
        for r in [*pods, *pods]:
            await r.beat()
        clock.now += TTL_S + 10  # nobody could beat: every entry is stale
        await pods[0].beat()  # alone for a moment: not believed
        seen = [pods[0].count]
        await pods[1].beat()
        clock.now += 1
        await pods[0].beat()
        seen.append(pods[0].count)
        for r in pods:
            await r.heartbeat.close()
        return seen

    assert asyncio.run(scenario()) == [2, 2]
