"""Filters: drop the candidates that cannot serve a request, saying which filter dropped each and why.

Each filter is a `Filter(name, run)`: `run(request, snapshot, deployments)` returns the deployments it
keeps (in order) and `(deployment, reason)` for each one it drops. Filters work on the whole list so the
common case (nothing to drop) costs one cheap test per deployment and no function call per deployment;
`check` applies one filter to one deployment (tables, tests). `FILTERS` run in order and a candidate is
reported under the first filter that drops it:

| name          | drops a deployment when                                                             |
|---------------|--------------------------------------------------------------------------------------|
| allow_list    | its model is not in the tenant's allow-list (`request.allowed_models`)               |
| capabilities  | it lacks a capability the request needs (tools, images, json, reasoning, embeddings) |
| context       | estimated input + output cap exceeds its context window, or the client's max_tokens  |
|               | exceeds its max output                                                               |
| budget        | its id or model is in `request.exhausted` (the budget layer's hook)                  |
| health        | it is cooling down after failures, or its circuit is open, at `request.now`          |

Pure functions of their arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

from routing.model import Deployment, Dropped, RouteRequest
from routing.snapshot import Snapshot

Drops = list[tuple[Deployment, str]]
Run = Callable[[RouteRequest, Snapshot, list[Deployment]], tuple[list[Deployment], Drops]]


class Filter(NamedTuple):
    name: str
    run: Run


def _allow_list(r: RouteRequest, s: Snapshot, ds: list[Deployment]) -> tuple[list[Deployment], Drops]:
    allowed = r.allowed_models
    if allowed is None:
        return ds, []
    kept = [d for d in ds if d.model in allowed]
    if len(kept) == len(ds):
        return kept, []
    return kept, [(d, f"model {d.model} is not in the tenant's allow-list") for d in ds if d.model not in allowed]


def _capabilities(r: RouteRequest, s: Snapshot, ds: list[Deployment]) -> tuple[list[Deployment], Drops]:
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


def _context(r: RouteRequest, s: Snapshot, ds: list[Deployment]) -> tuple[list[Deployment], Drops]:
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


def _budget(r: RouteRequest, s: Snapshot, ds: list[Deployment]) -> tuple[list[Deployment], Drops]:
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


def _health(r: RouteRequest, s: Snapshot, ds: list[Deployment]) -> tuple[list[Deployment], Drops]:
    unavailable = s.unavailable
    if not unavailable:
        return ds, []
    now = r.now
    kept, drops = [], []
    for d in ds:
        u = unavailable.get(d.id)
        if u is None or u.until <= now:
            kept.append(d)
        elif math.isinf(u.until):
            drops.append((d, u.reason))
        else:
            drops.append((d, f"cooling down for {u.until - now:.1f} s ({u.reason})"))
    return kept, drops


FILTERS: tuple[Filter, ...] = (
    Filter("allow_list", _allow_list),
    Filter("capabilities", _capabilities),
    Filter("context", _context),
    Filter("budget", _budget),
    Filter("health", _health),
)
"""The filters in the order they run."""


def check(f: Filter, request: RouteRequest, snapshot: Snapshot, deployment: Deployment) -> str | None:
    """Why filter `f` drops `deployment` for `request`, or None when it keeps it."""
    _, drops = f.run(request, snapshot, [deployment])
    return drops[0][1] if drops else None


def run_filters(request: RouteRequest, snapshot: Snapshot, candidates: Sequence[Deployment],
                filters: Sequence[Filter] = FILTERS) -> tuple[list[Deployment], dict[str, Dropped]]:
    """The candidates every filter keeps (in their order, first occurrence of each id), and the dropped
    ones with the first filter that dropped each."""
    kept: list[Deployment] = []
    seen: set[str] = set()
    for d in candidates:
        if d.id not in seen:
            seen.add(d.id)
            kept.append(d)
    dropped: dict[str, Dropped] = {}
    for name, run in filters:
        kept, drops = run(request, snapshot, kept)
        for d, reason in drops:
            dropped[d.id] = Dropped(name, reason)
    return kept, dropped
