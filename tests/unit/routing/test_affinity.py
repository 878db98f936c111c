"""Rendezvous hashing: stable, order-independent, spreading, and minimally disrupted by membership
changes; then affinity inside `decide`: same key → same deployment across independent decisions, and
yielding when the deployment leaves the policy or cools down."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import pytest

from routing import (
    CheapestPolicy,
    ConstraintFailure,
    Deployment,
    LatencyEstimate,
    LatencyStats,
    ObjectivePolicy,
    RouteRequest,
    Snapshot,
    Unavailable,
    decide,
    rendezvous,
)
from routing.affinity import key_hash, weight


def dep(id: str, **kw: Any) -> Deployment:
    kw.setdefault("model", id.split("@")[0])
    kw.setdefault("provider", id.split("@")[1].split("#")[0])
    kw.setdefault("input_per_mtok", 1.0)
    kw.setdefault("output_per_mtok", 4.0)
    kw.setdefault("quality", 0.8)
    return Deployment(id=id, **kw)


POOL = [dep(f"m@p{i}#0") for i in range(5)]
KEYS = [hashlib.sha256(f"prefix {i}".encode()).digest() for i in range(2000)]


def test_known_values_are_stable_across_processes() -> None:
    # Pinned: a change here would remap every key of every running replica at once.
    assert key_hash(b"prefix") == 0x82B93A7C4D34DBB0
    assert weight(key_hash(b"prefix"), POOL[0]) == 0x628638EFB99BEFF8
    assert rendezvous(b"prefix", POOL).id == "m@p3#0"
    assert POOL[0].salt == int.from_bytes(hashlib.blake2b(b"m@p0#0", digest_size=8).digest(), "big")
    assert rendezvous(b"prefix", POOL).id == rendezvous(b"prefix", list(reversed(POOL))).id


def test_weights_are_64_bit_and_differ_by_deployment() -> None:
    h = key_hash(b"k")
    ws = [weight(h, d) for d in POOL]
    assert len(set(ws)) == 5 and all(0 <= w < 2**64 for w in ws)


def test_keys_spread_evenly() -> None:
    counts = Counter(rendezvous(k, POOL).id for k in KEYS)
    assert len(counts) == 5
    assert all(320 <= c <= 480 for c in counts.values()), counts


def test_removing_a_deployment_moves_only_its_keys() -> None:
    before = {k: rendezvous(k, POOL).id for k in KEYS}
    gone = POOL[2].id
    after = {k: rendezvous(k, [d for d in POOL if d.id != gone]).id for k in KEYS}
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == gone}


def test_adding_a_deployment_takes_only_keys_it_wins() -> None:
    new = dep("m@p9#0")
    before = {k: rendezvous(k, POOL).id for k in KEYS}
    after = {k: rendezvous(k, [*POOL, new]).id for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == new.id for k in moved)
    assert 250 <= len(moved) <= 420  # about 1/6 of the keys


# ---- affinity in decide -----------------------------------------------------------------------------

FLEET = [dep("m@a#0"), dep("m@b#0"), dep("m@c#0", input_per_mtok=1.05, output_per_mtok=4.2),
         dep("m@d#0", input_per_mtok=3.0, output_per_mtok=12.0)]
FAST = LatencyEstimate.of({0.5: 0.3, 0.9: 0.5}, 0.01, last_observed=99.0)
SNAP = Snapshot(100.0, estimates={d.id: FAST for d in FLEET})
POLICY = ObjectivePolicy(minimize="cost", max_ttft_ms=800)


def req(key: bytes | None, now: float = 100.0) -> RouteRequest:
    return RouteRequest(est_input_tokens=3000, max_output_tokens=500, affinity_key=key, now=now)


def test_same_key_same_deployment_across_independent_decisions() -> None:
    for k in KEYS[:50]:
        first = decide(req(k), FLEET, POLICY, SNAP, rand=0.9)
        assert first.explanation.chosen_by == "affinity"
        assert set(first.explanation.affinity_pool) == {"m@a#0", "m@b#0", "m@c#0"}  # d is 3× the cost
        for rand, rr in [(0.3, 7), (0.99, 0)]:
            again = decide(req(k), list(reversed(FLEET)), POLICY, SNAP, rr_counter=rr, rand=rand)
            assert again.primary == first.primary
        # another worker with its own statistics, as long as the same deployments stay in the policy
        other = LatencyStats()
        for d in FLEET:
            other.observe(d.id, 0.25, 0.01, 90.0)
        assert decide(req(k), FLEET, POLICY, other.snapshot(100.0)).primary == first.primary


def test_different_keys_spread_over_the_pool_within_tolerance() -> None:
    counts = Counter(decide(req(k), FLEET, POLICY, SNAP).primary for k in KEYS[:600])
    assert set(counts) == {"m@a#0", "m@b#0", "m@c#0"}
    assert all(c >= 140 for c in counts.values()), counts


def test_tolerance_bounds_the_pool() -> None:
    tight = ObjectivePolicy(minimize="cost", affinity_tolerance=0.01)
    d = decide(req(KEYS[0]), FLEET, tight, SNAP)
    assert set(d.explanation.affinity_pool) == {"m@a#0", "m@b#0"}
    wide = ObjectivePolicy(minimize="cost", affinity_tolerance=1.0)
    assert len(decide(req(KEYS[0]), FLEET, wide, SNAP).explanation.affinity_pool) == 4


def key_mapping_to(target: str) -> bytes:
    return next(k for k in KEYS if decide(req(k), FLEET, POLICY, SNAP).primary == target)


def test_yields_when_the_deployment_cools_down() -> None:
    k = key_mapping_to("m@b#0")
    snap = Snapshot(100.0, estimates=SNAP.estimates, unavailable={"m@b#0": Unavailable(110.0, "1 consecutive failure")})
    d = decide(req(k), FLEET, POLICY, snap)
    assert d.primary != "m@b#0" and "m@b#0" not in d.deployments
    assert d.explanation.chosen_by == "affinity"
    assert decide(req(k, now=110.0), FLEET, POLICY, snap).primary == "m@b#0"  # back when it ends


def test_yields_when_the_deployment_breaks_a_constraint() -> None:
    k = key_mapping_to("m@b#0")
    slow = LatencyEstimate.of({0.5: 0.9, 0.9: 1.2}, 0.01, last_observed=99.0)
    snap = Snapshot(100.0, estimates={**SNAP.estimates, "m@b#0": slow})
    d = decide(req(k), FLEET, POLICY, snap)
    assert d.primary != "m@b#0"
    assert d.explanation.constraint_failures == {"m@b#0": (ConstraintFailure("ttft_p90", 1.2, 0.8),)}
    assert "m@b#0" not in d.deployments  # three others meet the constraints


def test_yields_when_the_deployment_falls_outside_the_tolerance() -> None:
    k = key_mapping_to("m@c#0")
    tight = ObjectivePolicy(minimize="cost", affinity_tolerance=0.01)
    assert decide(req(k), FLEET, tight, SNAP).primary != "m@c#0"


@pytest.mark.parametrize("policy", [ObjectivePolicy(minimize="cost", affinity=False), CheapestPolicy()])
def test_affinity_off(policy: Any) -> None:
    d = decide(req(KEYS[0]), FLEET, policy, SNAP)
    assert d.primary == "m@a#0" and d.explanation.affinity_pool == ()
    assert d.explanation.chosen_by in ("objective", "cheapest")


def test_no_key_no_affinity() -> None:
    d = decide(req(None), FLEET, POLICY, SNAP)
    assert d.primary == "m@a#0" and d.explanation.chosen_by == "objective"


def test_no_affinity_when_nothing_meets_the_constraints() -> None:
    slow = LatencyEstimate.of({0.5: 2.0, 0.9: 3.0}, 0.01, last_observed=99.0)
    snap = Snapshot(100.0, estimates={d.id: slow for d in FLEET})
    d = decide(req(KEYS[0]), FLEET, POLICY, snap)
    assert d.explanation.chosen_by == "fallback: no deployment met the constraints"
    assert d.primary == "m@a#0" and d.explanation.affinity_pool == ()
