"""Which fallback orders exist, and the Envoy cluster that serves each.

A request routed among several deployments goes to an `envoy.clusters.aggregate` cluster whose
member clusters are the providers in the router stage's order: attempt 1 goes to the first,
each retry (Envoy's `previous_priorities`) to the next. One aggregate exists per ordered list of
distinct providers a route can produce (k-permutations, k = 2..max_attempts, of the providers
its candidates live on), so both the renderer and the router stage derive the same names from
the config alone.
"""

from __future__ import annotations

from itertools import permutations

from extproc.config.model import GatewayConfig


def routed_names(cfg: GatewayConfig) -> dict[str, tuple[tuple[str, ...], int]]:
    """Public names decided per request → (the providers their deployments live on, in config
    order and distinct; max attempts). Routes, and model names with several deployments."""
    out: dict[str, tuple[tuple[str, ...], int]] = {}
    by_model: dict[str, list[str]] = {}
    for m in cfg.models:
        by_model.setdefault(m.name, []).append(m.provider)
    for name, providers in by_model.items():
        if len(providers) > 1:
            out[name] = (tuple(dict.fromkeys(providers)), cfg.default_policy.max_attempts)
    for route in cfg.routes:
        providers = [p for c in route.candidates for p in by_model.get(c, ())]
        out[route.name] = (tuple(dict.fromkeys(providers)), route.policy.max_attempts)
    return out


def provider_orders(cfg: GatewayConfig) -> list[tuple[str, ...]]:
    """Every ordered list of 2..max_attempts distinct providers some routed name can produce."""
    orders: set[tuple[str, ...]] = set()
    for providers, attempts in routed_names(cfg).values():
        for k in range(2, min(attempts, len(providers)) + 1):
            orders.update(permutations(providers, k))
    return sorted(orders)
