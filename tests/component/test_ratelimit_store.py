"""Store contract for MemoryStore and RedisStore (a private redis-server), Redis failure modes, and
three separate processes sharing one Redis budget."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from redis.asyncio import Redis

from extproc.limits import FailureMode, MemoryStore, RedisStore, Slot, Store
from tests.component.redis_server import RedisServer
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(free_port())
    try:
        yield server
    finally:
        server.stop()


StoreFactory = Callable[[], Store]


@pytest.fixture(params=["memory", "redis"])
def stores(request: pytest.FixtureRequest) -> StoreFactory:
    """A factory of stores sharing one namespace (a fresh one per test); call it inside the loop."""
    if request.param == "memory":
        shared = MemoryStore()
        return lambda: shared
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    return lambda: RedisStore(server.url, prefix=prefix, timeout_s=2.0)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


T = 1_000_000.25  # a fixed instant: windows [1_000_000, 1_000_001) for per-second slots
SEC = Slot("a", 1, 10)
MIN = Slot("b", 60, 25)


def test_reserve_is_all_or_nothing(stores: StoreFactory) -> None:
    async def body() -> None:
        s = stores()
        d = await s.reserve([SEC, MIN], [6, 20], T)
        assert (d.allowed, d.remaining, d.retry_after_s, d.degraded) == (True, (4, 5), 0.0, False)
        d = await s.reserve([SEC, MIN], [4, 6], T)
        assert (d.allowed, d.remaining) == (False, (4, 5))
        assert d.retry_after_s == pytest.approx(1_000_020 - T)  # only the minute slot lacks room
        assert await s.usage([SEC, MIN], T) == (6, 20)
        d = await s.reserve([SEC], 4, T)
        assert (d.allowed, d.remaining) == (True, (0,))
        d = await s.reserve([SEC, MIN], [1, 6], T)
        assert (d.allowed, d.retry_after_s) == (False, pytest.approx(1_000_020 - T))
        assert (await s.reserve([], 5, T)).allowed
        await s.close()

    run(body)


def test_windows_are_separate_counters(stores: StoreFactory) -> None:
    async def body() -> None:
        s = stores()
        assert (await s.reserve([SEC], 10, T)).allowed
        assert not (await s.reserve([SEC], 1, T + 0.7)).allowed
        d = await s.reserve([SEC], 10, T + 0.75)
        assert d.allowed and d.remaining == (0,)  # T + 0.75 is the next second
        assert await s.usage([SEC], T) == (10,) and await s.usage([SEC], T + 1) == (10,)
        await s.close()

    run(body)


def test_zero_is_a_peek(stores: StoreFactory) -> None:
    async def body() -> None:
        s = stores()
        assert (await s.reserve([SEC], 0, T)).allowed
        assert await s.usage([SEC], T) == (0,)
        await s.reserve([SEC], 10, T)
        d = await s.reserve([SEC], 0, T)
        assert not d.allowed and d.retry_after_s == pytest.approx(0.75)
        await s.close()

    run(body)


def test_adjust_refunds_charges_and_never_goes_below_zero(stores: StoreFactory) -> None:
    async def body() -> None:
        s = stores()
        await s.reserve([SEC, MIN], 8, T)
        await s.adjust([SEC, MIN], [-5, 9], T)
        assert await s.usage([SEC, MIN], T) == (3, 17)
        await s.adjust([SEC, MIN], -100, T)
        assert await s.usage([SEC, MIN], T) == (0, 0)
        await s.adjust([Slot("never", 1, 10)], -3, T)
        assert await s.usage([Slot("never", 1, 10)], T) == (0,)
        await s.adjust([SEC], 25, T)
        assert await s.usage([SEC], T) == (25,) and not (await s.reserve([SEC], 0, T)).allowed
        await s.close()

    run(body)


def test_adjust_after_the_window_ended(stores: StoreFactory) -> None:
    async def body() -> None:
        s = stores()
        await s.reserve([SEC, MIN], 8, T)
        later = T + 1.5  # the second is over, the minute is not
        await s.adjust([SEC, MIN], -6, later, at=T)
        assert await s.usage([SEC, MIN], later) == (0, 2)  # no refund from the next second
        await s.adjust([SEC, MIN], 4, later, at=T)
        assert await s.usage([SEC, MIN], later) == (4, 6)  # the overshoot lands in the current second
        await s.close()

    run(body)


def test_bad_arguments(stores: StoreFactory) -> None:
    async def body() -> None:
        s = stores()
        with pytest.raises(ValueError, match="duplicate key"):
            await s.reserve([SEC, Slot("a", 60, 5)], 1, T)
        with pytest.raises(ValueError, match="1 values for 2 slots"):
            await s.adjust([SEC, MIN], [1], T)
        await s.close()

    run(body)


def test_concurrent_reservations_take_exactly_the_capacity(stores: StoreFactory) -> None:
    async def body() -> None:
        clients = [stores(), stores()]
        slot = Slot("c", 60, 500)
        decisions = await asyncio.gather(*(clients[i % 2].reserve([slot], 7, T) for i in range(120)))
        assert sum(d.allowed for d in decisions) == 71
        assert await clients[0].usage([slot], T) == (497,)
        assert min(d.remaining[0] for d in decisions) == 3
        for c in clients:
            await c.close()

    run(body)


@pytest.mark.parametrize("underestimates", [False, True])
def test_parallel_requests_overshoot_only_by_what_true_ups_add(stores: StoreFactory, underestimates: bool) -> None:
    """Reserve an estimate, hold it while others run, true up with the actual amount. The counter
    always includes the reservations in flight, so the budget is exceeded only by true-ups above
    their estimate."""
    async def body() -> None:
        clients = [stores(), stores(), stores()]
        slot, estimate = Slot("p", 60, 2000), 100
        rng = random.Random(7)
        actuals = [rng.randint(10, 160 if underestimates else estimate) for _ in range(150)]
        overshoot = 0
        worst = 0
        waves, size = 15, 10
        started = [asyncio.Event() for _ in range(waves + 1)]
        reserved = [0] * waves

        async def request(i: int) -> int:
            nonlocal overshoot, worst
            store, wave = clients[i % 3], i // size
            await started[wave].wait()
            decision = await store.reserve([slot], estimate, T)
            reserved[wave] += 1
            if reserved[wave] == size:
                started[wave + 1].set()
            if not decision.allowed:
                return 0
            worst = max(worst, (await store.usage([slot], T))[0] - overshoot)
            await started[min(wave + 2, waves)].wait()  # in flight while the next two waves are admitted
            await store.adjust([slot], actuals[i] - estimate, T)
            overshoot += max(0, actuals[i] - estimate)
            return actuals[i]

        tasks = [asyncio.ensure_future(request(i)) for i in range(len(actuals))]
        await asyncio.sleep(0)  # every request waits for its wave
        started[0].set()
        served = await asyncio.gather(*tasks)
        total = sum(served)
        assert (await clients[0].usage([slot], T))[0] == total
        assert total <= 2000 + overshoot and worst <= 2000
        assert sum(1 for a in served if a) > 2000 // estimate  # refunds were reused
        if not underestimates:
            assert overshoot == 0 and total <= 2000
        for c in clients:
            await c.close()

    run(body)


# --- Redis specifics -------------------------------------------------------------------------

def test_redis_keys_outlive_their_window_by_one_window(redis_server: RedisServer) -> None:
    """At T the per-second window has 750 ms left, the minute 19.75 s, the hour 799.75 s: each
    count lives that long plus one window, so late operations on the window still find it."""
    async def body() -> None:
        store = RedisStore(redis_server.url, prefix="ttl:")
        raw = Redis.from_url(redis_server.url)
        await store.reserve([SEC, MIN], 1, T)
        await store.adjust([Slot("d", 3600, 5)], 2, T)
        ttls = [await raw.pttl(f"ttl:{k}") for k in ("a#1000000", "b#16666", "d#277")]
        assert 1_650 < ttls[0] <= 1_750 and 79_650 < ttls[1] <= 79_750 and 4_399_650 < ttls[2] <= 4_399_750
        await store.adjust([MIN], -1, T)
        assert 79_650 < await raw.pttl("ttl:b#16666") <= 79_750  # a refund keeps the TTL
        await raw.aclose()
        await store.close()

    run(body)


def test_a_late_reservation_still_finds_its_windows_count(redis_server: RedisServer) -> None:
    """A reservation computed in a window but applied 1.2 s later (a stalled event loop) is
    checked against that window's count, not against a count started over from 0 (the count
    once expired one window after its first write, and the late one overshot the limit)."""
    async def body() -> None:
        store = RedisStore(redis_server.url, prefix=f"late{uuid.uuid4().hex[:6]}:")
        assert (await store.reserve([SEC], SEC.limit, T)).allowed  # the window is full
        await asyncio.sleep(1.2)
        late = await store.reserve([SEC], 1, T)
        assert not late.allowed and late.remaining == (0,)
        await store.close()

    run(body)


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """Accepts connections and never answers."""
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@pytest.mark.parametrize("mode", [FailureMode.OPEN, FailureMode.CLOSED])
@pytest.mark.parametrize("cause", ["refused", "timeout"])
def test_redis_failure_mode(mode: FailureMode, cause: str, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with silent_server() as silent:
            port = silent if cause == "timeout" else free_port()
            store = RedisStore(f"redis://127.0.0.1:{port}/0", failure_mode=mode, timeout_s=0.1)
            started = time.monotonic()
            d = await store.reserve([SEC, MIN], 1, T)
            await store.adjust([SEC], -1, T)
            d2 = await store.reserve([SEC], 1, T)
            elapsed = time.monotonic() - started
            assert d == d2
            assert (d.allowed, d.degraded, d.remaining) == (mode is FailureMode.OPEN, True, ())
            assert d.retry_after_s == (0.0 if mode is FailureMode.OPEN else 1.0)
            assert store.failures == 3 and store.last_error
            assert elapsed < 2.0
            await store.close()

    with caplog.at_level(logging.WARNING, logger="interlock.limits"):
        run(body)
    warnings = [r.getMessage() for r in caplog.records if r.name == "interlock.limits"]
    assert len(warnings) == 1 and warnings[0].startswith("redis reserve failed (") and \
        warnings[0].endswith(f"; failing {mode.value} until it answers again")


def test_redis_recovery_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()

    async def body() -> None:
        store = RedisStore(f"redis://127.0.0.1:{port}/0", failure_mode="closed", timeout_s=0.2)
        assert not (await store.reserve([SEC], 1, T)).allowed
        server = RedisServer(port)
        try:
            d = await store.reserve([SEC], 1, T)
            assert d.allowed and not d.degraded and store.failures == 1
        finally:
            await store.close()
            server.stop()

    with caplog.at_level(logging.WARNING, logger="interlock.limits"):
        run(body)
    assert [r.getMessage() for r in caplog.records if r.name == "interlock.limits"][-1] == \
        "redis answers again (1 failed operations so far)"


# --- three processes, one budget -------------------------------------------------------------

WORKER = r"""
import asyncio, json, random, sys, time
from extproc.limits import Charge, Limit, Limiter, LimitTable, Per, RedisStore, Settlement, Unit

