"""Endpoint picking inside a self-hosted pool of model servers (vLLM, SGLang): pure, no I/O.

Theory of operation. A scraper outside the request path (`extproc.pools`) reads each server's
Prometheus metrics every `scrape_interval` and publishes one `EndpointLoad` per endpoint; a
worker reads them per request and calls `pick` with its own `InFlight` count and `PrefixTable`.

- An endpoint is *down* when its last scrape could not connect (the server is gone), *stale* when
  its newest good scrape is older than `stale_after` (scores as saturated), else *fresh*.
- *Saturated*: stale, or a waiting queue of `queue_limit` or more, or KV-cache use at
  `kv_limit` or more.
- `load-aware` ranks the endpoints that are not down by cost, lowest first:
  `QUEUE_WEIGHT·waiting/max_waiting + KV_WEIGHT·kv + TOKENS_WEIGHT·tokens/max_tokens`
  + `SATURATED` when saturated (max over the candidates; 0 when every value is 0). `tokens` is
  the worker's own count of prompt + expected output tokens sent to the endpoint and not yet
  finished (`InFlight`): the freshest signal, since scrapes lag by up to one interval.
  Prefix affinity comes first: the endpoint that served the request's longest known prompt
  prefix (`PrefixTable`, CRC32 of its leading 1, 2, 4, … 256-byte blocks) keeps it until it saturates.
- When no endpoint is fresh but some are not down (scraping fails for the whole pool, not the
  servers), the picker falls back to `least-request` (fewest in-flight requests of this worker),
  reported in `Pick.fallback` so the caller logs and counts it.
- No endpoint that is not down → `Pick.addresses` is empty: the caller answers 503.

`pick` returns every candidate in order (the chosen one first), so Envoy can walk the rest on
retry. `PoolLoad` summarises a pool for the spillover policy (`Snapshot.pool_loads`).
Not thread-safe: `InFlight`, `PrefixTable` and `RoundRobin` belong to one worker's event loop.
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

PICKERS = ("load-aware", "round-robin", "least-request")
QUEUE_WEIGHT = 2.0
KV_WEIGHT = 1.0
TOKENS_WEIGHT = 1.0
SATURATED = 10.0  # added to a saturated endpoint's cost: it goes after every unsaturated one
QUEUE_LIMIT = 5  # waiting requests from which an endpoint is saturated
KV_LIMIT = 0.9  # KV-cache use from which an endpoint is saturated
BLOCK_BYTES = 256  # prefix blocks: ~64 tokens of prompt text
MAX_BLOCKS = 128  # the first 32 KB of a prompt are hashed


@dataclass(frozen=True)
class PoolLoad:
    """A pool as the spillover policy sees it. `utilization`: 0..1, the share of the pool's
    serving capacity in use (per ready endpoint the higher of KV-cache use and running/max slots
    where known; an endpoint with a waiting queue counts as 1.0), mean over ready endpoints; 1.0
    when none is ready. `stale`: no endpoint has fresh data."""

    utilization: float
    waiting: int
    running: int
    ready: int
    endpoints: int
    stale: bool


class EndpointLoad(NamedTuple):
    """What the scraper last saw of one endpoint. `age_s`: seconds since the newest good scrape
    (inf: none yet). `down`: the newest scrape could not connect. `max_running`: the server's
    concurrent-sequence limit when known (0: unknown). A NamedTuple: a worker builds one per
    endpoint per request (0.3 µs, a frozen dataclass 2.5 µs)."""

    address: str  # ip:port
    waiting: int = 0
    running: int = 0
    kv_usage: float = 0.0  # 0..1
    age_s: float = math.inf
    down: bool = False
    max_running: int = 0


@dataclass(frozen=True, slots=True)
class Limits:
    stale_after_s: float = 0.2  # a few scrape intervals
    queue_limit: int = QUEUE_LIMIT
    kv_limit: float = KV_LIMIT


@dataclass(frozen=True, slots=True)
class Pick:
    """Endpoints in the order to try them (empty: none is up → 503); how they were chosen
    (`load-aware`, `prefix`, `round-robin`, `least-request`); `fallback`: least-request because no
    endpoint had fresh metrics."""

    addresses: tuple[str, ...]
    how: str
    fallback: bool = False


def fresh(e: EndpointLoad, limits: Limits) -> bool:
    return not e.down and e.age_s <= limits.stale_after_s


def saturated(e: EndpointLoad, limits: Limits) -> bool:
    return (not fresh(e, limits) or e.waiting >= limits.queue_limit or e.kv_usage >= limits.kv_limit)


def utilization(e: EndpointLoad) -> float:
    if e.waiting > 0:
        return 1.0
    slots = e.running / e.max_running if e.max_running else 0.0
    return min(1.0, max(e.kv_usage, slots))


def pool_load(endpoints: Sequence[EndpointLoad], limits: Limits = Limits()) -> PoolLoad:
    """The pool's `PoolLoad`: ready = fresh endpoints; a pool with none reads as full and stale."""
    ready = [e for e in endpoints if fresh(e, limits)]
    util = sum(utilization(e) for e in ready) / len(ready) if ready else 1.0
    return PoolLoad(utilization=util, waiting=sum(e.waiting for e in ready), running=sum(e.running for e in ready),
                    ready=len(ready), endpoints=len(endpoints), stale=not ready)


