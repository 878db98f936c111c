"""`interlock ratelimit`: the pod's rate-limit process, Envoy's `RateLimitService`.

One process per pod serves every Envoy call, so with the default `memory` store all workers'
requests meet in one set of counters. With `store: redis` any number of these processes (one per
replica) share one budget through Redis; when Redis cannot answer, `failure_mode` applies (open:
allow, closed: 429), and each failure is logged and counted (`/metrics` of this process is its
gRPC health and the counters in its log; the counters also print at exit).

The limits are every tenant's `limits` in the config. SIGHUP re-reads the config and swaps the
table; the store (memory/redis, URL, failure mode) is fixed for the life of the process.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from extproc.config import ConfigError, GatewayConfig, load_file
from extproc.limits.limiter import Limiter
from extproc.limits.model import LimitTable
from extproc.limits.service import RateLimitService, add_to_server
from extproc.limits.store import FailureMode, MemoryStore, RedisStore, Store

log = logging.getLogger("interlock.limits")


def limit_table(cfg: GatewayConfig) -> LimitTable:
    return LimitTable(lim for t in cfg.tenants for lim in t.limits)


def make_store(cfg: GatewayConfig) -> Store:
    rl = cfg.rate_limit
    if rl.store == "redis":
        return RedisStore(rl.redis_url, failure_mode=FailureMode(rl.failure_mode),
                          timeout_s=max(0.01, rl.timeout * 0.8))
    return MemoryStore()


async def serve(config_path: str, address: str, port: int, ready: Callable[[int], None] | None = None) -> None:
    cfg = load_file(config_path)
    table = [limit_table(cfg)]
    store = make_store(cfg)
    service = RateLimitService(Limiter(store, lambda: table[0]), failure_mode=FailureMode(cfg.rate_limit.failure_mode))
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_concurrent_streams", 100000)])
    add_to_server(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{address}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {address}:{port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    log.info("rate limit service on %s:%d: %d limits, store %s, failure mode %s", address, bound,
             len(table[0]), cfg.rate_limit.store, cfg.rate_limit.failure_mode)
    if ready:
        ready(bound)

    def reload() -> None:
        try:
            table[0] = limit_table(load_file(config_path))
        except (ConfigError, ValueError, OSError) as e:
            log.error("rate limit reload failed, keeping %d limits: %s", len(table[0]), e)
            return
        log.info("rate limits reloaded: %d limits", len(table[0]))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=2)
    await service.drain()
    await store.close()
    log.info("rate limit service stopped: over_limit=%d errors=%d malformed=%d abandoned=%d store_failures=%s",
             service.over_limit, service.errors, service.malformed, service.abandoned,
             getattr(store, "failures", 0))


def run(config_path: str, address: str, port: int) -> None:
    """Blocking: serve until SIGTERM/SIGINT."""
    import uvloop

    uvloop.install()
    asyncio.run(serve(config_path, address, port))
