"""The limiter core over a MemoryStore with an injected clock: admission, true-ups, windows."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from extproc.limits import (
    Charge,
    Decision,
    Limit,
    Limiter,
    LimitTable,
    MemoryStore,
    Per,
    Reservation,
    Settlement,
    Slot,
    Unit,
)
from extproc.limits.limiter import slot_of

ACME = {"tenant": "acme", "model": "m"}
TOKENS = Limit({"tenant": "acme"}, Unit.TOKENS, Per.MINUTE, 1000)
USD = Limit({"tenant": "acme"}, Unit.USD, Per.DAY, 2.0)
REQUESTS = Limit({}, Unit.REQUESTS, Per.SECOND, 3)


class Clock:
    def __init__(self, t: float = 1_000_000.5) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def setup(*limits: Limit, t: float = 1_000_000.5) -> tuple[Limiter, MemoryStore, Clock]:
    store, clock = MemoryStore(), Clock(t)
    table = LimitTable(limits or (TOKENS, USD, REQUESTS))
    return Limiter(store, lambda: table, clock=clock), store, clock


async def used(store: MemoryStore, limit: Limit, now: float) -> int:
    return (await store.usage([slot_of(limit)], now))[0]


def test_admission_is_all_or_nothing_across_units() -> None:
    async def run() -> None:
        limiter, store, clock = setup()
        ok = await limiter.admit([Charge(ACME, Unit.TOKENS, 600), Charge(ACME, Unit.USD, 1_500_000)])
        assert ok.allowed and set(ok.reservations) == {Unit.TOKENS, Unit.USD}
        assert ok.reservations[Unit.TOKENS] == Reservation(600, clock.t)
        refused = await limiter.admit([Charge(ACME, Unit.TOKENS, 300), Charge(ACME, Unit.USD, 600_000)])
        assert not refused.allowed and refused.reservations == {}
        [tokens], [usd] = refused.statuses
        assert not tokens.over and tokens.remaining == 400
        assert usd.over and usd.remaining == 500_000
        assert refused.retry_after_s == pytest.approx(usd.reset_after_s)
        assert await used(store, TOKENS, clock.t) == 600  # the tokens that fitted were not taken

    asyncio.run(run())


def test_refusal_waits_for_every_window_without_room() -> None:
    async def run() -> None:
        limiter, _, clock = setup(Limit({}, Unit.TOKENS, Per.SECOND, 10), Limit({}, Unit.TOKENS, Per.MINUTE, 15),
                                  t=120.25)
        assert (await limiter.admit([Charge({}, Unit.TOKENS, 10)])).allowed
        second = await limiter.admit([Charge({}, Unit.TOKENS, 6)])
        assert [s.over for s in second.statuses[0]] == [True, True]
        assert second.retry_after_s == pytest.approx(59.75)
        clock.t = 121.0
        third = await limiter.admit([Charge({}, Unit.TOKENS, 6)])
        assert [s.over for s in third.statuses[0]] == [False, True]

    asyncio.run(run())


def test_true_up_refunds_and_charges_the_difference() -> None:
    async def run() -> None:
        limiter, store, clock = setup()
        v = await limiter.admit([Charge(ACME, Unit.TOKENS, 900)])
        assert not (await limiter.admit([Charge(ACME, Unit.TOKENS, 200)])).allowed
        await limiter.settle([Settlement(ACME, Unit.TOKENS, v.reservations[Unit.TOKENS], 150)])
        assert await used(store, TOKENS, clock.t) == 150
        w = await limiter.admit([Charge(ACME, Unit.TOKENS, 850)])
        assert w.allowed
        await limiter.settle([Settlement(ACME, Unit.TOKENS, w.reservations[Unit.TOKENS], 1100)])
        assert await used(store, TOKENS, clock.t) == 1250  # under-estimates are charged in full
        assert not (await limiter.admit([Charge(ACME, Unit.TOKENS, 0)])).allowed

    asyncio.run(run())


def test_refund_never_goes_below_zero() -> None:
    async def run() -> None:
        limiter, store, clock = setup()
        await limiter.settle([Settlement(ACME, Unit.TOKENS, Reservation(500, clock.t), 0)])
        assert await used(store, TOKENS, clock.t) == 0
        v = await limiter.admit([Charge(ACME, Unit.TOKENS, 100)])
        await limiter.settle([Settlement(ACME, Unit.TOKENS, Reservation(700, v.at), 0)])
        assert await used(store, TOKENS, clock.t) == 0

    asyncio.run(run())


def test_true_up_after_the_window_ended() -> None:
    async def run() -> None:
        limiter, store, clock = setup(TOKENS, t=59.5)
        v = await limiter.admit([Charge(ACME, Unit.TOKENS, 600)])
        clock.t = 60.25
        await limiter.settle([Settlement(ACME, Unit.TOKENS, v.reservations[Unit.TOKENS], 100)])
        assert await used(store, TOKENS, 60.25) == 0  # nothing to give back to a window that is over
        assert await used(store, TOKENS, 59.5) == 600
        w = await limiter.admit([Charge(ACME, Unit.TOKENS, 100)])
        await limiter.settle([Settlement(ACME, Unit.TOKENS, Reservation(600, 59.5), 900)])
        assert await used(store, TOKENS, 60.25) == 400  # the overshoot lands in the current window
        await limiter.settle([Settlement(ACME, Unit.TOKENS, w.reservations[Unit.TOKENS], 40)])
        assert await used(store, TOKENS, 60.25) == 340

    asyncio.run(run())


def test_a_limit_matched_twice_is_charged_once_with_the_largest_amount() -> None:
    async def run() -> None:
        limiter, store, clock = setup()
        v = await limiter.admit([Charge(ACME, Unit.TOKENS, 100), Charge({"tenant": "acme"}, Unit.TOKENS, 300)])
        assert v.allowed and v.reservations == {Unit.TOKENS: Reservation(300, clock.t)}
        assert await used(store, TOKENS, clock.t) == 300

    asyncio.run(run())


def test_zero_amount_is_a_peek_with_a_marker() -> None:
    async def run() -> None:
        limiter, store, clock = setup()
        v = await limiter.admit([Charge(ACME, Unit.TOKENS, 0)])
        assert v.allowed and v.reservations[Unit.TOKENS].amount == 0
        await limiter.settle([Settlement(ACME, Unit.TOKENS, v.reservations[Unit.TOKENS], 1000)])
        assert not (await limiter.admit([Charge(ACME, Unit.TOKENS, 0)])).allowed
        assert await used(store, TOKENS, clock.t) == 1000

    asyncio.run(run())


def test_unmatched_charges_reserve_nothing_and_get_no_marker() -> None:
    async def run() -> None:
        limiter, _, _ = setup(TOKENS)
        v = await limiter.admit([Charge({"tenant": "zeta"}, Unit.TOKENS, 10**9), Charge(ACME, Unit.USD, 5)])
        assert v.allowed and v.statuses == ((), ()) and v.reservations == {}

    asyncio.run(run())


def test_release_gives_back_an_admission() -> None:
    async def run() -> None:
        limiter, store, clock = setup()
        v = await limiter.admit([Charge(ACME, Unit.TOKENS, 700), Charge(ACME, Unit.REQUESTS, 1)])
        await limiter.release(v)
        assert await used(store, TOKENS, clock.t) == 0 and await used(store, REQUESTS, clock.t) == 0
        await limiter.release(await limiter.admit([Charge(ACME, Unit.TOKENS, 5000)]))  # refused: no-op
        assert await used(store, TOKENS, clock.t) == 0

    asyncio.run(run())


def test_limit_table_is_read_per_call() -> None:
    async def run() -> None:
        store, tables = MemoryStore(), [LimitTable([TOKENS])]
        limiter = Limiter(store, lambda: tables[-1], clock=Clock())
        assert (await limiter.admit([Charge(ACME, Unit.TOKENS, 600)])).allowed
        assert not (await limiter.admit([Charge(ACME, Unit.TOKENS, 600)])).allowed
        tables.append(LimitTable([Limit({"tenant": "acme"}, Unit.TOKENS, Per.MINUTE, 5000)]))
        assert (await limiter.admit([Charge(ACME, Unit.TOKENS, 600)])).allowed

    asyncio.run(run())


def test_a_charge_never_reserves_more_than_a_whole_window() -> None:
    """TOKENS: 1,000 a minute. 65,536 asked for is 1,000 reserved (a 429 for it could never be
    cured by waiting); the true-up then moves the count by what was used."""
    async def run() -> None:
        limiter, store, clock = setup(TOKENS)
        v = await limiter.admit([Charge(ACME, Unit.TOKENS, 65_536)])
        assert v.allowed and v.reservations[Unit.TOKENS] == Reservation(1000, clock.t)
        assert await used(store, TOKENS, clock.t) == 1000
        await limiter.settle([Settlement(ACME, Unit.TOKENS, v.reservations[Unit.TOKENS], 40)])
        assert await used(store, TOKENS, clock.t) == 40

    asyncio.run(run())


@pytest.mark.parametrize(("used_before", "amount", "minimum", "reserved", "over"), [
    (0, 600, 100, 600, False),  # room for all of it
    (700, 600, 100, 300, False),  # shrinks to what is left
    (700, 600, 300, 300, False),  # exactly its minimum is left
    (700, 600, 301, None, True),  # less than its minimum is left: refused
    (700, 600, None, None, True),  # no minimum: all of it or nothing
    (1000, 600, 0, None, True),  # nothing left: even a minimum of 0 is refused (a peek)
])
def test_a_charge_with_a_minimum_shrinks_to_what_is_left(used_before: int, amount: int, minimum: int | None,
                                                         reserved: int | None, over: bool) -> None:
    async def run() -> None:
        limiter, store, clock = setup(TOKENS, USD)
        if used_before:
            assert (await limiter.admit([Charge(ACME, Unit.TOKENS, used_before)])).allowed
        v = await limiter.admit([Charge(ACME, Unit.TOKENS, amount, minimum), Charge(ACME, Unit.USD, 1000, 500)])
        assert v.allowed is (reserved is not None)
        [tokens], [usd] = v.statuses
        assert (tokens.over, usd.over) == (over, False)
        if reserved is not None:
            assert v.reservations == {Unit.TOKENS: Reservation(reserved, clock.t), Unit.USD: Reservation(1000, clock.t)}
            assert await used(store, TOKENS, clock.t) == used_before + reserved
        else:
            assert v.reservations == {} and v.retry_after_s == pytest.approx(tokens.reset_after_s)
            assert await used(store, TOKENS, clock.t) == used_before and await used(store, USD, clock.t) == 0

    asyncio.run(run())


def test_retry_after_is_until_the_limit_that_refused_resets() -> None:
    """1,000 tokens a minute and 5,000 a day. The minute window has 100 left, the day 400: a
    request needing 300 at least (600 at most) is refused by the minute limit alone, and may retry
    when the minute resets — not at midnight, though its 600 would not fit the day's 400 either."""
    day = Limit({"tenant": "acme"}, Unit.TOKENS, Per.DAY, 5000)

    async def run() -> None:
        limiter, store, clock = setup(TOKENS, day)
        await store.reserve([slot_of(day)], 3700, clock.t)
        assert (await limiter.admit([Charge(ACME, Unit.TOKENS, 900)])).allowed
        v = await limiter.admit([Charge(ACME, Unit.TOKENS, 600, 300)])
        assert not v.allowed
        minute, daily = v.statuses[0]
        assert (minute.over, daily.over) == (True, False)
        assert v.retry_after_s == pytest.approx(minute.reset_after_s) and v.retry_after_s < 60
        clock.t += 60
        v = await limiter.admit([Charge(ACME, Unit.TOKENS, 600, 300)])
        assert v.allowed and v.reservations[Unit.TOKENS].amount == 400  # what the day has left

    asyncio.run(run())


