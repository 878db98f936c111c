"""Routing policies: a typed union discriminated by `kind`.

- `ObjectivePolicy` ("objective"): minimize "cost" or "latency", or maximize "quality", among the
  deployments meeting the constraints (`max_ttft_ms` at `ttft_quantile`, `min_quality`); when none meets
  them every eligible deployment is ranked by the same objective. "Cheapest whose p90 TTFT ≤ 800 ms and
  quality ≥ 0.8" is ``ObjectivePolicy(minimize="cost", max_ttft_ms=800, min_quality=0.8)``.
- `WeightedPolicy` ("weighted"): the same constraints; ranks by the weighted mean of the scores.
- Baselines for evaluation, exactly as named, with no constraints: `RoundRobinPolicy`,
  `CheapestPolicy`, `BestQualityPolicy`, `LastNLatencyPolicy` (LiteLLM's latency strategy: mean of the
  last `n` TTFT samples, lowest wins, no data counts as 0 so new deployments get tried, exact ties broken
  by the caller's random draw).

- `FillPoolPolicy` ("fill_pool"): utilization-first spillover (`routing.spillover`) — the route's
  self-hosted pools (the providers in `Snapshot.pool_loads`) first until they reach
  `target_utilization` (± `band`, per priority class), then the other candidates, ranked by `then`
  (any policy above); `batch` "spill" or "wait". Its common settings are `then`'s.

Common settings: `exploration` (probability of sending the request to a non-best eligible deployment
whose latency estimate is older than `stale_after_s`; only for policies that read latency; when > 0, a
never-observed deployment is also probed at once, see `routing.pickers.explore`),
`affinity` / `affinity_tolerance` (see `routing.affinity`), `diversity_tolerance` (how close, in score
terms, a different-provider deployment must be to the next in line to become the first fallback) and
`max_attempts` (the length of the candidate list). Baselines default to no exploration and no affinity,
and round-robin ignores both. Construction validates (ValueError naming the field).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal


@dataclass(frozen=True, slots=True, kw_only=True)
class _Common:
    exploration: float = 0.02
    stale_after_s: float = 30.0
    affinity: bool = True
    affinity_tolerance: float = 0.1
    diversity_tolerance: float = 0.05
    max_attempts: int = 3

    def _problems(self) -> list[str]:
        out = []
        if not 0.0 <= self.exploration <= 1.0:
            out.append("exploration: must be in [0, 1]")
        if self.stale_after_s < 0:
            out.append("stale_after_s: must be >= 0")
        if self.affinity_tolerance < 0:
            out.append("affinity_tolerance: must be >= 0")
        if self.diversity_tolerance < 0:
            out.append("diversity_tolerance: must be >= 0")
        if self.max_attempts < 1:
            out.append("max_attempts: must be >= 1")
        return out

    def _check(self, extra: list[str] | None = None) -> None:
        problems = self._problems() + (extra or [])
        if problems:
            raise ValueError(f"{type(self).__name__}: " + "; ".join(problems))

    def __post_init__(self) -> None:
        self._check()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Constrained(_Common):
    max_ttft_ms: float | None = None
    ttft_quantile: float = 0.9
    min_quality: float | None = None

    def _problems(self) -> list[str]:
        out = _Common._problems(self)
        if self.max_ttft_ms is not None and self.max_ttft_ms <= 0:
            out.append("max_ttft_ms: must be > 0")
        if not 0.0 < self.ttft_quantile < 1.0:
            out.append("ttft_quantile: must be in (0, 1)")
        if self.min_quality is not None and not 0.0 <= self.min_quality <= 1.0:
            out.append("min_quality: must be in [0, 1]")
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectivePolicy(_Constrained):
    """Optimize one objective under constraints; exactly one of `minimize` / `maximize` is set."""

    kind: Literal["objective"] = field(default="objective", init=False)
    minimize: Literal["cost", "latency"] | None = None
    maximize: Literal["quality"] | None = None

    def __post_init__(self) -> None:
        extra = []
        if (self.minimize is None) == (self.maximize is None):
            extra.append("exactly one of minimize, maximize must be set")
        elif self.minimize not in (None, "cost", "latency"):
            extra.append("minimize: must be cost or latency")
        elif self.maximize not in (None, "quality"):
            extra.append("maximize: must be quality")
        self._check(extra)

    @property
    def objective(self) -> str:
        """"cost", "latency" or "quality"."""
        return self.minimize or self.maximize or "cost"


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightedPolicy(_Constrained):
    """Rank by (cost·s_cost + latency·s_latency + quality·s_quality) / (cost + latency + quality)."""

    kind: Literal["weighted"] = field(default="weighted", init=False)
    cost: float = 1.0
    latency: float = 1.0
    quality: float = 1.0

    def __post_init__(self) -> None:
        extra = []
        if min(self.cost, self.latency, self.quality) < 0:
            extra.append("weights: must be >= 0")
        elif self.cost + self.latency + self.quality <= 0:
            extra.append("weights: at least one must be > 0")
        self._check(extra)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundRobinPolicy(_Common):
    """Rotate over the eligible deployments in candidate order, starting at `rr_counter`."""

    kind: Literal["round_robin"] = field(default="round_robin", init=False)
    exploration: float = 0.0
    affinity: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CheapestPolicy(_Common):
    """Lowest expected cost first."""

    kind: Literal["cheapest"] = field(default="cheapest", init=False)
    exploration: float = 0.0
    affinity: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class BestQualityPolicy(_Common):
    """Highest quality first; equal quality by lower expected cost."""

    kind: Literal["best_quality"] = field(default="best_quality", init=False)
    exploration: float = 0.0
    affinity: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LastNLatencyPolicy(_Common):
    """LiteLLM's latency-based routing: lowest mean of the last `n` TTFT samples first."""

    kind: Literal["last_n_latency"] = field(default="last_n_latency", init=False)
    n: int = 10
    exploration: float = 0.0
    affinity: bool = False

    def __post_init__(self) -> None:
        self._check(["n: must be >= 1"] if self.n < 1 else None)


