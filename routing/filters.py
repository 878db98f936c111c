"""Filters: drop the candidates that cannot serve a request, saying which filter dropped each and why.

Each filter is a `Filter(name, run)`: `run(request, snapshot, deployments, rand)` returns the deployments
it keeps (in order) and `(deployment, reason)` for each one it drops; `rand` is the decision's uniform
draw in [0, 1) (`pipeline.decide`'s), optional (0.5) so a filter may also be run with three arguments.
Filters work on the whole list so the common case (nothing to drop) costs one cheap test per deployment
and no function call per deployment; `check` applies one filter to one deployment (tables, tests).
`FILTERS` run in order and a candidate is reported under the first filter that drops it:

| name          | drops a deployment when                                                             |
|---------------|--------------------------------------------------------------------------------------|
| allow_list    | its model is not in the tenant's allow-list (`request.allowed_models`)               |
| capabilities  | it lacks a capability the request needs (tools, images, json, reasoning, embeddings, fim) |
| context       | estimated input + output cap exceeds its context window, or the client's max_tokens  |
|               | exceeds its max output                                                               |
| budget        | its id or model is in `request.exhausted` (the budget layer's hook)                  |
| health        | it is cooling down after failures, or its circuit is open, at `request.now`;         |
|               | soft: its provider's rate limit is nearly exhausted, or it is ramping up after a     |
|               | cool-down or pressure and `rand` ≥ its ramp fraction                                 |

Hard reasons always drop. Soft reasons drop only while at least one candidate that reached the filter
survives it: when every such candidate would be dropped for a soft reason, all of them are kept (so
`check` on a single deployment never reports a soft reason). Every ramping deployment is compared with
the same draw, so a deployment ramping at fraction f is eligible for a share f of decisions.

Pure functions of their arguments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from routing.model import Deployment, Dropped, RouteRequest
from routing.snapshot import Snapshot

Drops = list[tuple[Deployment, str]]


class Run(Protocol):
    def __call__(self, request: RouteRequest, snapshot: Snapshot, deployments: list[Deployment],
                 rand: float = 0.5, /) -> tuple[list[Deployment], Drops]: ...


class Filter(NamedTuple):
    name: str
    run: Run


def _allow_list(r: RouteRequest, s: Snapshot, ds: list[Deployment], rand: float = 0.5
                ) -> tuple[list[Deployment], Drops]:
    allowed = r.allowed_models
    if allowed is None:
        return ds, []
    kept = [d for d in ds if d.model in allowed]
    if len(kept) == len(ds):
        return kept, []
    return kept, [(d, f"model {d.model} is not in the tenant's allow-list") for d in ds if d.model not in allowed]


def _capabilities(r: RouteRequest, s: Snapshot, ds: list[Deployment], rand: float = 0.5
                  ) -> tuple[list[Deployment], Drops]:
    needs = r.needs
    if not needs:
        return ds, []
    kept = [d for d in ds if needs <= d.capabilities]
    if len(kept) == len(ds):
        return kept, []
    return kept, [(d, f"lacks {', '.join(sorted(needs - d.capabilities))}") for d in ds
                  if not needs <= d.capabilities]


def _context_reason(r: RouteRequest, d: Deployment) -> str | None:
    out = d.max_output_tokens if r.max_output_tokens is None else r.max_output_tokens
    if out > d.max_output_tokens:
        return f"max output tokens {out} > the deployment's limit {d.max_output_tokens}"
    need = r.est_input_tokens + out
    if need > d.context_window:
        return (f"needs ~{need} tokens (input ~{r.est_input_tokens} + output {out}) > context window "
                f"{d.context_window}")
    return None


def _context(r: RouteRequest, s: Snapshot, ds: list[Deployment], rand: float = 0.5
             ) -> tuple[list[Deployment], Drops]:
    est_in, out = r.est_input_tokens, r.max_output_tokens
    if out is None:
        kept = [d for d in ds if est_in + d.max_output_tokens <= d.context_window]
    else:
        kept = [d for d in ds if out <= d.max_output_tokens and est_in + out <= d.context_window]
    if len(kept) == len(ds):
        return kept, []
    drops = []
    for d in ds:
        reason = _context_reason(r, d)
        if reason is not None:
            drops.append((d, reason))
    return kept, drops


def _budget(r: RouteRequest, s: Snapshot, ds: list[Deployment], rand: float = 0.5
            ) -> tuple[list[Deployment], Drops]:
    ex = r.exhausted
    if not ex:
        return ds, []
    kept, drops = [], []
    for d in ds:
        if d.id in ex:
            drops.append((d, f"budget exhausted for deployment {d.id}"))
        elif d.model in ex:
            drops.append((d, f"budget exhausted for model {d.model}"))
        else:
            kept.append(d)
    return kept, drops


def _health(r: RouteRequest, s: Snapshot, ds: list[Deployment], rand: float = 0.5
            ) -> tuple[list[Deployment], Drops]:
    unavailable, pressured, ramp = s.unavailable, s.pressured, s.ramp
    if not (unavailable or pressured or ramp):
        return ds, []
    now = r.now
    kept: list[Deployment] = []
    drops: Drops = []
    soft: Drops = []
    for d in ds:
        u = unavailable.get(d.id)
        if u is not None and u.until > now:
            drops.append((d, u.reason if math.isinf(u.until) else
                          f"cooling down for {u.until - now:.1f} s ({u.reason})"))
            continue
        kept.append(d)
        p = pressured.get(d.id)
        if p is not None and p.until > now:
            soft.append((d, f"provider rate limit nearly exhausted ({_percent(p.remaining_fraction)} left, "
                            f"{p.source}) for {p.until - now:.1f} s"))
            continue
        f = ramp.get(d.id)
        if f is not None and rand >= f:
            soft.append((d, f"ramping up after cool-down or rate-limit pressure ({_percent(f)} of traffic)"))
    if soft and len(soft) < len(kept):
        out = {d.id for d, _ in soft}
        kept = [d for d in kept if d.id not in out]
        drops += soft
    return kept, drops


def _percent(fraction: float) -> str:
    if 0.0 < fraction < 0.01:
        return "<1%"
    return f"{fraction:.0%}"


FILTERS: tuple[Filter, ...] = (
    Filter("allow_list", _allow_list),
    Filter("capabilities", _capabilities),
    Filter("context", _context),
    Filter("budget", _budget),
    Filter("health", _health),
)
"""The filters in the order they run."""


def check(f: Filter, request: RouteRequest, snapshot: Snapshot, deployment: Deployment,
          rand: float = 0.5) -> str | None:
    """Why filter `f` drops `deployment` for `request` (alone), or None when it keeps it."""
    _, drops = f.run(request, snapshot, [deployment], rand)
    return drops[0][1] if drops else None


def run_filters(request: RouteRequest, snapshot: Snapshot, candidates: Sequence[Deployment],
                filters: Sequence[Filter] = FILTERS, *, rand: float = 0.5
                ) -> tuple[list[Deployment], dict[str, Dropped]]:
    """The candidates every filter keeps (in their order, first occurrence of each id), and the dropped
    ones with the first filter that dropped each; `rand` is the decision's draw (see the module
    docstring)."""
    kept: list[Deployment] = []
    seen: set[str] = set()
    for d in candidates:
        if d.id not in seen:
            seen.add(d.id)
            kept.append(d)
    dropped: dict[str, Dropped] = {}
    for name, run in filters:
        kept, drops = run(request, snapshot, kept, rand)
        for d, reason in drops:
            dropped[d.id] = Dropped(name, reason)
    return kept, dropped