def test_a_shrunk_reservation_is_given_back_whole_when_abandoned() -> None:
    async def run() -> None:
        limiter, store, clock = setup(TOKENS)
        await limiter.admit([Charge(ACME, Unit.TOKENS, 800)])
        v = await limiter.admit([Charge(ACME, Unit.TOKENS, 5000, 100)])
        assert v.reservations[Unit.TOKENS].amount == 200 and await used(store, TOKENS, clock.t) == 1000
        await limiter.release(v)
        assert await used(store, TOKENS, clock.t) == 800

    asyncio.run(run())


class DownStore(MemoryStore):
    def __init__(self, allowed: bool) -> None:
        super().__init__()
        self.allowed = allowed

    async def reserve(self, slots: Sequence[Slot], amount: int | Sequence[int], now: float) -> Decision:
        return Decision(self.allowed, 0.0 if self.allowed else 1.0, (), degraded=True)


@pytest.mark.parametrize("allowed", [True, False])
def test_degraded_store_decides_and_nothing_is_reserved(allowed: bool) -> None:
    async def run() -> None:
        table = LimitTable([TOKENS])
        limiter = Limiter(DownStore(allowed), lambda: table, clock=Clock())
        v = await limiter.admit([Charge(ACME, Unit.TOKENS, 1), Charge(ACME, Unit.USD, 1)])
        assert (v.allowed, v.degraded, v.reservations, v.statuses, v.charged) == (allowed, True, {}, ((), ()), ())

    asyncio.run(run())


