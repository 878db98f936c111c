"""`routing.fallback_providers`: the order a routed name's fallbacks follow, from the config alone."""

from __future__ import annotations

import pytest

from routing import (
    BestQualityPolicy,
    CheapestPolicy,
    LastNLatencyPolicy,
    ObjectivePolicy,
    Policy,
    RoundRobinPolicy,
    WeightedPolicy,
    fallback_providers,
)

# (provider, input $/Mtok, output $/Mtok, quality), listed as a route would list them.
LISTED = [("frontier", 3.0, 15.0, 0.95), ("mini", 0.15, 0.6, 0.72), ("flash", 0.3, 2.5, 0.8),
          ("haiku", 1.0, 5.0, 0.85)]


@pytest.mark.parametrize(("policy", "order"), [
    (ObjectivePolicy(minimize="cost"), ("mini", "flash", "haiku", "frontier")),
    (CheapestPolicy(), ("mini", "flash", "haiku", "frontier")),
    # below the quality floor: last, whatever it costs (the demo's gpt-4o-mini behind `auto`)
    (ObjectivePolicy(minimize="cost", min_quality=0.78), ("flash", "haiku", "frontier", "mini")),
    (WeightedPolicy(cost=1, latency=1, quality=0), ("mini", "flash", "haiku", "frontier")),
    (ObjectivePolicy(maximize="quality"), ("frontier", "haiku", "flash", "mini")),
    (BestQualityPolicy(), ("frontier", "haiku", "flash", "mini")),
    # nothing about latency is in the config: as listed
    (ObjectivePolicy(minimize="latency"), ("frontier", "mini", "flash", "haiku")),
    (ObjectivePolicy(minimize="latency", min_quality=0.8), ("frontier", "flash", "haiku", "mini")),
    (RoundRobinPolicy(), ("frontier", "mini", "flash", "haiku")),
    (LastNLatencyPolicy(), ("frontier", "mini", "flash", "haiku")),
])
def test_the_static_order_of_each_policy(policy: Policy, order: tuple[str, ...]) -> None:
    assert fallback_providers(LISTED, policy) == order


def test_a_provider_ranks_where_its_best_deployment_does_and_ties_keep_the_listed_order() -> None:
    deployments = [("a", 5.0, 5.0, 0.9), ("b", 2.0, 2.0, 0.9), ("a", 1.0, 1.0, 0.9), ("c", 2.0, 2.0, 0.9)]
    assert fallback_providers(deployments, CheapestPolicy()) == ("a", "b", "c")
    assert fallback_providers([], CheapestPolicy()) == ()
