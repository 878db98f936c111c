"""The plan: replicas needed per hour, the fixed size, and the cost/latency trade-off of pool sizes
(see the package docstring). Pure."""

from __future__ import annotations

import bisect
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from routing.capacity.profile import ServerModel
from routing.capacity.sim import Outcome, SimResult, simulate
from routing.capacity.traffic import TrafficRecord

RUNS = 16
"""Simulations per figure: each figure is the median (counts: the mean) over this many runs."""
JITTER_S = 0.005
"""How far each run but the first moves each arrival (uniform within ± this, seeded by the run).

Why an ensemble: the TTFT quantile of a pool near saturation hangs on where arrivals fall against
engine-step boundaries. On the pool evaluation's 386-request slice (4 profiled servers), moving
every arrival by at most ±2 ms gave a p90 from 277 to 353 ms at 5 replicas and from 336 to 421 ms at
3 with spillover: any one simulation is a draw from that spread, and so is a real day (network and
gateway latency move arrivals by milliseconds). The median over 32 runs was 307–309 and 376–382 ms
for every jitter from ±2 to ±25 ms; the replayed p90 was 305 and 369 ms. 16 runs cost 16 times
one simulation (about 5 ms per run of that slice)."""


def quantile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile (q in (0, 1]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass(frozen=True)
class Slo:
    ttft_ms: float
    quantile: float = 0.9
    tpot_ms: float | None = None
    priority: str | None = "interactive"  # the class the SLO applies to; None: every request


@dataclass(frozen=True)
class Prices:
    gpu_hour_usd: float  # per replica and hour of GPU time (3,600 s of the record)
    provider_in_per_mtok: float = 0.0
    provider_out_per_mtok: float = 0.0

    def provider_usd(self, prompt_tokens: int, output_tokens: int) -> float:
        return (prompt_tokens * self.provider_in_per_mtok + output_tokens * self.provider_out_per_mtok) / 1e6


@dataclass(frozen=True)
class HourStats:
    hour: int  # bin index from the start of the record's first day
    arrivals: int
    ttft_ms: float | None  # the SLO quantile of the SLO class's TTFT on the pool (None: none served)
    tpot_ms: float | None
    utilization: float
    spilled: int = 0
    spend_usd: float = 0.0

    @property
    def spill_share(self) -> float:
        return self.spilled / self.arrivals if self.arrivals else 0.0


@dataclass(frozen=True)
class SizeResult:
    """One pool size over the whole record (with the spillover policy when `spill`)."""

    replicas: int
    hours: tuple[HourStats, ...]
    gpu_usd: float
    provider_usd: float
    ttft_ms: float | None  # the SLO quantile over the whole record, pool-served SLO class
    attainment: float  # share of the SLO class within the TTFT SLO (spilled ones count as within)
    slo_met: bool

    @property
    def total_usd(self) -> float:
        return self.gpu_usd + self.provider_usd

    @property
    def spill_share(self) -> float:
        arrivals = sum(h.arrivals for h in self.hours)
        return sum(h.spilled for h in self.hours) / arrivals if arrivals else 0.0


@dataclass(frozen=True)
class HourNeed:
    hour: int
    arrivals: int
    replicas: int | None  # None: the SLO cannot be met in this hour (see Plan.infeasible)
    ttft_ms: float | None  # predicted SLO quantile at that size
    utilization: float


@dataclass(frozen=True)
class Plan:
    slo: Slo
    target_utilization: float
    hour_s: float
    needs: tuple[HourNeed, ...]
    tradeoff: tuple[SizeResult, ...]
    infeasible: tuple[str, ...]
    autoscaled_gpu_usd: float | None  # every hour at its own need (None: some hour is infeasible)
    fixed: SizeResult | None = None  # the smallest fixed size meeting every hour without spillover
    runs: int = 1  # simulations behind each figure
    jitter_s: float = 0.0  # their arrival jitter (see `JITTER_S`)

    @property
    def peak_replicas(self) -> int | None:
        """The fixed size that meets the SLO (at the target utilization) all day without spillover;
        None: no size up to `max_replicas` does."""
        return self.fixed.replicas if self.fixed is not None else None

    @property
    def recommended(self) -> SizeResult | None:
        """The cheapest size of the trade-off that meets the SLO (with spillover), or None."""
        ok = [s for s in self.tradeoff if s.slo_met]
        return min(ok, key=lambda s: (round(s.total_usd, 6), s.replicas)) if ok else None


def _bins(records: Sequence[TrafficRecord], hour_s: float) -> tuple[int, int]:
    if not records:
        return 0, 1
    return int(records[0].t // hour_s), int(records[-1].t // hour_s) + 1


def _in_class(r: TrafficRecord, slo: Slo) -> bool:
    return slo.priority is None or r.priority == slo.priority


def _hour_stats(sim: SimResult, slo: Slo, prices: Prices, first_bin: int, end_bin: int) -> list[HourStats]:
    per: dict[int, list[Outcome]] = {h: [] for h in range(first_bin, end_bin)}
    for o in sim.outcomes:
        h = int(o.record.t // sim.hour_s)
        if h in per:
            per[h].append(o)
    out = []
    for h in range(first_bin, end_bin):
        served = [o for o in per[h] if not o.spilled and _in_class(o.record, slo)]
        ttft = quantile([o.ttft_s * 1000 for o in served], slo.quantile)
        tpot = quantile([o.tpot_s * 1000 for o in served if o.record.output_tokens > 1], slo.quantile)
        sp = [o for o in per[h] if o.spilled]
        out.append(HourStats(h, len(per[h]), ttft, tpot, sim.utilization[h], len(sp),
                             sum(prices.provider_usd(o.record.prompt_tokens, o.record.output_tokens) for o in sp)))
    return out


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _simulate(records: Sequence[TrafficRecord], servers: Sequence[ServerModel], replicas: int,
              spill_at: float | None, hour_s: float, hours: int, band: float, runs: int, jitter_s: float
              ) -> list[SimResult]:
    """`runs` simulations of the record: the first at its own times, each other one with every
    arrival moved uniformly within ±`jitter_s` (seeded by the run: the same inputs give the same
    result). See `JITTER_S`."""
    out = [simulate(records, servers, replicas, spill_at, hour_s, hours, band)]
    for k in range(1, runs):
        rng = random.Random(k)
        times = [r.t + rng.uniform(-jitter_s, jitter_s) for r in records]
        out.append(simulate(records, servers, replicas, spill_at, hour_s, hours, band, arrivals=times))
    return out


def _hour_stats_many(sims: Sequence[SimResult], slo: Slo, prices: Prices, first_bin: int, end_bin: int
                     ) -> list[HourStats]:
    """Per hour over the runs: the median TTFT and TPOT quantile, the mean utilization, spill and spend."""
    per_run = [_hour_stats(sim, slo, prices, first_bin, end_bin) for sim in sims]
    return [HourStats(hs[0].hour, hs[0].arrivals, _median([h.ttft_ms for h in hs]),
                      _median([h.tpot_ms for h in hs]), statistics.fmean(h.utilization for h in hs),
                      round(statistics.fmean(h.spilled for h in hs)), statistics.fmean(h.spend_usd for h in hs))
            for hs in zip(*per_run, strict=True)]


def _meets(h: HourStats, slo: Slo) -> bool:
    return ((h.ttft_ms is None or h.ttft_ms <= slo.ttft_ms)
            and (slo.tpot_ms is None or h.tpot_ms is None or h.tpot_ms <= slo.tpot_ms))


def predict(records: Sequence[TrafficRecord], servers: Sequence[ServerModel], replicas: int, slo: Slo,
            prices: Prices, spill_at: float | None = None, hour_s: float = 3600.0, band: float = 0.05,
            runs: int = RUNS, jitter_s: float = JITTER_S) -> SizeResult:
    """One pool size over the record: per-hour figures, costs, whether every hour meets the SLO
    (each figure over `runs` simulations, see `JITTER_S`)."""
    if runs < 1:
        raise ValueError("predict needs at least one run")
    first_bin, end_bin = _bins(records, hour_s)
    sims = _simulate(records, servers, replicas, spill_at, hour_s, end_bin, band, runs, jitter_s)
    hours = _hour_stats_many(sims, slo, prices, first_bin, end_bin)
    ttfts, attained = [], []
    for sim in sims:
        cls = [o for o in sim.outcomes if _in_class(o.record, slo)]
        ttfts.append(quantile([o.ttft_s * 1000 for o in cls if not o.spilled], slo.quantile))
        within = sum(1 for o in cls if o.spilled or o.ttft_s * 1000 <= slo.ttft_ms)
        attained.append(within / len(cls) if cls else 1.0)
    return SizeResult(replicas, tuple(hours), replicas * prices.gpu_hour_usd * (end_bin - first_bin) * hour_s / 3600,
                      sum(h.spend_usd for h in hours), _median(ttfts), statistics.fmean(attained),
                      all(_meets(h, slo) for h in hours))


def _lower_bound_reason(records: Sequence[TrafficRecord], servers: Sequence[ServerModel], slo: Slo,
                        hour: int, hour_s: float) -> str | None:
    """Why the SLO cannot hold in `hour` however many replicas serve it (each request alone on the
    fastest server), or None."""
    cls = [r for r in records if int(r.t // hour_s) == hour and _in_class(r, slo)]
    if not cls:
        return None
    ttft = min(quantile([m.alone_ttft_s(r.prompt_tokens - r.cached_tokens) * 1000
                         for r in cls], slo.quantile) or 0.0 for m in servers)
    if ttft > slo.ttft_ms:
        return (f"hour {hour}: p{slo.quantile * 100:g} TTFT is {ttft:,.0f} ms even with each request alone on the "
                f"fastest server (prefill alone), above the {slo.ttft_ms:,.0f} ms SLO")
    tpot = min(m.step_s(1) for m in servers) * 1000
    if slo.tpot_ms is not None and tpot > slo.tpot_ms:
        return (f"hour {hour}: one decode step takes {tpot:,.1f} ms even alone, above the {slo.tpot_ms:,.1f} ms "
                "TPOT SLO")
    return None


def _busy_servers(records: Sequence[TrafficRecord], servers: Sequence[ServerModel], hour_s: float) -> int:
    """A lower bound of the servers `records` keep busy for `hour_s`: their prefill and decode work on
    the fastest server with the largest batch its KV cache and slots allow (the search starts here)."""
    if not records:
        return 0
    tokens = sum(r.prompt_tokens + r.output_tokens / 2 for r in records) / len(records)
    least = math.inf
    for m in servers:
        batch = min(m.slots or 1024, (m.kv_tokens or 10**9) / max(tokens, 1.0), 1024.0)
        work = sum((r.prompt_tokens - r.cached_tokens) / m.prefill_tokens_per_s
                   + r.output_tokens * m.step_s(max(int(batch), 1)) / max(batch, 1.0) for r in records)
        least = min(least, work / hour_s)
    return int(least)


def plan(records: Sequence[TrafficRecord], servers: Sequence[ServerModel], slo: Slo, prices: Prices,
         target_utilization: float = 0.8, hour_s: float = 3600.0, sizes: Sequence[int] = (),
         min_replicas: int = 1, max_replicas: int = 64, band: float = 0.05, runs: int = RUNS,
         jitter_s: float = JITTER_S, progress: Callable[[str], None] | None = None) -> Plan:
    """Replicas needed per hour, and the trade-off of `sizes` (default: the hourly needs' range) with
    spillover at `target_utilization` ± `band`; every figure over `runs` simulations (see `JITTER_S`).
    `progress` is called with a few words after each step (an hour's need, a size tried)."""
    say = progress or (lambda _: None)
    if not 0 < target_utilization <= 1:
        raise ValueError("target utilization must be in (0, 1]")
    if runs < 1:
        raise ValueError("plan needs at least one run")
    first_bin, end_bin = _bins(records, hour_s)
    needs: dict[int, HourNeed] = {}
    infeasible: list[str] = []
    counts = {h: 0 for h in range(first_bin, end_bin)}
    for r in records:
        counts[int(r.t // hour_s)] += 1
    for h in range(first_bin, end_bin):
        if counts[h] == 0:
            needs[h] = HourNeed(h, 0, min_replicas, None, 0.0)
            continue
        reason = _lower_bound_reason(records, servers, slo, h, hour_s)
        if reason:
            infeasible.append(reason)
            needs[h] = HourNeed(h, counts[h], None, None, 0.0)
    times = [r.t for r in records]
    last: dict[int, HourStats] = {}
    for h in range(first_bin, end_bin):
        if h in needs:
            continue
        lo, hi = bisect.bisect_left(times, (h - 1) * hour_s), bisect.bisect_left(times, (h + 1) * hour_s)
        mid = bisect.bisect_left(times, h * hour_s)
        n = max(min_replicas, _busy_servers(records[mid:hi], servers, hour_s) - 1)
        while n <= max_replicas:
            # The hour at n replicas, after the hour before it at n replicas too (its queue carries over).
            sims = _simulate(records[lo:hi], servers, n, None, hour_s, h + 1, band, runs, jitter_s)
            hs = last[h] = _hour_stats_many(sims, slo, prices, h, h + 1)[0]
            if _meets(hs, slo) and hs.utilization <= target_utilization:
                needs[h] = HourNeed(h, hs.arrivals, n, hs.ttft_ms, hs.utilization)
                break
            n += 1
        say(f"hour {h - first_bin + 1} of {end_bin - first_bin}: {needs[h].replicas if h in needs else 'none'}"
            f" replicas")
    for h, hs in sorted(last.items()):
        if h not in needs:
            ttft = "—" if hs.ttft_ms is None else f"{hs.ttft_ms:,.0f} ms"
            infeasible.append(f"hour {h}: not met with {max_replicas} replicas (p{slo.quantile * 100:g} TTFT "
                              f"{ttft}, utilization {hs.utilization:.2f})")
            needs[h] = HourNeed(h, hs.arrivals, None, hs.ttft_ms, hs.utilization)
    ordered = tuple(needs[h] for h in range(first_bin, end_bin))
    fixed = None
    if not infeasible:  # a fixed pool carries the peak's queue into the next hours: it may need more
        n = max([h.replicas or min_replicas for h in ordered] + [min_replicas])
        while fixed is None and n <= max_replicas:
            say(f"all day without spillover: trying {n} replicas")
            result = predict(records, servers, n, slo, prices, None, hour_s, band, runs, jitter_s)
            if result.slo_met and all(h.utilization <= target_utilization for h in result.hours):
                fixed = result
            n += 1
        if fixed is None:
            infeasible.append(f"no fixed size up to {max_replicas} replicas meets the SLO all day without spillover")
    known = sorted({h.replicas for h in ordered if h.replicas is not None and h.arrivals})
    if not sizes:
        base = set(known) if known else {min_replicas}
        if known:
            base = {known[0], known[len(known) // 2], known[-1], known[-1] + 1}
            # one size under every hour's own need: spillover may carry what it cannot serve
            base |= {n for n in (known[0] - 1, known[-1] - 1) if n >= min_replicas}
        if fixed is not None:
            base.add(fixed.replicas)
        sizes = sorted(base)
    tradeoff = []
    for i, size in enumerate(sorted(set(sizes)), 1):
        say(f"size {size} with spillover ({i} of {len(set(sizes))})")
        tradeoff.append(predict(records, servers, size, slo, prices, target_utilization, hour_s, band, runs,
                                jitter_s))
    autoscaled = None
    if all(h.replicas is not None for h in ordered):
        autoscaled = sum((h.replicas or 0) for h in ordered) * prices.gpu_hour_usd * hour_s / 3600
    return Plan(slo, target_utilization, hour_s, ordered, tuple(tradeoff), tuple(infeasible), autoscaled, fixed, runs,
                jitter_s)
