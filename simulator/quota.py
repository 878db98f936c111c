"""Per-model request quotas: at most `request_limit` accepted requests per fixed window.

Theory of operation. Windows are aligned on the epoch of the simulator's clock, not on the moment
the behaviour was set: window k of a model with `request_window_s` = w covers [k·w, (k+1)·w)
seconds of the clock (as the fixed windows of Envoy's ratelimit service), so a test with an
injected clock knows where every window starts and ends. Each model keeps one `Quota`. At each
admission it rolls to the window holding `now`: a later (or earlier) window, or a changed
`request_window_s`, starts again from 0 used; a changed `request_limit` keeps the count. Only
accepted requests use the quota (those past injected errors, the quota itself and
`max_concurrency`); a request refused because the window is full counts in `rejected`, which
survives windows until the figures are reset.

Pure: every method takes `now` (epoch seconds); no I/O, no clock, no locking (the simulator's
event loop runs admissions one at a time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def _ceil_ms(seconds: float) -> int:
    """`seconds` in whole milliseconds, rounded up (float noise below a microsecond ignored)."""
    return max(0, math.ceil(round(seconds * 1000, 3)))


def window_start(now: float, window_s: float) -> float:
    """Start of the epoch-aligned window of `window_s` seconds that holds `now`."""
    return math.floor(now / window_s) * window_s


@dataclass(frozen=True)
class QuotaView:
    """What an answer reports of its model's quota, as of the request's admission.

    limit: `request_limit`. remaining: requests left in the window after this one (0 when this
    one was refused for the quota). reset_at: end of the window, epoch seconds. reset_s: seconds
    from admission until `reset_at` (> 0). exhausted: this request was refused for the quota.
    """

    limit: int
    remaining: int
    reset_at: float
    reset_s: float
    exhausted: bool = False

    @property
    def retry_after_s(self) -> int:
        """Whole seconds until the window resets, rounded up, at least 1 (`retry-after`)."""
        return max(1, math.ceil(_ceil_ms(self.reset_s) / 1000))

    @property
    def reset_ms(self) -> int:
        """Milliseconds until the window resets, rounded up, at least 1 (`retry-after-ms`)."""
        return max(1, _ceil_ms(self.reset_s))


@dataclass
class Quota:
    """One model's count in its current window (`start`, `window_s`) and its refusals since reset."""

    start: float = math.nan
    window_s: float = math.nan
    used: int = 0
    rejected: int = 0

    def roll(self, now: float, window_s: float) -> None:
        """Move to the window holding `now`; a different window starts from 0 used."""
        start = window_start(now, window_s)
        if start != self.start or window_s != self.window_s:
            self.start, self.window_s, self.used = start, window_s, 0

    def used_at(self, now: float, window_s: float) -> int:
        """Requests used in the window holding `now` (without rolling)."""
        return self.used if window_start(now, window_s) == self.start and window_s == self.window_s else 0

    def view(self, limit: int, now: float, exhausted: bool = False) -> QuotaView:
        """The figures of the current window (call after `roll`)."""
        reset_at = self.start + self.window_s
        return QuotaView(limit=limit, remaining=0 if exhausted else max(0, limit - self.used),
                         reset_at=reset_at, reset_s=max(0.001, reset_at - now), exhausted=exhausted)

    def figures(self, limit: int | None, window_s: float, now: float) -> dict[str, Any]:
        """This model's entry in `/_sim/stats` (`limit` None: no quota set now)."""
        used = self.used_at(now, window_s)
        start = window_start(now, window_s)
        return {"limit": limit, "window_s": window_s, "used_in_window": used,
                "remaining": None if limit is None else max(0, limit - used),
                "reset_in_s": round(start + window_s - now, 3), "rejected": self.rejected}

