"""bench/bench.py's summaries say what the runs measured."""

from __future__ import annotations

from bench.bench import cpu_added


def test_what_the_rate_limits_add_is_per_process_group_and_median_of_the_runs() -> None:
    with_limits = [{"envoy": 250.0, "worker0": 150.0, "worker1": 155.0, "ratelimit": 130.0, "supervisor": 0.2},
                   {"envoy": 240.0, "worker0": 140.0, "worker1": 150.0, "ratelimit": 128.0, "supervisor": 0.1},
                   {"envoy": 900.0, "worker0": 10.0, "worker1": 10.0, "ratelimit": 129.0, "supervisor": 0.1}]
    without = [{"envoy": 180.0, "worker0": 120.0, "worker1": 118.0, "ratelimit": 0.0, "supervisor": 0.1},
               {"envoy": 175.0, "worker0": 115.0, "worker1": 117.0, "ratelimit": 0.0, "supervisor": 0.0},
               {"envoy": 178.0, "worker0": 116.0, "worker1": 119.0, "ratelimit": 0.0, "supervisor": 0.1}]
    # medians: envoy 250 - 178, workers (305, 290, 20 → 290) - (238, 232, 235 → 235), ratelimit 129 - 0
    assert cpu_added(with_limits, without) == \
        "envoy +72 ratelimit +129 workers +55 (total +256)"
