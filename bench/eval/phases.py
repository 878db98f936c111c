"""Pure figures of the routing evaluation's phases (no I/O; `bench/eval_routing.py` runs them).

Traffic shift, from what the client saw (the model named by `x-interlock-model` and the time each
request was sent, seconds from the start of its phase):

- `share`: of the requests sent in a span that a model answered, the fraction served by `targets`
  (a set of model names: the slowed model, or every model of a rate-limited provider).
- A *window* is `window` consecutive such requests in send order; its share is the fraction of them
  served by `targets`, and it is placed at the send time of its **first** request: the share of the
  traffic from that moment on. So a router that moves at once is measured at ~0 s at any request
  rate; the window's length only sets how much noise the share carries (the same count at every
  rate).
- `shift`: with `pre` the share over the `pre_s` seconds before `start`:
  `react_s` is the time from `start` to the first window, wholly before `heal`, whose share is
  ≤ `REACT_FRACTION` × `pre` (≥ 90 % of the traffic `targets` had has left them); `recover_s` the
  time from `heal` to the first window, wholly before `end`, whose share is ≥ `RECOVER_FRACTION` ×
  `pre` (back within 10 % of the share before). `NEVER` (inf) when no such window exists within the
  observed span: reported as `never`, which reads as "longer than the phase watched". `NOT_MEASURED`
  (nan, reported as `n/a`) when there is nothing to measure: no traffic to `targets` before `start`
  (react and recover), or no window between `start` and `heal` below the recovery bound (recover:
  the traffic never left, so it cannot come back).

Oracle pricing (`oracle_cost`): what a request would cost on the model an oracle picks, knowing
each model's true answer-length distribution (log-normal: the simulator's `output_tokens` median
and `output_tokens_sigma`) and true TTFT distribution (`ttft_ms` + `ttft_ms_per_ktok` × prompt
ktokens, log-normal `ttft_sigma`), under the route's constraints: quality ≥ the floor, TTFT at the
policy's quantile ≤ its `max_ttft` (if no model meets it, the fastest at that quantile among those
meeting the floor). The expected answer of a text request is E[min(max_tokens, X)]; a request with
tools gets the same tool call from every model, so its observed length is used for all. Priced the
same way on the model that did serve, the two sums say whether routing priced the models right,
free of the per-request draws.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Protocol

REACT_FRACTION = 0.1
RECOVER_FRACTION = 0.9
NEVER = math.inf
NOT_MEASURED = math.nan


class Sent(Protocol):
    @property
    def sent_s(self) -> float: ...

    @property
    def model(self) -> str | None: ...


class Priced(Protocol):
    @property
    def input_per_mtok(self) -> float: ...

    @property
    def output_per_mtok(self) -> float: ...

    @property
    def quality(self) -> float: ...

    @property
    def behaviour(self) -> dict[str, Any]: ...


# -- traffic shift ------------------------------------------------------------------------------------


def _served(results: Iterable[Sent]) -> list[Sent]:
    return sorted((r for r in results if r.model is not None), key=lambda r: r.sent_s)


def share(results: Iterable[Sent], targets: set[str], t_from: float, t_to: float) -> float | None:
    """Fraction of the requests sent in [t_from, t_to) with a served model that `targets` served;
    None when there were none."""
    span = [r for r in results if r.model is not None and t_from <= r.sent_s < t_to]
    return sum(r.model in targets for r in span) / len(span) if span else None


def windows(results: Iterable[Sent], targets: set[str], window: int, t_from: float,
            t_to: float) -> list[tuple[float, float]]:
    """(send time of its first request, share) of every window of `window` consecutive served
    requests that starts at or after `t_from` and whose requests were all sent before `t_to`."""
    served = _served(results)
    hits = [r.model in targets for r in served]
    out = []
    for i, r in enumerate(served):
        if r.sent_s < t_from:
            continue
        j = i + window
        if j > len(served) or served[j - 1].sent_s >= t_to:
            break
        out.append((r.sent_s, sum(hits[i:j]) / window))
    return out


@dataclass(frozen=True)
class Shift:
    """A phase's traffic shift (see the module docstring); times in seconds, `NEVER` / `NOT_MEASURED`."""

    pre_share: float | None
    low_share: float | None  # the lowest window share between start and heal
    react_s: float
    recover_s: float


