"""What a worker learns from answers, and the per-worker routing state it learns into.

`RoutingState` holds what one worker learns across requests (latency and health statistics,
round-robin counters). One per worker process, owned by its event loop; each worker learns on
its own (no shared state), as the routing design allows.

The functions take values and return values: `split_limit_headers` separates the provider's
rate-limit headers from the tenant's, `learn` feeds health and provider pressure and returns
which deployment answered (the caller decides what follows from that), `broken` counts a 2xx
that turned out not to be an answer as a failure; `waiting` / `waited` bracket a streamed
request's wait for its first token, `first_token` and `observe` feed latency and answer lengths.
Their only side effects are on the `RoutingState` they are given.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence

import routing
from extproc import metadata
from extproc.pools import picker as pools
from extproc.runtime import Deployment
from routing import spillover

log = logging.getLogger("interlock.feedback")

RATELIMIT_PREFIX = "x-ratelimit-"
_REGIMES = {0: "back to normal", 1: "slowed down", -1: "sped up"}
PROBE_CREDIT_MAX = 2.0
"""Probes a route may have earned and not spent (so a burst of whole answers does not bank many)."""


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
        self._spill: dict[str, spillover.SpillState] = {}
        self._credit: dict[str, float] = {}  # per route: probes earned, not yet spent (see `decide`)

    def next_rr(self, route: str) -> int:
        n = self._rr.get(route, 0)
        self._rr[route] = n + 1
        return n

    def decide(self, route_name: str, candidates: Sequence[routing.Deployment], policy: routing.Policy,
               request: routing.RouteRequest, priority: str = "default") -> tuple[routing.Decision, routing.Snapshot]:
        """The routing decision and the statistics snapshot it read, waiting requests' evidence
        included (admission reads the same one).

        Side effect: a decision that explored records its probe (`LatencyStats.record_probe`), so a
        deployment is probed once, not on every request until its answer lands."""
        stats = self.stats
        snapshot = stats.snapshot(request.now)
        # Requests still waiting for a first token well past the usual time are evidence of a slowdown
        # before any slow answer lands (`routing.stats`): the decision reads them.
        snapshot = snapshot.waiting(stats.floors([c.id for c in candidates], request.now))
        pool_loads = pools.loads(candidates)  # self-hosted pools' load, for the spillover policy
        if pool_loads:
            snapshot = dataclasses.replace(snapshot, pool_loads=pool_loads)
        # Exploration paced, not drawn: each decision earns `exploration` of a probe, spent by the next
        # request whose answer teaches latency. A draw at 2 % leaves a worker seeing 5 requests a second
        # without a probe for 30 s one time in 20; pacing makes recovery after a heal take what the
        # rate allows (1 / (rate × requests per second) per probe), not that tail.
        credit = min(self._credit.get(route_name, 0.0) + policy.exploration, PROBE_CREDIT_MAX)
        due = credit > 1.0 - 1e-9 and request.observes_latency  # (ten times 0.1 is not quite 1.0)
        spill = self._spill[route_name] = spillover.step(self._spill.get(route_name, spillover.NO_SPILL), policy,
                                                         snapshot.pool_loads, candidates)
        decision = routing.decide(request, candidates, policy, snapshot, rr_counter=self.next_rr(route_name),
                                  rand=self.rand(), explore_due=due, priority=priority, spill=spill)
        explored = decision.explanation.chosen_by == "exploration" and decision.primary is not None
        if explored and due:
            credit -= 1.0
        self._credit[route_name] = credit
        if explored and decision.primary is not None:
            stats.record_probe(decision.primary, request.now)
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
    # before the answering one are blamed. When the first attempt already landed past the
    # primary, every provider before it was skipped as ejected: unavailable for now too (a
    # cool-down), else the router keeps choosing it and Envoy keeps spilling its traffic to the
    # next provider in the route's order, whatever that costs.
    for failed in chain[max(0, index - (attempts - 1)):index]:
        stats.record_failure(failed.id, now)
    if answered and attempts == 1:
        for ejected in chain[:index]:
            stats.record_failure(ejected.id, now)
            log.info("request_id=%s deployment %s skipped by Envoy (its hosts are ejected)", request_id, ejected.id)
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


def waiting(state: RoutingState, d: Deployment, token: object, sent_at: float) -> None:
    """A streamed request was sent to `d` and waits for its first token (evidence while it waits)."""
    state.stats.begin(d.id, token, sent_at)


def waited(state: RoutingState, deployment_id: str, token: object) -> None:
    """The wait `waiting` began is over (an answer, a failure, or the client left). Idempotent."""
    state.stats.end(deployment_id, token)


def first_token(state: RoutingState, d: Deployment, sent_at: float, headers_at: float) -> None:
    """Latency is learned from streamed answers: time to the response headers is the time to first
    token, learned when they arrive. Times on `state.clock`."""
    stats = state.stats
    regime = stats.observe_ttft(d.id, headers_at - sent_at, headers_at)
    if regime is not None:
        log.info("deployment %s time to first token: %s (last %s)", d.id, _REGIMES[regime],
                 ", ".join(f"{x * 1000:.0f} ms" for x in stats.recent(d.id)[-3:]))


def observe(state: RoutingState, d: Deployment, headers_at: float | None, completion_tokens: int | None,
            max_output_tokens: int | None) -> None:
    """A complete answer: its length teaches `d`'s expected output tokens (`routing.lengths`; the
    client's max_tokens says whether it was cut); for a streamed one (`headers_at` set) the rest of
    the stream over its tokens is the time per output token."""
    if completion_tokens is None:
        return
    stats = state.stats
    stats.observe_output(d.id, completion_tokens, max_output_tokens)
    if headers_at is not None and completion_tokens > 1:
        now = state.clock()
        stats.observe_tpot(d.id, (now - headers_at) / (completion_tokens - 1), now)


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
