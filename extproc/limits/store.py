"""Counter stores: atomic all-or-nothing reservations and true-ups over fixed windows.

Theory of operation. A `Slot` is one counter (a limit's id), its window length and its capacity,
all in integer ticks. The store keeps one count per (slot, window index), where the index is
`floor(now / window_s)`; a count is forgotten one window length after its window ends (Redis:
its TTL), so an operation computed near the end of a window and applied a little later (a busy
event loop, the network) still finds the count instead of starting the window over from 0.

- `reserve(slots, amount, now)`: if every slot has room (`used + amount ≤ limit`; an amount of 0
  is a peek that needs `used < limit`), add the amount to all of them, else to none. Nothing
  else can run between the check and the add, so parallel callers never take more than the
  capacity: what a budget can exceed it by is only what true-ups add after admission.
- `adjust(slots, delta, now, at=…)`: true-up of a reservation made at `at` (default `now`). The
  delta goes to the window that held the reservation; a count never goes below 0. When that
  window is already over, a refund (delta < 0) is dropped (there is nothing left to give back)
  and an overshoot (delta > 0) is charged to the current window, so usage cannot escape.

`MemoryStore` serves one process (one event loop); `RedisStore` is shared by every process and
replica that points at one Redis, with one Lua script per operation. `RedisStore` never raises on
Redis errors or timeouts: it applies its `failure_mode` (`open`: allow, `closed`: refuse), counts
the failure in `failures`, and logs the first failure and the recovery.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger("interlock.limits")

Amounts = int | Sequence[int]


class FailureMode(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class Slot:
    """One counter: `key` (stable across processes), window length in seconds, capacity in ticks."""

    key: str
    window_s: int
    limit: int


@dataclass(frozen=True)
class Decision:
    """The outcome of `reserve`.

    `remaining[i]` is slot i's `limit − used` after the operation (never below 0), or before it
    when refused. `retry_after_s` is 0 when allowed; when refused, the time until the windows of
    every slot without room have reset. `degraded` is set when the store failed and `allowed` is
    its failure mode; `remaining` is then empty.
    """

    allowed: bool
    retry_after_s: float
    remaining: tuple[int, ...]
    degraded: bool = False


class Store(Protocol):
    """A store may set a class attribute `synchronous = True` when none of its coroutines ever
    suspends (they run to completion when first resumed): the service then decides a call inline,
    without a task, since nothing can cancel it halfway."""

    async def reserve(self, slots: Sequence[Slot], amount: Amounts, now: float) -> Decision: ...

    async def adjust(self, slots: Sequence[Slot], delta: Amounts, now: float, *, at: float | None = None) -> None: ...

    async def usage(self, slots: Sequence[Slot], now: float) -> tuple[int, ...]: ...

    async def close(self) -> None: ...


def _amounts(slots: Sequence[Slot], amount: Amounts) -> list[int]:
    if len({s.key for s in slots}) != len(slots):
        raise ValueError("slots: duplicate key")
    if isinstance(amount, int):
        return [amount] * len(slots)
    out = [int(a) for a in amount]
    if len(out) != len(slots):
        raise ValueError(f"amount: {len(out)} values for {len(slots)} slots")
    return out


def _index(slot: Slot, t: float) -> int:
    return math.floor(t / slot.window_s)


def _window_end(slot: Slot, index: int) -> float:
    return float((index + 1) * slot.window_s)


def _fits(used: int, amount: int, limit: int) -> bool:
    return used + amount <= limit and (amount > 0 or used < limit)


def _decide(slots: Sequence[Slot], amounts: Sequence[int], used: Sequence[int], allowed: bool,
            now: float) -> Decision:
    """`used` is after the add when allowed, before it when refused."""
    remaining = tuple(max(0, s.limit - u) for s, u in zip(slots, used, strict=True))
    if allowed:
        return Decision(True, 0.0, remaining)
    waits = [_window_end(s, _index(s, now)) - now
             for s, a, u in zip(slots, amounts, used, strict=True) if not _fits(u, a, s.limit)]
    return Decision(False, max(waits, default=0.0), remaining)


def _adjust_targets(slots: Sequence[Slot], deltas: Sequence[int], now: float,
                    at: float) -> list[tuple[Slot, int, int]]:
    """(slot, window index, delta) for each non-zero delta, per the true-up rule above."""
    out = []
    for slot, d in zip(slots, deltas, strict=True):
        then, current = _index(slot, at), _index(slot, now)
        if d == 0 or (then < current and d < 0):
            continue
        out.append((slot, then if then >= current else current, d))
    return out


class MemoryStore:
    """Counters in this process's memory. Every operation runs without yielding to the event loop,
    so it is atomic with respect to other tasks; not for use from several threads."""

    synchronous = True  # its coroutines never suspend: a call cannot be cancelled halfway

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], tuple[int, float]] = {}
        self._next_sweep = -math.inf

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + 1.0
        for k in [k for k, (_, end) in self._counts.items() if end <= now]:
            del self._counts[k]

    def _get(self, slot: Slot, index: int) -> int:
        return self._counts.get((slot.key, index), (0, 0.0))[0]

    def _set(self, slot: Slot, index: int, value: int) -> None:
        self._counts[(slot.key, index)] = (value, _window_end(slot, index) + slot.window_s)

    async def reserve(self, slots: Sequence[Slot], amount: Amounts, now: float) -> Decision:
        amounts = _amounts(slots, amount)
        self._sweep(now)
        indexes = [_index(s, now) for s in slots]
        used = [self._get(s, i) for s, i in zip(slots, indexes, strict=True)]
        allowed = all(_fits(u, a, s.limit) for s, a, u in zip(slots, amounts, used, strict=True))
        if allowed:
            used = [u + a for u, a in zip(used, amounts, strict=True)]
            for s, i, u in zip(slots, indexes, used, strict=True):
                self._set(s, i, u)
        return _decide(slots, amounts, used, allowed, now)

    async def adjust(self, slots: Sequence[Slot], delta: Amounts, now: float, *, at: float | None = None) -> None:
        deltas = _amounts(slots, delta)
        self._sweep(now)
        for slot, index, d in _adjust_targets(slots, deltas, now, now if at is None else at):
            used = self._get(slot, index)
            if d > 0 or used > 0:
                self._set(slot, index, max(0, used + d))

    async def usage(self, slots: Sequence[Slot], now: float) -> tuple[int, ...]:
        return tuple(self._get(s, _index(s, now)) for s in slots)

    async def close(self) -> None:
        self._counts.clear()


# KEYS: one count per slot (the window's key). ARGV: limit, amount, ttl_ms per slot.
# Returns {allowed, used_1, …, used_n}: the counts after the add when allowed, before it if not.
_RESERVE = """
local n = #KEYS
local used = {}
local ok = 1
for i = 1, n do
  local u = tonumber(redis.call('GET', KEYS[i]) or '0')
  local limit, amount = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1])
  used[i] = u
  if u + amount > limit or (amount == 0 and u >= limit) then ok = 0 end