@pytest.mark.parametrize(("text", "reservation"), [
    ("1500@1767225600123", Reservation(1500, 1767225600.123)),
    ("0@0", Reservation(0, 0.0)),
])
def test_reservation_wire_form(text: str, reservation: Reservation) -> None:
    assert Reservation.parse(text) == reservation
    assert reservation.encode() == text


@pytest.mark.parametrize("text", ["", "1500", "1500@", "@5", "-1@5", "1.5@5", "15@1.5", "a@b", "1@2@3"])
def test_bad_reservations(text: str) -> None:
    with pytest.raises(ValueError, match="expected <amount>@<unix ms>"):
        Reservation.parse(text)


def test_memory_store_forgets_finished_windows() -> None:
    async def run() -> None:
        store = MemoryStore()
        slot = Slot("k", 1, 10)
        for t in range(100):
            await store.reserve([slot], 1, float(t))
        assert len(store._counts) <= 2
        with pytest.raises(ValueError, match="duplicate key"):
            await store.reserve([slot, slot], 1, 0.0)
        with pytest.raises(ValueError, match="2 values for 1 slots"):
            await store.reserve([slot], [1, 2], 0.0)

    asyncio.run(run())


def test_a_reservation_marker_never_points_past_the_second_it_was_made_in() -> None:
    """The marker keeps whole milliseconds rounded down: a reservation in the last half
    millisecond of a window is trued up in that window, not the next."""
    late = Reservation(400, 1000.9996)
    assert late.encode() == "400@1000999"
    back = Reservation.parse(late.encode())
    assert back.amount == 400 and int(back.at) == 1000