def shift(results: Sequence[Sent], targets: set[str], start: float, heal: float, end: float,
          pre_s: float, window: int) -> Shift:
    pre = share(results, targets, start - pre_s, start)
    during = windows(results, targets, window, start, heal)
    low = min((s for _, s in during), default=None)
    if not pre:
        return Shift(pre, low, NOT_MEASURED, NOT_MEASURED)
    react = next((t - start for t, s in during if s <= REACT_FRACTION * pre), NEVER)
    if low is None or low >= RECOVER_FRACTION * pre:
        return Shift(pre, low, react, NOT_MEASURED)
    after = windows(results, targets, window, heal, end)
    recover = next((t - heal for t, s in after if s >= RECOVER_FRACTION * pre), NEVER)
    return Shift(pre, low, react, recover)


def fmt_s(x: float | None) -> str:
    """A time for the final line: `12.3`, `never` (inf), `n/a` (nan), `-` (None: not run)."""
    if x is None:
        return "-"
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "never"
    return f"{x:.1f}"


# -- oracle pricing ------------------------------------------------------------------------------------


def expected_answer(median: float, sigma: float, cap: int | None) -> float:
    """E[min(cap, X)] for X log-normal with `median` and `sigma` (cap None: E[X])."""
    if sigma <= 0:
        return median if cap is None else min(median, cap)
    mean = median * math.exp(sigma * sigma / 2)
    if cap is None:
        return mean
    if cap <= 0:
        return 0.0
    mu = math.log(median)
    phi = NormalDist().cdf
    below = mean * phi((math.log(cap) - mu - sigma * sigma) / sigma)
    return below + cap * (1 - phi((math.log(cap) - mu) / sigma))


def ttft_quantile_s(m: Priced, prompt_tokens: int, q: float) -> float:
    """The model's true TTFT at quantile `q` for a prompt, seconds (from its simulator behaviour)."""
    b = m.behaviour
    median = float(b.get("ttft_ms", 0)) + float(b.get("ttft_ms_per_ktok", 0)) * prompt_tokens / 1000
    return median * math.exp(float(b.get("ttft_sigma", 0)) * NormalDist().inv_cdf(q)) / 1000


def expected_cost(m: Priced, prompt_tokens: int, max_tokens: int | None, tool_tokens: int | None) -> float:
    """USD of a request on `m` at its expected answer length (`tool_tokens`: a tool call's length)."""
    b = m.behaviour
    out = float(tool_tokens) if tool_tokens is not None else expected_answer(
        float(b.get("output_tokens", 0)), float(b.get("output_tokens_sigma", 0)), max_tokens)
    return (prompt_tokens * m.input_per_mtok + out * m.output_per_mtok) / 1e6


@dataclass(frozen=True)
class Constraints:
    """The route's: quality floor, and TTFT at `quantile` ≤ `max_ttft_s` (None: no limit)."""

    min_quality: float = 0.0
    max_ttft_s: float | None = None
    quantile: float = 0.9


def oracle_choice(models: Mapping[str, Priced], c: Constraints, prompt_tokens: int, max_tokens: int | None,
                  tool_tokens: int | None) -> str | None:
    """The model the oracle would send this request to (None: no model meets the floor)."""
    floor = {n: m for n, m in models.items() if m.quality >= c.min_quality}
    if not floor:
        return None
    fast = floor
    if c.max_ttft_s is not None:
        fast = {n: m for n, m in floor.items() if ttft_quantile_s(m, prompt_tokens, c.quantile) <= c.max_ttft_s}
        if not fast:
            return min(floor, key=lambda n: ttft_quantile_s(floor[n], prompt_tokens, c.quantile))
    return min(fast, key=lambda n: expected_cost(fast[n], prompt_tokens, max_tokens, tool_tokens))


def duration_s(text: str | None) -> float | None:
    """A gateway-config duration (`1000ms`, `1.5s`) in seconds; None stays None."""
    if text is None:
        return None
    value = str(text).strip()
    for unit, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    return float(value)
