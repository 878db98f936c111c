"""The routing evaluation's phase figures on synthetic result lists: react_s / recover_s (including
"never" and "not measurable"), the sliding windows, and the oracle's pricing. No gateway runs here."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from bench.eval import phases as ph


@dataclass
class R:
    sent_s: float
    model: str | None


def traffic(rate: float, end: float, model_at: Callable[[float, int], str | None]) -> list[R]:
    """One request every 1/rate s from 0 to `end`, served by `model_at(t, i)`."""
    n = int(end * rate)
    return [R(i / rate, model_at(i / rate, i)) for i in range(n)]


START, HEAL, END, PRE, WINDOW = 30.0, 90.0, 135.0, 20.0, 25


def scenario(react_after: float | None, recover_after: float | None, rate: float = 10.0) -> list[R]:
    """All traffic on `slow` before START; it leaves `react_after` s after START (None: never) and
    returns `recover_after` s after HEAL (None: never)."""
    def model_at(t: float, i: int) -> str:
        gone = react_after is not None and START + react_after <= t < HEAL
        still_gone = react_after is not None and t >= HEAL and (recover_after is None or t < HEAL + recover_after)
        return "fast" if gone or still_gone else "slow"

    return traffic(rate, END, model_at)


@pytest.mark.parametrize("rate", [10.0, 2.5])
def test_react_and_recover_are_measured_from_the_moment_traffic_moved(rate: float) -> None:
    """Forward windows: a shift is dated at its window's first request, so the same behaviour gives
    the same times at the eval's rate and at a quarter of it — early by at most the 2 requests of
    25 the bounds tolerate (10 % of the window)."""
    s = ph.shift(scenario(4.0, 12.0, rate), {"slow"}, START, HEAL, END, PRE, WINDOW)
    assert s.pre_share == 1.0 and s.low_share == 0.0
    assert 4.0 - 2 / rate - 1e-9 <= s.react_s <= 4.0
    assert 12.0 - 2 / rate - 1e-9 <= s.recover_s <= 12.0


def test_instant_reaction_and_recovery_read_zero() -> None:
    s = ph.shift(scenario(0.0, 0.0), {"slow"}, START, HEAL, END, PRE, WINDOW)
    assert (s.react_s, s.recover_s) == (0.0, 0.0)


def test_never_reacted_is_never_and_recovery_is_not_measured() -> None:
    """Traffic that never left reads react `never` (inf: longer than the slowdown lasted), and
    recover `n/a` (nan): it cannot come back, and a 0 would read as a perfect recovery."""
    s = ph.shift(scenario(None, None), {"slow"}, START, HEAL, END, PRE, WINDOW)
    assert math.isinf(s.react_s) and math.isnan(s.recover_s) and s.low_share == 1.0
    assert (ph.fmt_s(s.react_s), ph.fmt_s(s.recover_s)) == ("never", "n/a")


def test_never_recovered_within_the_phase_is_never() -> None:
    s = ph.shift(scenario(2.0, None), {"slow"}, START, HEAL, END, PRE, WINDOW)
    assert 1.79 <= s.react_s <= 2.0 and math.isinf(s.recover_s)
    late = ph.shift(scenario(2.0, 30.0), {"slow"}, START, HEAL, END, PRE, WINDOW)
    assert 29.79 <= late.recover_s <= 30.0  # 45 s observed: a late recovery is still seen


def test_a_partial_move_is_not_a_reaction_but_can_recover() -> None:
    """Half the traffic leaving is not ≥ 90 %: react stays `never`; the way back is still timed."""
    def model_at(t: float, i: int) -> str:
        return "fast" if START + 1 <= t < HEAL + 5 and i % 2 else "slow"

    s = ph.shift(traffic(10.0, END, model_at), {"slow"}, START, HEAL, END, PRE, WINDOW)
    assert math.isinf(s.react_s) and s.low_share == pytest.approx(0.48, abs=0.05)
    assert 4.5 <= s.recover_s <= 5.0


def test_probes_and_noise_do_not_hide_a_reaction() -> None:
    """2 % probing of the slow model after it was left (the issue's bound) still reads as reacted;
    pre-slowdown shares below 100 % scale both bounds."""
    rng = random.Random(1)

    def model_at(t: float, i: int) -> str:
        if t < START + 3:
            return "slow" if rng.random() < 0.6 else "other"
        if t < HEAL + 8:
            return "slow" if rng.random() < 0.02 else "other"
        return "slow" if rng.random() < 0.6 else "other"

    s = ph.shift(traffic(10.0, END, model_at), {"slow"}, START, HEAL, END, PRE, WINDOW)
    assert s.pre_share == pytest.approx(0.6, abs=0.07)
    assert s.react_s == pytest.approx(3.0, abs=0.5)
    assert 7.0 <= s.recover_s <= 12.0


def test_nothing_to_measure_without_traffic_to_the_targets() -> None:
    s = ph.shift(scenario(None, None), {"absent"}, START, HEAL, END, PRE, WINDOW)
    assert s.pre_share == 0.0 and math.isnan(s.react_s) and math.isnan(s.recover_s)
    empty = ph.shift([], {"slow"}, START, HEAL, END, PRE, WINDOW)
    assert empty.pre_share is None and math.isnan(empty.react_s) and empty.low_share is None


def test_several_targets_and_unanswered_requests() -> None:
    """A provider's models count together; requests no model answered are not traffic."""
    def model_at(t: float, i: int) -> str | None:
        if i % 5 == 0:
            return None
        if START + 2 <= t < HEAL:
            return "c"
        return "a" if i % 2 else "b"

    s = ph.shift(traffic(10.0, END, model_at), {"a", "b"}, START, HEAL, END, PRE, WINDOW)
    assert s.pre_share == 1.0 and 1.7 <= s.react_s <= 2.0 and 0 <= s.recover_s <= 0.1


def test_windows_are_full_and_inside_their_span() -> None:
    rows = traffic(1.0, 10.0, lambda t, i: "x" if i < 5 else "y")
    ws = ph.windows(rows, {"x"}, 3, 2.0, 9.0)
    assert ws == [(2.0, 1.0), (3.0, 2 / 3), (4.0, 1 / 3), (5.0, 0.0), (6.0, 0.0)]
    assert ph.windows(rows, {"x"}, 20, 0.0, 100.0) == []
    assert ph.share(rows, {"x"}, 0, 10) == 0.5 and ph.share(rows, {"x"}, 20, 30) is None


def test_fmt_s() -> None:
    assert [ph.fmt_s(x) for x in (3.04, 0.0, math.inf, math.nan, None)] == ["3.0", "0.0", "never", "n/a", "-"]


# -- oracle -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class M:
    input_per_mtok: float
    output_per_mtok: float
    quality: float
    behaviour: dict[str, Any] = field(default_factory=dict)


def test_expected_answer_is_the_capped_log_normal_mean() -> None:
    rng = random.Random(3)
    draws = [300 * math.exp(0.4 * rng.gauss(0, 1)) for _ in range(200_000)]
    for cap in (None, 100, 300, 1000):
        sampled = sum(draws if cap is None else [min(cap, d) for d in draws]) / len(draws)
        assert ph.expected_answer(300, 0.4, cap) == pytest.approx(sampled, rel=0.01)
    assert ph.expected_answer(300, 0, None) == 300 and ph.expected_answer(300, 0, 120) == 120
    assert ph.expected_answer(300, 0.4, 0) == 0.0


def test_oracle_prices_the_answer_not_the_token() -> None:
    verbose = M(0.4, 1.6, 0.85, {"output_tokens": 300, "ttft_ms": 300})
    terse = M(0.5, 2.5, 0.82, {"output_tokens": 100, "ttft_ms": 400})
    slow = M(0.1, 0.5, 0.9, {"output_tokens": 100, "ttft_ms": 900, "ttft_sigma": 0.5})
    weak = M(0.01, 0.01, 0.5, {"output_tokens": 10})
    models = {"verbose": verbose, "terse": terse, "slow": slow, "weak": weak}
    c = ph.Constraints(0.8, 1.0, 0.9)
    assert ph.oracle_choice(models, c, 200, None, None) == "terse"     # 0.08+0.48 vs 0.10+0.25 (¢-ish)
    assert ph.oracle_choice(models, c, 200, 50, None) == "verbose"     # both capped at ~50: per token wins
    assert ph.oracle_choice(models, c, 200, None, 12) == "verbose"     # a tool call is as long everywhere
    assert ph.oracle_choice(models, c, 5000, None, None) == "verbose"  # long prompts: input price wins
    assert ph.oracle_choice(models, ph.Constraints(0.8), 200, None, None) == "slow"  # no latency limit
    assert ph.oracle_choice(models, ph.Constraints(0.8, 0.1), 200, None, None) == "verbose"  # none fast: fastest
    assert ph.oracle_choice(models, ph.Constraints(0.99), 200, None, None) is None
    assert ph.ttft_quantile_s(slow, 0, 0.9) == pytest.approx(0.9 * math.exp(0.5 * 1.2816), rel=1e-3)
    assert ph.expected_cost(terse, 1_000_000, None, None) == pytest.approx(0.5 + 100 * 2.5 / 1e6)


def test_duration_s() -> None:
    assert [ph.duration_s(x) for x in ("1000ms", "1.5s", "2m", None)] == [1.0, 1.5, 120.0, None]