cfg = json.loads(sys.argv[1])

async def main():
    store = RedisStore(cfg["url"], prefix=cfg["prefix"], timeout_s=2.0)
    table = LimitTable([Limit({"tenant": "acme"}, Unit.TOKENS, Per.SECOND, cfg["limit"])])
    limiter = Limiter(store, lambda: table)
    rng = random.Random(cfg["seed"])
    fields = {"tenant": "acme", "model": "m"}
    accepted, refused = [], 0

    async def request(actual):
        nonlocal refused
        verdict = await limiter.admit([Charge(fields, Unit.TOKENS, cfg["estimate"])])
        if not verdict.allowed:
            refused += 1
            return
        reservation = verdict.reservations[Unit.TOKENS]
        await asyncio.sleep(cfg["hold_s"])  # the response streams
        await limiter.settle([Settlement(fields, Unit.TOKENS, reservation, actual)])
        accepted.append([int(reservation.at), actual])

    tasks = []
    for k in range(cfg["attempts"]):
        delay = cfg["start"] + k / cfg["rate"] - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(request(rng.randint(cfg["estimate"] // 2, cfg["estimate"]))))
    await asyncio.gather(*tasks)
    print(json.dumps({"accepted": accepted, "refused": refused, "failures": store.failures}))
    await store.close()

asyncio.run(main())
"""


def test_three_processes_share_one_budget(redis_server: RedisServer) -> None:
    """3 OS processes, each with its own RedisStore client, offer a fixed load of token
    reservations (400 each, 150/s per process: 6× the limit) and true-ups (200–400 actual) for
    two one-second windows. Per window, the accepted actual tokens are within 5 % of the limit,
    and never above it (the actual never exceeds the estimate)."""
    limit, windows, rate = 30_000, 2, 150
    start = math.ceil(time.time() + 1.0)
    base = {"url": redis_server.url, "prefix": f"p{uuid.uuid4().hex[:8]}:", "limit": limit, "estimate": 400,
            "hold_s": 0.02, "rate": rate, "attempts": rate * windows, "start": start}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, json.dumps({**base, "seed": i})], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(3)]
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=start - time.time() + windows + 20)
            assert p.returncode == 0, err.decode()
            outputs.append(json.loads(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [o["failures"] for o in outputs] == [0, 0, 0]
    assert all(o["accepted"] and o["refused"] for o in outputs), [(len(o["accepted"]), o["refused"]) for o in outputs]
    per_window = {w: 0 for w in range(start, start + windows)}
    for o in outputs:
        for window, actual in o["accepted"]:
            assert window in per_window
            per_window[window] += actual
    for window, total in per_window.items():
        assert 0.95 * limit <= total <= limit, (window, total)
