"""The affinity band is relative to the best constraint-meeting score: with a cheap model that
fails the quality floor on the route, every other cost score is squeezed (≤ 0.25 here), and an
absolute band would let a 4x dearer deployment in."""

from __future__ import annotations

from routing.model import Scores
from routing.pickers import affinity_pool
from routing.policy import ObjectivePolicy


def scores(total: float) -> Scores:
    return Scores(cost=total, latency=1.0, quality=0.9, total=total, cost_usd=0.0, latency_s=1.0, ttft_s=0.1)


def test_band_is_a_fraction_of_the_best_total() -> None:
    policy = ObjectivePolicy(minimize="cost", min_quality=0.8, affinity_tolerance=0.1)
    # ranked: mid (0.25), alt (0.23, 9 % worse), frontier (0.0625, 4x dearer)
    pool = affinity_pool(policy, [0, 1, 2], [scores(0.25), scores(0.23), scores(0.0625)], [(), (), ()])
    assert pool == [0, 1]
    narrow = ObjectivePolicy(minimize="cost", min_quality=0.8, affinity_tolerance=0.05)
    assert affinity_pool(narrow, [0, 1, 2], [scores(0.25), scores(0.23), scores(0.0625)], [(), (), ()]) == [0]
