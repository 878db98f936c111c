"""Start simulated model servers on distinct loopback addresses (`start_pool`) with seeded speeds.

Lifetime: every server runs on the calling event loop until `RunningServer.stop()`; `start()`
brings a stopped server back on the same address (a real "endpoint down" for fault tests; the
restarted server starts empty: no queue, no cache, counters at zero). `BackgroundPool` does the
same from synchronous code.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from aiohttp import web

from simulator.modelserver.server import Flavor, ModelServer, ModelServerSpec

T = TypeVar("T")


def pool_specs(servers: int = 4, seed: int = 7, flavor: Flavor = "vllm", **overrides: Any) -> list[ModelServerSpec]:
    """`servers` specs named `sim-0…`, speeds seeded in [1, 2]: with two or more servers the slowest is
    1.0 and the fastest 2.0 (they differ by exactly 2×), the rest uniform in between, order shuffled."""
    rng = random.Random(seed)
    if servers < 1:
        raise ValueError("servers: must be at least 1")
    speeds = [1.0, 2.0][:servers] + [round(1.0 + rng.random(), 3) for _ in range(servers - 2)]
    rng.shuffle(speeds)
    return [ModelServerSpec(name=f"sim-{i}", speed=speed, flavor=flavor, seed=seed * 1000 + i, **overrides)
            for i, speed in enumerate(speeds)]


@dataclass
class RunningServer:
    """A started server: its address, its `ModelServer` (engine, faults) and its aiohttp runner."""

    spec: ModelServerSpec
    host: str
    port: int
    server: ModelServer
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def name(self) -> str:
        return self.spec.name

    def describe(self) -> dict[str, Any]:
        s = self.spec
        return {"name": s.name, "url": self.url, "host": self.host, "port": self.port, "speed": s.speed,
                "flavor": s.flavor, "model": s.model, "max_num_seqs": s.max_num_seqs, "kv_blocks": s.kv_blocks,
                "block_size": s.block_size}

    def set_speed(self, speed: float) -> None:
        self.server.set_speed(speed)

    def set_fault(self, mode: str) -> None:
        self.server.set_fault(mode)

    async def start(self) -> None:
        """Listen on `host:port` (port 0 picks one, kept for later restarts)."""
        if self._runner is not None:
            return
        runner = web.AppRunner(self.server.app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        await site.start()
        if runner.addresses:
            self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening and drop the engine's work (in-flight requests are cut off)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            self.server = ModelServer(replace(self.spec, speed=self.server.engine.speed))


async def start_pool(specs: list[ModelServerSpec], host_prefix: str = "127.0.0.", base_port: int = 0,
                     first_octet: int = 11, hosts: list[str] | None = None) -> list[RunningServer]:
    """Start one server per spec on `hosts` (default `host_prefix` + 11, 12, …), all on `base_port`
    (0: each its own free port). Returns once every server listens."""
    if hosts is None:
        hosts = [f"{host_prefix}{first_octet + i}" for i in range(len(specs))]
    if len(hosts) != len(specs):
        raise ValueError(f"{len(specs)} servers need {len(specs)} hosts, got {len(hosts)}")
    started: list[RunningServer] = []
    try:
        for spec, host in zip(specs, hosts, strict=True):
            running = RunningServer(spec, host, base_port, ModelServer(spec))
            await running.start()
            started.append(running)
    except BaseException:
        for running in started:
            await running.stop()
        raise
    return started


class BackgroundPool:
    """`start_pool` on an event loop of its own in a daemon thread, for synchronous callers (tests,
    benchmarks). `servers` are live once the constructor returns; `close()` stops them and the loop."""

    def __init__(self, specs: list[ModelServerSpec], **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="modelserver-pool", daemon=True)
        self._thread.start()
        try:
            self.servers: list[RunningServer] = self.call(start_pool(specs, **kwargs))
        except BaseException:
            self._stop_loop()
            raise

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run `coro` on the pool's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        for server in self.servers:
            self.call(server.stop())
        self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