SpillTarget = (ObjectivePolicy | WeightedPolicy | RoundRobinPolicy | CheapestPolicy | BestQualityPolicy
               | LastNLatencyPolicy)


@dataclass(frozen=True, slots=True, kw_only=True)
class FillPoolPolicy:
    """Fill the route's self-hosted pools up to `target_utilization`, spill the rest to the other
    candidates ranked by `then`, with hysteresis `band` (see `routing.spillover`). `batch`: "spill"
    (batch leaves the pool first) or "wait" (batch stays in the pool's queue). The settings every
    policy has (`max_attempts`, `exploration`, ...) are `then`'s."""

    kind: Literal["fill_pool"] = field(default="fill_pool", init=False)
    target_utilization: float = 0.8
    band: float = 0.05
    batch: Literal["spill", "wait"] = "spill"
    then: SpillTarget = field(default_factory=lambda: ObjectivePolicy(minimize="cost"))
    # `then` with room for every candidate (the pipeline reorders its whole ranking), built once
    ranking: SpillTarget = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 < self.target_utilization <= 1.0:
            problems.append("target_utilization: must be in (0, 1]")
        if not 0.0 <= self.band < 0.5:
            problems.append("band: must be in [0, 0.5)")
        if self.batch not in ("spill", "wait"):
            problems.append("batch: must be spill or wait")
        if isinstance(self.then, FillPoolPolicy) or not hasattr(self.then, "max_attempts"):
            problems.append("then: must be a policy other than fill_pool")
        if problems:
            raise ValueError("FillPoolPolicy: " + "; ".join(problems))
        object.__setattr__(self, "ranking", replace(self.then, max_attempts=64))

    @property
    def exploration(self) -> float:
        return self.then.exploration

    @property
    def stale_after_s(self) -> float:
        return self.then.stale_after_s

    @property
    def affinity(self) -> bool:
        return self.then.affinity

    @property
    def affinity_tolerance(self) -> float:
        return self.then.affinity_tolerance

    @property
    def diversity_tolerance(self) -> float:
        return self.then.diversity_tolerance

    @property
    def max_attempts(self) -> int:
        return self.then.max_attempts


Policy = SpillTarget | FillPoolPolicy


CONSTRAINED = (ObjectivePolicy, WeightedPolicy)
"""The policy types that carry constraints (for isinstance)."""


def uses_latency(policy: Policy) -> bool:
    """Whether the policy's ranking reads latency estimates (exploration only helps those that do)."""
    if isinstance(policy, ObjectivePolicy):
        return policy.minimize == "latency" or policy.max_ttft_ms is not None
    if isinstance(policy, WeightedPolicy):
        return policy.latency > 0 or policy.max_ttft_ms is not None
    return isinstance(policy, LastNLatencyPolicy)
