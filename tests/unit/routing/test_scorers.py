"""Pricing, scorers and constraint checks: tables of raw estimates and the [0, 1] scores they give."""

from __future__ import annotations

from typing import Any

import pytest

from routing import (
    BestQualityPolicy,
    CheapestPolicy,
    ConstraintFailure,
    Deployment,
    LastNLatencyPolicy,
    LatencyEstimate,
    ObjectivePolicy,
    RoundRobinPolicy,
    RouteRequest,
    Scores,
    Snapshot,
    WeightedPolicy,
    expected_cost_usd,
    expected_output_tokens,
)
from routing.scorers import constraint_failures, ratio_scores, score_all, ttft_quantile_of, weights


def dep(id: str, **kw: Any) -> Deployment:
    kw.setdefault("model", id.split("@")[0])
    kw.setdefault("provider", id.split("@")[1])
    return Deployment(id=id, **kw)


@pytest.mark.parametrize(("values", "scores"), [
    ([1.0], [1.0]),
    ([1.0, 2.0, 4.0], [1.0, 0.5, 0.25]),
    ([3.0, 3.0], [1.0, 1.0]),
    ([0.0, 2.0], [1.0, 0.0]),
    ([0.0, 0.0], [1.0, 1.0]),
    ([5.0, 1.0], [0.2, 1.0]),
])
def test_ratio_scores(values: list[float], scores: list[float]) -> None:
    assert ratio_scores(values) == pytest.approx(scores)


@pytest.mark.parametrize(("max_out", "request_max", "expected_out", "learned", "tokens"), [
    (65536, None, None, None, 256.0),  # the default prior, not a fraction of a large cap
    (4096, 100, None, None, 100.0),    # ... capped by the client's max_tokens
    (4096, None, 300, None, 300.0),    # the deployment's configured expectation
    (4096, 200, 300, None, 200.0),     # ... never above the cap
    (4096, None, 300, 700.0, 700.0),   # what its answers taught wins
    (4096, 500, None, 700.0, 500.0),   # ... capped by the client's max_tokens
    (512, None, None, 700.0, 512.0),   # ... and by the deployment's own cap
    (4096, 1, None, None, 1.0),
])
def test_expected_output_tokens(max_out: int, request_max: int | None, expected_out: int | None,
                                learned: float | None, tokens: float) -> None:
    d = dep("m@p", max_output_tokens=max_out, expected_output_tokens=expected_out)
    assert expected_output_tokens(d, request_max, learned) == tokens


def test_a_request_without_max_tokens_is_priced_by_learned_lengths_not_by_the_cap() -> None:
    """A model with a large output cap is not the dearest for a request without max_tokens: the cap
    says nothing about the answer (the demo's `auto` misrouted 49 of 50 such requests)."""
    big_cap = dep("flash@g", input_per_mtok=0.3, output_per_mtok=2.5, max_output_tokens=65536)
    small_cap = dep("haiku@a", input_per_mtok=1.0, output_per_mtok=5.0, max_output_tokens=8192)
    r = RouteRequest(est_input_tokens=500, now=0.0)
    snap = Snapshot(0.0, output_tokens={"flash@g": 300.0, "haiku@a": 300.0})
    costs = [s.cost_usd for s in score_all(r, [big_cap, small_cap], snap, CheapestPolicy())]
    assert costs == pytest.approx([(0.3 * 500 + 2.5 * 300) / 1e6, (1.0 * 500 + 5.0 * 300) / 1e6])
    assert costs[0] < costs[1]
    # a model whose answers are three times longer costs three times as much output
    snap = Snapshot(0.0, output_tokens={"flash@g": 900.0, "haiku@a": 300.0})
    assert score_all(r, [big_cap], snap, CheapestPolicy())[0].output_tokens == 900.0


