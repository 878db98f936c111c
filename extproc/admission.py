"""Admission in the router stage: concurrency budgets per deployment, priority classes, deadlines.

Theory of operation. A deployment with `max_concurrency: N` (what its provider account allows)
may have at most N requests in flight from this pod, counted across every worker process on a
`Board`: a file of per-worker rows of counters, mapped in each worker. A worker only writes its
own row (so a restarted worker clears what its dead predecessor held), and takes a slot under an
exclusive file lock around "sum the column, compare, add", so workers racing for the last slot
never take more than N together. A slot is held from admission until the response ends (or the
client goes away) — the router stage's gRPC stream lives exactly that long.

Priority classes share a budget unequally: a class may only take a slot while the deployment's
in-flight count is below its share of N (`batch_share`, `default_share`; interactive: all of
it), so the top of every budget stays free for interactive traffic. A request that finds no slot:

1. spills to the next candidate of its route that has room for its class (in the route's order);
2. else waits (at most `queue_timeout`, and never past what its deadline leaves once the
   deployment's expected time to first token is taken off), polling for a freed slot;
3. else is shed: 429 with `Retry-After` from the budget's refill rate (a slot frees every
   service time / N seconds on average), or 504 when its deadline leaves no time at all.

Across replicas (`rate_limit.store: redis`): each pod's workers keep a heartbeat in the shared
Redis (`Replicas`, `extproc.limits.store.Heartbeat`) and count the live pods; a pod then takes
`N // pods` of each budget, the first `N % pods` pods by id one more, so the pods' shares add up to
N exactly (at least 1 each: with more pods than N the account can see one request per pod). A pod
that starts counts itself at once and the others within `BEAT_S`; a pod that stops leaves the
count within `TTL_S` (its share idles meanwhile: the safe side). A fall in the count is believed
only when the next beat sees fewer pods too: after Redis was away for `TTL_S`, every pod's entry
is stale and the first to beat again sees itself alone for a moment. Without Redis, or while it
does not answer, the last count stands (1 before any answer: no replica is assumed that was not
seen), and the first admission in a pod waits up to `FIRST_BEAT_WAIT_S` for that answer.

The waiting room is bounded: per worker, at most as many requests wait for a deployment as its
budget (a slot frees every service time / N on average, so a longer queue would only wait to be
shed); beyond it a request is shed at once. Waiters wake when a slot of this worker frees and poll
every `POLL_S` for slots other workers free.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import math
import mmap
import os
import socket
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from extproc import errors
from extproc.config.model import Admission

COLUMNS = 4096  # deployment ids hash into this many counters; a clash only makes budgets stricter
_CELL = 4  # bytes: int32 counters
POLL_S = 0.01
BEAT_S = 1.0  # heartbeat period of a pod's workers in the shared Redis
TTL_S = 5.0  # a pod silent this long no longer counts
log = logging.getLogger("interlock.admission")


def column(deployment_id: str) -> int:
    return zlib.crc32(deployment_id.encode("utf-8")) % COLUMNS


class Board:
    """Requests in flight per deployment, counted across the workers of a pod.

    `path=None`: a private board (one worker counts alone: tests, `--single` without `--board`).
    Operations are synchronous and take microseconds (one `flock` round trip when shared).
    """

    def __init__(self, path: str | None = None, row: int = 0, rows: int = 1) -> None:
        if not 0 <= row < rows:
            raise ValueError(f"row {row} out of range for {rows} rows")
        self.rows = rows
        self.row = row
        size = rows * COLUMNS * _CELL
        self._fd: int | None = None
        if path is None:
            self._map = mmap.mmap(-1, size)
        else:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            if os.fstat(self._fd).st_size < size:
                os.ftruncate(self._fd, size)
            self._map = mmap.mmap(self._fd, size)
        self._cells = memoryview(self._map).cast("i")
        own = row * COLUMNS
        with self._locked():
            self._cells[own:own + COLUMNS] = memoryview(bytes(COLUMNS * _CELL)).cast("i")

    def _locked(self) -> _Lock:
        return _Lock(self._fd)

    def _total(self, col: int) -> int:
        cells = self._cells
        return sum(cells[r * COLUMNS + col] for r in range(self.rows))

    def in_flight(self, deployment_id: str) -> int:
        return self._total(column(deployment_id))

    def try_acquire(self, deployment_id: str, cap: int) -> bool:
        """Take a slot if fewer than `cap` requests are in flight; True when taken."""
        col = column(deployment_id)
        with self._locked():
            if self._total(col) >= cap:
                return False
            self._cells[self.row * COLUMNS + col] += 1
        return True

    def release(self, deployment_id: str) -> None:
        i = self.row * COLUMNS + column(deployment_id)
        with self._locked():
            if self._cells[i] > 0:
                self._cells[i] -= 1


class _Lock:
    __slots__ = ("fd",)

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)


class Beat(Protocol):
    """`extproc.limits.store.Heartbeat`'s interface."""

    async def beat(self, now: float) -> tuple[int, int]: ...

    async def leave(self) -> None: ...

    async def close(self) -> None: ...


