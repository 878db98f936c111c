"""Latency statistics: the decayed histogram's quantiles, decay and rescaling, the prior, staleness,
the last-n ring, cool-downs, and snapshots. The clock is always passed in; nothing sleeps."""

from __future__ import annotations

import math

import pytest

from routing import LatencyPrior, LatencyStats, Snapshot
from routing.histogram import (
    LAST_BUCKET,
    MAX_S,
    MIN_S,
    DecayedHistogram,
    bucket_index,
    bucket_quantile,
    bucket_quantiles,
)


@pytest.mark.parametrize(("value", "index"), [
    (0.0, 0), (-1.0, 0), (MIN_S, 0), (MIN_S * 2 ** (1 / 16) * 1.0001, 1), (MIN_S * 2.0 * 1.0001, 16),
    (1e9, LAST_BUCKET), (MAX_S * 0.999, LAST_BUCKET),
])
def test_bucket_index(value: float, index: int) -> None:
    assert bucket_index(value) == index


@pytest.mark.parametrize("value", [0.0004, 0.012, 0.3, 0.8, 2.5, 40.0])
def test_constant_values_read_back_within_the_bucket_resolution(value: float) -> None:
    h = DecayedHistogram(60.0)
    for _ in range(5):
        h.add(value, 0.0)
    for q in (0.01, 0.5, 0.99):
        assert h.quantile(q) == pytest.approx(value, rel=0.045)


def test_quantiles_of_a_uniform_sample() -> None:
    h = DecayedHistogram(60.0)
    for i in range(1000):
        h.add(0.1 + 0.9 * i / 999, 0.0)
    assert h.quantile(0.5) == pytest.approx(0.55, rel=0.03)
    assert h.quantile(0.9) == pytest.approx(0.91, rel=0.03)
    assert h.quantile(0.99) == pytest.approx(0.991, rel=0.03)


@pytest.mark.parametrize("qs", [(0.5,), (0.1, 0.5, 0.9, 0.99), (0.9, 0.5), (0.5, 0.5, 0.999999)])
def test_one_pass_quantiles_agree_with_one_at_a_time(qs: tuple[float, ...]) -> None:
    h = DecayedHistogram(60.0)
    for i in range(200):
        h.add(0.05 * 1.03 ** i, float(i))
    b = h.buckets()
    assert bucket_quantiles(b, qs) == pytest.approx(tuple(bucket_quantile(b, q) for q in qs))
    assert bucket_quantiles((), qs) == (None,) * len(qs)


def test_empty_histogram() -> None:
    h = DecayedHistogram(60.0)
    assert h.quantile(0.5) is None and h.weight(0.0) == 0.0
    assert bucket_quantile((), 0.5) is None


def test_weight_halves_every_half_life() -> None:
    h = DecayedHistogram(10.0)
    for _ in range(8):
        h.add(1.0, 0.0)
    assert h.weight(0.0) == pytest.approx(8.0)
    assert h.weight(10.0) == pytest.approx(4.0)
    assert h.weight(30.0) == pytest.approx(1.0)


def test_newer_samples_outweigh_older_ones() -> None:
    h = DecayedHistogram(10.0)
    for _ in range(10):
        h.add(2.0, 0.0)
    for _ in range(10):
        h.add(0.2, 0.0)
    assert h.quantile(0.25) == pytest.approx(0.2, rel=0.05) and h.quantile(0.75) == pytest.approx(2.0, rel=0.05)
    h2 = DecayedHistogram(10.0)
    for _ in range(10):
        h2.add(2.0, 0.0)
    for _ in range(10):
        h2.add(0.2, 30.0)  # the slow ones are 3 half-lives older: weight 10/8 against 10
    assert h2.quantile(0.85) == pytest.approx(0.2, rel=0.05)
    assert h2.quantile(0.95) == pytest.approx(2.0, rel=0.05)


def test_rescaling_keeps_weights_finite_and_quantiles_right() -> None:
    h = DecayedHistogram(1.0)
    h.add(5.0, 0.0)
    for t in range(0, 2000, 10):
        h.add(0.5, float(t))
    assert math.isfinite(h.weight(2000.0))
    assert h.quantile(0.999) == pytest.approx(0.5, rel=0.05)
    assert h.weight(1990.0) == pytest.approx(1.0 + 2 ** -10, rel=1e-6)