end
if ok == 1 then
  for i = 1, n do
    local amount = tonumber(ARGV[3*i-1])
    if amount > 0 then
      used[i] = redis.call('INCRBY', KEYS[i], amount)
      if redis.call('PTTL', KEYS[i]) < 0 then redis.call('PEXPIRE', KEYS[i], ARGV[3*i]) end
    end
  end
end
local out = {ok}
for i = 1, n do out[i+1] = used[i] end
return out
"""

# KEYS: one count per target window. ARGV: delta, ttl_ms per key. Counts never go below 0, and
# a refund never creates a key.
_ADJUST = """
for i = 1, #KEYS do
  local d = tonumber(ARGV[2*i-1])
  if d > 0 then
    redis.call('INCRBY', KEYS[i], d)
    if redis.call('PTTL', KEYS[i]) < 0 then redis.call('PEXPIRE', KEYS[i], ARGV[2*i]) end
  else
    local u = tonumber(redis.call('GET', KEYS[i]) or '0')
    if u > 0 then
      local v = u + d
      if v < 0 then v = 0 end
      redis.call('SET', KEYS[i], v, 'KEEPTTL')
    end
  end
end
return #KEYS
"""

_FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


class RedisStore:
    """Counters in one Redis (standalone or a primary behind Sentinel; not Redis Cluster, since a
    script touches keys of several limits). Every operation is one script call, atomic in Redis,
    so any number of processes stay exact. Operations are not retried (a reservation that may
    have run must not run twice); each is bounded by `timeout_s`, and a reservation that timed out
    may still have been counted (it is forgotten with its window). Clocks of the processes sharing
    a Redis should agree (NTP): the window index is computed from the caller's `now`.

    `failures` counts operations that failed (Redis unreachable, erroring or slower than
    `timeout_s`); `reserve` then answers with `failure_mode`, `adjust` drops the true-up.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "interlock:rl:",
                 failure_mode: FailureMode | str = FailureMode.OPEN, timeout_s: float = 0.25,
                 client: Redis | None = None) -> None:
        self.prefix = prefix
        self.failure_mode = FailureMode(failure_mode)
        self.timeout_s = timeout_s
        self.failures = 0
        self.last_error = ""
        self._healthy = True
        self._client = client or Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
        self._reserve = self._client.register_script(_RESERVE)
        self._adjust = self._client.register_script(_ADJUST)

    def _key(self, slot: Slot, index: int) -> str:
        return f"{self.prefix}{slot.key}#{index}"

    def _ttl_ms(self, slot: Slot, index: int, now: float) -> int:
        """Until one window length after the window ends, from the caller's clock (so only the
        clocks' rates matter, not their offsets)."""
        return max(1, math.ceil((_window_end(slot, index) - now) * 1000)) + slot.window_s * 1000

    def _failed(self, op: str, e: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if self._healthy:
            self._healthy = False
            log.warning("redis %s failed (%s); failing %s until it answers again",
                        op, self.last_error, self.failure_mode.value)

    def _ok(self) -> None:
        if not self._healthy:
            self._healthy = True
            log.warning("redis answers again (%d failed operations so far)", self.failures)

    async def _call(self, script: Any, keys: list[str], args: list[int]) -> Any:
        async with asyncio.timeout(self.timeout_s):
            return await script(keys=keys, args=args)

    async def reserve(self, slots: Sequence[Slot], amount: Amounts, now: float) -> Decision:
        amounts = _amounts(slots, amount)
        if not slots:
            return Decision(True, 0.0, ())
        indexes = [_index(s, now) for s in slots]
        keys = [self._key(s, i) for s, i in zip(slots, indexes, strict=True)]
        args: list[int] = []
        for s, i, a in zip(slots, indexes, amounts, strict=True):
            args += [s.limit, a, self._ttl_ms(s, i, now)]
        try:
            out = await self._call(self._reserve, keys, args)
        except _FAILURES as e:
            self._failed("reserve", e)
            open_ = self.failure_mode is FailureMode.OPEN
            return Decision(open_, 0.0 if open_ else 1.0, (), degraded=True)
        self._ok()
        return _decide(slots, amounts, [int(u) for u in out[1:]], int(out[0]) == 1, now)

    async def adjust(self, slots: Sequence[Slot], delta: Amounts, now: float, *, at: float | None = None) -> None:
        targets = _adjust_targets(slots, _amounts(slots, delta), now, now if at is None else at)
        if not targets:
            return
        keys = [self._key(s, i) for s, i, _ in targets]
        args: list[int] = []
        for s, i, d in targets:
            args += [d, self._ttl_ms(s, i, now)]
        try:
            await self._call(self._adjust, keys, args)
        except _FAILURES as e:
            self._failed("adjust", e)
            return
        self._ok()

    async def usage(self, slots: Sequence[Slot], now: float) -> tuple[int, ...]:
        """Current counts (raises on Redis errors: for tests and diagnostics)."""
        if not slots:
            return ()
        values = await self._client.mget([self._key(s, _index(s, now)) for s in slots])
        return tuple(int(v) if v is not None else 0 for v in values)

    async def close(self) -> None:
        await self._client.aclose()


class Heartbeat:
    """This pod's heartbeat in the shared Redis, and the pods alive there.

    One sorted set (`key`) holds each pod's id scored by its last beat (the caller's clock, epoch
    seconds). `beat(now)` adds or refreshes this pod, drops pods silent for `ttl_s`, and returns
    (live pods, this pod's rank among them by id) in one Lua call, so every pod sees the same
    membership. A pod that stops (or loses Redis) leaves the count within `ttl_s`; one that starts
    is counted by the others at their next beat. Redis errors raise `RedisError` to the caller,
    which keeps the last answer (`extproc.admission.Replicas`). Not shared across event loops."""

    _SCRIPT = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
table.sort(members)
for i, m in ipairs(members) do
  if m == ARGV[2] then return {#members, i - 1} end
end
return {#members, 0}
"""

    def __init__(self, url: str, pod: str, *, key: str = "interlock:pods", ttl_s: float = 5.0,
                 timeout_s: float = 0.5) -> None:
        self.pod, self.key, self.ttl_s = pod, key, ttl_s
        self._redis = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                     retry=Retry(NoBackoff(), 0))
        self._script = self._redis.register_script(self._SCRIPT)

    async def beat(self, now: float) -> tuple[int, int]:
        count, rank = await self._script(keys=[self.key], args=[
            repr(now), self.pod, repr(now - self.ttl_s), int(self.ttl_s * 2000)])
        return int(count), int(rank)

    async def leave(self) -> None:
        """Remove this pod at once (a drained pod's share goes back to the others)."""
        await self._redis.zrem(self.key, self.pod)

    async def close(self) -> None:
        await self._redis.aclose()
