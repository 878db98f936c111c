"""Endpoint picking in a self-hosted pool (`routing.pool`): pure, table-driven."""

from __future__ import annotations

import math
import zlib

import pytest

from routing.pool import (
    EndpointLoad,
    InFlight,
    Limits,
    PrefixTable,
    RoundRobin,
    pick,
    pool_load,
    prefix_hashes,
    saturated,
)

A, B, C = "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"


def ep(address: str, waiting: int = 0, running: int = 0, kv: float = 0.0, age: float = 0.01,
       down: bool = False) -> EndpointLoad:
    return EndpointLoad(address, waiting, running, kv, age, down)


@pytest.mark.parametrize(("endpoints", "first"), [
    ([ep(A, waiting=3), ep(B, waiting=1), ep(C, waiting=2)], B),  # shortest queue
    ([ep(A, kv=0.7), ep(B, kv=0.2), ep(C, kv=0.5)], B),  # least KV cache in use
    ([ep(A, waiting=1, kv=0.1), ep(B, waiting=0, kv=0.8), ep(C, waiting=1, kv=0.2)], B),  # queue weighs more
    ([ep(A, waiting=9), ep(B, kv=0.95), ep(C, waiting=4, kv=0.5)], C),  # A, B saturated
    ([ep(A, age=0.5), ep(B, waiting=4, kv=0.6), ep(C, waiting=4, kv=0.7)], B),  # A stale → saturated
    ([ep(A, down=True), ep(B, waiting=2), ep(C, waiting=3)], B),  # A down: never listed
])
def test_load_aware_picks_the_least_loaded(endpoints: list[EndpointLoad], first: str) -> None:
    p = pick(endpoints, "load-aware", InFlight())
    assert p.addresses[0] == first and p.how == "load-aware" and not p.fallback
    assert set(p.addresses) == {e.address for e in endpoints if not e.down}


def test_in_flight_tokens_spread_requests_between_scrapes() -> None:
    endpoints = [ep(A), ep(B), ep(C)]
    inflight = InFlight()
    firsts = []
    for _ in range(3):
        p = pick(endpoints, "load-aware", inflight)
        inflight.add(p.addresses[0], 2000)
        firsts.append(p.addresses[0])
    assert sorted(firsts) == [A, B, C]
    inflight.done(A, 2000)
    assert pick(endpoints, "load-aware", inflight).addresses[0] == A


def test_a_prefix_stays_on_its_endpoint_until_it_saturates() -> None:
    table = PrefixTable()
    prompt = b"system: you are a lawyer. " * 100
    hashes = prefix_hashes(prompt + b"question one")
    first = pick([ep(A), ep(B), ep(C)], "load-aware", InFlight(), table, hashes)
    assert first.addresses[0] == A and first.how == "load-aware"
    same = prefix_hashes(prompt + b"another question entirely")
    busier = [ep(A, waiting=2, kv=0.6), ep(B), ep(C)]
    stay = pick(busier, "load-aware", InFlight(), table, same)
    assert stay.addresses[0] == A and stay.how == "prefix"
    assert pick(busier, "load-aware", InFlight(), table, prefix_hashes(b"x" * 4096)).addresses[0] == B
    full = [ep(A, waiting=5), ep(B, waiting=1), ep(C)]
    moved = pick(full, "load-aware", InFlight(), table, same)
    assert moved.addresses[0] == C and moved.how == "load-aware"
    assert pick([ep(A), ep(B, waiting=1), ep(C, waiting=1)], "load-aware", InFlight(), table,
                same).addresses[0] == C  # it stays on its new home


def test_prefix_hashes_share_exactly_the_shared_blocks() -> None:
    a = prefix_hashes(b"a" * 1024 + b"b" * 512)  # 6 blocks: hashes of the first 1, 2, 4 and 6
    b = prefix_hashes(b"a" * 1024 + b"c" * 512)
    assert len(a) == len(b) == 4 and a[:3] == b[:3] and a[3] != b[3]
    assert prefix_hashes(b"a" * 1024 + b"b" * 512 + b"tail") == a  # a partial block is not hashed
    assert prefix_hashes(b"short") == ()
    assert [h >> 32 for h in prefix_hashes(b"z" * 10**6)] == [1, 2, 4, 8, 16, 32, 64, 128]
    assert prefix_hashes(b"xy" * 1000)[-1] & 0xFFFFFFFF == zlib.crc32(b"xy" * 896)  # chained = whole


def test_no_fresh_metrics_falls_back_to_least_request() -> None:
    inflight = InFlight()
    inflight.add(A, 10)
    inflight.add(A, 10)
    inflight.add(B, 10)
    stale = [ep(A, age=1.0), ep(B, age=1.0), ep(C, age=math.inf), ep("10.0.0.4:8000", down=True)]
    p = pick(stale, "load-aware", inflight)
    assert p.addresses == (C, B, A) and p.fallback and p.how == "least-request"


def test_nothing_up_is_an_empty_pick() -> None:
    p = pick([ep(A, down=True), ep(B, down=True)], "load-aware", InFlight())
    assert p.addresses == () and not p.fallback
    assert pick([], "round-robin", InFlight(), rr=RoundRobin()).addresses == ()


def test_round_robin_rotates_whatever_the_load() -> None:
    rr = RoundRobin()
    endpoints = [ep(A, waiting=50), ep(B), ep(C)]
    firsts = [pick(endpoints, "round-robin", InFlight(), rr=rr).addresses[0] for _ in range(6)]
    assert firsts == [A, B, C, A, B, C]


def test_the_subset_hint_limits_the_choice() -> None:
    p = pick([ep(A), ep(B, waiting=3), ep(C)], "load-aware", InFlight(), subset=frozenset({B}))
    assert p.addresses == (B,)


def test_saturation_and_pool_load() -> None:
    limits = Limits(stale_after_s=0.2)
    assert saturated(ep(A, waiting=5), limits) and saturated(ep(A, kv=0.9), limits)
    assert saturated(ep(A, age=0.3), limits) and not saturated(ep(A, waiting=4, kv=0.89), limits)
    load = pool_load([ep(A, waiting=2, running=8), ep(B, running=4, kv=0.5), ep(C, age=5.0), ep("d:1", down=True)],
                     limits)
    assert load.utilization == pytest.approx(0.75)  # A queued (1.0), B 0.5; C stale, D down: not ready
    assert (load.waiting, load.running, load.ready, load.endpoints, load.stale) == (2, 12, 2, 4, False)
    empty = pool_load([ep(A, age=1.0)], limits)
    assert empty.stale and empty.utilization == 1.0 and empty.ready == 0
