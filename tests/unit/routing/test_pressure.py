"""Provider rate-limit awareness: header parsing per provider (tables, malformed input), pressure and
ramp-up in the statistics (and their snapshot caching), the health filter's soft drops, and `decide`
moving traffic away from a pressured deployment and bringing it back gradually."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from routing import (
    Deployment,
    LatencyStats,
    ObjectivePolicy,
    Pressure,
    Pressured,
    RouteRequest,
    Snapshot,
    Unavailable,
    decide,
    pressure_from_headers,
    retry_after_s,
    run_filters,
)
from routing.filters import FILTERS, check

NEW_YEAR = 1_767_225_600.0
"""2026-01-01T00:00:00Z, Unix seconds."""

HEALTH = {f.name: f for f in FILTERS}["health"]


def openai(remaining: str, limit: str | None = "100", reset: str | None = "1s", r: str = "requests") -> dict[str, str]:
    h = {f"x-ratelimit-remaining-{r}": remaining}
    if limit is not None:
        h[f"x-ratelimit-limit-{r}"] = limit
    if reset is not None:
        h[f"x-ratelimit-reset-{r}"] = reset
    return h


def reading(headers: dict[str, str], now_unix: float = NEW_YEAR) -> tuple[float, float, str] | None:
    """The parsed pressure as (fraction, reset rounded to the microsecond, source)."""
    p = pressure_from_headers(headers, now_unix)
    return None if p is None else (p.remaining_fraction, round(p.reset_after_s, 6), p.source)


def anthropic(r: str, remaining: str, limit: str, reset: str) -> dict[str, str]:
    return {f"anthropic-ratelimit-{r}-remaining": remaining, f"anthropic-ratelimit-{r}-limit": limit,
            f"anthropic-ratelimit-{r}-reset": reset}


# -- header parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("reset", "seconds"), [
    ("1s", 1.0),
    ("6m0s", 360.0),
    ("20ms", 0.02),
    ("1h2m3.5s", 3723.5),
    ("0.5s", 0.5),
    ("1m30s", 90.0),
    ("250us", 0.00025),
    ("7", 7.0),  # Azure: plain seconds
    ("0", 0.0),
])
def test_openai_reset_durations(reset: str, seconds: float) -> None:
    assert reading(openai("5", "100", reset)) == (0.05, seconds, "x-ratelimit-remaining-requests")


@pytest.mark.parametrize("reset", ["soon", "1x", "-1s", "", "s", "1s2", "1.2.3s", "1 s", "nan", "inf"])
def test_openai_unreadable_reset_reads_as_the_default(reset: str) -> None:
    assert pressure_from_headers(openai("5", "100", reset), NEW_YEAR) == Pressure(
        0.05, 1.0, "x-ratelimit-remaining-requests")
    p = pressure_from_headers(openai("5", "100", reset), NEW_YEAR, default_reset_s=4.0)
    assert p is not None and p.reset_after_s == 4.0


def test_openai_most_constraining_resource_wins() -> None:
    h = {**openai("50", "100", "1s"), **openai("1000", "40000", "6m0s", r="tokens")}
    assert pressure_from_headers(h, NEW_YEAR) == Pressure(0.025, 360.0, "x-ratelimit-remaining-tokens")
    h = {**openai("1", "100", "20ms"), **openai("1000", "40000", "6m0s", r="tokens")}
    assert pressure_from_headers(h, NEW_YEAR) == Pressure(0.01, 0.02, "x-ratelimit-remaining-requests")


def test_equal_fractions_the_longer_reset_wins() -> None:
    h = {**openai("5", "100", "2s"), **openai("50", "1000", "9s", r="tokens")}
    assert pressure_from_headers(h, NEW_YEAR) == Pressure(0.05, 9.0, "x-ratelimit-remaining-tokens")


def test_openai_usage_based_variant_is_read_like_the_others() -> None:
    h = {**openai("90", "100"), **openai("3", "100", "9ms", r="tokens_usage_based")}
    assert reading(h) == (0.03, 0.009, "x-ratelimit-remaining-tokens_usage_based")


def test_plenty_left_is_still_a_reading() -> None:
    assert reading(openai("4999", "5000", "12ms")) == (0.9998, 0.012, "x-ratelimit-remaining-requests")


def test_anthropic_rfc3339_resets() -> None:
    h = {**anthropic("requests", "999", "1000", "2026-01-01T00:00:00Z"),
         **anthropic("tokens", "90000", "96000", "2026-01-01T00:00:10Z"),
         **anthropic("input-tokens", "4000", "80000", "2026-01-01T01:00:30+01:00"),  # = 00:00:30Z
         **anthropic("output-tokens", "15000", "16000", "2026-01-01T00:00:01Z")}
    assert reading(h, NEW_YEAR - 34) == (0.05, 64.0, "anthropic-ratelimit-input-tokens-remaining")


def test_anthropic_output_tokens_and_fractional_seconds() -> None:
    h = {**anthropic("requests", "999", "1000", "2026-01-01T00:00:00Z"),
         **anthropic("output-tokens", "0", "16000", "2026-01-01T00:00:02.5Z")}
    assert reading(h) == (0.0, 2.5, "anthropic-ratelimit-output-tokens-remaining")


@pytest.mark.parametrize(("reset", "seconds"), [
    ("2025-12-31T23:59:00Z", 0.0),  # already past (clock skew): resets now
    ("2026-01-01T00:00:05", 1.0),  # no zone: unreadable → default
    ("tomorrow", 1.0),
    ("1767225605", 1.0),  # not RFC 3339
])
def test_anthropic_odd_resets(reset: str, seconds: float) -> None:
    p = pressure_from_headers(anthropic("requests", "1", "100", reset), NEW_YEAR)
    assert p is not None and p.reset_after_s == seconds and p.remaining_fraction == 0.01


def test_azure_remaining_only() -> None:
    h = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-remaining-tokens": "1200"}
    assert pressure_from_headers(h, NEW_YEAR) == Pressure(0.0, 1.0, "x-ratelimit-remaining-requests")
    assert pressure_from_headers({"x-ratelimit-remaining-tokens": "1200"}, NEW_YEAR) is None
    assert pressure_from_headers(openai("0", None, "10"), NEW_YEAR) == Pressure(
        0.0, 10.0, "x-ratelimit-remaining-requests")


def test_azure_not_reported_values_are_ignored() -> None:
    h = {"x-ratelimit-limit-tokens": "-1", "x-ratelimit-remaining-tokens": "-1", "x-ratelimit-reset-tokens": "0"}
    assert pressure_from_headers(h, NEW_YEAR) is None


@pytest.mark.parametrize(("remaining", "limit"), [
    ("abc", "100"), ("nan", "100"), ("inf", "100"), ("-5", "100"), ("1e3", "100000"), ("1_000", "100000"),
    ("+5", "100"), ("", "100"), ("5", "abc"), ("5", "0"), ("5", "-100"), ("٥", "100"),
])
def test_malformed_counts_are_ignored(remaining: str, limit: str) -> None:
    assert pressure_from_headers(openai(remaining, limit), NEW_YEAR) is None
    assert pressure_from_headers(anthropic("tokens", remaining, limit, "2026-01-01T00:00:00Z"), NEW_YEAR) is None


def test_a_malformed_resource_does_not_hide_a_good_one() -> None:
    h = {**openai("oops", "100"), **openai("2", "100", "3s", r="tokens")}
    assert pressure_from_headers(h, NEW_YEAR) == Pressure(0.02, 3.0, "x-ratelimit-remaining-tokens")


def test_remaining_above_limit_clamps_and_whitespace_is_tolerated() -> None:
    assert pressure_from_headers(openai(" 150 ", "100", " 2s "), NEW_YEAR) == Pressure(
        1.0, 2.0, "x-ratelimit-remaining-requests")


def test_nothing_usable_is_none() -> None:
    assert pressure_from_headers({}, NEW_YEAR) is None
    assert pressure_from_headers({"content-type": "application/json"}, NEW_YEAR) is None
    assert pressure_from_headers({"retry-after": "30", "retry-after-ms": "30000"}, NEW_YEAR) is None
    assert pressure_from_headers({"x-ratelimit-limit-requests": "100"}, NEW_YEAR) is None


def test_parsers_never_raise_on_garbage() -> None:
    rng = random.Random(7)
    names = [*openai("1"), *openai("1", r="tokens"), *anthropic("tokens", "1", "1", "x"), "retry-after",
             "retry-after-ms"]
    alphabet = "0123456789.:-+ TZhmsµn,GMTabcé\x00e_"
    for _ in range(3000):
        h = {n: "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25))) for n in names
             if rng.random() < 0.7}
        p = pressure_from_headers(h, NEW_YEAR)
        assert p is None or (0.0 <= p.remaining_fraction <= 1.0 and 0.0 <= p.reset_after_s < math.inf)
        r = retry_after_s(h, NEW_YEAR)
        assert r is None or 0.0 <= r < math.inf


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"retry-after": "30"}, 30.0),
    ({"retry-after": " 2 "}, 2.0),
    ({"retry-after": "1.5"}, 1.5),
    ({"retry-after": "Thu, 01 Jan 2026 00:00:20 GMT"}, 20.0),
    ({"retry-after": "Wed, 31 Dec 2025 23:59:00 GMT"}, 0.0),  # in the past
    ({"retry-after-ms": "250"}, 0.25),
    ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),  # the precise one wins
    ({"retry-after-ms": "soon", "retry-after": "1"}, 1.0),
    ({"retry-after": "soon"}, None),
    ({"retry-after": "-3"}, None),
    ({"retry-after": "Thu, 01 Jan 2026 00:00:20 -0000"}, None),  # no zone information
    ({"retry-after": ""}, None),
    ({}, None),
])
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_s(headers, NEW_YEAR) == seconds


def test_pressure_is_validated() -> None:
    for bad in [(1.5, 1.0), (-0.1, 1.0), (0.5, -1.0), (0.5, math.inf), (math.nan, 1.0)]:
        with pytest.raises(ValueError):
            Pressure(*bad, "x")


# -- statistics ---------------------------------------------------------------------------------------


def low(fraction: float = 0.04, reset: float = 2.0) -> Pressure:
    return Pressure(fraction, reset, "x-ratelimit-remaining-tokens")


def test_low_remaining_puts_a_deployment_under_pressure_until_the_reset() -> None:
    s = LatencyStats()
    assert s.record_pressure("a", low(), 100.0) == 102.0
    snap = s.snapshot(100.0)
    assert snap.pressured == {"a": Pressured(102.0, 0.04, "x-ratelimit-remaining-tokens")}
    assert snap.unavailable == {} and snap.ramp == {}
    assert s.under_pressure("a", 101.9) and not s.under_pressure("a", 102.0)


def test_threshold_is_inclusive_and_configurable() -> None:
    s = LatencyStats(pressure_threshold=0.1)
    assert s.record_pressure("a", low(0.1), 0.0) == 2.0
    assert s.record_pressure("b", low(0.11), 0.0) is None
    assert set(s.snapshot(0.0).pressured) == {"a"}
    s = LatencyStats(pressure_threshold=0.2)
    assert s.record_pressure("b", low(0.11), 0.0) == 2.0


def test_pressure_is_capped_by_cooldown_max() -> None:
    s = LatencyStats(cooldown_max_s=60.0)
    assert s.record_pressure("a", low(0.0, 3600.0), 10.0) == 70.0


def test_pressure_is_not_a_failure() -> None:
    s = LatencyStats(cooldown_base_s=1.0)
    for t in range(5):
        s.record_pressure("a", low(0.0, 5.0), float(t))
    assert not s.cooling_down("a", 1.0) and s.snapshot(1.0).unavailable == {}
    assert s.record_failure("a", 10.0) == 11.0  # the first failure's base back-off, not a doubled one


def test_a_reading_above_the_threshold_clears_pressure_and_starts_the_ramp() -> None:
    s = LatencyStats(ramp_s=10.0, ramp_floor=0.1)
    s.record_pressure("a", low(0.02, 30.0), 0.0)
    assert s.record_pressure("a", low(0.5, 30.0), 4.0) is None
    snap = s.snapshot(4.0)
    assert snap.pressured == {} and snap.ramp == {"a": pytest.approx(0.1)}
    assert s.snapshot(9.0).ramp == {"a": pytest.approx(0.55)}


def test_the_latest_reading_replaces_the_previous_one() -> None:
    s = LatencyStats()
    s.record_pressure("a", low(0.01, 30.0), 0.0)
    s.record_pressure("a", low(0.05, 2.0), 1.0)
    assert s.snapshot(1.0).pressured == {"a": Pressured(3.0, 0.05, "x-ratelimit-remaining-tokens")}


def test_a_reset_of_zero_is_no_pressure() -> None:
    s = LatencyStats()
    assert s.record_pressure("a", low(0.0, 0.0), 0.0) is None
    assert s.snapshot(0.0).pressured == {} and s.snapshot(0.0).ramp == {}


def test_ramp_rises_linearly_after_pressure_expires() -> None:
    s = LatencyStats(ramp_s=10.0, ramp_floor=0.1, snapshot_max_age_s=0.5)
    s.record_pressure("a", low(0.0, 5.0), 0.0)
    assert "a" in s.snapshot(4.9).pressured and s.snapshot(4.9).ramp == {}
    for t, fraction in [(5.0, 0.1), (7.5, 0.325), (10.0, 0.55), (14.0, 0.91)]:
        snap = s.snapshot(t)
        assert snap.pressured == {} and snap.ramp == {"a": pytest.approx(fraction)}, t
    assert s.snapshot(15.0).ramp == {}


def test_ramp_after_a_cooldown_and_none_after_an_open_circuit() -> None:
    s = LatencyStats(cooldown_base_s=2.0, ramp_s=4.0, ramp_floor=0.2, snapshot_max_age_s=0.5)
    s.record_failure("a", 0.0)
    s.set_circuit_open("b", True)
    assert set(s.snapshot(1.0).unavailable) == {"a", "b"} and s.snapshot(1.0).ramp == {}
    assert s.snapshot(2.0).ramp == {"a": pytest.approx(0.2)}
    assert s.snapshot(4.0).ramp == {"a": pytest.approx(0.6)}
    s.set_circuit_open("b", False)
    assert s.snapshot(5.0).ramp == {"a": pytest.approx(0.8)}
    assert s.snapshot(6.0).ramp == {}


def test_ramp_can_be_turned_off() -> None:
    s = LatencyStats(ramp_s=0.0)
    s.record_failure("a", 0.0)
    s.record_pressure("b", low(0.0, 1.0), 0.0)
    assert s.snapshot(1.0).ramp == {} and s.snapshot(1.0).pressured == {}


def test_pressure_changes_invalidate_the_cached_snapshot() -> None:
    s = LatencyStats(snapshot_max_age_s=10.0)
    first = s.snapshot(0.0)
    assert s.snapshot(0.5) is first
    s.record_pressure("a", low(0.05, 5.0), 0.5)
    second = s.snapshot(0.6)
    assert second is not first and "a" in second.pressured
    s.record_pressure("a", low(0.05, 4.9), 0.6)  # the same reading again: same until
    assert s.snapshot(0.7) is second
    s.record_pressure("a", low(0.03, 4.9), 0.6)  # less left: a new reading
    assert s.snapshot(0.7).pressured["a"].remaining_fraction == 0.03
    s.record_pressure("a", low(0.9, 4.9), 0.8)
    assert s.snapshot(0.8).pressured == {}


def test_a_cached_snapshot_is_rebuilt_when_pressure_or_a_ramp_ends() -> None:
    s = LatencyStats(snapshot_max_age_s=100.0, ramp_s=10.0, ramp_floor=0.1)
    s.record_pressure("a", low(0.0, 5.0), 0.0)
    during = s.snapshot(1.0)
    assert s.snapshot(4.0) is during  # nothing changed, young enough
    after = s.snapshot(5.0)  # pressure ended: rebuilt although younger than the max age
    assert after is not during and after.pressured == {} and after.ramp == {"a": pytest.approx(0.1)}
    assert s.snapshot(14.0) is after  # within max age: ramp fraction frozen at most that long
    assert s.snapshot(15.0).ramp == {}  # the ramp ended: rebuilt


def test_cached_ramp_fractions_refresh_after_the_max_age() -> None:
    s = LatencyStats(snapshot_max_age_s=1.0, ramp_s=10.0, ramp_floor=0.0)
    s.record_pressure("a", low(0.0, 1.0), 0.0)
    assert s.snapshot(1.0).ramp == {"a": pytest.approx(0.0)}
    assert s.snapshot(1.9).ramp == {"a": pytest.approx(0.0)}  # cached
    assert s.snapshot(2.0).ramp == {"a": pytest.approx(0.1)}
    assert s.snapshot(6.0).ramp == {"a": pytest.approx(0.5)}


def test_new_settings_are_validated() -> None:
    for kw in [{"pressure_threshold": 1.5}, {"pressure_threshold": -0.1}, {"ramp_s": -1.0},
               {"ramp_s": math.inf}, {"ramp_floor": 2.0}]:
        with pytest.raises(ValueError):
            LatencyStats(**kw)  # type: ignore[arg-type]


# -- the health filter --------------------------------------------------------------------------------


def dep(id: str, price: float = 1.0) -> Deployment:
    model, rest = id.split("@")
    return Deployment(id=id, model=model, provider=rest.split("#")[0], input_per_mtok=price,
                      output_per_mtok=price)


A, B, C = dep("a@p#0", 0.1), dep("b@q#0", 1.0), dep("c@r#0", 2.0)


def req(now: float = 100.0, **kw: Any) -> RouteRequest:
    return RouteRequest(est_input_tokens=100, now=now, **kw)


def test_a_pressured_deployment_is_dropped_while_another_survives() -> None:
    snap = Snapshot(99.0, pressured={A.id: Pressured(102.0, 0.04, "x-ratelimit-remaining-tokens")})
    kept, dropped = run_filters(req(), snap, [A, B])
    assert kept == [B]
    assert dropped[A.id].filter == "health"
    assert dropped[A.id].reason == ("provider rate limit nearly exhausted (4% left, x-ratelimit-remaining-tokens) "
                                    "for 2.0 s")


def test_tiny_fractions_read_as_under_one_percent() -> None:
    snap = Snapshot(99.0, pressured={A.id: Pressured(100.5, 0.004, "anthropic-ratelimit-tokens-remaining")})
    _, dropped = run_filters(req(), snap, [A, B])
    assert dropped[A.id].reason == ("provider rate limit nearly exhausted (<1% left, "
                                    "anthropic-ratelimit-tokens-remaining) for 0.5 s")


def test_when_every_candidate_is_pressured_all_are_kept() -> None:
    p = Pressured(105.0, 0.0, "x")
    snap = Snapshot(99.0, pressured={A.id: p, B.id: p})
    assert run_filters(req(), snap, [A, B]) == ([A, B], {})
    assert check(HEALTH, req(), snap, A) is None


def test_pressure_is_soft_but_cooldowns_stay_hard() -> None:
    snap = Snapshot(99.0, unavailable={A.id: Unavailable(105.0, "1 consecutive failure")},
                    pressured={B.id: Pressured(105.0, 0.0, "x")})
    kept, dropped = run_filters(req(), snap, [A, B])
    assert kept == [B] and dropped[A.id].reason == "cooling down for 5.0 s (1 consecutive failure)"
    snap = Snapshot(99.0, unavailable={A.id: Unavailable(105.0, "1 consecutive failure")})
    kept, dropped = run_filters(req(), snap, [A])
    assert kept == [] and set(dropped) == {A.id}


def test_pressure_that_has_ended_by_the_request_is_ignored() -> None:
    snap = Snapshot(99.0, pressured={A.id: Pressured(100.0, 0.0, "x")})
    assert run_filters(req(now=100.0), snap, [A, B]) == ([A, B], {})


@pytest.mark.parametrize(("rand", "kept_a"), [(0.0, True), (0.29, True), (0.3, False), (0.99, False)])
def test_a_ramping_deployment_takes_its_fraction_of_draws(rand: float, kept_a: bool) -> None:
    snap = Snapshot(99.0, ramp={A.id: 0.3})
    kept, dropped = run_filters(req(), snap, [A, B], rand=rand)
    if kept_a:
        assert kept == [A, B] and dropped == {}
    else:
        assert kept == [B]
        assert dropped[A.id].reason == "ramping up after cool-down or rate-limit pressure (30% of traffic)"
    assert check(HEALTH, req(), snap, A, rand=rand) is None  # alone: always kept


def test_soft_drops_combine_and_keep_everything_when_nothing_else_survives() -> None:
    snap = Snapshot(99.0, pressured={A.id: Pressured(105.0, 0.0, "x")}, ramp={B.id: 0.5})
    assert run_filters(req(), snap, [A, B], rand=0.7) == ([A, B], {})
    kept, dropped = run_filters(req(), snap, [A, B, C], rand=0.7)
    assert kept == [C] and set(dropped) == {A.id, B.id}
    kept, dropped = run_filters(req(), snap, [A, B], rand=0.2)
    assert kept == [B] and set(dropped) == {A.id}


def test_filters_still_run_with_three_arguments() -> None:
    snap = Snapshot(99.0, ramp={A.id: 0.3})
    kept, drops = HEALTH.run(req(), snap, [A, B])  # rand defaults to 0.5
    assert kept == [B] and [d.id for d, _ in drops] == [A.id]


# -- decide -------------------------------------------------------------------------------------------

POLICY = ObjectivePolicy(minimize="cost", exploration=0.0, affinity=False)
DRAWS = [i / 100 for i in range(100)]


def share_of_a(stats: LatencyStats, now: float) -> float:
    snap = stats.snapshot(now)
    picks = [decide(req(now=now), [A, B], POLICY, snap, rand=r).primary for r in DRAWS]
    assert set(picks) <= {A.id, B.id}
    return picks.count(A.id) / len(picks)


def test_traffic_moves_away_from_a_pressured_deployment_and_returns_gradually() -> None:
    stats = LatencyStats(ramp_s=10.0, ramp_floor=0.1, snapshot_max_age_s=0.5)
    assert share_of_a(stats, 0.0) == 1.0  # the cheaper one takes everything
    stats.record_pressure(A.id, Pressure(0.03, 5.0, "x-ratelimit-remaining-requests"), 0.0)
    d = decide(req(now=1.0), [A, B], POLICY, stats.snapshot(1.0), rand=0.1)
    assert d.deployments == (B.id,)
    assert d.explanation.dropped[A.id].reason == (
        "provider rate limit nearly exhausted (3% left, x-ratelimit-remaining-requests) for 4.0 s")
    for t in (1.0, 2.0, 4.9):
        assert share_of_a(stats, t) == 0.0
    shares = [share_of_a(stats, t) for t in (5.0, 7.5, 10.0, 12.5, 14.9, 15.0, 20.0)]
    assert shares == [0.1, 0.33, 0.55, 0.78, 1.0, 1.0, 1.0]  # 0.1 + 0.9 × elapsed / 10, then all of it
    assert stats.record_failure(A.id, 20.0) == 21.0  # pressure never started a back-off


def test_a_sole_pressured_deployment_still_serves() -> None:
    stats = LatencyStats()
    stats.record_pressure(A.id, Pressure(0.0, 30.0, "x"), 0.0)
    d = decide(req(now=1.0), [A], POLICY, stats.snapshot(1.0))
    assert d.primary == A.id and d.explanation.dropped == {}


def test_decide_without_rand_still_works_and_uses_the_default_draw() -> None:
    snap = Snapshot(99.0, ramp={A.id: 0.6})
    assert decide(req(), [A, B], POLICY, snap).primary == A.id  # 0.5 < 0.6
    snap = Snapshot(99.0, ramp={A.id: 0.4})
    assert decide(req(), [A, B], POLICY, snap).primary == B.id