@pytest.mark.parametrize(("inp", "out", "est_in", "request_max", "usd"), [
    (1.0, 5.0, 1_000_000, 0, 1.0),
    (1.0, 5.0, 0, 4000, 5.0 * 256 / 1e6),  # the default answer length prior, under the client's cap
    (3.0, 15.0, 2000, 1024, 3.0 * 2000 / 1e6 + 15.0 * 256 / 1e6),
    (0.0, 0.0, 2000, 1024, 0.0),
])
def test_expected_cost(inp: float, out: float, est_in: int, request_max: int, usd: float) -> None:
    d = dep("m@p", input_per_mtok=inp, output_per_mtok=out)
    r = RouteRequest(est_input_tokens=est_in, max_output_tokens=request_max, now=0.0)
    assert expected_cost_usd(r, d) == pytest.approx(usd)


CHEAP = dep("cheap@a", input_per_mtok=1.0, output_per_mtok=4.0, quality=0.6)
MID = dep("mid@b", input_per_mtok=2.0, output_per_mtok=8.0, quality=0.8)
DEAR = dep("dear@c", input_per_mtok=4.0, output_per_mtok=16.0, quality=0.95)
SNAP = Snapshot(0.0, estimates={
    "cheap@a": LatencyEstimate.of({0.5: 2.0, 0.9: 4.0}, 0.01, recent_ttfts_s=(3.0, 1.0)),
    "mid@b": LatencyEstimate.of({0.5: 0.5, 0.9: 0.7}, 0.01, recent_ttfts_s=(0.5,)),
    "dear@c": LatencyEstimate.of({0.5: 1.0, 0.9: 1.5}, 0.02),
}, output_default=100.0)
REQ = RouteRequest(est_input_tokens=1000, max_output_tokens=400, now=10.0)  # 100 expected output tokens (learned)


def test_score_all_raw_estimates_and_scores() -> None:
    s = score_all(REQ, [CHEAP, MID, DEAR], SNAP, ObjectivePolicy(minimize="cost"))
    assert [x.cost_usd for x in s] == pytest.approx([0.0014, 0.0028, 0.0056])
    assert [x.latency_s for x in s] == pytest.approx([3.0, 1.5, 3.0])
    assert [x.ttft_s for x in s] == pytest.approx([4.0, 0.7, 1.5])
    assert [x.cost for x in s] == pytest.approx([1.0, 0.5, 0.25])
    assert [x.latency for x in s] == pytest.approx([0.5, 1.0, 0.5])
    assert [x.quality for x in s] == [0.6, 0.8, 0.95]
    assert [x.total for x in s] == pytest.approx([1.0, 0.5, 0.25])
    assert all(0.0 <= v <= 1.0 for x in s for v in x[:4])


def test_unknown_deployment_reads_the_prior() -> None:
    s = score_all(REQ, [dep("new@z")], SNAP, ObjectivePolicy(minimize="latency"))
    assert s[0].latency_s == pytest.approx(1.0 + 100 * 0.02) and s[0].ttft_s == 1.0


@pytest.mark.parametrize(("policy", "totals"), [
    (ObjectivePolicy(minimize="cost"), [1.0, 0.5, 0.25]),
    (ObjectivePolicy(minimize="latency"), [0.5, 1.0, 0.5]),
    (ObjectivePolicy(maximize="quality"), [0.6, 0.8, 0.95]),
    (WeightedPolicy(cost=1, latency=1, quality=2), [(1.0 + 0.5 + 1.2) / 4, (0.5 + 1.0 + 1.6) / 4, (0.25 + 0.5 + 1.9) / 4]),
    (WeightedPolicy(cost=0, latency=0, quality=1), [0.6, 0.8, 0.95]),
    (CheapestPolicy(), [1.0, 0.5, 0.25]),
    (BestQualityPolicy(), [0.6, 0.8, 0.95]),
    (RoundRobinPolicy(), [1.0, 1.0, 1.0]),
    # last-n means: 2.0, 0.5, 0.0 (no samples counts as zero, as in LiteLLM)
    (LastNLatencyPolicy(), [0.0, 0.0, 1.0]),
    (LastNLatencyPolicy(n=1), [0.0, 0.0, 1.0]),
])
def test_totals_per_policy(policy: Any, totals: list[float]) -> None:
    assert [x.total for x in score_all(REQ, [CHEAP, MID, DEAR], SNAP, policy)] == pytest.approx(totals)