class InFlight:
    """This worker's requests and tokens (prompt + expected output) sent to each endpoint and not
    yet finished. `add` on pick, `done` when the answer ends (idempotent per ticket is the
    caller's: call `done` once per `add`)."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.tokens: dict[str, int] = {}

    def add(self, address: str, tokens: int) -> None:
        self.requests[address] = self.requests.get(address, 0) + 1
        self.tokens[address] = self.tokens.get(address, 0) + tokens

    def done(self, address: str, tokens: int) -> None:
        self.requests[address] = max(0, self.requests.get(address, 0) - 1)
        self.tokens[address] = max(0, self.tokens.get(address, 0) - tokens)


def prefix_hashes(prompt: bytes, block: int = BLOCK_BYTES, max_blocks: int = MAX_BLOCKS) -> tuple[int, ...]:
    """Hashes of the prompt's leading 1, 2, 4, 8, … whole blocks and of all its whole blocks (up
    to `max_blocks`), shortest first: two prompts share an element exactly when they share that
    many leading blocks. CRC32 chained from one length to the next (each byte read once), tagged
    with the block count; ~2 µs for a 6 KB prompt."""
    n = min(len(prompt) // block, max_blocks)
    view = memoryview(prompt)
    out = []
    h, done, k = 0, 0, 1
    while done < n:
        k = min(k, n)
        h = zlib.crc32(view[done * block:k * block], h)
        out.append(h | (k << 32))
        done, k = k, k * 2
    return tuple(out)


class PrefixTable:
    """Prefix hash → the endpoint that last served a prompt with that prefix; least recently used
    entries go past `capacity`."""

    def __init__(self, capacity: int = 50_000) -> None:
        self.capacity = capacity
        self._owner: OrderedDict[int, str] = OrderedDict()

    def lookup(self, hashes: Sequence[int]) -> str | None:
        """The endpoint of the longest known prefix among `hashes`, or None."""
        for h in reversed(hashes):
            owner = self._owner.get(h)
            if owner is not None:
                return owner
        return None

    def remember(self, hashes: Sequence[int], address: str) -> None:
        owner = self._owner
        for h in hashes:
            owner[h] = address
            owner.move_to_end(h)
        while len(owner) > self.capacity:
            owner.popitem(last=False)

    def forget(self, address: str) -> None:
        """An endpoint left the pool: its prefixes go wherever the next pick sends them."""
        for h in [h for h, a in self._owner.items() if a == address]:
            del self._owner[h]


class Prefixes(Protocol):
    """What `pick` needs of a prefix table (`PrefixTable`, or one shared by processes)."""

    def lookup(self, hashes: Sequence[int]) -> str | None: ...

    def remember(self, hashes: Sequence[int], address: str) -> None: ...


class RoundRobin:
    def __init__(self) -> None:
        self.next = 0

    def order(self, addresses: Sequence[str]) -> tuple[str, ...]:
        if not addresses:
            return ()
        i = self.next % len(addresses)
        self.next = i + 1
        return (*addresses[i:], *addresses[:i])


def least_request(endpoints: Sequence[EndpointLoad], inflight: InFlight) -> tuple[str, ...]:
    """Endpoints that are not down, fewest in-flight requests first (ties: fewest tokens, then order)."""
    up = [(inflight.requests.get(e.address, 0), inflight.tokens.get(e.address, 0), i, e.address)
          for i, e in enumerate(endpoints) if not e.down]
    return tuple(a for *_, a in sorted(up))


def costs(endpoints: Sequence[EndpointLoad], inflight: InFlight, limits: Limits) -> dict[str, float]:
    """Each endpoint's load-aware cost (see the module docstring), endpoints that are down left out."""
    up = [e for e in endpoints if not e.down]
    max_waiting = max((e.waiting for e in up), default=0)
    max_tokens = max((inflight.tokens.get(e.address, 0) for e in up), default=0)
    out = {}
    for e in up:
        c = KV_WEIGHT * min(1.0, max(0.0, e.kv_usage))
        if max_waiting:
            c += QUEUE_WEIGHT * e.waiting / max_waiting
        if max_tokens:
            c += TOKENS_WEIGHT * inflight.tokens.get(e.address, 0) / max_tokens
        if saturated(e, limits):
            c += SATURATED
        out[e.address] = c
    return out


def pick(endpoints: Sequence[EndpointLoad], picker: str, inflight: InFlight, prefixes: Prefixes | None = None,
         hashes: Sequence[int] = (), rr: RoundRobin | None = None, limits: Limits = Limits(),
         subset: frozenset[str] | None = None) -> Pick:
    """The endpoints to try for one request, best first (see the module docstring). `subset`: only
    these addresses may be picked (the Inference Extension's subset hint). Records the chosen
    endpoint in `prefixes` under `hashes` (load-aware)."""
    if subset is not None:
        endpoints = [e for e in endpoints if e.address in subset]
    if picker == "round-robin":
        up = [e.address for e in endpoints if not e.down]
        return Pick((rr or RoundRobin()).order(up), "round-robin")
    if picker == "least-request":
        return Pick(least_request(endpoints, inflight), "least-request")
    if not any(fresh(e, limits) for e in endpoints):
        order = least_request(endpoints, inflight)
        return Pick(order, "least-request", fallback=bool(order))
    cost = costs(endpoints, inflight, limits)
    ranked = sorted(cost, key=cost.__getitem__)
    how = "load-aware"
    if prefixes is not None and hashes:
        owner = prefixes.lookup(hashes)
        by_address = {e.address: e for e in endpoints}
        if owner is not None and owner in cost and not saturated(by_address[owner], limits):
            ranked.remove(owner)
            ranked.insert(0, owner)
            how = "prefix"
        prefixes.remember(hashes, ranked[0])
    return Pick(tuple(ranked), how)
