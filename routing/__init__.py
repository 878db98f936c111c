"""Routing decisions: pure and deterministic given (request features, candidates, statistics snapshot,
clock, random draw). No I/O.

    decision = decide(RouteRequest(...), deployments, ObjectivePolicy(minimize="cost", max_ttft_ms=800,
                      min_quality=0.8), stats.snapshot(now), rr_counter=counter, rand=random.random())

Modules: `model` (Deployment, RouteRequest, Decision, Explanation), `policy` (the policy union),
`pricing` (expected cost), `provider_limits` (provider rate-limit headers → `Pressure`), `histogram` +
`stats` (online latency and health statistics, provider pressure, ramp-up) → `snapshot` (the immutable
view a decision reads), `filters` → `scorers` → `pickers` (+ `affinity`), glued by `pipeline.decide`.

Provider limits, fed back from each response (headers lower-case; `time.time()` for absolute resets,
the statistics' monotonic `now` for the rest):

    p = pressure_from_headers(response_headers, time.time())
    if p is not None:
        stats.record_pressure(deployment_id, p, now)

A decision that explored (`decision.explanation.chosen_by == "exploration"`) is reported back with
`stats.record_probe(decision.primary, now)`: without it a never-observed deployment is probed on every
decision until its first observation lands.
"""

from routing.affinity import rendezvous
from routing.fallback import fallback_providers
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
from routing.pricing import cost_usd, expected_cost_usd, expected_output_tokens, micro_usd, nominal_cost_usd
from routing.provider_limits import Pressure, pressure_from_headers, retry_after_s
from routing.snapshot import LatencyEstimate, LatencyPrior, Pressured, Snapshot, Unavailable
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
    "Pressure",
    "Pressured",
    "RoundRobinPolicy",
    "RouteRequest",
    "Scores",
    "Snapshot",
    "Unavailable",
    "WeightedPolicy",
    "decide",
    "cost_usd",
    "expected_cost_usd",
    "expected_output_tokens",
    "fallback_providers",
    "micro_usd",
    "nominal_cost_usd",
    "pressure_from_headers",
    "rendezvous",
    "retry_after_s",
    "run_filters",
]
