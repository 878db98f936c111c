"""The immutable view of latency and health statistics that a decision reads.

`LatencyStats.snapshot(now)` builds one; tests and benchmarks may build one directly with
`LatencyEstimate.of` and `Snapshot(...)`. A snapshot never changes after construction, so `decide` stays
a pure function of its arguments; it may be shared by any number of decisions. Times are seconds on the
caller's monotonic clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import NamedTuple

from routing.histogram import Buckets, bucket_quantile
from routing.lengths import DEFAULT_PRIOR as DEFAULT_OUTPUT_TOKENS
from routing.pool import PoolLoad


class LatencyPrior(NamedTuple):
    """What to assume about a deployment with no (or only old) observations."""

    ttft_s: float = 1.0
    tpot_s: float = 0.02


class Unavailable(NamedTuple):
    """A deployment the health filter drops until `until` (seconds; inf for an open circuit), and why."""

    until: float
    reason: str


class Pressured(NamedTuple):
    """A deployment whose provider said its rate limit is nearly exhausted: `remaining_fraction` of it
    was left (per the header `source`) and it resets at `until` (seconds). A soft signal: the health
    filter prefers other deployments until then, but never drops the last one (see `routing.filters`)."""

    until: float
    remaining_fraction: float
    source: str


@dataclass(frozen=True, slots=True)
class LatencyEstimate:
    """One deployment's latency as of the snapshot.

    Every figure is the decayed-histogram estimate blended with the prior by weight:
    (weight × data + prior_weight × prior) / (weight + prior_weight), so an unobserved deployment reads
    as its prior and a long-unobserved one drifts back towards it.

    - `ttft_s`: quantile → time to first token, seconds, for the quantiles the statistics precompute
      (always including 0.5); `ttft_quantile(q)` answers any other quantile from `ttft_buckets`.
    - `ttft_p50_s`, `tpot_p50_s`: medians of TTFT and of time per output token, seconds.
    - `weight`: the effective (decayed) number of TTFT observations at the snapshot's time.
    - `last_observed`: time of the newest observation, −inf if none.
    - `recent_ttfts_s`: the last few raw TTFT samples, oldest first (for the last-n baseline).
    - `floor_s`: a lower bound on every TTFT quantile from requests still waiting (0: none).
    - `regime`: 1 while its answers are far slower than its normal (`routing.stats`), -1 far faster, 0.
    """

    ttft_s: Mapping[float, float]
    ttft_p50_s: float
    tpot_p50_s: float
    weight: float = 0.0
    last_observed: float = -math.inf
    recent_ttfts_s: tuple[float, ...] = ()
    prior: LatencyPrior = LatencyPrior()
    prior_weight: float = 1.0
    ttft_buckets: Buckets = field(default=(), repr=False)
    floor_s: float = 0.0
    regime: int = 0

    def ttft_quantile(self, q: float) -> float:
        """TTFT at quantile q (0 < q < 1), seconds."""
        v = self.ttft_s.get(q)
        if v is not None:
            return v
        v = blend(bucket_quantile(self.ttft_buckets, q), self.weight, self.prior.ttft_s, self.prior_weight)
        return max(v, self.floor_s)

    def floored(self, floor_s: float) -> LatencyEstimate:
        """This estimate with every TTFT quantile at least `floor_s` seconds."""
        if floor_s <= self.floor_s:
            return self
        ttft = MappingProxyType({q: max(v, floor_s) for q, v in self.ttft_s.items()})
        return replace(self, ttft_s=ttft, ttft_p50_s=max(self.ttft_p50_s, floor_s), floor_s=floor_s)

    @classmethod
    def of(cls, ttft_s: float | Mapping[float, float], tpot_s: float, *, last_observed: float = -math.inf,
           weight: float = 1.0, recent_ttfts_s: tuple[float, ...] = ()) -> LatencyEstimate:
        """An estimate with given figures (tests, benchmarks): one TTFT for every quantile, or a map from
        quantile to TTFT (quantiles not in the map read as its median, or its first entry)."""
        qs = dict(ttft_s) if isinstance(ttft_s, Mapping) else {0.5: ttft_s}
        p50 = qs.setdefault(0.5, next(iter(qs.values())))
        return _Flat(MappingProxyType(qs), p50, tpot_s, weight, last_observed, recent_ttfts_s,
                     LatencyPrior(p50, tpot_s), 1.0, ())

    @classmethod
    def from_prior(cls, prior: LatencyPrior, quantiles: tuple[float, ...] = (0.5,),
                   prior_weight: float = 1.0) -> LatencyEstimate:
        """The estimate of a deployment never observed: its prior at every quantile."""
        qs = MappingProxyType(dict.fromkeys((*quantiles, 0.5), prior.ttft_s))
        return _Flat(qs, prior.ttft_s, prior.tpot_s, 0.0, -math.inf, (), prior, prior_weight, ())


@dataclass(frozen=True, slots=True)
class _Flat(LatencyEstimate):
    """An estimate with fixed figures and no histogram (a prior, or a test figure): quantiles it does not
    list read as its median."""

    def ttft_quantile(self, q: float) -> float:
        v = self.ttft_s.get(q)
        return max(self.ttft_p50_s, self.floor_s) if v is None else v


def blend(data: float | None, weight: float, prior: float, prior_weight: float) -> float:
    """The weight-averaged mix of a data estimate and a prior (the prior alone when there is no data)."""
    if data is None or weight <= 0.0:
        return prior
    return (weight * data + prior_weight * prior) / (weight + prior_weight)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Latency estimates and health at `taken_at`; immutable, shareable.

    - `estimates` holds the deployments with data or a configured prior; any other id reads as `prior`.
    - `unavailable` maps deployment ids cooling down or with an open circuit to until when (hard: the
      health filter drops them).
    - `pressured` maps deployment ids whose provider rate limit is nearly exhausted to until when and
      how much is left (soft: dropped only while another candidate survives).
    - `ramp` maps deployment ids whose cool-down or pressure ended recently to the fraction of traffic,
      in [0, 1), they may take as of `taken_at` (soft: dropped when the decision's draw is ≥ it, only
      while another candidate survives).
    - `probed` maps deployment ids to when a decision last explored them (`routing.pickers.explore`;
      cold-start probes are kept until the probe's answer is observed, latency probes for a while).
    - `output_tokens` maps deployment ids to their expected answer length (`routing.lengths`); any
      other id reads as `output_default`.
    - `pool_loads` maps self-hosted pool providers (by provider name) to their current load
      (`routing.pool.PoolLoad`), read by the spillover policy (`routing.spillover`); a provider
      listed here is a pool for the decision.

    The health filter compares each `until` with the request's `now`; `ramp` fractions are as of
    `taken_at`. Every map is copied into a read-only view.
    """

    taken_at: float
    prior: LatencyEstimate = field(default_factory=lambda: LatencyEstimate.from_prior(LatencyPrior()))
    estimates: Mapping[str, LatencyEstimate] = field(default_factory=lambda: MappingProxyType({}))
    unavailable: Mapping[str, Unavailable] = field(default_factory=lambda: MappingProxyType({}))
    pressured: Mapping[str, Pressured] = field(default_factory=lambda: MappingProxyType({}))
    ramp: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    probed: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    output_tokens: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    output_default: float = DEFAULT_OUTPUT_TOKENS
    pool_loads: Mapping[str, PoolLoad] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        for name in ("estimates", "unavailable", "pressured", "ramp", "probed", "output_tokens", "pool_loads"):
            m = getattr(self, name)
            if not isinstance(m, MappingProxyType):
                object.__setattr__(self, name, MappingProxyType(dict(m)))

    def estimate(self, deployment_id: str) -> LatencyEstimate:
        """The deployment's estimate, or the prior when it has none."""
        return self.estimates.get(deployment_id, self.prior)

    def staleness(self, deployment_id: str, now: float) -> float:
        """Seconds since the deployment's newest observation; inf when never observed."""
        return now - self.estimate(deployment_id).last_observed

    def expected_output(self, deployment_id: str) -> float:
        """The deployment's expected answer length, tokens (uncapped; see `routing.lengths`)."""
        return self.output_tokens.get(deployment_id, self.output_default)

    def waiting(self, floors: Mapping[str, float]) -> Snapshot:
        """This snapshot with each listed deployment's TTFT raised to at least its floor (seconds):
        what requests still waiting for their first token already prove (`LatencyStats.floors`).
        Returns `self` when nothing changes."""
        if not floors:
            return self
        estimates = dict(self.estimates)
        for dep_id, floor in floors.items():
            estimates[dep_id] = self.estimate(dep_id).floored(floor)
        return replace(self, estimates=MappingProxyType(estimates))