def test_half_life_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DecayedHistogram(0.0)


def test_prior_without_data_and_blend_with_data() -> None:
    s = LatencyStats(prior=LatencyPrior(1.0, 0.02), priors={"special": LatencyPrior(0.2, 0.005)})
    assert s.quantile("x", 0.9, 0.0) == 1.0
    assert s.quantile("x", 0.5, 0.0, metric="tpot") == 0.02
    assert s.quantile("special", 0.9, 0.0) == 0.2
    s.observe("x", 0.5, 0.01, 0.0)  # one sample, prior weight 1: halfway
    assert s.quantile("x", 0.5, 0.0) == pytest.approx(0.75, rel=0.03)
    assert s.quantile("x", 0.5, 0.0, metric="tpot") == pytest.approx(0.015, rel=0.03)
    for _ in range(99):
        s.observe("x", 0.5, 0.01, 0.0)
    assert s.quantile("x", 0.5, 0.0) == pytest.approx(0.5, rel=0.05)
    with pytest.raises(ValueError):
        s.quantile("x", 0.5, 0.0, metric="e2e")


def test_old_data_drifts_back_to_the_prior() -> None:
    s = LatencyStats(half_life_s=10.0, prior=LatencyPrior(1.0, 0.02))
    for _ in range(20):
        s.observe("x", 3.0, None, 0.0)
    assert s.quantile("x", 0.9, 0.0) == pytest.approx(3.0, rel=0.06)
    assert s.weight("x", 0.0) == pytest.approx(20.0)
    assert s.quantile("x", 0.9, 1000.0) == pytest.approx(1.0, rel=1e-6)
    assert s.quantile("x", 0.5, 1000.0, metric="tpot") == 0.02  # never observed


def test_staleness_and_last_n_mean() -> None:
    s = LatencyStats(last_n=3)
    assert s.staleness("x", 5.0) == math.inf and s.last_n_mean("x") is None
    for i, t in enumerate([1.0, 2.0, 3.0, 4.0]):
        s.observe("x", t, None, float(i))
    assert s.staleness("x", 10.0) == 7.0
    assert s.last_n_mean("x") == pytest.approx(3.0)
    assert s.last_n_mean("x", 1) == 4.0
    assert s.last_n_mean("x", 99) == pytest.approx(3.0)


@pytest.mark.parametrize(("failures", "retry_after", "until"), [
    (1, None, 101.0), (2, None, 102.0), (3, None, 104.0), (6, None, 132.0), (7, None, 160.0), (12, None, 160.0),
    (1, 30.0, 130.0), (3, 2.0, 104.0), (1, 600.0, 160.0), (1, 0.0, 101.0),
])
def test_cooldown_backs_off_exponentially(failures: int, retry_after: float | None, until: float) -> None:
    s = LatencyStats(cooldown_base_s=1.0, cooldown_max_s=60.0)
    for _ in range(failures - 1):
        s.record_failure("x", 0.0)
    assert s.record_failure("x", 100.0, retry_after) == until
    assert s.cooling_down("x", until - 0.001) and not s.cooling_down("x", until)


def test_success_resets_the_streak_but_not_a_running_cooldown() -> None:
    s = LatencyStats()
    s.record_failure("x", 0.0)
    s.record_failure("x", 0.0)
    s.record_success("x", 0.5)
    assert s.cooling_down("x", 1.0)
    assert s.record_failure("x", 10.0) == 11.0
    assert not s.cooling_down("never-failed", 0.0)


def test_snapshot_lists_unavailable_deployments() -> None:
    s = LatencyStats()
    s.record_failure("a", 0.0)
    s.record_failure("a", 0.0)
    s.set_circuit_open("b", True)
    snap = s.snapshot(0.5)
    assert snap.unavailable["a"].until == 2.0 and snap.unavailable["a"].reason == "2 consecutive failures"
    assert snap.unavailable["b"].until == math.inf and snap.unavailable["b"].reason == "circuit open"
    s.set_circuit_open("b", False)
    assert set(s.snapshot(3.0).unavailable) == set()


