"""Provider rate-limit response headers → how close a deployment is to its provider's limit.

Pure parsing, no I/O, no clock: the caller passes the wall-clock time (`now_unix`, Unix seconds) that
absolute reset times are measured against, and gets relative durations back (seconds), which it can add
to its own monotonic clock. Header names must be lower-case (as Envoy hands them over). A malformed or
unknown value is ignored, never raised: a quirky header must not fail a response.

Header families read by `pressure_from_headers`, one `(remaining, limit, reset)` triple per resource:

| provider             | remaining / limit / reset                                  | reset format            |
|----------------------|------------------------------------------------------------|-------------------------|
| OpenAI, Azure OpenAI | `x-ratelimit-remaining-<r>`, `x-ratelimit-limit-<r>`,      | Go duration (`1s`,      |
|                      | `x-ratelimit-reset-<r>`; r = requests, tokens (any suffix) | `6m0s`, `20ms`) or secs |
| Anthropic            | `anthropic-ratelimit-<r>-remaining|limit|reset`;           | RFC 3339 timestamp      |
|                      | r = requests, tokens, input-tokens, output-tokens          |                         |

A resource with a positive limit gives remaining / limit (clamped to [0, 1]). Azure may send only the
remaining count: 0 then reads as fraction 0, any other count carries no usable fraction and is ignored.
Negative counts (Azure's −1 for "not reported") are ignored. A reset that is missing or unreadable reads
as `default_reset_s`; a reset already in the past as 0. The most constraining resource wins: the lowest
fraction, then the longest reset.

`retry-after` (delay-seconds or HTTP-date) and `retry-after-ms` say when to retry after a refusal; they
are not pressure by themselves and are read separately by `retry_after_s`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

DEFAULT_RESET_S = 1.0
"""How long a reading lasts when the provider says nothing (readable) about its reset."""

_NUMBER = re.compile(r"\d+(?:\.\d+)?", re.ASCII)
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)", re.ASCII)
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_OPENAI_REMAINING = "x-ratelimit-remaining-"
_ANTHROPIC = "anthropic-ratelimit-"
_ANTHROPIC_RESOURCES = ("requests", "tokens", "input-tokens", "output-tokens")


@dataclass(frozen=True, slots=True)
class Pressure:
    """How much of a provider limit is left: `remaining_fraction` in [0, 1] (0 = exhausted), until it
    resets in `reset_after_s` seconds (≥ 0), according to the header named `source` (the remaining
    count's header, e.g. ``"x-ratelimit-remaining-tokens"``). Construction validates (ValueError)."""

    remaining_fraction: float
    reset_after_s: float
    source: str

    def __post_init__(self) -> None:
        if not 0.0 <= self.remaining_fraction <= 1.0:
            raise ValueError(f"remaining_fraction: must be in [0, 1], got {self.remaining_fraction}")
        if not 0.0 <= self.reset_after_s < math.inf:
            raise ValueError(f"reset_after_s: must be finite and >= 0, got {self.reset_after_s}")


def pressure_from_headers(headers: Mapping[str, str], now_unix: float, *,
                          default_reset_s: float = DEFAULT_RESET_S) -> Pressure | None:
    """The most constraining provider limit the response headers report, or None when they report
    nothing usable (see the module docstring for the formats)."""
    best: Pressure | None = None
    for p in _readings(headers, now_unix, default_reset_s):
        if best is None or (p.remaining_fraction, -p.reset_after_s) < (best.remaining_fraction,
                                                                        -best.reset_after_s):
            best = p
    return best


def retry_after_s(headers: Mapping[str, str], now_unix: float) -> float | None:
    """Seconds to wait before retrying, from `retry-after-ms` (milliseconds, preferred: more precise) or
    `retry-after` (delay-seconds or an HTTP-date, measured from `now_unix`; a past date reads as 0).
    None when neither is present and readable."""
    ms = _number(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = _number(raw)
    if seconds is not None:
        return seconds
    try:
        at = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if at.tzinfo is None:  # "-0000" means UTC with no zone information (RFC 5322)
        return None
    return max(0.0, at.timestamp() - now_unix)


def _duration(value: str) -> float | None:
    """A Go-style duration (``"1h2m3.5s"``, ``"6m0s"``, ``"20ms"``) or a bare number of seconds, in
    seconds; None when unreadable or negative."""
    v = value.strip()
    n = _number(v)
    if n is not None:
        return n
    total, pos = 0.0, 0
    for m in _DURATION_PART.finditer(v):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    return total if pos == len(v) and pos > 0 and math.isfinite(total) else None


def _readings(headers: Mapping[str, str], now_unix: float, default_reset_s: float) -> list[Pressure]:
    out = []
    for name in headers:
        if name.startswith(_OPENAI_REMAINING):
            r = name[len(_OPENAI_REMAINING):]
            reset_raw = headers.get(f"x-ratelimit-reset-{r}")
            reset = None if reset_raw is None else _duration(reset_raw)
            p = _reading(name, headers[name], headers.get(f"x-ratelimit-limit-{r}"), reset, default_reset_s)
            if p is not None:
                out.append(p)
    for r in _ANTHROPIC_RESOURCES:
        name = f"{_ANTHROPIC}{r}-remaining"
        raw = headers.get(name)
        if raw is not None:
            reset = _until(headers.get(f"{_ANTHROPIC}{r}-reset"), now_unix)
            p = _reading(name, raw, headers.get(f"{_ANTHROPIC}{r}-limit"), reset, default_reset_s)
            if p is not None:
                out.append(p)
    return out


def _reading(source: str, remaining_raw: str, limit_raw: str | None, reset: float | None,
             default_reset_s: float) -> Pressure | None:
    remaining = _number(remaining_raw)
    if remaining is None:
        return None
    limit = _number(limit_raw)
    if limit is not None and limit > 0:
        fraction = min(1.0, remaining / limit)
    elif remaining == 0:
        fraction = 0.0
    else:
        return None
    return Pressure(fraction, default_reset_s if reset is None else reset, source)


def _number(raw: str | None) -> float | None:
    """A non-negative decimal number; None for anything else (signs, exponents, nan, inf, "1_000")."""
    if raw is None:
        return None
    v = raw.strip()
    if not _NUMBER.fullmatch(v):
        return None
    n = float(v)
    return n if math.isfinite(n) else None


def _until(raw: str | None, now_unix: float) -> float | None:
    """Seconds from `now_unix` to an RFC 3339 timestamp (0 if past); None when unreadable or zoneless."""
    if raw is None:
        return None
    try:
        at = datetime.fromisoformat(raw.strip())
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    try:
        return max(0.0, at.timestamp() - now_unix)
    except (OverflowError, ValueError):
        return None
