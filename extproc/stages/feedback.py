"""What a worker learns from answers, and the per-worker routing state it learns into.

`RoutingState` holds what one worker learns across requests (latency and health statistics,
round-robin counters). One per worker process, owned by its event loop; each worker learns on
its own (no shared state), as the routing design allows.

The functions take values and return values: `split_limit_headers` separates the provider's
rate-limit headers from the tenant's, `learn` feeds health and provider pressure and returns
which deployment answered (the caller decides what follows from that), `broken` counts a 2xx
that turned out not to be an answer as a failure, `observe` feeds latency.
Their only side effects are on the `RoutingState` they are given.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence

import routing
from extproc import metadata
from extproc.runtime import Deployment

log = logging.getLogger("interlock.feedback")

RATELIMIT_PREFIX = "x-ratelimit-"


class RoutingState:
    """What one worker learns across requests. Not thread-safe: one event loop owns it.

    `clock` is monotonic seconds (the statistics' clock); `wall` is epoch seconds (providers'
    absolute reset times); `rand` draws in [0, 1) for exploration."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, rand: Callable[[], float] = random.random,
                 wall: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.wall = wall
        self.rand = rand
        # A light prior: the default one (1 s to first token) is pessimistic, and a deployment
        # seen once must not stay behind it — one real observation outweighs it twentyfold.
        self.stats = routing.LatencyStats(quantiles=(0.5, 0.9, 0.95, 0.99), prior_weight=0.05)
        self._rr: dict[str, int] = {}

    def next_rr(self, route: str) -> int:
        n = self._rr.get(route, 0)
        self._rr[route] = n + 1
        return n

    def decide(self, route_name: str, candidates: Sequence[routing.Deployment], policy: routing.Policy,
               request: routing.RouteRequest) -> tuple[routing.Decision, routing.Snapshot]:
        """The routing decision and the statistics snapshot it read (admission reads the same one).

        Side effect: a decision that explored records its probe (`LatencyStats.record_probe`), so a
        never-observed deployment is probed once, not on every request until its answer lands."""
        snapshot = self.stats.snapshot(request.now)
        decision = routing.decide(request, candidates, policy, snapshot, rr_counter=self.next_rr(route_name),
                                  rand=self.rand())
        if decision.explanation.chosen_by == "exploration" and decision.primary is not None:
            self.stats.record_probe(decision.primary, request.now)
        return decision, snapshot


def split_limit_headers(h: Mapping[str, str], tenant_units: frozenset[str]
                        ) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """`x-ratelimit-*` may come twice: first from the provider (about the gateway's account,
    shared by every tenant: read for steering, never shown), then from the gateway's rate limit
    (about this tenant, for the units its limits count: shown). Returns (the tenant's, to set on
    the response; the provider's, to learn from)."""
    ours: list[tuple[str, str]] = []
    provider: dict[str, str] = {}
    for k, v in h.items():
        if not k.startswith(RATELIMIT_PREFIX):
            continue
        values = v.split(",")
        mine = k.rsplit("-", 1)[-1] in tenant_units
        if mine:
            ours.append((k, values[-1].strip()))
        if len(values) > 1 or not mine:
            provider[k] = values[0].strip()
    return ours, provider


def learn(state: RoutingState, chain: Sequence[Deployment], answered_by: str | None, status: int, attempts: int,
          headers: Mapping[str, str], request_id: str = "") -> int:
    """Feed the worker's health statistics from the response headers of a routed request and
    return the index in `chain` of the deployment that answered.

    Earlier attempts failed; the answering one succeeded or failed by its status. `answered_by`
    is the provider named by the answering host's metadata (None when Envoy answered itself: the
    attempt `attempts` is then blamed; a 401/403 — the provider refusing the gateway's own
    credentials — counts as a failure like a 429 or 5xx). `headers`: the response headers, with
    the provider's own rate-limit headers (see `split_limit_headers`) in place of the combined ones."""
    now = state.clock()
    stats = state.stats
    index = next((i for i, x in enumerate(chain) if x.provider == answered_by), None)
    answered = index is not None
    if index is None:
        index = min(attempts, len(chain)) - 1
    # Envoy made `attempts` attempts, the answering one last, in chain order — but it skips a
    # provider whose hosts it ejected without an attempt, so only the attempts it made just
    # before the answering one are blamed.
    for failed in chain[max(0, index - (attempts - 1)):index]:
        stats.record_failure(failed.id, now)
    d = chain[index]
    if answered:
        # The provider's own rate-limit headers: steer away before it starts refusing.
        pressure = routing.pressure_from_headers(headers, state.wall())
        if pressure is not None and stats.record_pressure(d.id, pressure, now) is not None:
            log.info("request_id=%s deployment %s under rate-limit pressure: %.0f%% left (%s), %.1f s",
                     request_id, d.id, pressure.remaining_fraction * 100, pressure.source, pressure.reset_after_s)
    if not answered or status in (401, 403, 429) or status >= 500:
        stats.record_failure(d.id, now, routing.retry_after_s(headers, state.wall()))
        log.info("request_id=%s deployment %s failed (status %d, answered=%s)", request_id, d.id, status, answered)
    elif 200 <= status < 300:
        stats.record_success(d.id, now)
    return index


def broken(state: RoutingState, d: Deployment, why: str, request_id: str = "") -> None:
    """`d` answered 2xx but not with an answer (a page, invalid JSON, a stream cut before its end):
    a failure like a 5xx (its 2xx was counted a success by `learn`; this starts a cool-down)."""
    state.stats.record_failure(d.id, state.clock())
    log.info("request_id=%s deployment %s failed with a 2xx: %s", request_id, d.id, why)


def observe(state: RoutingState, d: Deployment, sent_at: float, headers_at: float,
            completion_tokens: int | None) -> None:
    """Latency is learned from streamed answers: time to the response headers is the time to
    first token; the rest of the stream over its tokens is the time per output token. Times on
    `state.clock`."""
    now = state.clock()
    ttft = headers_at - sent_at
    tpot = (now - headers_at) / (completion_tokens - 1) if completion_tokens and completion_tokens > 1 else None
    state.stats.observe(d.id, ttft, tpot, now)


def from_answer(state: RoutingState, chain: Sequence[Deployment], h: Mapping[str, str], answered_by: str | None,
                status: int, tenant_units: frozenset[str], deadline_hit: bool, request_id: str = ""
                ) -> tuple[list[tuple[str, str]], int | None]:
    """What the response headers of a routed request teach, in one step: the tenant's rate-limit
    headers to show (`split_limit_headers`) and, unless the client's own deadline ended it, the
    index in `chain` of who answered (`learn`; None when nothing was learned)."""
    limit_headers, provider_limits = split_limit_headers(h, tenant_units)
    if not chain or deadline_hit:
        return limit_headers, None
    attempts = h.get(metadata.ENVOY_ATTEMPT_COUNT, "1")
    tries = int(attempts) if attempts.isascii() and attempts.isdigit() else 1
    upstream = {k: v for k, v in h.items() if not k.startswith(RATELIMIT_PREFIX)}
    return limit_headers, learn(state, chain, answered_by, status, tries, {**upstream, **provider_limits}, request_id)
