"""The router stage's side of a pool: which endpoints a request tries, in the Gateway API
Inference Extension's convention (`x-gateway-destination-endpoint` and the same list in `envoy.lb`
dynamic metadata; Envoy's override-host load balancing takes the first and walks the rest on retry).

One `PoolPicker` per pool per worker process, made on first use and kept while the pool's
settings do not change: its board reader (`extproc.pools.board`), in-flight counts, prefix table
and round-robin position; the prefix table is the pod's (`board.SharedPrefixes`), so a prefix
stays on its server whichever worker routes it. `route` picks for the first pool of a request's chain (a chain holds at
most one pool in practice; a second pool in it falls back to Envoy's own least-request, since the
list names the first pool's endpoints). A pool with `epp:` is picked by the external endpoint
picker Envoy calls (`extproc.envoyconf.pools`): nothing is set here. The run directory (where the
boards live) comes from `INTERLOCK_POOL_DIR`, set by `interlock run` / `interlock extproc`.

Cost per request, measured on the loaded 2-core development machine: 15–20 µs for a pool request
(4 endpoints, load-aware, 6 KB prompt: its messages as JSON, prefix hashes, the shared prefix
table, a board read, `route` + `done`; `python -m extproc.pools.picker`), 0.4 µs for a request
whose chain holds no pool (and 0.2 µs for `loads` in each routed decision).
Not thread-safe: one event loop per worker.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from extproc import errors
from extproc.config.model import PoolSettings, Provider
from extproc.pools import board as boards
from extproc.pools.settings import stale_after
from routing.pool import InFlight, Limits, Pick, PoolLoad, RoundRobin, pick, pool_load, prefix_hashes

log = logging.getLogger("interlock.pools")
DESTINATION_HEADER = "x-gateway-destination-endpoint"
SERVED_KEY = "x-gateway-destination-endpoint-served"
ENDPOINT_KEY = "interlock.endpoint"  # envoy.lb: the chosen host, for the pool cluster's subset match
SUBSET_KEY = "x-gateway-destination-endpoint-subset"
LB_NAMESPACE = "envoy.lb"
SUBSET_NAMESPACE = "envoy.lb.subset_hint"
POOL_DIR_ENV = "INTERLOCK_POOL_DIR"
DEFAULT_OUTPUT_TOKENS = 256


@dataclass
class Picked:
    """One request's pick: the pool, the endpoint its tokens are counted on, and how many."""

    pool: PoolPicker
    address: str
    tokens: int
    open: bool = True


class _Prefixes:
    """`routing.pool`'s prefix table over the pod's shared one (`board.SharedPrefixes`): endpoints
    by address there, by their board slot here."""

    def __init__(self, shared: boards.SharedPrefixes, reader: boards.BoardReader) -> None:
        self.shared, self.reader = shared, reader

    def lookup(self, hashes: Sequence[int]) -> str | None:
        slot = self.shared.lookup(hashes)
        if slot is None:
            return None
        return next((r[0] for r in self.reader.rows if r[7] == slot), None)

    def remember(self, hashes: Sequence[int], address: str) -> None:
        slot = next((r[7] for r in self.reader.rows if r[0] == address), None)
        if slot is not None:
            self.shared.remember(hashes, slot)


class PoolPicker:
    def __init__(self, name: str, settings: PoolSettings, run_dir: Path) -> None:
        self.name, self.settings = name, settings
        self.reader = boards.BoardReader(boards.board_path(run_dir, name))
        self.inflight = InFlight()
        self.prefixes = _Prefixes(boards.SharedPrefixes(boards.prefixes_path(run_dir, name)), self.reader)
        self.rr = RoundRobin()
        self.limits = Limits(stale_after(settings.scrape_interval))
        self.counters = boards.PickCounters(boards.counters_path(run_dir, name, os.getpid()))
        self.was_fallback = False

    def choose(self, prompt: bytes, tokens: int, subset: frozenset[str] | None = None,
               now: float | None = None) -> Pick:
        loads = self.reader.read(now)
        result = pick(loads, self.settings.picker, self.inflight, self.prefixes,
                      prefix_hashes(prompt) if prompt else (), self.rr, self.limits, subset)
        if result.fallback != self.was_fallback:
            self.was_fallback = result.fallback
            log.warning("pool %s: %s", self.name, "no endpoint has fresh metrics: least-request balancing"
                        if result.fallback else "metrics fresh again: load-aware picking")
        if result.addresses:
            rows = self.reader.rows
            slot = next((r[7] for r in rows if r[0] == result.addresses[0]), -1)
            self.counters.add(slot)
            if result.fallback:
                self.counters.fallback()
        return result


_pickers: dict[str, PoolPicker] = {}


def picker_for(p: Provider, run_dir: str | None = None) -> PoolPicker:
    assert p.pool is not None
    have = _pickers.get(p.name)
    if have is None or have.settings != p.pool:
        have = _pickers[p.name] = PoolPicker(p.name, p.pool, Path(run_dir or os.environ.get(POOL_DIR_ENV) or _own_dir()))
    return have


_private_dir: str | None = None


def _own_dir() -> str:
    """Where a worker started without `interlock run` (no scraper, so no board: least-request
    picking) keeps its pool files: a directory of its own, never the current one."""
    global _private_dir
    if _private_dir is None:
        _private_dir = tempfile.mkdtemp(prefix="interlock-pools-")
    return _private_dir


