"""The order a routed name's fallbacks follow, from the config alone.

The first attempt goes where the decision says; Envoy's fallback then walks an aggregate cluster
whose members are rendered ahead of time, so the order after the first cannot depend on a request.
It is the order the policy would rank the providers in knowing nothing about a request
(`fallback_providers`); the renderer writes one aggregate per first provider and the router stage
names the same one. Pure.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from routing.policy import (
    BestQualityPolicy,
    CheapestPolicy,
    FillPoolPolicy,
    ObjectivePolicy,
    Policy,
    WeightedPolicy,
)
from routing.pricing import nominal_cost_usd


def fallback_providers(deployments: Iterable[tuple[str, float, float, float]], policy: Policy,
                       pools: Collection[str] | None = None) -> tuple[str, ...]:
    """A routed name's providers in the order its fallbacks follow, from the config alone: its
    deployments as (provider, input $/Mtok, output $/Mtok, quality), in the order the config lists
    them, ranked the way the policy would rank them knowing nothing about a request — by price
    (`routing.pricing.nominal_cost_usd`) for a cost objective, `cheapest` and a weighted policy
    with a cost weight; by quality, then price, for a quality objective and `best_quality`; as
    listed otherwise — those below the policy's `min_quality` last, ties as listed; each provider
    where its best deployment ranks.

    A `fill_pool` policy puts the route's self-hosted pools first (`pools`; None: the providers
    whose deployments all have no per-token price, a pool's cost being sunk), then the other
    providers as its `then` policy ranks them: the pool and the per-token providers share one
    fallback order."""
    if isinstance(policy, FillPoolPolicy):
        deployments = list(deployments)
        ranked = fallback_providers(deployments, policy.then)
        if pools is None:
            priced = {p for p, inp, out, _ in deployments if inp > 0 or out > 0}
            pools = {p for p, *_ in deployments if p not in priced}
        return tuple(sorted(ranked, key=lambda p: p not in pools))
    floor = getattr(policy, "min_quality", None)
    if isinstance(policy, ObjectivePolicy):
        by = policy.objective if policy.objective != "latency" else "listed"
    elif isinstance(policy, CheapestPolicy) or (isinstance(policy, WeightedPolicy) and policy.cost > 0):
        by = "cost"
    elif isinstance(policy, BestQualityPolicy):
        by = "quality"
    else:
        by = "listed"
    best: dict[str, tuple[float, ...]] = {}
    for i, (provider, inp, out, quality) in enumerate(deployments):
        below = 1.0 if floor is not None and quality < floor else 0.0
        cost = nominal_cost_usd(inp, out)
        key = (below, cost, i) if by == "cost" else (below, -quality, cost, i) if by == "quality" else (below, i)
        if provider not in best or key < best[provider]:
            best[provider] = key
    return tuple(sorted(best, key=best.__getitem__))