FIRST_BEAT_WAIT_S = 0.5


class Replicas:
    """The live pods sharing this gateway's Redis, and this pod's share of a budget.

    `start()` (from the worker's event loop) runs `heartbeat` every `BEAT_S`; `budget(n)` reads
    the last answer (no I/O). The heartbeat's pod id must be the same in all workers of a pod
    (`pod_id()`: the host name, a pod's name on Kubernetes, and the supervisor's pid)."""

    def __init__(self, heartbeat: Beat, clock: Callable[[], float] = time.time) -> None:
        self.heartbeat = heartbeat
        self.clock = clock
        self.count, self.rank = 1, 0
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._answered: asyncio.Event | None = None
        self._saw_fewer = False

    @staticmethod
    def pod_id() -> str:
        return f"{socket.gethostname()}/{os.getppid()}"

    def budget(self, n: int) -> int:
        """This pod's part of a budget of `n` (see the module docstring)."""
        pods = max(1, self.count)
        return max(1, n // pods + (1 if self.rank < n % pods else 0))

    async def beat(self) -> None:
        try:
            count, rank = await self.heartbeat.beat(self.clock())
        except Exception as e:  # Redis errors and timeouts: logged once, the last count stands
            if not self._failing:
                log.warning("replica heartbeat failed (%s); keeping %d live pods until Redis answers",
                            type(e).__name__, self.count)
            self._failing = True
            return
        if self._failing:
            log.info("replica heartbeat answers again: %d live pods", count)
        self._failing = False
        if count < self.count and not self._saw_fewer:
            self._saw_fewer = True  # a fall is believed at the next beat (see the module docstring)
            return
        self._saw_fewer = False
        self.count, self.rank = count, rank

    def start(self) -> None:
        if self._task is None:
            self._answered = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def first_answer(self) -> None:
        """Wait (at most `FIRST_BEAT_WAIT_S`) for the first heartbeat, so a pod that just started
        does not take a whole budget before it knows how many pods share it."""
        if self._answered is not None and not self._answered.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), FIRST_BEAT_WAIT_S)

    async def _run(self) -> None:
        while True:
            await self.beat()
            if self._answered is not None:
                self._answered.set()
            await asyncio.sleep(BEAT_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        with contextlib.suppress(Exception):
            await self.heartbeat.leave()
            await self.heartbeat.close()


@dataclass(frozen=True)
class Candidate:
    """What the gate needs of a deployment: its id, budget (0 = none) and expected timings."""

    id: str
    budget: int
    ttft_s: float  # expected time to first token (routing statistics)
    service_s: float  # expected time a request holds a slot


@dataclass
class Ticket:
    """A slot held (or no budget to hold); `release` exactly once."""

    index: int  # which candidate was admitted
    deployment_id: str
    counted: bool
    waited_s: float = 0.0


class Gate:
    """One per worker process. Not thread-safe: one event loop owns it."""

    def __init__(self, board: Board, settings: Callable[[], Admission], clock: Callable[[], float],
                 replicas: Replicas | None = None) -> None:
        self.board = board
        self._settings = settings
        self.clock = clock
        self.replicas = replicas  # None: made on first use when the config names a shared Redis
        self.waiting: dict[str, int] = {}  # primary deployment id → requests waiting for it
        self.admitted = 0
        self.spilled = 0
        self.queued = 0
        self.shed = 0
        self.deadline_rejected = 0
        self._freed = asyncio.Event()

    def _replicas(self) -> Replicas | None:
        if self.replicas is None:
            url = self._settings().replicas_redis_url
            if url is None:
                return None
            from extproc.limits.store import Heartbeat

            self.replicas = Replicas(Heartbeat(url, Replicas.pod_id(), ttl_s=TTL_S))
        self.replicas.start()
        return self.replicas

    def pod_budget(self, budget: int) -> int:
        """This pod's part of a deployment's `max_concurrency` (all of it without replicas)."""
        replicas = self.replicas
        return replicas.budget(budget) if replicas is not None and budget > 0 else budget

    def cap(self, budget: int, priority: str) -> int:
        return max(1, math.floor(self.pod_budget(budget) * self._settings().share(priority) + 1e-9))

    def _try(self, cands: Sequence[Candidate], priority: str) -> Ticket | None:
        for i, c in enumerate(cands):
            if c.budget <= 0:
                return Ticket(i, c.id, False)
            if self.board.try_acquire(c.id, self.cap(c.budget, priority)):
                return Ticket(i, c.id, True)
        return None

    async def admit(self, cands: Sequence[Candidate], priority: str, deadline_at: float | None) -> Ticket:
        """A slot on the first candidate with room for `priority`, waiting if need be; raises
        `RateLimited` (429) or `DeadlineExceeded` (504) when the request is shed."""
        replicas = self._replicas()
        if replicas is not None:
            await replicas.first_answer()
        start = self.clock()
        primary = cands[0]
        if deadline_at is not None and all(deadline_at - start < c.ttft_s for c in cands):
            self.deadline_rejected += 1
            raise errors.DeadlineExceeded(
                f"The deadline ({max(0, round((deadline_at - start) * 1000))} ms left) is shorter than the "
                f"expected time to first token of every candidate ({round(primary.ttft_s * 1000)} ms or more).")
        ticket = self._try(cands, priority)
        if ticket is not None:
            self._count(ticket)
            return ticket
        wait = self._settings().queue_timeout
        if deadline_at is not None:
            wait = min(wait, deadline_at - start - min(c.ttft_s for c in cands))
        room = max((self.pod_budget(c.budget) for c in cands), default=0)
        if wait > 0 and self.waiting.get(primary.id, 0) < room:
            self.waiting[primary.id] = self.waiting.get(primary.id, 0) + 1
            self.queued += 1
            try:
                until = start + wait
                while self.clock() < until:
                    self._freed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._freed.wait(), min(POLL_S, max(0.0, until - self.clock())))
                    ticket = self._try(cands, priority)
                    if ticket is not None:
                        ticket.waited_s = self.clock() - start
                        self._count(ticket)
                        return ticket
            finally:
                self.waiting[primary.id] -= 1
        self.shed += 1
        raise errors.RateLimited(self._shed_message(priority), self.retry_after(cands, priority))

    def _count(self, ticket: Ticket) -> None:
        self.admitted += 1
        if ticket.index:
            self.spilled += 1

    def retry_after(self, cands: Sequence[Candidate], priority: str) -> int:
        """Seconds until the budget has likely refilled for this class: a slot frees every
        service time / budget on average; the requests over the class's share wait their turn."""
        best = math.inf
        for c in cands:
            if c.budget <= 0:
                continue
            over = max(0, self.board.in_flight(c.id) - self.cap(c.budget, priority)) + 1
            best = min(best, c.service_s * over / self.pod_budget(c.budget))
        return max(1, math.ceil(best)) if math.isfinite(best) else 1

    @staticmethod
    def _shed_message(priority: str) -> str:
        return (f"Too many requests in flight: the concurrency budget for {priority} requests is in use "
                "on every candidate; retry after the number of seconds in Retry-After.")

    def release(self, ticket: Ticket) -> None:
        if ticket.counted:
            ticket.counted = False
            self.board.release(ticket.deployment_id)
            self._freed.set()