def loads(candidates: Sequence[Any]) -> dict[str, PoolLoad]:
    """`Snapshot.pool_loads` for a decision among `candidates` (deployments): each pool provider's
    load as its board shows it now (a board read per pool, ~2 µs). Empty when none is a pool."""
    out: dict[str, PoolLoad] = {}
    for d in candidates:
        account = getattr(d, "account", None)
        p = account.config if account is not None else None
        if p is not None and p.pool is not None and p.name not in out:
            picker = picker_for(p)
            out[p.name] = pool_load(picker.reader.read(), picker.limits)
    return out


def prompt_bytes(body: dict[str, Any]) -> bytes:
    """The prompt as prefix hashing reads it: the messages (or prompt) as compact JSON."""
    prompt = body.get("messages", body.get("prompt", body.get("input")))
    if prompt is None:
        return b""
    try:
        return orjson.dumps(prompt)
    except TypeError:
        return b""


def route(providers: Sequence[Provider], body: dict[str, Any], tokens: int,
          subset: frozenset[str] | None = None) -> tuple[list[tuple[str, str]], dict[str, dict[str, str]], Picked | None]:
    """For a chain whose providers are `providers` (attempt order): the headers and dynamic
    metadata naming the endpoints of its first pool (the header only when every provider of the
    chain is a pool), and the pick to release when the answer ends. Nothing when no pool is in the chain or the pool has an external picker. 503 when the
    first attempt goes to a pool with no endpoint up."""
    for i, p in enumerate(providers):
        if p.pool is None or p.pool.epp:
            continue
        picker = picker_for(p)
        result = picker.choose(prompt_bytes(body), tokens, subset)
        if not result.addresses:
            if i == 0:
                raise errors.Unavailable(f"No server of the pool `{p.name}` is ready.")
            return [], {}, None
        value = ",".join(result.addresses)
        picker.inflight.add(result.addresses[0], tokens)
        # The header too only when every attempt stays on self-hosted servers: a provider of the
        # order would get the pool's internal addresses in it. Envoy reads the metadata alike.
        # In a fallback order (an aggregate cluster), Envoy's subset match on ENDPOINT_KEY names the host.
        private = all(x.pool is not None for x in providers)
        meta = {DESTINATION_HEADER: value} if private else {DESTINATION_HEADER: value, ENDPOINT_KEY: result.addresses[0]}
        return ([(DESTINATION_HEADER, value)] if private else [], {LB_NAMESPACE: meta},
                Picked(picker, result.addresses[0], tokens))
    return [], {}, None


def served(picked: Picked | None, address: str | None) -> None:
    """The answer came from `address` (a retry may have moved it): its tokens count there."""
    if picked is None or not picked.open or not address or address == picked.address:
        return
    picked.pool.inflight.done(picked.address, picked.tokens)
    picked.pool.inflight.add(address, picked.tokens)
    picked.address = address


def subset_hint(metadata_context: Any) -> frozenset[str] | None:
    """The Inference Extension's subset hint (`envoy.lb.subset_hint` /
    `x-gateway-destination-endpoint-subset`, a list of ip:port) from an ext_proc message's
    metadata context, when an earlier filter set one."""
    ns = metadata_context.filter_metadata.get(SUBSET_NAMESPACE) if metadata_context is not None else None
    value = ns.fields.get(SUBSET_KEY) if ns is not None else None
    if value is None:
        return None
    if value.HasField("list_value"):
        return frozenset(v.string_value for v in value.list_value.values if v.string_value)
    return frozenset(a.strip() for a in value.string_value.split(",") if a.strip())


def upstream_address(attributes: Any) -> str | None:
    """`upstream.address` (ip:port) from an ext_proc message's attributes, when Envoy sent it."""
    attrs = attributes.get("envoy.filters.http.ext_proc")
    value = attrs.fields.get("upstream.address") if attrs is not None else None
    return value.string_value or None if value is not None else None


def served_address(req: Any) -> str | None:
    """Which endpoint served, from an ext_proc response-headers message: the Endpoint Picker
    Protocol's `envoy.lb` `SERVED_KEY` (a pool route's, `extproc.envoyconf.pools.served_filters`),
    else `upstream.address`."""
    ns = req.metadata_context.filter_metadata.get(LB_NAMESPACE) if req.HasField("metadata_context") else None
    value = ns.fields.get(SERVED_KEY) if ns is not None else None
    if value is not None and value.string_value:
        return str(value.string_value)
    return upstream_address(req.attributes)


def done(picked: Picked | None) -> None:
    """The answer ended (or the request failed): its tokens leave the in-flight count. Idempotent."""
    if picked is not None and picked.open:
        picked.open = False
        picked.pool.inflight.done(picked.address, picked.tokens)


def _bench() -> None:  # pragma: no cover - the figure in the module docstring
    import tempfile
    import timeit

    with tempfile.TemporaryDirectory() as d:
        settings = PoolSettings(endpoints=tuple(f"127.0.0.{10 + i}:8000" for i in range(4)))
        w = boards.BoardWriter(boards.board_path(d, "gpus"))
        w.publish([(a, time.monotonic() + 3600, i, 2, 0.3, 0, False, i) for i, a in enumerate(settings.endpoints)])
        p = Provider("gpus", "pool", None, pool=settings)  # type: ignore[arg-type]
        body = {"messages": [{"role": "system", "content": "x" * 5000}, {"role": "user", "content": "hello " * 100}]}
        picker_for(p, d)

        def one() -> None:
            _, _, picked = route([p], body, 1500)
            done(picked)
        n = 5000
        print(f"route + done: {timeit.timeit(one, number=n) / n * 1e6:.1f} us per request")


if __name__ == "__main__":
    _bench()
