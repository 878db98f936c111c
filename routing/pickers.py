"""Pickers: order the eligible deployments and choose the primary.

All functions work on indexes into the eligible list, with `scores` and `failures` (each deployment's
broken constraints) aligned to it. Pure; randomness enters as `rand` (uniform in [0, 1)).

- `rank`: the policy's objective order. Deployments meeting the constraints come first, then the rest;
  within each tier by total score, then secondary scores (objective cost: latency then quality; latency:
  cost then quality; quality: cost then latency; weighted: cost then latency; best_quality: cost), then
  candidate order, so equal inputs always give the same order.
- `explore`: only for policies that read latency, with `policy.exploration` > 0. Cold start first: a non-best eligible
  deployment meeting the quality floor that has never been observed (it reads as its pessimistic prior,
  so it would rarely win on its own) is probed at once, `rand` picking among several, and again each
  `policy.stale_after_s` (at least `PROBE_INTERVAL_MIN_S`) while no observation of it has landed
  (`snapshot.probed`, kept by the caller's `LatencyStats.record_probe`; any request: a whole answer
  teaches the answer length and health). Otherwise, for a request whose answer teaches latency
  (`request.observes_latency`: streamed) and with probability `policy.exploration` (when `rand` < it;
  or when the caller says its turn is `due`, pacing exploration at that rate itself), the primary becomes a non-best eligible deployment meeting the
  quality floor (exploring cannot change a quality) that is due: its latency estimate is older than
  `policy.stale_after_s`, or it is demoted by latency — it breaks only the TTFT constraint, or the policy
  ranks by latency — and its estimate is older than `PROBE_AFTER_S`; and in either case no probe of it
  was sent in the last `PROBE_AFTER_S` without an answer since. This is how a deployment that was slow
  and has healed gets traffic back within seconds, at a cost bounded by the exploration rate.
  `rand / exploration` (or `rand`, when paced by the caller) then picks uniformly among them — among
  those in a slow regime (`routing.stats`), when any is: their heal is what would change decisions,
  and a deployment that is always slow would otherwise take every other probe.
- `affinity_pool` / `rendezvous`: see `routing.affinity`.
- `with_fallbacks`: the primary, then the rest in objective order, cut to `max_attempts`. If the first
  fallback would share the primary's provider while a deployment of another provider in the same tier
  scores within `diversity_tolerance` of it, that one becomes the first fallback instead (objective and
  weighted policies; baselines keep their plain order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from routing.model import ConstraintFailure, Deployment, Scores
from routing.policy import (
    CONSTRAINED,
    BestQualityPolicy,
    ObjectivePolicy,
    Policy,
    WeightedPolicy,
    uses_latency,
)
from routing.snapshot import Snapshot

_SECONDARY = {"cost": (1, 2), "latency": (0, 2), "quality": (0, 1)}


def rank(policy: Policy, scores: Sequence[Scores], failures: Sequence[tuple[ConstraintFailure, ...]]) -> list[int]:
    """Eligible indexes in objective order (see the module docstring)."""
    if isinstance(policy, ObjectivePolicy):
        a, b = _SECONDARY[policy.objective]
    elif isinstance(policy, WeightedPolicy):
        a, b = 0, 1
    elif isinstance(policy, BestQualityPolicy):
        a, b = 0, 0
    else:
        keys = [(-s[3], i) for i, s in enumerate(scores)]
        keys.sort()
        return [k[1] for k in keys]
    full = [(bool(f), -s[3], -s[a], -s[b], i) for i, (s, f) in enumerate(zip(scores, failures, strict=True))]
    full.sort()
    return [k[4] for k in full]


def last_n_tie_break(ranked: list[int], scores: Sequence[Scores], rand: float) -> list[int]:
    """LiteLLM picks at random among the deployments of equal lowest latency: `rand` picks which one
    leads; the order of the rest is unchanged."""
    top = scores[ranked[0]].total
    k = 1
    while k < len(ranked) and scores[ranked[k]].total == top:
        k += 1
    if k == 1:
        return ranked
    j = min(int(rand * k), k - 1)
    return [ranked[j], *ranked[:j], *ranked[j + 1:]]


PROBE_INTERVAL_MIN_S = 1.0
"""The shortest wait before a never-observed deployment whose probe brought no observation is probed again."""
PROBE_AFTER_S = 1.0
"""How old a latency-demoted deployment's estimate must be before it is probed, and the shortest time
between two probes of it without an answer in between."""


def _latency_demoted(policy: Policy, failures: tuple[ConstraintFailure, ...]) -> bool:
    """Whether better latency could make the deployment win: it breaks only latency constraints, or the
    policy ranks by latency."""
    if failures:
        return all(f.constraint != "quality" for f in failures)
    if isinstance(policy, ObjectivePolicy):
        return policy.objective == "latency"
    return isinstance(policy, WeightedPolicy) and policy.latency > 0


def explore(policy: Policy, ranked: Sequence[int], eligible: Sequence[Deployment], snapshot: Snapshot,
            now: float, rand: float, failures: Sequence[tuple[ConstraintFailure, ...]] = (),
            observes_latency: bool = True, due: bool | None = None) -> int | None:
    """The index to explore, or None when this request should not explore. `due`: whether this
    request's turn to explore has come, when the caller paces exploration itself (None: the draw
    decides, `rand` < `policy.exploration`)."""
    rate = policy.exploration
    if rate <= 0 or len(ranked) < 2 or not uses_latency(policy):
        return None
    floor = policy.min_quality if isinstance(policy, CONSTRAINED) else None
    # Cold start: probed at once, not at a rate. A worker that happened to observe a slow deployment first
    # would otherwise keep sending it most of its traffic until a random draw tried the fast one.
    interval = max(policy.stale_after_s, PROBE_INTERVAL_MIN_S)
    cold = [i for i in ranked[1:] if (floor is None or eligible[i].quality >= floor)
           and snapshot.staleness(eligible[i].id, now) == float("inf")
           and now - snapshot.probed.get(eligible[i].id, -math.inf) >= interval]
    if cold:
        return cold[min(int(rand * len(cold)), len(cold) - 1)]
    if not observes_latency or (rand >= rate if due is None else not due):
        return None
    stale_after = policy.stale_after_s
    probed = snapshot.probed
    pool = []
    for i in ranked[1:]:
        d = eligible[i]
        if floor is not None and d.quality < floor or now - probed.get(d.id, -math.inf) < PROBE_AFTER_S:
            continue
        age = snapshot.staleness(d.id, now)
        if age >= stale_after or (age >= PROBE_AFTER_S and _latency_demoted(policy, failures[i] if failures else ())):
            pool.append(i)
    if not pool:
        return None
    # Those that slowed down lately first: their heal is what changes decisions, and a deployment
    # that is always slow would otherwise take every other probe.
    slowed = [i for i in pool if snapshot.estimate(eligible[i].id).regime > 0]
    pool = slowed or pool
    pick = rand / rate if due is None else rand
    return pool[min(int(pick * len(pool)), len(pool) - 1)]


def affinity_pool(policy: Policy, ranked: Sequence[int], scores: Sequence[Scores],
                  failures: Sequence[tuple[ConstraintFailure, ...]]) -> list[int]:
    """The ranked indexes within the policy: meeting every constraint, and with a total at least
    (1 − `affinity_tolerance`) × the best total among those. Empty when none meets the constraints."""
    if not ranked or failures[ranked[0]]:
        return []
    # Relative to the best that meets the constraints: scores are normalised over every eligible
    # deployment (constraint failures included), so an absolute margin could span a 4x price range.
    floor = scores[ranked[0]].total * (1.0 - policy.affinity_tolerance)
    out = []
    for i in ranked:
        if failures[i] or scores[i].total < floor:
            break
        out.append(i)
    return out


def with_fallbacks(policy: Policy, primary: int, ranked: Sequence[int], eligible: Sequence[Deployment],
                   scores: Sequence[Scores], failures: Sequence[tuple[ConstraintFailure, ...]]) -> list[int]:
    """The primary, then the rest in `ranked` order with provider diversity for the first fallback."""
    rest = [i for i in ranked if i != primary]
    limit = policy.max_attempts - 1
    if limit <= 0 or not rest:
        return [primary]
    provider = eligible[primary].provider
    head = rest[0]
    if eligible[head].provider == provider and isinstance(policy, CONSTRAINED):
        tier = bool(failures[head])
        floor = scores[head].total - policy.diversity_tolerance
        for j in range(1, len(rest)):
            i = rest[j]
            if bool(failures[i]) != tier or scores[i].total < floor:
                break
            if eligible[i].provider != provider:
                rest.insert(0, rest.pop(j))
                break
    return [primary, *rest[:limit]]


def round_robin(n: int, rr_counter: int, max_attempts: int) -> list[int]:
    """Indexes starting at `rr_counter` mod n, wrapping around, at most `max_attempts` long."""
    start = rr_counter % n
    return [(start + k) % n for k in range(min(n, max_attempts))]
