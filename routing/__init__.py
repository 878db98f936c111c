"""Routing decisions: pure and deterministic given (request features, candidates, statistics snapshot,
clock, random draw). No I/O.

    decision = decide(RouteRequest(...), deployments, ObjectivePolicy(minimize="cost", max_ttft_ms=800,
                      min_quality=0.8), stats.snapshot(now), rr_counter=counter, rand=random.random())

Modules: `model` (Deployment, RouteRequest, Decision, Explanation), `policy` (the policy union),
`pricing` (expected cost), `histogram` + `stats` (online latency and health statistics) → `snapshot`
(the immutable view a decision reads), `filters` → `scorers` → `pickers` (+ `affinity`), glued by
`pipeline.decide`.
"""

from routing.affinity import rendezvous
from routing.filters import FILTERS, Filter, run_filters
from routing.model import (
    CAPABILITIES,
    ConstraintFailure,
    Decision,
    Deployment,
    Dropped,
    Explanation,
    RouteRequest,
    Scores,
)
from routing.pipeline import FALLBACK, NO_CANDIDATE, decide
from routing.policy import (
    BestQualityPolicy,
    CheapestPolicy,
    LastNLatencyPolicy,
    ObjectivePolicy,
    Policy,
    RoundRobinPolicy,
    WeightedPolicy,
)
from routing.pricing import expected_cost_usd, expected_output_tokens
from routing.snapshot import LatencyEstimate, LatencyPrior, Snapshot, Unavailable
from routing.stats import LatencyStats

__all__ = [
    "CAPABILITIES",
    "FALLBACK",
    "FILTERS",
    "NO_CANDIDATE",
    "BestQualityPolicy",
    "CheapestPolicy",
    "ConstraintFailure",
    "Decision",
    "Deployment",
    "Dropped",
    "Explanation",
    "Filter",
    "LastNLatencyPolicy",
    "LatencyEstimate",
    "LatencyPrior",
    "LatencyStats",
    "ObjectivePolicy",
    "Policy",
    "RoundRobinPolicy",
    "RouteRequest",
    "Scores",
    "Snapshot",
    "Unavailable",
    "WeightedPolicy",
    "decide",
    "expected_cost_usd",
    "expected_output_tokens",
    "rendezvous",
    "run_filters",
]
