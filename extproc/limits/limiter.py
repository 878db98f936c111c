"""The limiter core: admission (reserve) and true-up (settle) of typed charges against a store.

No gRPC here: the RateLimitService (`service.py`) parses Envoy's descriptors into `Charge` and
`Settlement` values and renders the `Verdict`; the ext_proc may call a `Limiter` directly.

A `Reservation` is what admission hands back per unit (the amount reserved and when); it travels
to the end of the stream (in Envoy's dynamic metadata, see `scheme.py`) and comes back in a
`Settlement` with the actual amount, so the true-up lands in the window of the reservation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from extproc.limits.model import Limit, LimitTable, Unit, window_of
from extproc.limits.store import Slot, Store


@dataclass(frozen=True)
class Charge:
    """Admission of one descriptor: charge `amount` ticks of `unit` to the limits matching `fields`."""

    fields: Mapping[str, str]
    unit: Unit
    amount: int


@dataclass(frozen=True)
class Reservation:
    """`amount` ticks reserved at Unix time `at`. Wire form: `"<amount>@<unix milliseconds>"`."""

    amount: int
    at: float

    def encode(self) -> str:
        return f"{self.amount}@{math.floor(self.at * 1000)}"

    @classmethod
    def parse(cls, text: str) -> Reservation:
        amount, sep, ms = text.partition("@")
        if not sep or not amount.isdigit() or not ms.isdigit():
            raise ValueError(f"reservation {text!r}: expected <amount>@<unix ms>")
        return cls(int(amount), int(ms) / 1000)


@dataclass(frozen=True)
class Settlement:
    """True-up of one descriptor: the limits matching `fields` move by `actual − reservation.amount`."""

    fields: Mapping[str, str]
    unit: Unit
    reservation: Reservation
    actual: int

    @property
    def delta(self) -> int:
        return self.actual - self.reservation.amount


@dataclass(frozen=True)
class LimitStatus:
    """One matched limit after admission: ticks left in its window, and whether it refused."""

    limit: Limit
    remaining: int
    reset_after_s: float
    over: bool


@dataclass(frozen=True)
class Verdict:
    """`statuses[i]` are the limits charge i matched (empty when degraded). `reservations` holds one
    entry per unit that matched a limit, only when allowed and not degraded."""

    allowed: bool
    retry_after_s: float
    statuses: tuple[tuple[LimitStatus, ...], ...]
    reservations: Mapping[Unit, Reservation]
    degraded: bool = False
    charged: tuple[tuple[Slot, int], ...] = field(default=(), repr=False)
    at: float = 0.0


def slot_of(limit: Limit) -> Slot:
    return Slot(limit.id, limit.per.seconds, limit.capacity)


class Limiter:
    """Shared by every task of a process; holds no per-request state. `limits` is read once per
    operation, so a table swapped by a config reload applies from the next call on."""

    def __init__(self, store: Store, limits: Callable[[], LimitTable],
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._limits = limits
        self._clock = clock

    async def admit(self, charges: Sequence[Charge]) -> Verdict:
        """Reserve every charge, all or nothing. A limit matched by several charges of one call is
        charged once, with the largest amount."""
        now = self._clock()
        table = self._limits()
        matched = [table.match(c.fields, c.unit) for c in charges]
        amount_by_id: dict[str, int] = {}
        limit_by_id: dict[str, Limit] = {}
        for c, lims in zip(charges, matched, strict=True):
            for lim in lims:
                limit_by_id[lim.id] = lim
                amount_by_id[lim.id] = max(amount_by_id.get(lim.id, 0), c.amount)
        ids = list(limit_by_id)
        slots = [slot_of(limit_by_id[i]) for i in ids]
        amounts = [amount_by_id[i] for i in ids]
        decision = await self.store.reserve(slots, amounts, now)
        if decision.degraded:
            return Verdict(decision.allowed, decision.retry_after_s, tuple(() for _ in charges), {}, degraded=True)
        remaining = dict(zip(ids, decision.remaining, strict=True))
        statuses = []
        for lims in matched:
            row = []
            for lim in lims:
                left, amount = remaining[lim.id], amount_by_id[lim.id]
                over = not decision.allowed and (amount > left or (amount == 0 and left == 0))
                row.append(LimitStatus(lim, left, window_of(lim.per, now).reset_after(now), over))
            statuses.append(tuple(row))
        reservations: dict[Unit, Reservation] = {}
        if decision.allowed:
            for c, lims in zip(charges, matched, strict=True):
                if lims:
                    prev = reservations.get(c.unit)
                    reservations[c.unit] = Reservation(max(c.amount, prev.amount if prev else 0), now)
        charged = tuple(zip(slots, amounts, strict=True)) if decision.allowed else ()
        return Verdict(decision.allowed, decision.retry_after_s, tuple(statuses), reservations,
                       charged=charged, at=now)

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        """Apply each true-up to the limits its descriptor matches now (refunds included)."""
        now = self._clock()
        table = self._limits()
        for s in settlements:
            slots = [slot_of(lim) for lim in table.match(s.fields, s.unit)]
            if slots and s.delta:
                await self.store.adjust(slots, s.delta, now, at=s.reservation.at)

    async def release(self, verdict: Verdict) -> None:
        """Give back everything an admission reserved (its caller never learnt of it)."""
        if verdict.charged:
            slots = [s for s, _ in verdict.charged]
            await self.store.adjust(slots, [-a for _, a in verdict.charged], self._clock(), at=verdict.at)


def ticks(amount: float, unit: Unit) -> int:
    """An amount in `unit` (USD for `usd`) as integer ticks, rounded up."""
    return math.ceil(amount * unit.scale - 1e-9)
