"""Per-request routing inputs, and the per-worker routing state.

`route_request` reads what the routing core needs from the parsed client body (capabilities the
request needs, a token estimate, the client's max tokens, the prompt-prefix affinity key);
`RoutingState` holds what a worker learns across requests (latency and health statistics,
round-robin counters). One `RoutingState` per worker process, owned by its event loop; each
worker learns on its own (no shared state), as the routing design allows.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from typing import Any

import orjson

import routing
from extproc.config.model import Tenant
from extproc.runtime import RouteRuntime

# A prompt prefix at least this long (bytes of JSON) earns an affinity key: shorter prompts gain
# little from a provider's prompt cache.
AFFINITY_MIN_BYTES = 1024
AFFINITY_PREFIX_BYTES = 8192


def _needs(body: dict[str, Any]) -> frozenset[str]:
    needs = set()
    if body.get("tools"):
        needs.add("tools")
    fmt = body.get("response_format")
    if (isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")) or (
            isinstance(body.get("output_config"), dict) and body["output_config"].get("format")):
        needs.add("json")
    for m in body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and any(
                isinstance(p, dict) and p.get("type") in ("image_url", "image") for p in content):
            needs.add("images")
            break
    return frozenset(needs)


def _affinity_key(body: dict[str, Any]) -> bytes | None:
    """A hash of the stable head of the prompt (system prompt and first turn): requests sharing
    it share the provider's prompt cache, so they should land on the same deployment."""
    messages = body.get("messages")
    head: list[Any] = [body.get("system")] if body.get("system") else []
    if isinstance(messages, list):
        head += messages[:2]
    prefix = orjson.dumps(head)
    if len(prefix) < AFFINITY_MIN_BYTES:
        return None
    return hashlib.blake2b(prefix[:AFFINITY_PREFIX_BYTES], digest_size=16).digest()


def route_request(body: dict[str, Any], body_bytes: int, route: RouteRuntime, tenant: Tenant,
                  now: float) -> routing.RouteRequest:
    max_out = body.get("max_completion_tokens") or body.get("max_tokens")
    allowed = None if tenant.models == ("*",) else frozenset(
        c.model for c in route.candidates if tenant.allows(c.model))
    return routing.RouteRequest(
        est_input_tokens=max(1, body_bytes // 4), now=now, needs=_needs(body),
        max_output_tokens=max_out if isinstance(max_out, int) and max_out > 0 else None,
        allowed_models=allowed, affinity_key=_affinity_key(body))


class RoutingState:
    """What one worker learns across requests. Not thread-safe: one event loop owns it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 rand: Callable[[], float] = random.random) -> None:
        self.clock = clock
        self.rand = rand
        # A light prior: the default one (1 s to first token) is pessimistic, and a deployment
        # seen once must not stay behind it — one real observation outweighs it twentyfold.
        self.stats = routing.LatencyStats(quantiles=(0.5, 0.9, 0.95, 0.99), prior_weight=0.05)
        self._rr: dict[str, int] = {}
        self._passthrough_streams = 0

    def sample_passthrough(self, every: int = 8) -> bool:
        """True for one passthrough stream in `every`: it is read to measure its token rate."""
        self._passthrough_streams += 1
        return self._passthrough_streams % every == 1

    def next_rr(self, route: str) -> int:
        n = self._rr.get(route, 0)
        self._rr[route] = n + 1
        return n

    def decide(self, route: RouteRuntime, request: routing.RouteRequest) -> routing.Decision:
        decision = routing.decide(request, route.candidates, route.policy, self.stats.snapshot(request.now),
                                  rr_counter=self.next_rr(route.name), rand=self.rand())
        if decision.explanation.chosen_by == "exploration" and decision.primary is not None:
            # A never-observed deployment is probed once, not on every request until its answer lands.
            self.stats.record_probe(decision.primary, request.now)
        return decision
