"""The router stage's own idle timer for a streamed answer: Envoy 1.40 tells the ext_proc nothing
when its idle timeout cuts a stream (it half-closes the ext_proc stream one idle timeout after the
last chunk and resets the client about a second later), so a stream that stalls after its first
byte would end with a bare transport reset. This timer fires a little before Envoy's, so the
router stage can end the client's stream itself with an error event in the client's format.

`bound` is the idle timeout Envoy applies to the attempt: the provider's `cluster.idle_timeout`,
or on a fallback order the shortest of its providers' (the same value as
`extproc.envoyconf.fallback.attempt_idle_timeout`, which renders `per_try_idle_timeout`); the
timer fires `lead(bound)` before it. Cost per chunk: one clock read (`touch`); the timer is
re-armed only when it fires early (lazy), never cancelled and re-created per chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from extproc.runtime import Deployment


class Handle(Protocol):
    def cancel(self) -> None: ...


class Loop(Protocol):
    """What the timer needs of an asyncio event loop (a fake one in tests)."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None], /) -> Handle: ...


def idle_bound(chain: Iterable[Deployment]) -> float:
    """The idle timeout Envoy applies to each attempt of `chain` (one provider: its own)."""
    return min(d.account.config.cluster.idle_timeout for d in chain)


def lead(bound: float) -> float:
    """How long before Envoy's cut the error event goes: 10 % of the bound, at most 1 s."""
    return min(1.0, 0.1 * bound)


class StallTimer:
    """Calls `on_stall` once when no `touch` happened for `after` seconds (from `start`)."""

    __slots__ = ("after", "last", "_loop", "_on_stall", "_handle")

    def __init__(self, loop: Loop, bound: float, on_stall: Callable[[], None]) -> None:
        self.after = bound - lead(bound)
        self._loop = loop
        self._on_stall = on_stall
        self.last = loop.time()
        self._handle: Handle | None = loop.call_at(self.last + self.after, self._fire)

    def touch(self) -> None:
        """A chunk arrived: the stream is alive."""
        self.last = self._loop.time()

    def _fire(self) -> None:
        due = self.last + self.after
        if self._loop.time() < due:  # a chunk came since: wait for the rest of the silence
            self._handle = self._loop.call_at(due, self._fire)
            return
        self._handle = None
        self._on_stall()

    def stop(self) -> None:
        """The stream ended (or the call did): never fire. Idempotent."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