def test_last_n_uses_only_the_last_n_samples() -> None:
    snap = Snapshot(0.0, estimates={"cheap@a": LatencyEstimate.of(1.0, 0.01, recent_ttfts_s=(9.0, 1.0)),
                                    "mid@b": LatencyEstimate.of(1.0, 0.01, recent_ttfts_s=(2.0, 2.0))})
    ten, one = LastNLatencyPolicy(n=10), LastNLatencyPolicy(n=1)
    assert [x.total for x in score_all(REQ, [CHEAP, MID], snap, ten)] == pytest.approx([0.4, 1.0])
    assert [x.total for x in score_all(REQ, [CHEAP, MID], snap, one)] == pytest.approx([1.0, 0.5])


@pytest.mark.parametrize(("policy", "w"), [
    (ObjectivePolicy(minimize="cost"), (1.0, 0.0, 0.0)),
    (ObjectivePolicy(minimize="latency"), (0.0, 1.0, 0.0)),
    (ObjectivePolicy(maximize="quality"), (0.0, 0.0, 1.0)),
    (WeightedPolicy(cost=2, latency=1, quality=1), (0.5, 0.25, 0.25)),
    (RoundRobinPolicy(), (0.0, 0.0, 0.0)),
])
def test_weights(policy: Any, w: tuple[float, float, float]) -> None:
    assert weights(policy) == pytest.approx(w)


def test_constraint_quantile() -> None:
    assert ttft_quantile_of(ObjectivePolicy(minimize="cost", ttft_quantile=0.99)) == 0.99
    assert ttft_quantile_of(CheapestPolicy()) == 0.5
    s = score_all(REQ, [CHEAP], SNAP, ObjectivePolicy(minimize="cost", ttft_quantile=0.9))
    assert s[0].ttft_s == 4.0


def sc(ttft_s: float) -> Scores:
    return Scores(1.0, 1.0, 1.0, 1.0, 0.0, 1.0, ttft_s)


@pytest.mark.parametrize(("policy", "quality", "ttft_s", "failures"), [
    (ObjectivePolicy(minimize="cost", max_ttft_ms=800, min_quality=0.8), 0.8, 0.8, ()),
    (ObjectivePolicy(minimize="cost", max_ttft_ms=800, min_quality=0.8), 0.8, 0.801, ("ttft p90 801 ms > 800 ms",)),
    (ObjectivePolicy(minimize="cost", max_ttft_ms=800, min_quality=0.8), 0.79, 0.5, ("quality 0.79 < 0.8",)),
    (ObjectivePolicy(minimize="cost", max_ttft_ms=800, min_quality=0.8), 0.5, 2.0,
     ("ttft p90 2000 ms > 800 ms", "quality 0.5 < 0.8")),
    (ObjectivePolicy(minimize="cost", max_ttft_ms=500, ttft_quantile=0.99), 0.1, 0.6, ("ttft p99 600 ms > 500 ms",)),
    (ObjectivePolicy(minimize="cost"), 0.0, 100.0, ()),
    (WeightedPolicy(min_quality=0.9), 0.8, 0.1, ("quality 0.8 < 0.9",)),
    (CheapestPolicy(), 0.0, 100.0, ()),
])
def test_constraint_failures(policy: Any, quality: float, ttft_s: float, failures: tuple[str, ...]) -> None:
    (found,) = constraint_failures(policy, [dep("m@p", quality=quality)], [sc(ttft_s)])
    assert tuple(map(str, found)) == failures


def test_constraint_failures_are_structured() -> None:
    p = ObjectivePolicy(minimize="cost", max_ttft_ms=800, min_quality=0.8)
    found = constraint_failures(p, [dep("a@p", quality=0.9), dep("b@p", quality=0.5)], [sc(0.5), sc(1.25)])
    assert found == [(), (ConstraintFailure("ttft_p90", 1.25, 0.8), ConstraintFailure("quality", 0.5, 0.8))]
    assert str(ConstraintFailure("ttft_p99.9", 0.9004, 0.25)) == "ttft p99.9 900 ms > 250 ms"
