"""The routing decision: filters → scorers → picker, with its explanation.

`decide` is a pure function: the same arguments give the same `Decision`, and none of them is mutated.
The clock is `request.now`, randomness is `rand` (one uniform draw in [0, 1) the caller makes, read by
the health filter's ramp and by the picker) and round-robin state is `rr_counter` (the caller's counter
for the route, incremented per request). It does no I/O, reads no clock, logs nothing and is safe to
call from any thread on shared arguments.

Steps:
1. Filters (`routing.filters`) drop the candidates that cannot serve the request, and (softly, never the
   last one) those near their provider's rate limit or ramping up after a cool-down when `rand` ≥ their
   ramp fraction.
2. Scorers (`routing.scorers`) score every eligible deployment and check the policy's constraints.
3. The picker (`routing.pickers`) ranks them by the policy and picks the primary:
   - round-robin: the rotation at `rr_counter`;
   - otherwise, in this precedence: exploration (rate `policy.exploration`, stale estimates only);
     affinity (the request's key hashed over the deployments within the policy and its tolerance);
     the objective's best — "fallback: …" when no deployment met the constraints.
4. Fallbacks follow in objective order (constraint-meeting first), distinct, provider-diverse for the
   first one, `policy.max_attempts` long in all.

A `FillPoolPolicy` (`routing.spillover`) runs the steps above under its `then` policy, then puts the
route's pool deployments (those whose provider is in `snapshot.pool_loads`) first — or, when the
request's `priority` class spills in `spill` (the route's state, advanced by the caller with
`routing.spillover.step`), last; `chosen_by` then reads "pool <class>: <why>; <then's chosen_by>"
or "spill <class>: <why>; ...".
"""

from __future__ import annotations

from collections.abc import Sequence

from routing.affinity import rendezvous_index
from routing.filters import run_filters
from routing.model import Decision, Deployment, Explanation, RouteRequest
from routing.pickers import affinity_pool, explore, last_n_tie_break, rank, round_robin, with_fallbacks
from routing.policy import CONSTRAINED, FillPoolPolicy, LastNLatencyPolicy, Policy, RoundRobinPolicy
from routing.scorers import constraint_failures, score_all
from routing.snapshot import Snapshot
from routing.spillover import NO_SPILL, SpillState, loads_of, reason

NO_CANDIDATE = "none: every candidate was dropped"
FALLBACK = "fallback: no deployment met the constraints"


def decide(request: RouteRequest, candidates: Sequence[Deployment], policy: Policy, snapshot: Snapshot, *,
           rr_counter: int = 0, rand: float = 0.5, explore_due: bool | None = None,
           priority: str = "default", spill: SpillState = NO_SPILL) -> Decision:
    """Choose the ordered deployments to try for `request` among `candidates` (in the route's configured
    order; a repeated id counts once) under `policy`, reading latency and health from `snapshot`.

    `explore_due`: the caller paces exploration (`routing.pickers.explore`); None leaves it to `rand`.
    `priority`, `spill`: the request's priority class and the route's spill state, read by a
    `FillPoolPolicy` only.
    Returns an empty `deployments` tuple when every candidate was dropped (the explanation says by which
    filter). Raises nothing for well-formed arguments.
    """
    if isinstance(policy, FillPoolPolicy):
        return _fill_pool(request, candidates, policy, snapshot, rr_counter, rand, explore_due, priority, spill)
    eligible, dropped = run_filters(request, snapshot, candidates, rand=rand)
    if not eligible:
        return Decision((), Explanation(dropped, {}, {}, NO_CANDIDATE))
    scores = score_all(request, eligible, snapshot, policy)
    n = len(eligible)
    failures = constraint_failures(policy, eligible, scores)
    pool: list[int] = []
    chosen_by: str
    if isinstance(policy, RoundRobinPolicy):
        order = round_robin(n, rr_counter, policy.max_attempts)
        chosen_by = policy.kind
    else:
        ranked = rank(policy, scores, failures)
        if isinstance(policy, LastNLatencyPolicy):
            ranked = last_n_tie_break(ranked, scores, rand)
        primary = explore(policy, ranked, eligible, snapshot, request.now, rand, failures,
                          request.observes_latency, explore_due)
        if primary is not None:
            chosen_by = "exploration"
        else:
            primary = ranked[0]
            key = request.affinity_key
            if policy.affinity and key is not None:
                pool = affinity_pool(policy, ranked, scores, failures)
            if pool:
                primary = pool[rendezvous_index(key or b"", [eligible[i] for i in pool])]
                chosen_by = "affinity"
            elif failures[primary]:
                chosen_by = FALLBACK
            elif isinstance(policy, CONSTRAINED):
                chosen_by = "objective"
            else:
                chosen_by = policy.kind
        order = with_fallbacks(policy, primary, ranked, eligible, scores, failures)
    ids = [d.id for d in eligible]
    explanation = Explanation(
        dropped,
        dict(zip(ids, scores, strict=True)),
        {ids[i]: f for i, f in enumerate(failures) if f},
        chosen_by,
        tuple([ids[i] for i in pool]),
    )
    return Decision(tuple([ids[i] for i in order]), explanation)


def _fill_pool(request: RouteRequest, candidates: Sequence[Deployment], policy: FillPoolPolicy, snapshot: Snapshot,
               rr_counter: int, rand: float, explore_due: bool | None, priority: str, spill: SpillState) -> Decision:
    """`then`'s decision over every candidate, the pool's deployments moved first or last."""
    inner = decide(request, candidates, policy.ranking, snapshot, rr_counter=rr_counter, rand=rand,
                   explore_due=explore_due)
    by_id = {d.id: d for d in candidates}
    pools = snapshot.pool_loads
    load = loads_of(pools, (d.provider for d in candidates))
    in_pool = [i for i in inner.deployments if by_id[i].provider in pools]
    others = [i for i in inner.deployments if by_id[i].provider not in pools]
    spills = spill.spills(priority) and bool(others)
    order = (others + in_pool) if spills else (in_pool + others)
    why = reason(spill, policy.target_utilization, policy.band, policy.batch == "wait", load, priority)
    if spill.spills(priority) and not others:
        why = f"pool{why.removeprefix('spill')} (no other candidate)"
    ex = inner.explanation
    if inner.deployments:
        ex = Explanation(ex.dropped, ex.scores, ex.constraint_failures, f"{why}; {ex.chosen_by}", ex.affinity_pool)
    return Decision(tuple(order[:policy.max_attempts]), ex)
