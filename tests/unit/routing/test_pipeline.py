"""`decide` end to end over a realistic fleet: the policy examples, fallback ordering and provider
diversity, the baselines, the explanation, and purity."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from routing import (
    FALLBACK,
    NO_CANDIDATE,
    BestQualityPolicy,
    CheapestPolicy,
    ConstraintFailure,
    Deployment,
    Dropped,
    LastNLatencyPolicy,
    LatencyEstimate,
    ObjectivePolicy,
    RoundRobinPolicy,
    RouteRequest,
    Snapshot,
    Unavailable,
    WeightedPolicy,
    decide,
)


def dep(id: str, inp: float, out: float, quality: float, caps: str, **kw: Any) -> Deployment:
    model, rest = id.split("@")
    return Deployment(id=id, model=model, provider=rest.split("#")[0], input_per_mtok=inp, output_per_mtok=out,
                      quality=quality, capabilities=frozenset(caps.split()), context_window=200_000,
                      max_output_tokens=8192, **kw)


FLASH = dep("flash@google#0", 0.3, 2.5, 0.78, "tools images json")
MINI = dep("mini@openai#0", 0.4, 1.6, 0.72, "tools json")
HAIKU_A = dep("haiku@anthropic#0", 1.0, 5.0, 0.8, "tools images")
HAIKU_B = dep("haiku@bedrock#0", 1.0, 5.0, 0.8, "tools images")
GPT = dep("gpt@openai#0", 1.25, 10.0, 0.88, "tools images json reasoning")
SONNET_A = dep("sonnet@anthropic#0", 3.0, 15.0, 0.92, "tools images reasoning")
SONNET_B = dep("sonnet@bedrock#0", 3.0, 15.0, 0.92, "tools images reasoning")
FLEET = [FLASH, MINI, HAIKU_A, HAIKU_B, GPT, SONNET_A, SONNET_B]
NOW = 1000.0


def est(p50: float, p90: float, tpot: float = 0.01, age: float = 1.0, recent: tuple[float, ...] = ()) -> LatencyEstimate:
    return LatencyEstimate.of({0.5: p50, 0.9: p90}, tpot, last_observed=NOW - age, recent_ttfts_s=recent)


SNAP = Snapshot(NOW, estimates={
    FLASH.id: est(0.4, 0.6), MINI.id: est(0.5, 0.7), HAIKU_A.id: est(0.5, 0.7), HAIKU_B.id: est(0.9, 1.4),
    GPT.id: est(0.6, 1.1), SONNET_A.id: est(0.9, 1.3), SONNET_B.id: est(0.6, 0.75),
}, output_default=200.0)  # answers of 200 tokens learned (or assumed) for every deployment


def req(**kw: Any) -> RouteRequest:
    kw.setdefault("est_input_tokens", 2000)
    kw.setdefault("max_output_tokens", 800)  # 200 expected output tokens (SNAP's learned length)
    kw.setdefault("now", NOW)
    return RouteRequest(**kw)


def texts(failures: Mapping[str, tuple[ConstraintFailure, ...]]) -> dict[str, tuple[str, ...]]:
    return {k: tuple(map(str, v)) for k, v in failures.items()}


EXAMPLE = ObjectivePolicy(minimize="cost", max_ttft_ms=800, min_quality=0.8)


def test_cheapest_whose_p90_ttft_is_at_most_800_ms_and_quality_at_least_0_8() -> None:
    d = decide(req(), FLEET, EXAMPLE, SNAP)
    # meeting both: haiku@anthropic (p90 700 ms, 0.8) and sonnet@bedrock (750 ms, 0.92); then the rest by cost
    assert d.deployments == (HAIKU_A.id, SONNET_B.id, FLASH.id)
    e = d.explanation
    assert e.chosen_by == "objective" and e.dropped == {}
    assert texts(e.constraint_failures) == {
        FLASH.id: ("quality 0.78 < 0.8",),
        MINI.id: ("quality 0.72 < 0.8",),
        HAIKU_B.id: ("ttft p90 1400 ms > 800 ms",),
        GPT.id: ("ttft p90 1100 ms > 800 ms",),
        SONNET_A.id: ("ttft p90 1300 ms > 800 ms",),
    }
    assert set(e.scores) == {x.id for x in FLEET}
    assert e.scores[HAIKU_A.id].cost_usd == pytest.approx(2000 * 1e-6 + 200 * 5e-6)
    assert e.scores[FLASH.id].cost == 1.0 and e.scores[HAIKU_A.id].total == pytest.approx(0.0011 / 0.003)


def test_the_example_with_the_p99_instead() -> None:
    def e(p50: float, p99: float) -> LatencyEstimate:
        return LatencyEstimate.of({0.5: p50, 0.99: p99}, 0.01, last_observed=NOW)
    snap = Snapshot(NOW, estimates={FLASH.id: e(0.4, 0.9), MINI.id: e(0.5, 1.0), HAIKU_A.id: e(0.5, 2.0),
                                    HAIKU_B.id: e(0.9, 2.1), GPT.id: e(0.6, 1.6), SONNET_A.id: e(0.9, 1.9),
                                    SONNET_B.id: e(0.6, 1.1)})
    p99 = ObjectivePolicy(minimize="cost", max_ttft_ms=1200, ttft_quantile=0.99, min_quality=0.8)
    d = decide(req(), FLEET, p99, snap)
    assert d.primary == SONNET_B.id
    assert texts(d.explanation.constraint_failures)[HAIKU_A.id] == ("ttft p99 2000 ms > 1200 ms",)


def test_filters_shape_the_example() -> None:
    d = decide(req(needs=frozenset({"reasoning"})), FLEET, EXAMPLE, SNAP)
    assert d.deployments == (SONNET_B.id, GPT.id, SONNET_A.id)
    assert {k: v.filter for k, v in d.explanation.dropped.items()} == {
        FLASH.id: "capabilities", MINI.id: "capabilities", HAIKU_A.id: "capabilities", HAIKU_B.id: "capabilities"}
    d = decide(req(allowed_models=frozenset({"haiku", "flash"})), FLEET, EXAMPLE, SNAP)
    assert d.deployments == (HAIKU_A.id, FLASH.id, HAIKU_B.id)


def test_fallback_when_nothing_meets_the_constraints() -> None:
    strict = ObjectivePolicy(minimize="cost", max_ttft_ms=100, min_quality=0.8)
    d = decide(req(), FLEET, strict, SNAP)
    assert d.explanation.chosen_by == FALLBACK
    assert d.deployments == (FLASH.id, MINI.id, HAIKU_A.id)  # by cost, as the objective says
    assert len(d.explanation.constraint_failures) == len(FLEET)


@pytest.mark.parametrize(("policy", "expected"), [
    (ObjectivePolicy(minimize="latency"), (FLASH.id, MINI.id, HAIKU_A.id)),
    # expected latency = p50 + 200 tokens × 10 ms: gpt and sonnet@bedrock tie at 2.6 s, gpt is cheaper
    (ObjectivePolicy(minimize="latency", min_quality=0.85), (GPT.id, SONNET_B.id, SONNET_A.id)),
    (ObjectivePolicy(maximize="quality"), (SONNET_B.id, SONNET_A.id, GPT.id)),
    (ObjectivePolicy(maximize="quality", max_ttft_ms=1000), (SONNET_B.id, HAIKU_A.id, FLASH.id)),
    (WeightedPolicy(cost=1, latency=0, quality=0), (FLASH.id, MINI.id, HAIKU_A.id)),
    (WeightedPolicy(cost=0, latency=0, quality=1, min_quality=0.9), (SONNET_B.id, SONNET_A.id, GPT.id)),
    # totals: flash .853, mini .804, sonnet@bedrock .788, gpt .781, haiku@anthropic .755, ...
    (WeightedPolicy(cost=1, latency=1, quality=4), (FLASH.id, MINI.id, SONNET_B.id)),
    # meeting p90 ≤ 800 ms: sonnet@bedrock .854, flash .817, haiku@anthropic .777, mini .762
    (WeightedPolicy(cost=0.1, latency=0.1, quality=1, max_ttft_ms=800), (SONNET_B.id, FLASH.id, HAIKU_A.id)),
])
def test_objectives(policy: Any, expected: tuple[str, ...]) -> None:
    assert decide(req(), FLEET, policy, SNAP).deployments == expected


def test_first_fallback_prefers_another_provider_when_scores_tie_closely() -> None:
    a0 = dep("m@anthropic#0", 1.0, 5.0, 0.8, "")
    a1 = dep("m@anthropic#1", 1.0, 5.0, 0.8, "")
    b0 = dep("m@bedrock#0", 1.02, 5.1, 0.8, "")
    c0 = dep("m@vertex#0", 2.0, 10.0, 0.8, "")
    fast = Snapshot(NOW, estimates={x.id: est(0.3, 0.5) for x in (a0, a1, b0, c0)})
    p = ObjectivePolicy(minimize="cost", max_attempts=4)
    assert decide(req(), [a0, a1, b0, c0], p, fast).deployments == (a0.id, b0.id, a1.id, c0.id)
    # too far apart in score to count as a tie: plain objective order
    assert decide(req(), [a0, a1, c0], p, fast).deployments == (a0.id, a1.id, c0.id)
    assert decide(req(), [a0, a1, b0, c0], ObjectivePolicy(minimize="cost", diversity_tolerance=0.0,
                                                         max_attempts=4), fast).deployments == (a0.id, a1.id, b0.id, c0.id)
    # never across tiers: a constraint-meeting fallback stays ahead of a breaking one
    slow_b = Snapshot(NOW, estimates={**fast.estimates, b0.id: est(2.0, 3.0)})
    p = ObjectivePolicy(minimize="cost", max_ttft_ms=800, max_attempts=4)
    assert decide(req(), [a0, a1, b0, c0], p, slow_b).deployments == (a0.id, a1.id, c0.id, b0.id)


@pytest.mark.parametrize("attempts", [1, 2, 7, 20])
def test_max_attempts_and_distinct_ids(attempts: int) -> None:
    p = ObjectivePolicy(minimize="cost", max_attempts=attempts)
    d = decide(req(), [*FLEET, FLASH, MINI], p, SNAP)
    assert len(d.deployments) == min(attempts, len(FLEET)) and len(set(d.deployments)) == len(d.deployments)


# ---- baselines ------------------------------------------------------------------------------------------

def test_round_robin_rotates_over_the_eligible_in_candidate_order() -> None:
    r = req(needs=frozenset({"images"}))  # drops MINI
    eligible = [FLASH.id, HAIKU_A.id, HAIKU_B.id, GPT.id, SONNET_A.id, SONNET_B.id]
    for i in range(13):
        d = decide(r, FLEET, RoundRobinPolicy(), SNAP, rr_counter=i, rand=0.0)
        assert d.deployments == tuple(eligible[(i + k) % 6] for k in range(3))
        assert d.explanation.chosen_by == "round_robin" and d.explanation.constraint_failures == {}


def test_round_robin_ignores_affinity_and_exploration() -> None:
    p = RoundRobinPolicy(affinity=True, exploration=1.0)
    assert decide(req(affinity_key=b"k"), FLEET, p, SNAP, rr_counter=2, rand=0.0).primary == HAIKU_A.id


def test_cheapest_ignores_quality_and_latency() -> None:
    d = decide(req(), FLEET, CheapestPolicy(), SNAP)
    assert d.deployments == (FLASH.id, MINI.id, HAIKU_A.id) and d.explanation.chosen_by == "cheapest"


def test_best_quality_then_cheaper_then_candidate_order() -> None:
    d = decide(req(), FLEET, BestQualityPolicy(), SNAP)
    assert d.deployments == (SONNET_A.id, SONNET_B.id, GPT.id) and d.explanation.chosen_by == "best_quality"


def test_last_n_latency_lowest_mean_of_the_last_10_ttft() -> None:
    snap = Snapshot(NOW, estimates={
        FLASH.id: est(0.1, 0.1, recent=(9.0,) + (0.5,) * 10),  # the 9 s sample is the 11th newest: ignored
        MINI.id: est(0.1, 0.1, recent=(0.6,) * 10),
        HAIKU_A.id: est(0.1, 0.1, recent=(0.2, 1.0)),
    })
    d = decide(req(), [FLASH, MINI, HAIKU_A], LastNLatencyPolicy(), snap)
    assert d.deployments == (FLASH.id, MINI.id, HAIKU_A.id) and d.explanation.chosen_by == "last_n_latency"


def test_last_n_latency_tries_unseen_deployments_first_at_random() -> None:
    snap = Snapshot(NOW, estimates={FLASH.id: est(0.1, 0.1, recent=(0.5,))})
    primaries = {decide(req(), [FLASH, MINI, HAIKU_A], LastNLatencyPolicy(), snap, rand=r).primary
                 for r in (0.0, 0.49, 0.5, 0.99)}
    assert primaries == {MINI.id, HAIKU_A.id}


# ---- explanation, purity, edge cases ------------------------------------------------------------------

def test_explanation_lists_every_drop_and_score() -> None:
    snap = Snapshot(NOW, estimates=SNAP.estimates, unavailable={GPT.id: Unavailable(NOW + 4, "3 consecutive failures")})
    r = req(needs=frozenset({"images"}), allowed_models=frozenset({"flash", "gpt", "sonnet", "mini"}),
            exhausted=frozenset({SONNET_A.id}))
    d = decide(r, FLEET, EXAMPLE, snap)
    e = d.explanation
    assert e.dropped == {
        HAIKU_A.id: Dropped("allow_list", "model haiku is not in the tenant's allow-list"),
        HAIKU_B.id: Dropped("allow_list", "model haiku is not in the tenant's allow-list"),
        MINI.id: Dropped("capabilities", "lacks images"),
        SONNET_A.id: Dropped("budget", f"budget exhausted for deployment {SONNET_A.id}"),
        GPT.id: Dropped("health", "cooling down for 4.0 s (3 consecutive failures)"),
    }
    assert set(e.scores) == {FLASH.id, SONNET_B.id}
    for s in e.scores.values():
        assert all(0.0 <= v <= 1.0 for v in (s.cost, s.latency, s.quality, s.total))
    assert d.deployments == (SONNET_B.id, FLASH.id)


def test_every_candidate_dropped() -> None:
    d = decide(req(needs=frozenset({"embeddings"})), FLEET, EXAMPLE, SNAP)
    assert d.deployments == () and d.primary is None
    assert d.explanation.chosen_by == NO_CANDIDATE and len(d.explanation.dropped) == len(FLEET)
    assert decide(req(), [], EXAMPLE, SNAP).deployments == ()


@pytest.mark.parametrize("policy", [EXAMPLE, WeightedPolicy(), RoundRobinPolicy(), CheapestPolicy(),
                                    BestQualityPolicy(), LastNLatencyPolicy(),
                                    ObjectivePolicy(minimize="latency", max_ttft_ms=800, exploration=0.5)])
def test_pure_same_inputs_same_output_inputs_untouched(policy: Any) -> None:
    r = req(affinity_key=b"prefix", needs=frozenset({"tools"}))
    fleet = list(FLEET)
    snap = Snapshot(NOW, estimates=dict(SNAP.estimates), unavailable={MINI.id: Unavailable(NOW + 1, "x")})
    before = (copy.copy(r), list(fleet), copy.copy(policy), dict(snap.estimates), dict(snap.unavailable),
              {k: dict(v.ttft_s) for k, v in snap.estimates.items()})
    results = [decide(r, fleet, policy, snap, rr_counter=3, rand=0.1) for _ in range(3)]
    results.append(decide(r, tuple(fleet), policy, snap, rr_counter=3, rand=0.1))
    assert all(x == results[0] for x in results)
    assert (r, fleet, policy, dict(snap.estimates), dict(snap.unavailable),
            {k: dict(v.ttft_s) for k, v in snap.estimates.items()}) == before
