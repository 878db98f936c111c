"""Scorers: each eligible deployment gets a cost, a latency and a quality score in [0, 1] (higher is better)
and a policy total, plus the constraint checks.

| scorer  | raw estimate                                                  | score                          |
|---------|---------------------------------------------------------------|--------------------------------|
| cost    | expected cost, USD (`routing.pricing`, with the learned answer| cheapest eligible / this one   |
|         | length of `routing.lengths` from the snapshot)                |                                |
| latency | TTFT p50 + expected output tokens × TPOT p50, seconds         | fastest eligible / this one    |
| quality | the deployment's quality                                      | the same                       |

Ratios to the best eligible make the scores scale-free: a deployment twice as expensive as the cheapest
scores 0.5, so a tolerance of 0.1 in score terms means "about 11 % worse". A zero raw cost scores 1 and
makes every non-zero one score 0. The total is the policy's objective score (cost, latency or quality),
the weighted mean of the three for a weighted policy, the last-n ratio for the last-n baseline, and 1 for
round-robin. Pure functions; `score_all` is the hot path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from routing.model import ConstraintFailure, Deployment, RouteRequest, Scores
from routing.policy import (
    CONSTRAINED,
    BestQualityPolicy,
    CheapestPolicy,
    LastNLatencyPolicy,
    ObjectivePolicy,
    Policy,
    WeightedPolicy,
)
from routing.pricing import cost_usd, expected_output_tokens
from routing.snapshot import LatencyEstimate, Snapshot


def ratio_scores(values: Sequence[float]) -> list[float]:
    """Lower-is-better raw values → min(values) / value, in [0, 1]; zero values score 1, and make every
    positive value score 0."""
    lo = min(values)
    if lo <= 0.0:
        return [1.0 if v <= 0.0 else 0.0 for v in values]
    return [lo / v for v in values]


def expected_latency_s(estimate: LatencyEstimate, expected_output_tokens: float) -> float:
    """Expected duration of a request, seconds: median TTFT + expected output tokens × median TPOT."""
    return estimate.ttft_p50_s + expected_output_tokens * estimate.tpot_p50_s


def weights(policy: Policy) -> tuple[float, float, float]:
    """(cost, latency, quality) weights of the policy's total, summing to 1 (all 0 for round-robin)."""
    if isinstance(policy, ObjectivePolicy):
        o = policy.objective
        return (1.0 if o == "cost" else 0.0, 1.0 if o == "latency" else 0.0, 1.0 if o == "quality" else 0.0)
    if isinstance(policy, WeightedPolicy):
        t = policy.cost + policy.latency + policy.quality
        return (policy.cost / t, policy.latency / t, policy.quality / t)
    if isinstance(policy, CheapestPolicy):
        return (1.0, 0.0, 0.0)
    if isinstance(policy, BestQualityPolicy):
        return (0.0, 0.0, 1.0)
    return (0.0, 0.0, 0.0)


def ttft_quantile_of(policy: Policy) -> float:
    """The TTFT quantile the policy's constraint reads (0.5 when it has none)."""
    return policy.ttft_quantile if isinstance(policy, CONSTRAINED) else 0.5


def last_n_means(eligible: Sequence[Deployment], snapshot: Snapshot, n: int) -> list[float]:
    """Mean of each deployment's last `n` TTFT samples, seconds; 0.0 without samples (as LiteLLM does,
    so that a new deployment is tried first)."""
    out = []
    for d in eligible:
        recent = snapshot.estimate(d.id).recent_ttfts_s[-n:]
        out.append(sum(recent) / len(recent) if recent else 0.0)
    return out


def answer_lengths(eligible: Sequence[Deployment], snapshot: Snapshot) -> list[float]:
    """Each deployment's expected answer length, uncapped: learned (`snapshot.output_tokens`), else its
    configured `expected_output_tokens`, else the mean of the others' learned ones (a route's prompts
    set the length more than its models do), else `snapshot.output_default`."""
    learned = snapshot.output_tokens
    known = [learned[d.id] for d in eligible if d.id in learned]
    default = sum(known) / len(known) if known else snapshot.output_default
    return [learned.get(d.id, default if d.expected_output_tokens is None else float(d.expected_output_tokens))
            for d in eligible]


def score_all(request: RouteRequest, eligible: Sequence[Deployment], snapshot: Snapshot,
              policy: Policy) -> list[Scores]:
    """Scores of every eligible deployment (non-empty), aligned with `eligible`."""
    q = ttft_quantile_of(policy)
    est_in = request.est_input_tokens
    max_out = request.max_output_tokens
    get = snapshot.estimates.get
    prior = snapshot.prior
    lengths = answer_lengths(eligible, snapshot)
    costs = []
    lats = []
    ttfts = []
    outs = []
    for d, length in zip(eligible, lengths, strict=True):
        e = get(d.id, prior)
        exp_out = expected_output_tokens(d, max_out, length)
        outs.append(exp_out)
        costs.append(cost_usd(d, est_in, exp_out))
        lats.append(e.ttft_p50_s + exp_out * e.tpot_p50_s)
        t = e.ttft_s.get(q)
        ttfts.append(e.ttft_quantile(q) if t is None else t)
    cs = ratio_scores(costs)
    ls = ratio_scores(lats)
    wc, wl, wq = weights(policy)
    if isinstance(policy, LastNLatencyPolicy):
        totals = ratio_scores(last_n_means(eligible, snapshot, policy.n))
    elif wc == wl == wq == 0.0:
        totals = [1.0] * len(eligible)
    else:
        totals = [wc * c + wl * lt + wq * d.quality for c, lt, d in zip(cs, ls, eligible, strict=True)]
    new = tuple.__new__
    return [new(Scores, (cs[i], ls[i], d.quality, totals[i], costs[i], lats[i], ttfts[i], outs[i]))  # type: ignore[misc]
            for i, d in enumerate(eligible)]


def constraint_failures(policy: Policy, eligible: Sequence[Deployment],
                        scores: Sequence[Scores]) -> list[tuple[ConstraintFailure, ...]]:
    """The policy constraints each deployment breaks, aligned with `eligible`; () for one meeting all."""
    n = len(eligible)
    if not isinstance(policy, CONSTRAINED):
        return [()] * n
    max_ms, min_q = policy.max_ttft_ms, policy.min_quality
    if max_ms is None and min_q is None:
        return [()] * n
    name = f"ttft_p{policy.ttft_quantile * 100:g}"
    limit_s = math.inf if max_ms is None else max_ms / 1000.0
    floor = -1.0 if min_q is None else min_q
    out: list[tuple[ConstraintFailure, ...]] = []
    for d, s in zip(eligible, scores, strict=True):
        slow = s.ttft_s > limit_s
        poor = d.quality < floor
        if not (slow or poor):
            out.append(())
        elif slow and poor:
            out.append((ConstraintFailure(name, s.ttft_s, limit_s), ConstraintFailure("quality", d.quality, floor)))
        elif slow:
            out.append((ConstraintFailure(name, s.ttft_s, limit_s),))
        else:
            out.append((ConstraintFailure("quality", d.quality, floor),))
    return out
