"""An exponentially decayed histogram over log-spaced buckets: online quantiles of latencies.

Theory of operation. Values (seconds) fall into buckets whose bounds grow by 2^(1/16) from 0.1 ms to
1000 s (373 buckets, each 4.4 % wide, so a quantile is off by at most 4.4 %; values outside the range
are clamped to the end buckets). An observation made at time t is weighted 2^((t − landmark) /
half_life) ("forward decay"): instead of shrinking every bucket as time passes, newer observations are
added with larger weights. Decay multiplies every bucket by the same factor, so quantiles only move when
new data arrives, and a sample `half_life_s` older than another counts half as much. The effective
(decayed) sample count at `now` is total × 2^(−(now − landmark) / half_life). When the exponent grows
large the buckets are rescaled and the landmark moves to the present, so weights never overflow
(buckets whose weight has fallen below 1e-12 of the total are dropped then).

Why this estimator: O(1) updates, no sorting of samples, bounded memory, exact decay semantics and
mergeable state; P² or t-digest variants track one stream well but decay awkwardly.

Quantiles interpolate geometrically inside the bucket that holds the target rank. Memory: one dict
entry per occupied bucket (at most 373; one deployment's latencies typically occupy a few dozen).
Cost: `add` is O(1); `quantile` sorts the occupied buckets. Not thread-safe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MIN_S = 1e-4
MAX_S = 1e3
_LOG_R = math.log(2.0) / 16
LAST_BUCKET = math.ceil(math.log(MAX_S / MIN_S) / _LOG_R) - 1
_RESCALE_EXPONENT = 256.0

Buckets = tuple[tuple[int, float], ...]


def bucket_index(value_s: float) -> int:
    """The bucket holding `value_s`: bucket i covers [MIN_S·r^i, MIN_S·r^(i+1)), r = 2^(1/16)."""
    if value_s <= MIN_S:
        return 0
    return min(int(math.log(value_s / MIN_S) / _LOG_R), LAST_BUCKET)


def bucket_quantile(buckets: Buckets, q: float) -> float | None:
    """The q-quantile (0 < q < 1) of weighted, index-sorted buckets; None when they hold no weight."""
    total = 0.0
    for _, w in buckets:
        total += w
    if total <= 0.0:
        return None
    target = q * total
    cum = 0.0
    for i, w in buckets:
        if cum + w >= target:
            frac = (target - cum) / w if w > 0 else 0.5
            return MIN_S * math.exp((i + frac) * _LOG_R)
        cum += w
    return MIN_S * math.exp((buckets[-1][0] + 1) * _LOG_R)


def bucket_quantiles(buckets: Buckets, qs: Sequence[float]) -> tuple[float | None, ...]:
    """`bucket_quantile` for several quantiles, in one pass when `qs` is ascending."""
    if any(b < a for a, b in zip(qs, qs[1:], strict=False)):
        return tuple(bucket_quantile(buckets, q) for q in qs)
    total = 0.0
    for _, w in buckets:
        total += w
    if total <= 0.0:
        return (None,) * len(qs)
    out: list[float | None] = []
    k, n = 0, len(qs)
    cum = 0.0
    for i, w in buckets:
        while k < n and cum + w >= qs[k] * total:
            frac = (qs[k] * total - cum) / w if w > 0 else 0.5
            out.append(MIN_S * math.exp((i + frac) * _LOG_R))
            k += 1
        if k == n:
            break
        cum += w
    top = MIN_S * math.exp((buckets[-1][0] + 1) * _LOG_R)
    out.extend([top] * (n - k))
    return tuple(out)


class DecayedHistogram:
    """Forward-decayed log histogram (see the module docstring). `half_life_s` > 0, times in seconds."""

    __slots__ = ("half_life_s", "_landmark", "_total", "_buckets")

    def __init__(self, half_life_s: float) -> None:
        if half_life_s <= 0:
            raise ValueError("half_life_s: must be > 0")
        self.half_life_s = half_life_s
        self._landmark: float | None = None
        self._total = 0.0
        self._buckets: dict[int, float] = {}

    def add(self, value_s: float, now: float) -> None:
        """Record one observation of `value_s` seconds made at `now`."""
        if self._landmark is None:
            self._landmark = now
        exponent = (now - self._landmark) / self.half_life_s
        if exponent > _RESCALE_EXPONENT:
            self._rescale(now)
            exponent = 0.0
        w = 2.0 ** max(exponent, -_RESCALE_EXPONENT)
        i = bucket_index(value_s)
        self._buckets[i] = self._buckets.get(i, 0.0) + w
        self._total += w

    def remove(self, value_s: float, at: float) -> None:
        """Take back one observation of `value_s` seconds recorded at `at`. Exact whatever rescaling
        happened since (forward decay does not depend on the landmark), up to pruning."""
        if self._landmark is None:
            return
        exponent = (at - self._landmark) / self.half_life_s
        w = 2.0 ** max(exponent, -_RESCALE_EXPONENT)
        i = bucket_index(value_s)
        left = self._buckets.get(i, 0.0) - w
        if left > self._total * 1e-12:
            self._buckets[i] = left
        else:
            self._buckets.pop(i, None)
        self._total = max(0.0, self._total - w)

    def weight(self, now: float) -> float:
        """The effective number of observations at `now`: each counts 2^(−age / half_life)."""
        if self._landmark is None:
            return 0.0
        exponent = (now - self._landmark) / self.half_life_s
        return self._total * 2.0 ** (-min(exponent, 1024.0))

    def buckets(self) -> Buckets:
        """(bucket index, relative weight) pairs sorted by index; weights share one arbitrary scale."""
        return tuple(sorted(self._buckets.items()))

    def quantile(self, q: float) -> float | None:
        """The q-quantile in seconds, or None before the first observation."""
        return bucket_quantile(self.buckets(), q)

    def _rescale(self, now: float) -> None:
        assert self._landmark is not None
        factor = 2.0 ** (-(now - self._landmark) / self.half_life_s)
        floor = self._total * factor * 1e-12
        self._buckets = {i: w * factor for i, w in self._buckets.items() if w * factor > floor}
        self._total = sum(self._buckets.values())
        self._landmark = now
