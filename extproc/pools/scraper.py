"""`interlock pool-scraper`: the pod's one scraper of its pools' model servers.

A supervisor child of `interlock run` / `interlock extproc` (a process of its own, not a thread
of a worker: the workers' event loops never wait on a model server, one scrape per server serves
every worker, and the supervisor restarts it like any child). Per pool it resolves the
endpoints (a DNS name every `dns_refresh`), scrapes each endpoint's `/metrics` every
`scrape_interval` with a timeout of `scrape_timeout(interval)`, and publishes what it saw on the
pool's board (`extproc.pools.board`) after every scrape. A scrape that cannot connect marks the
endpoint down (skipped by the picker: the server is gone); any other failure (a timeout, an error
status, a page without the gauges) leaves the endpoint's data to age (stale → saturated). When
no endpoint of a pool has fresh data while some are up, the workers fall back to least-request
balancing: the scraper logs each transition into and out of that state once.

Prometheus text on the pod's scrape (socket `pool-scraper`): `interlock_pool_utilization`,
`interlock_pool_endpoints{state}`, `interlock_pool_saturated_endpoints`,
`interlock_pool_queue_depth`, `interlock_pool_running`, `interlock_pool_scrape_failures_total`,
`interlock_pool_picks_total` and `interlock_pool_fallback_picks_total` (summed from the workers'
pick counters), `interlock_pool_scrape_fallback` (1 while the pool is in least-request fallback).
SIGHUP re-reads the config (pools added, removed, changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from extproc.config import ConfigError, load_file
from extproc.config.model import PoolSettings, Provider
from extproc.pools import board as boards
from extproc.pools import dns
from extproc.pools.metrics import MetricsError, parse
from extproc.pools.settings import ip_port, name_port, scrape_timeout, stale_after
from extproc.telemetry import exposition
from extproc.telemetry import names as n
from routing.pool import EndpointLoad, Limits, pool_load, saturated

log = logging.getLogger("interlock.pools")


@dataclass
class _Endpoint:
    address: str
    slot: int
    scraped: float = 0.0  # monotonic time of the newest good scrape (0: none)
    waiting: int = 0
    running: int = 0
    kv: float = 0.0
    down: bool = False
    failures: int = 0
    tried: bool = False  # scraped at least once (before that, no data is no failure)


@dataclass
class Pool:
    name: str
    settings: PoolSettings
    path_prefix: str
    writer: boards.BoardWriter
    run_dir: Path
    endpoints: dict[str, _Endpoint] = field(default_factory=dict)
    slots: dict[str, int] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    fallback: bool = False
    resolved_once: bool = False

    def slot_of(self, address: str) -> int:
        if address not in self.slots:
            used = set(self.slots.values())
            self.slots[address] = next(i for i in range(boards.MAX_ENDPOINTS) if i not in used)
        return self.slots[address]

    def loads(self, now: float) -> list[EndpointLoad]:
        return [EndpointLoad(e.address, e.waiting, e.running, e.kv, (now - e.scraped) if e.scraped else float("inf"),
                             e.down) for e in self.endpoints.values()]

    def publish(self) -> None:
        self.writer.publish([(e.address, e.scraped, e.waiting, e.running, e.kv, 0, e.down, e.slot)
                             for e in self.endpoints.values()])
        self._note_fallback(time.monotonic())

    def _note_fallback(self, now: float) -> None:
        limits = Limits(stale_after(self.settings.scrape_interval))
        load = pool_load(self.loads(now), limits)
        if not all(e.tried for e in self.endpoints.values()):
            return
        failing = load.stale and any(not e.down for e in self.endpoints.values())
        if failing and not self.fallback:
            log.warning("pool %s: no endpoint has fresh metrics (every scrape failing): workers fall back to "
                        "least-request balancing", self.name)
        elif self.fallback and not failing:
            log.warning("pool %s: metrics fresh again: load-aware picking resumes", self.name)
        self.fallback = failing


class Scraper:
    """Every pool of one config, scraped from one event loop."""

    def __init__(self, config_path: str, run_dir: Path) -> None:
        self.config_path = config_path
        self.run_dir = run_dir
        self.pools: dict[str, Pool] = {}
        self.session: aiohttp.ClientSession | None = None
        self.dns_tasks: dict[str, asyncio.Task[None]] = {}

    def configure(self, providers: tuple[Provider, ...]) -> None:
        wanted = {p.name: p for p in providers if p.pool is not None}
        for name in list(self.pools):
            if name not in wanted or wanted[name].pool != self.pools[name].settings:
                self._drop(name)
        for name, p in wanted.items():
            if name in self.pools:
                continue
            assert p.pool is not None
            pool = Pool(name, p.pool, p.path_prefix, boards.BoardWriter(boards.board_path(self.run_dir, name)),
                        self.run_dir)
            self.pools[name] = pool
            if p.pool.dns:
                self.dns_tasks[name] = asyncio.create_task(self._resolve_loop(pool))
            else:
                self._set_endpoints(pool, list(p.pool.endpoints))

    def _drop(self, name: str) -> None:
        pool = self.pools.pop(name)
        for t in pool.tasks.values():
            t.cancel()
        task = self.dns_tasks.pop(name, None)
        if task is not None:
            task.cancel()
        pool.writer.publish([])
        pool.writer.close()

    def _set_endpoints(self, pool: Pool, addresses: list[str]) -> None:
        for a in [a for a in pool.endpoints if a not in addresses]:
            pool.tasks.pop(a).cancel()
            del pool.endpoints[a]
            pool.slots.pop(a, None)
        for a in addresses:
            if a not in pool.endpoints:
                pool.endpoints[a] = _Endpoint(a, pool.slot_of(a))
                pool.tasks[a] = asyncio.create_task(self._scrape_loop(pool, pool.endpoints[a]))
        pool.publish()

    async def _resolve_loop(self, pool: Pool) -> None:
        s = pool.settings
        name, port = name_port(s.dns) or ("", 0)
        server = ip_port(s.dns_server) if s.dns_server else None
        while True:
            try:
                addresses = await dns.resolve(name, port, server)
            except OSError as e:
                log.warning("pool %s: %s; keeping %d endpoints", pool.name, e, len(pool.endpoints))
            else:
                if addresses != sorted(pool.endpoints) or not pool.resolved_once:
                    log.info("pool %s: %s resolves to %s", pool.name, name, ", ".join(addresses) or "nothing")
                    pool.resolved_once = True
                    self._set_endpoints(pool, addresses)
            await asyncio.sleep(s.dns_refresh)

    async def _scrape_loop(self, pool: Pool, e: _Endpoint) -> None:
        interval = pool.settings.scrape_interval
        timeout = aiohttp.ClientTimeout(total=scrape_timeout(interval))
        url = f"http://{e.address}/metrics"
        while True:
            started = time.monotonic()
            try:
                assert self.session is not None
                async with self.session.get(url, timeout=timeout) as r:
                    text = await r.text()
                    if r.status != 200:
                        raise MetricsError(f"status {r.status}")
                g = parse(text, pool.settings.metrics)
            except aiohttp.ClientConnectorError:
                e.down = True
                e.failures += 1
            except (TimeoutError, aiohttp.ClientError, MetricsError, UnicodeDecodeError):
                e.down = False
                e.failures += 1
            else:
                e.scraped, e.waiting, e.running, e.kv, e.down = time.monotonic(), g.waiting, g.running, g.kv_usage, False
            e.tried = True
            pool.publish()
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    def reload(self) -> None:
        try:
            cfg = load_file(self.config_path)
        except ConfigError as e:
            log.error("reload failed, keeping the pools as they are: %s", "; ".join(e.problems))
            return
        self.configure(cfg.providers)
        log.info("pools reloaded: %s", ", ".join(self.pools) or "none")

    def text(self) -> str:
        """Prometheus text (format 0.0.4) of every pool."""
        now = time.monotonic()
        lines: list[str] = []

        def family(name: str, kind: str, text: str, samples: Sequence[tuple[str, float]]) -> None:
            lines.extend([f"# HELP {name} {text}", f"# TYPE {name} {kind}"])
            lines.extend(f"{name}{{{labels}}} {value:g}" for labels, value in samples)

        util: list[tuple[str, float]] = []
        states: list[tuple[str, float]] = []
        sat: list[tuple[str, float]] = []
        queue: list[tuple[str, float]] = []
        running: list[tuple[str, float]] = []
        failures: list[tuple[str, float]] = []
        picks: list[tuple[str, float]] = []
        fallbacks: list[tuple[str, float]] = []
        fb: list[tuple[str, float]] = []
        for name, pool in list(self.pools.items()):
            limits = Limits(stale_after(pool.settings.scrape_interval))
            loads = pool.loads(now)
            load = pool_load(loads, limits)
            p = f'pool="{name}"'
            util.append((p, load.utilization))
            down = sum(e.down for e in loads)
            states += [(f'{p},state="ready"', load.ready), (f'{p},state="stale"', len(loads) - load.ready - down),
                       (f'{p},state="down"', down)]
            sat.append((p, sum(saturated(e, limits) for e in loads)))
            queue.append((p, load.waiting))
            running.append((p, load.running))
            fb.append((p, int(pool.fallback)))
            counts = [boards.read_counters(f) for f in self.run_dir.glob(f"pool-{name}.picks.*")]
            for e in pool.endpoints.values():
                ep = f'{p},endpoint="{e.address}"'
                failures.append((ep, e.failures))
                picks.append((ep, sum(c[e.slot] for c in counts)))
            fallbacks.append((p, sum(c[boards.MAX_ENDPOINTS] for c in counts)))
        family(n.POOL_UTILIZATION, "gauge", "Share of the pool's serving capacity in use (0..1).", util)
        family(n.POOL_ENDPOINTS, "gauge", "Endpoints by state: ready (fresh metrics), stale, down.", states)
        family(n.POOL_SATURATED, "gauge", "Endpoints saturated (queue, KV cache or stale).", sat)
        family(n.POOL_QUEUE_DEPTH, "gauge", "Requests waiting in the pool's servers' queues.", queue)
        family(n.POOL_RUNNING, "gauge", "Requests running on the pool's servers.", running)
        family(n.POOL_SCRAPE_FAILURES, "counter", "Failed metric scrapes per endpoint.", failures)
        family(n.POOL_PICKS, "counter", "Requests sent to each endpoint first (every worker).", picks)
        family(n.POOL_FALLBACK_PICKS, "counter",
               "Picks made by least-request because no endpoint had fresh metrics.", fallbacks)
        family(n.POOL_SCRAPE_FALLBACK, "gauge", "1 while the pool is in least-request fallback.", fb)
        return "\n".join(lines) + "\n"

    async def run(self, stop: asyncio.Event) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=True) as self.session:
            self.reload()
            text = await exposition.serve_or_log(exposition.socket_name(self.run_dir, "pool-scraper"), self.text)
            try:
                await stop.wait()
            finally:
                await exposition.close(text)
                for name in list(self.pools):
                    self._drop(name)


def run_scraper(config_path: str) -> None:
    """Blocking: scrape until SIGTERM/SIGINT; SIGHUP reloads. Boards go next to the config file."""
    import uvloop

    uvloop.install()
    run_dir = Path(config_path).resolve().parent

    async def main() -> None:
        scraper = Scraper(config_path, run_dir)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, scraper.reload)
        await scraper.run(stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
