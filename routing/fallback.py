"""The order a routed name's fallbacks follow, from the config alone.

The first attempt goes where the decision says; Envoy's fallback then walks an aggregate cluster
whose members are rendered ahead of time, so the order after the first cannot depend on a request.
It is the order the policy would rank the providers in knowing nothing about a request
(`fallback_providers`); the renderer writes one aggregate per first provider and the router stage
names the same one. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable

from routing.policy import BestQualityPolicy, CheapestPolicy, ObjectivePolicy, Policy, WeightedPolicy
from routing.pricing import nominal_cost_usd


def fallback_providers(deployments: Iterable[tuple[str, float, float, float]], policy: Policy
                        ) -> tuple[str, ...]:
    """A routed name's providers in the order its fallbacks follow, from the config alone: its
    deployments as (provider, input $/Mtok, output $/Mtok, quality), in the order the config lists
    them, ranked the way the policy would rank them knowing nothing about a request — by price
    (`routing.pricing.nominal_cost_usd`) for a cost objective, `cheapest` and a weighted policy
    with a cost weight; by quality, then price, for a quality objective and `best_quality`; as
    listed otherwise — those below the policy's `min_quality` last, ties as listed; each provider
    where its best deployment ranks."""
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
