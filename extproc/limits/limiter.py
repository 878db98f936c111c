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
    """Admission of one descriptor: charge `amount` ticks of `unit` to the limits matching `fields`,
    or less when they have less left, but never less than `minimum` (None: exactly `amount`)."""

    fields: Mapping[str, str]
    unit: Unit
    amount: int
    minimum: int | None = None

    @property
    def floor(self) -> int:
        return self.amount if self.minimum is None else min(self.minimum, self.amount)


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


SHRINK_TRIES = 3


def slot_of(limit: Limit) -> Slot:
    return Slot(limit.id, limit.per.seconds, limit.capacity)


def _per_limit(matched: Sequence[Sequence[Limit]], amounts: Sequence[int]) -> dict[str, int]:
    """Each limit's amount: the largest of the charges that match it."""
    out: dict[str, int] = {}
    for lims, a in zip(matched, amounts, strict=True):
        for lim in lims:
            out[lim.id] = max(out.get(lim.id, 0), a)
    return out


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
        charged once, with the largest amount.

        A charge never reserves more than the smallest whole window amount of the limits it
        matches. When the reservation is refused, a charge with a `minimum` shrinks to what its
        limits have left, if that is at least its minimum, and the reservation is tried again (at
        most `SHRINK_TRIES` times in all: another process may take what was left in between). So a
        refusal means that some limit has less left than a charge's minimum (or its amount), and
        the retry-after is until that limit's window resets."""
        now = self._clock()
        table = self._limits()
        matched = [table.match(c.fields, c.unit) for c in charges]
        limit_by_id = {lim.id: lim for lims in matched for lim in lims}
        ids = list(limit_by_id)
        slots = [slot_of(limit_by_id[i]) for i in ids]
        # Never more than a whole window: what no wait could make room for.
        want = [min([c.amount, *(lim.capacity for lim in lims)]) for c, lims in zip(charges, matched, strict=True)]
        for _ in range(SHRINK_TRIES):
            by_id = _per_limit(matched, want)
            decision = await self.store.reserve(slots, [by_id[i] for i in ids], now)
            if decision.allowed or decision.degraded:
                break
            room = dict(zip(ids, decision.remaining, strict=True))
            shrunk = [min([w, *(room[lim.id] for lim in lims)]) for w, lims in zip(want, matched, strict=True)]
            if shrunk == want or any(s < c.floor for s, c in zip(shrunk, charges, strict=True)):
                break
            want = shrunk
        if decision.degraded:
            return Verdict(decision.allowed, decision.retry_after_s, tuple(() for _ in charges), {}, degraded=True)
        remaining = dict(zip(ids, decision.remaining, strict=True))
        # Refused: a limit is over when it has less left than what the charges need of it at least.
        needed = _per_limit(matched, [min(w, c.floor) for w, c in zip(want, charges, strict=True)])
        statuses = []
        for lims in matched:
            row = []
            for lim in lims:
                left, need = remaining[lim.id], needed[lim.id]
                over = not decision.allowed and (need > left or (need == 0 and left == 0))
                row.append(LimitStatus(lim, left, window_of(lim.per, now).reset_after(now), over))
            statuses.append(tuple(row))
        # Until the windows of the limits that refused reset: then the charges fit (shrunk if need be).
        retry_after = max((st.reset_after_s for row in statuses for st in row if st.over),
                          default=decision.retry_after_s)
        reservations: dict[Unit, Reservation] = {}
        if decision.allowed:
            for c, w, lims in zip(charges, want, matched, strict=True):
                if lims:
                    prev = reservations.get(c.unit)
                    reservations[c.unit] = Reservation(max(w, prev.amount if prev else 0), now)
        by_id = _per_limit(matched, want)
        charged = tuple((s, by_id[i]) for s, i in zip(slots, ids, strict=True)) if decision.allowed else ()
        return Verdict(decision.allowed, retry_after if not decision.allowed else 0.0, tuple(statuses), reservations,
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
