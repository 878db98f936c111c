"""Which fallback orders exist, and the Envoy cluster that serves each.

A request routed among several providers goes to an `envoy.clusters.aggregate` cluster whose
member clusters are the providers in the router stage's order: attempt 1 goes to the first,
each retry (Envoy's `previous_priorities`) to the next, skipping members whose hosts are ejected
or unhealthy. The orders grow linearly with providers: for each routed name (a route, or a model
name with several deployments) over providers P (its candidates' providers, distinct, in the
order its policy ranks them on the config alone: `routing.fallback_providers`) and each provider p of P, one order — p, then the rest of P in order, `max_attempts`
long (`extproc.metadata.fallback_order`) — and its prefixes of two or more providers (the router
stage cuts an order before a provider that cannot serve the request). So a routed name over n
providers yields at most n × (min(n, max_attempts) − 1) aggregates, fewer after deduplication
across routed names; both the renderer and the router stage derive them from the config alone.
"""

from __future__ import annotations

import routing
from extproc.config.model import GatewayConfig
from extproc.metadata import fallback_order


def routed_names(cfg: GatewayConfig) -> dict[str, tuple[tuple[str, ...], int]]:
    """Public names decided per request → (the providers their deployments live on, distinct, in
    the order fallbacks follow, `routing.fallback_providers`; max attempts). Routes, and model
    names with several deployments."""
    out: dict[str, tuple[tuple[str, ...], int]] = {}
    by_model: dict[str, list[tuple[str, float, float, float]]] = {}
    for m in cfg.models:
        by_model.setdefault(m.name, []).append(
            (m.provider, m.price.input_per_mtok, m.price.output_per_mtok, m.quality))
    for name, deployments in by_model.items():
        if len({d[0] for d in deployments}) > 1:
            policy = cfg.default_policy
            out[name] = (routing.fallback_providers(deployments, policy), policy.max_attempts)
    for route in cfg.routes:
        deployments = [d for c in route.candidates for d in by_model.get(c, ())]
        out[route.name] = (routing.fallback_providers(deployments, route.policy), route.policy.max_attempts)
    return out


def provider_orders(cfg: GatewayConfig) -> list[tuple[str, ...]]:
    """Every order of two or more providers the router stage can name (see the module docstring),
    sorted."""
    orders: set[tuple[str, ...]] = set()
    for providers, attempts in routed_names(cfg).values():
        for first in providers:
            order = fallback_order(providers, first, attempts)
            orders.update(order[:k] for k in range(2, len(order) + 1))
    return sorted(orders)