def test_snapshot_estimates() -> None:
    s = LatencyStats(quantiles=(0.9,), prior=LatencyPrior(1.0, 0.02))
    for i in range(100):
        s.observe("a", 0.2 + 0.002 * i, 0.01, 50.0)
    snap = s.snapshot(60.0)
    e = snap.estimate("a")
    assert set(e.ttft_s) == {0.1, 0.5, 0.9}  # p10, p50 and p90 always (regimes read them)
    assert e.ttft_s[0.9] == pytest.approx(0.38, rel=0.05)
    assert e.ttft_p50_s == e.ttft_s[0.5] == pytest.approx(0.3, rel=0.05)
    assert e.tpot_p50_s == pytest.approx(0.01, rel=0.05)
    assert e.ttft_quantile(0.99) == pytest.approx(0.4, rel=0.05)  # not precomputed: from the buckets
    assert e.weight == pytest.approx(100 * 2 ** (-10 / 60))
    assert e.last_observed == 50.0 and len(e.recent_ttfts_s) == 10
    assert snap.staleness("a", 70.0) == 20.0 and snap.staleness("b", 70.0) == math.inf
    assert snap.estimate("b") is snap.prior and snap.prior.ttft_quantile(0.9) == 1.0


def test_snapshot_is_reused_until_something_changes_or_it_ages() -> None:
    s = LatencyStats(snapshot_max_age_s=1.0)
    s.observe("a", 0.3, 0.01, 0.0)
    first = s.snapshot(10.0)
    assert s.snapshot(10.5) is first
    assert s.snapshot(11.0) is not first
    again = s.snapshot(11.0)
    s.observe("a", 0.3, 0.01, 11.0)
    assert s.snapshot(11.0) is not again
    s.record_failure("a", 11.0)
    assert s.snapshot(11.0).unavailable


def test_snapshot_is_immutable_and_detached() -> None:
    s = LatencyStats()
    s.observe("a", 0.3, 0.01, 0.0)
    snap = s.snapshot(0.0)
    with pytest.raises(TypeError):
        snap.estimates["b"] = snap.prior  # type: ignore[index]
    with pytest.raises(AttributeError):
        snap.taken_at = 5.0  # type: ignore[misc]
    before = snap.estimate("a")
    for _ in range(50):
        s.observe("a", 5.0, 0.01, 1.0)
    assert snap.estimate("a") is before and before.ttft_p50_s < 1.0


def test_retain_forgets_removed_deployments() -> None:
    s = LatencyStats()
    s.observe("a", 0.3, None, 0.0)
    s.observe("b", 0.3, None, 0.0)
    s.retain(["a"])
    assert s.staleness("b", 1.0) == math.inf and set(s.snapshot(1.0).estimates) == {"a"}


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        LatencyStats(half_life_s=0)
    with pytest.raises(ValueError):
        LatencyStats(quantiles=(1.0,))
    assert LatencyStats(quantiles=(0.99,)).quantiles == (0.1, 0.5, 0.9, 0.99)  # p10, p50, p90 always


def test_empty_snapshot_reads_priors() -> None:
    snap = Snapshot(0.0)
    assert snap.estimate("x").ttft_p50_s == 1.0 and snap.estimate("x").tpot_p50_s == 0.02


def test_a_histogram_takes_back_an_observation_exactly_across_rescaling() -> None:
    from routing.histogram import DecayedHistogram
    h = DecayedHistogram(100.0)
    for k in range(20):
        h.add(0.1, float(k))
    h.add(5.0, 20.0)
    h.add(5.0, 20.5)
    h.add(0.1, 30_000.0)  # 300 half-lives past the landmark: the buckets were rescaled since
    h.remove(5.0, 20.0)
    h.remove(5.0, 20.5)
    assert h.quantile(0.99) == pytest.approx(0.1, rel=0.1)
    fresh = DecayedHistogram(100.0)
    for k in range(20):
        fresh.add(0.1, float(k))
    fresh.add(0.1, 30_000.0)
    assert h.weight(30_000.0) == pytest.approx(fresh.weight(30_000.0), rel=1e-9)
