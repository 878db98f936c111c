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

Common settings: `exploration` (probability of sending the request to a non-best eligible deployment
whose latency estimate is older than `stale_after_s`; only for policies that read latency; when > 0, a
never-observed deployment is also probed at once, see `routing.pickers.explore`),
`affinity` / `affinity_tolerance` (see `routing.affinity`), `diversity_tolerance` (how close, in score
terms, a different-provider deployment must be to the next in line to become the first fallback) and
`max_attempts` (the length of the candidate list). Baselines default to no exploration and no affinity,
and round-robin ignores both. Construction validates (ValueError naming the field).
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


Policy = (ObjectivePolicy | WeightedPolicy | RoundRobinPolicy | CheapestPolicy | BestQualityPolicy
          | LastNLatencyPolicy)


CONSTRAINED = (ObjectivePolicy, WeightedPolicy)
"""The policy types that carry constraints (for isinstance)."""


def uses_latency(policy: Policy) -> bool:
    """Whether the policy's ranking reads latency estimates (exploration only helps those that do)."""
    if isinstance(policy, ObjectivePolicy):
        return policy.minimize == "latency" or policy.max_ttft_ms is not None
    if isinstance(policy, WeightedPolicy):
        return policy.latency > 0 or policy.max_ttft_ms is not None
    return isinstance(policy, LastNLatencyPolicy)
