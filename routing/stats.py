"""Online latency and health statistics per deployment, learned from real responses.

Theory of operation. Each deployment keeps two forward-decayed log histograms (`routing.histogram`):
time to first token (TTFT) and time per output token (TPOT), both in seconds, with one half-life
(default 60 s: a sample a minute old counts half as much as a fresh one). Estimates blend the histogram
quantile with a prior by weight, so an unseen deployment reads as its prior and one not observed for many
half-lives drifts back to it — which is how traffic returns to a deployment that was once slow, together
with exploration (`routing.pickers`). A ring of the last `last_n` raw TTFT samples serves the
LiteLLM-style baseline.

Health: `record_failure` starts a cool-down of base × 2^(consecutive failures − 1) seconds, raised to the
provider's Retry-After when longer, capped at `cooldown_max_s`; `record_success` resets the streak but
does not end a cool-down already running (answers to requests sent before it still arrive).
`set_circuit_open` is the hook for breaker state learned elsewhere.

Pressure: `record_pressure` takes what a provider's rate-limit headers say (`routing.provider_limits`).
At or below `pressure_threshold` of the limit left, the deployment is under pressure until the limit
resets (at most `cooldown_max_s` ahead; the latest reading replaces the previous one); above it, or when
the limit resets now, pressure ends now. Pressure is soft (the health filter prefers other deployments
but never drops the last one) and is not a failure: it neither counts in the failure streak nor starts
or lengthens a cool-down.

Fast reaction, fast recovery. The histograms remember about a minute, so on their own they move only when
most of a minute's answers are slow — a slowed deployment kept its traffic for dozens of slow answers and,
once demoted, never got the answers that would show it healed. Three things make the estimate follow a
change within a handful of answers:

- regimes: when the last `REGIME_AFTER` answers are all slower than the histogram says is normal
  (above max(2.5 × its median, 1.5 × its p90)), or all faster (below min(its median / 2.5, its p10 / 1.5))
  — three in a row happen by chance about once in 10^4 answers even for a heavy-tailed deployment — the
  deployment is in a slow (or fast) regime, whose boundary is the geometric middle of normal's median and
  those answers' median: its TTFT quantiles are read from the answers on the regime's side of the
  boundary among its last `FAST_N`, and its answers no longer go into the histogram, which keeps what
  normal looked like. When the last `REGIME_END` answers are on normal's side, the regime ends and the
  histogram (untouched by the slow minute) is the estimate again — so two healthy probe answers bring a
  deployment back, where a minute of slow answers in the histogram's tail would have kept its p90 high
  for minutes. A regime whose answers are still on its side two half-lives after it began is the new
  normal: the histogram restarts from the recent answers (and a later heal is a fast regime of its own);
- waiting requests as evidence: `begin` / `end` bracket each streamed request's wait for its first token;
  `floors` gives, per deployment whose waiting requests' median wait exceeds its p90 estimate, that median
  wait as a lower bound of every TTFT quantile (a request 2 s into its wait proves TTFT ≥ 2 s, before any
  slow answer lands). Applied per decision with `Snapshot.waiting`;
- TTFT is learned when the first token arrives (`observe_ttft`), not when the stream ends
  (`observe_tpot`), so a long answer does not delay the evidence.

Recovery then needs answers from the demoted deployment: `routing.pickers.explore` sends it a probe (a real
request, at most `policy.exploration` of the route's decisions and one per `PROBE_AFTER_S` per deployment)
once its data is `PROBE_AFTER_S` old; a few healthy answers move the fast estimate back.

Probes: `record_probe` notes that a decision explored a deployment (`chosen_by == "exploration"`); the
snapshot lists when (`probed`), so a probe is not repeated while its answer is on the way. The next
observation clears it.

Answer lengths: `lengths` (`routing.lengths.OutputLengths`) learns each deployment's expected output tokens
from `observe_output`; the snapshot carries them for pricing.

Ramp: for `ramp_s` seconds after a cool-down or pressure ends, a deployment may take only a fraction of
the traffic, rising linearly from `ramp_floor` to 1, so traffic returns gradually instead of all at once
(which would exhaust a just-reset limit again). An open circuit has no end time and does not ramp.

`snapshot(now)` returns an immutable `Snapshot` for `decide`, cheap enough to take per request: the
previous one is returned while nothing changed, it is younger than `snapshot_max_age_s` and no
cool-down, pressure or ramp it lists has ended since; otherwise only the deployments observed since the
last build are re-estimated, and every deployment is re-blended with its prior (which depends on age)
once per `snapshot_max_age_s`. So the snapshot `decide` reads lags `now` by less than
`snapshot_max_age_s` in its decay and its ramp fractions, never in its data, and a ramp starts and ends
on time.

Lifetime and concurrency: one instance per worker process, owned by its asyncio loop; not thread-safe.
Workers do not share statistics (each learns from the responses it sees). Every method takes the time
explicitly (`now`, seconds, monotonic) and never reads a clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from itertools import islice
from types import MappingProxyType

from routing.histogram import DecayedHistogram, bucket_quantiles
from routing.lengths import OutputLengths
from routing.provider_limits import Pressure
from routing.snapshot import LatencyEstimate, LatencyPrior, Pressured, Snapshot, Unavailable, blend

DEFAULT_PRIOR = LatencyPrior()
"""TTFT 1 s, TPOT 20 ms: what an unobserved deployment is assumed to do."""

FAST_N = 5
"""The recent answers a deployment in a slow or fast regime has its TTFT read from."""
REGIME_AFTER = 3
"""Answers in a row beyond normal that start a regime."""
REGIME_END = 2
"""Answers in a row back on normal's side of a regime's boundary that end it."""


class _Deployment:
    __slots__ = ("ttft", "tpot", "recent", "last_observed", "failures", "cooldown_until", "circuit_open",
                 "pressure", "pressured_until", "probed_at", "dirty", "ttft_q", "tpot_p50", "buckets", "waiting",
                 "regime", "regime_since", "limits", "recent_at", "boundary", "normal_log")

    def __init__(self, half_life_s: float, last_n: int) -> None:
        self.ttft = DecayedHistogram(half_life_s)
        self.tpot = DecayedHistogram(half_life_s)
        self.recent: deque[float] = deque(maxlen=last_n)
        self.last_observed = -math.inf
        self.failures = 0
        self.cooldown_until = -math.inf
        self.circuit_open = False
        self.pressure: Pressured | None = None
        self.pressured_until = -math.inf
        self.probed_at = -math.inf
        self.dirty = True
        self.ttft_q: tuple[float | None, ...] = ()
        self.tpot_p50: float | None = None
        self.buckets: tuple[tuple[int, float], ...] = ()
        self.waiting: dict[object, float] = {}  # token → sent at, oldest first
        self.regime = 0  # 0 normal, 1 slow, -1 fast (see the module docstring)
        self.recent_at: deque[float] = deque(maxlen=REGIME_AFTER)  # when the last answers were learned
        self.regime_since = -math.inf
        self.limits = (0.0, math.inf)  # what the histogram called normal before the regime began
        self.boundary = 0.0  # between normal and the regime (seconds)
        # What normal looked like after each of the last answers: (low, high, median, weight).
        self.normal_log: deque[tuple[float, float, float, float]] = deque(maxlen=REGIME_AFTER)


class LatencyStats:
    """Per-deployment latency estimates and cool-downs; see the module docstring for the contract.

    `quantiles` are the TTFT quantiles every snapshot precomputes (0.5 is always added); include each
    route policy's `ttft_quantile` (others are computed on demand, more slowly). `pressure_threshold`
    (fraction of a provider limit left, in [0, 1]), `ramp_s` (seconds, ≥ 0; 0 turns ramping off) and
    `ramp_floor` (in [0, 1]) shape pressure and ramping (see the module docstring).
    """

    def __init__(self, *, half_life_s: float = 60.0, prior: LatencyPrior = DEFAULT_PRIOR,
                 priors: Mapping[str, LatencyPrior] | None = None, prior_weight: float = 1.0,
                 quantiles: Iterable[float] = (0.5, 0.9, 0.95, 0.99), last_n: int = 10,
                 cooldown_base_s: float = 1.0, cooldown_max_s: float = 60.0,
                 snapshot_max_age_s: float = 1.0, pressure_threshold: float = 0.1, ramp_s: float = 10.0,
                 ramp_floor: float = 0.1) -> None:
        if half_life_s <= 0 or prior_weight <= 0 or last_n < 1 or cooldown_base_s < 0:
            raise ValueError("half_life_s, prior_weight must be > 0; last_n >= 1; cooldown_base_s >= 0")
        if not (0.0 <= pressure_threshold <= 1.0 and 0.0 <= ramp_floor <= 1.0 and 0.0 <= ramp_s < math.inf):
            raise ValueError("pressure_threshold, ramp_floor must be in [0, 1]; ramp_s finite and >= 0")
        qs = sorted({0.1, 0.5, 0.9, *quantiles})
        if not all(0.0 < q < 1.0 for q in qs):
            raise ValueError("quantiles: each must be in (0, 1)")
        self.half_life_s = half_life_s
        self.prior = prior
        self.priors = dict(priors or {})
        self.prior_weight = prior_weight
        self.quantiles = tuple(qs)
        self.last_n = last_n
        self.cooldown_base_s = cooldown_base_s
        self.cooldown_max_s = cooldown_max_s
        self.snapshot_max_age_s = snapshot_max_age_s
        self.pressure_threshold = pressure_threshold
        self.ramp_s = ramp_s
        self.ramp_floor = ramp_floor
        self._deps: dict[str, _Deployment] = {}
        self.lengths = OutputLengths()
        self._changed = True
        self._snapshot: Snapshot | None = None
        self._prior_estimate = LatencyEstimate.from_prior(prior, self.quantiles, prior_weight)
        self._estimates: dict[str, LatencyEstimate] = {
            k: LatencyEstimate.from_prior(p, self.quantiles, prior_weight) for k, p in self.priors.items()}
        self._pending: set[str] = set()
        self._blended_at = -math.inf
        self._next_transition = math.inf

    def _dep(self, deployment_id: str) -> _Deployment:
        d = self._deps.get(deployment_id)
        if d is None:
            d = self._deps[deployment_id] = _Deployment(self.half_life_s, self.last_n)
        return d

    def _prior(self, deployment_id: str) -> LatencyPrior:
        return self.priors.get(deployment_id, self.prior)

    # -- observations -------------------------------------------------------------------------------

    def observe(self, deployment_id: str, ttft_s: float, tpot_s: float | None, now: float) -> None:
        """Record one successful response: its time to first token and, when the answer had more than one
        output token, its mean time per output token after the first (both seconds)."""
        self.observe_ttft(deployment_id, ttft_s, now)
        if tpot_s is not None:
            self.observe_tpot(deployment_id, tpot_s, now)

    def observe_ttft(self, deployment_id: str, ttft_s: float, now: float) -> int | None:
        """Record a first token `ttft_s` seconds after the request was sent (when it arrives).
        Returns the regime (see the module docstring) the deployment moved to, None when unchanged."""
        d = self._dep(deployment_id)
        before = d.regime
        d.recent.append(ttft_s)
        d.recent_at.append(now)
        if d.regime == 0:
            regime = self._regime_of_last(d)
            if not regime:
                d.ttft.add(ttft_s, now)
                d.dirty = True
                d.normal_log.append(self._normal(d, now))
            else:  # the answers that started it are no part of normal
                d.regime, d.regime_since = regime, now
                low, high, median, _ = d.normal_log[0]
                d.limits = (low, high)
                last = self._last(d, REGIME_AFTER)
                for x, at in zip(last[:-1], list(d.recent_at)[:-1], strict=True):
                    d.ttft.remove(x, at)
                d.boundary = math.sqrt(median * sorted(last)[1])
                d.normal_log.clear()
                d.dirty = True
        elif now - d.regime_since > 2 * self.half_life_s and (ttft_s > d.boundary) == (d.regime > 0):
            # still on the regime's side after two half-lives: the new normal
            d.ttft = DecayedHistogram(self.half_life_s)
            for x in d.recent:
                d.ttft.add(x, now)
            d.regime, d.dirty = 0, True
        elif all((x <= d.boundary) == (d.regime > 0) for x in self._last(d, REGIME_END)):
            d.regime = 0
            for x, at in zip(self._last(d, REGIME_END), list(d.recent_at)[-REGIME_END:], strict=True):
                d.ttft.add(x, at)
            d.dirty = True
            d.normal_log.append(self._normal(d, now))
        d.probed_at = -math.inf  # observed: the probe's answer is in
        d.last_observed = max(d.last_observed, now)
        d.dirty = True
        self._pending.add(deployment_id)
        self._changed = True
        return d.regime if d.regime != before else None

    def observe_tpot(self, deployment_id: str, tpot_s: float, now: float) -> None:
        """Record a finished answer's mean time per output token after the first, seconds."""
        d = self._dep(deployment_id)
        d.tpot.add(tpot_s, now)
        d.dirty = True
        self._pending.add(deployment_id)
        self._changed = True

    def observe_output(self, deployment_id: str, tokens: int, cap: int | None) -> None:
        """Record a finished answer's output tokens, produced under the request's max_tokens `cap`."""
        if self.lengths.observe(deployment_id, tokens, cap):
            self._changed = True

    def recent(self, deployment_id: str) -> tuple[float, ...]:
        """The last TTFT samples, seconds, oldest first."""
        d = self._deps.get(deployment_id)
        return () if d is None else tuple(d.recent)

    def regime(self, deployment_id: str) -> int:
        """0 normal, 1 slow, -1 fast (see the module docstring)."""
        d = self._deps.get(deployment_id)
        return 0 if d is None else d.regime

    def _refresh(self, d: _Deployment) -> None:
        if d.dirty:
            d.buckets = d.ttft.buckets()
            d.ttft_q = bucket_quantiles(d.buckets, self.quantiles)
            d.tpot_p50 = d.tpot.quantile(0.5)
            d.dirty = False

    def _normal(self, d: _Deployment, now: float) -> tuple[float, float, float, float]:
        """(low, high, median, weight): what the histogram now calls normal (see the module docstring)."""
        self._refresh(d)
        qs = self.quantiles
        p10, p50, p90 = (d.ttft_q[qs.index(q)] for q in (0.1, 0.5, 0.9))
        if p10 is None or p50 is None or p90 is None:
            return (0.0, math.inf, 0.0, 0.0)
        return (min(p50 / 2.5, p10 / 1.5), max(2.5 * p50, 1.5 * p90), p50, d.ttft.weight(now))

    @staticmethod
    def _last(d: _Deployment, n: int) -> list[float]:
        return list(islice(d.recent, max(0, len(d.recent) - n), None))

    def _regime_of_last(self, d: _Deployment) -> int:
        """1 when the last `REGIME_AFTER` answers (the newest included, not yet in the histogram) are
        all above what normal was before the first of them, -1 all below, else 0; 0 with less than 5
        answers' weight of history."""
        if len(d.recent) < REGIME_AFTER or len(d.normal_log) < REGIME_AFTER:
            return 0
        low, high, _, weight = d.normal_log[0]
        if weight < 5.0:
            return 0
        last = self._last(d, REGIME_AFTER)
        if all(x > high for x in last):
            return 1
        return -1 if all(x < low for x in last) else 0

    def record_probe(self, deployment_id: str, now: float) -> None:
        """Note that a decision explored the deployment at `now` (see the module docstring); kept until
        the deployment's next observation."""
        d = self._dep(deployment_id)
        if d.probed_at != now:
            d.probed_at = now
            self._changed = True

    # -- requests waiting for their first token ---------------------------------------------------

    def begin(self, deployment_id: str, token: object, now: float) -> None:
        """A streamed request was sent to the deployment at `now` and waits for its first token."""
        self._dep(deployment_id).waiting[token] = now

    def end(self, deployment_id: str, token: object) -> None:
        """The request's wait is over (first token, failure, or gone). Idempotent."""
        d = self._deps.get(deployment_id)
        if d is not None:
            d.waiting.pop(token, None)

    def floors(self, deployment_ids: Iterable[str], now: float) -> dict[str, float]:
        """Per deployment whose waiting requests' median wait exceeds its p90 TTFT estimate: that median
        wait, seconds (a lower bound of its TTFT now). Empty in the common case, cheaply: one look at the
        oldest waiting request per deployment."""
        out: dict[str, float] = {}
        for dep_id in deployment_ids:
            d = self._deps.get(dep_id)
            if d is None or not d.waiting:
                continue
            est = self._estimates.get(dep_id, self._prior_estimate)
            p90 = est.ttft_s.get(0.9, est.ttft_p50_s)
            if now - next(iter(d.waiting.values())) <= p90:
                continue
            n = len(d.waiting)
            sent = next(islice(d.waiting.values(), (n - 1) // 2, None))
            if now - sent > p90:
                out[dep_id] = now - sent
        return out

    def quantile(self, deployment_id: str, q: float, now: float, *, metric: str = "ttft") -> float:
        """The q-quantile of TTFT (or of TPOT with ``metric="tpot"``) at `now`, seconds, blended with the
        prior (the prior alone for a deployment without data)."""
        prior = self._prior(deployment_id)
        d = self._deps.get(deployment_id)
        if metric not in ("ttft", "tpot"):
            raise ValueError("metric: must be ttft or tpot")
        p = prior.ttft_s if metric == "ttft" else prior.tpot_s
        if d is None:
            return p
        h = d.ttft if metric == "ttft" else d.tpot
        return blend(h.quantile(q), h.weight(now), p, self.prior_weight)

    def weight(self, deployment_id: str, now: float) -> float:
        """The effective (decayed) number of TTFT observations at `now`."""
        d = self._deps.get(deployment_id)
        return 0.0 if d is None else d.ttft.weight(now)

    def staleness(self, deployment_id: str, now: float) -> float:
        """Seconds since the newest observation; inf when never observed."""
        d = self._deps.get(deployment_id)
        return math.inf if d is None else now - d.last_observed

    def last_n_mean(self, deployment_id: str, n: int | None = None) -> float | None:
        """Mean of the last `n` (default `last_n`, at most `last_n`) TTFT samples; None without data."""
        d = self._deps.get(deployment_id)
        if d is None or not d.recent:
            return None
        samples = list(d.recent)[-(n or self.last_n):]
        return sum(samples) / len(samples)

    # -- health -------------------------------------------------------------------------------------

    def record_failure(self, deployment_id: str, now: float, retry_after_s: float | None = None) -> float:
        """Count a failed attempt and start (or extend) a cool-down; returns when it ends (seconds)."""
        d = self._dep(deployment_id)
        d.failures += 1
        backoff = self.cooldown_base_s * 2.0 ** min(d.failures - 1, 62)
        duration = min(self.cooldown_max_s, max(backoff, retry_after_s or 0.0))
        d.cooldown_until = max(d.cooldown_until, now + duration)
        self._changed = True
        return d.cooldown_until

    def record_success(self, deployment_id: str, now: float) -> None:
        """Reset the consecutive-failure streak (the next failure backs off from the base again)."""
        d = self._deps.get(deployment_id)
        if d is not None and d.failures:
            d.failures = 0
            self._changed = True

    def cooling_down(self, deployment_id: str, now: float) -> bool:
        d = self._deps.get(deployment_id)
        return d is not None and d.cooldown_until > now

    def record_pressure(self, deployment_id: str, pressure: Pressure, now: float) -> float | None:
        """Apply one reading of the deployment's provider rate-limit headers (see the module docstring);
        returns until when it is under pressure (seconds), or None when it is not. Never touches the
        failure streak or a cool-down."""
        d = self._dep(deployment_id)
        duration = min(self.cooldown_max_s, pressure.reset_after_s)
        if pressure.remaining_fraction <= self.pressure_threshold and duration > 0.0:
            reading = Pressured(now + duration, pressure.remaining_fraction, pressure.source)
            if reading != d.pressure:
                d.pressured_until = reading.until
                d.pressure = reading
                self._changed = True
            return reading.until
        if d.pressured_until > now:
            d.pressured_until = now
            self._changed = True
        d.pressure = None
        return None

    def under_pressure(self, deployment_id: str, now: float) -> bool:
        d = self._deps.get(deployment_id)
        return d is not None and d.pressured_until > now

    def set_circuit_open(self, deployment_id: str, is_open: bool) -> None:
        """Mark a deployment's circuit open (dropped by the health filter) or closed."""
        d = self._dep(deployment_id)
        if d.circuit_open != is_open:
            d.circuit_open = is_open
            self._changed = True

    def retain(self, deployment_ids: Iterable[str]) -> None:
        """Forget every deployment not listed (after a config reload removed some)."""
        keep = set(deployment_ids)
        self.lengths.retain(keep)
        for k in [k for k in self._deps if k not in keep]:
            del self._deps[k]
            self._pending.discard(k)
            if k not in self.priors:
                self._estimates.pop(k, None)
            self._changed = True

    # -- snapshot -----------------------------------------------------------------------------------

    def snapshot(self, now: float) -> Snapshot:
        """An immutable view for `decide` as of `now` (see the module docstring for caching)."""
        s = self._snapshot
        max_age = self.snapshot_max_age_s
        if (s is not None and not self._changed and 0.0 <= now - s.taken_at < max_age
                and now < self._next_transition):
            return s
        if 0.0 <= now - self._blended_at < max_age:
            todo: Iterable[str] = self._pending
        else:
            todo = list(self._deps)
            self._blended_at = now
        for dep_id in todo:
            d = self._deps[dep_id]
            if d.last_observed != -math.inf:
                self._estimates[dep_id] = self._estimate(dep_id, d, now)
        self._pending.clear()
        unavailable: dict[str, Unavailable] = {}
        pressured: dict[str, Pressured] = {}
        ramp: dict[str, float] = {}
        probed: dict[str, float] = {}
        ramp_s, floor = self.ramp_s, self.ramp_floor
        transition = math.inf
        for dep_id, d in self._deps.items():
            if d.circuit_open:
                unavailable[dep_id] = Unavailable(math.inf, "circuit open")
            elif d.cooldown_until > now:
                unavailable[dep_id] = Unavailable(
                    d.cooldown_until, f"{d.failures} consecutive failure{'s' if d.failures != 1 else ''}")
                transition = min(transition, d.cooldown_until)
            if d.pressure is not None and d.pressured_until > now:
                pressured[dep_id] = d.pressure
                transition = min(transition, d.pressured_until)
            ended = max(d.cooldown_until, d.pressured_until)
            if not d.circuit_open and ended <= now < ended + ramp_s:
                ramp[dep_id] = floor + (1.0 - floor) * (now - ended) / ramp_s
                transition = min(transition, ended + ramp_s)
            if d.probed_at != -math.inf:
                probed[dep_id] = d.probed_at
        s = self._snapshot = Snapshot(now, self._prior_estimate, MappingProxyType(dict(self._estimates)),
                                      MappingProxyType(unavailable), MappingProxyType(pressured),
                                      MappingProxyType(ramp), MappingProxyType(probed),
                                      self.lengths.view(), self.lengths.fallback())
        self._next_transition = transition
        self._changed = False
        return s

    def _estimate(self, dep_id: str, d: _Deployment, now: float) -> LatencyEstimate:
        qs = self.quantiles
        w0 = self.prior_weight
        self._refresh(d)
        prior = self._prior(dep_id)
        w = d.ttft.weight(now)
        if d.regime == 0:
            ttft = MappingProxyType({q: blend(v, w, prior.ttft_s, w0) for q, v in zip(qs, d.ttft_q, strict=True)})
        else:  # read from the answers on the regime's side among the last ones
            last = self._last(d, FAST_N)
            beyond = sorted(x for x in last if (x > d.boundary) == (d.regime > 0)) or sorted(last)
            n = len(beyond)
            ttft = MappingProxyType({q: beyond[min(n - 1, math.ceil(q * n) - 1)] for q in qs})
        tpot = blend(d.tpot_p50, d.tpot.weight(now), prior.tpot_s, w0)
        return LatencyEstimate(ttft, ttft[0.5], tpot, w, d.last_observed, tuple(d.recent), prior, w0, d.buckets,
                               0.0, d.regime)
