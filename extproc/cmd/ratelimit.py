"""`interlock ratelimit`: the pod's rate-limit process, Envoy's `RateLimitService`.

One process per pod serves every Envoy call, so with the default `memory` store all workers'
requests meet in one set of counters. With `store: redis` any number of these processes (one per
replica) share one budget through Redis; when Redis cannot answer, `failure_mode` applies (open:
allow, closed: OVER_LIMIT with `retry-after: 1`), the first failure and the recovery are logged
(`redis reserve failed (…); failing <mode> until it answers again`, `redis answers again (…)`), and
every failure is counted.

Lifetime. `serve` loads the config once, binds the optional metrics endpoint, then the gRPC port
(with gRPC health `SERVING`), and logs `rate limit service on <address>:<port>: …`; it runs until
SIGTERM/SIGINT, then stops serving (2 s grace), gives back abandoned reservations, closes the
store and logs the final counters. Any bind failure raises `OSError` before anything is served.

Reload. The limits are every tenant's `limits` in the config. SIGHUP re-reads the config file and
swaps the table atomically (a call in progress keeps the table it started with); a config that
does not load keeps the last good table, is logged and counted. The store (memory/redis, URL,
failure mode, timeout) is fixed for the life of the process.

Metrics. With `metrics_port` (`--metrics-port`), `GET http://<rate_limit.address>:<port>/metrics`
answers Prometheus text (`metrics_text`), served from the same event loop:

    interlock_ratelimit_info{store,failure_mode}       gauge, always 1
    interlock_ratelimit_calls_total                    every ShouldRateLimit call
    interlock_ratelimit_trueups_total                  true-ups the workers sent (UDP, same port number)
    interlock_ratelimit_over_limit_total               refused by a limit the store decided on
    interlock_ratelimit_degraded_total                 answered by the failure mode (store failed)
    interlock_ratelimit_errors_total                   internal errors (answered by the failure mode)
    interlock_ratelimit_malformed_total                descriptors ignored (not in the scheme)
    interlock_ratelimit_abandoned_total                calls Envoy gave up on
    interlock_ratelimit_released_total                 ... whose reservation was given back
    interlock_ratelimit_store_failures_total           store operations that failed (reserve, true-up)
    interlock_ratelimit_store_healthy                  gauge: 0 from a degraded admission until one
                                                       is decided by the store again
    interlock_ratelimit_limits                         gauge: limits in the table being served
    interlock_ratelimit_reloads_total{result}          SIGHUP reloads: success | failure
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from envoy.service.ratelimit.v3 import rls_pb2

from extproc.cmd.heap import freeze_startup_heap
from extproc.cmd.reload import read_generation
from extproc.config import ConfigError, GatewayConfig, load_file
from extproc.h2grpc import Server
from extproc.limits import trueup
from extproc.limits.limiter import Limiter
from extproc.limits.model import LimitTable
from extproc.limits.service import RateLimitService
from extproc.limits.store import FailureMode, MemoryStore, RedisStore, Store
from extproc.telemetry import exposition

log = logging.getLogger("interlock.limits")

_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def limit_table(cfg: GatewayConfig) -> LimitTable:
    return LimitTable(lim for t in cfg.tenants for lim in t.limits)


def make_store(cfg: GatewayConfig) -> Store:
    rl = cfg.rate_limit
    if rl.store == "redis":
        return RedisStore(rl.redis_url, failure_mode=FailureMode(rl.failure_mode),
                          timeout_s=max(0.01, rl.timeout * 0.8))
    return MemoryStore()


@dataclass
class Reloads:
    """SIGHUP reloads of this process; counters only grow."""

    successes: int = 0
    failures: int = 0


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(service: RateLimitService, store: Store, *, store_kind: str, limits: int,
                 reloads: Reloads) -> str:
    """Prometheus text exposition (format 0.0.4) of the process's counters. Pure: reads only."""
    counters = [
        ("calls", "Rate-limit calls (admissions and true-ups).", service.calls),
        ("trueups", "True-ups the ext_proc workers sent (one per unit and request).", service.trueups),
        ("over_limit", "Calls refused because a limit the store decided on was reached.", service.over_limit),
        ("degraded", "Calls answered by the failure mode because the store could not decide.", service.degraded),
        ("errors", "Calls answered by the failure mode after an internal error.", service.errors),
        ("malformed", "Descriptors ignored because they do not follow the scheme.", service.malformed),
        ("abandoned", "Calls Envoy gave up on while they were being decided.", service.abandoned),
        ("released", "Abandoned calls whose reservation was given back.", service.released),
        ("store_failures", "Store operations (reserve, true-up) that failed.", getattr(store, "failures", 0)),
    ]
    out = [
        "# HELP interlock_ratelimit_info The store and failure mode of this rate-limit process.",
        "# TYPE interlock_ratelimit_info gauge",
        f'interlock_ratelimit_info{{store="{_label(store_kind)}",'
        f'failure_mode="{_label(service.failure_mode.value)}"}} 1',
    ]
    for name, help_, value in counters:
        metric = f"interlock_ratelimit_{name}_total"
        out += [f"# HELP {metric} {help_}", f"# TYPE {metric} counter", f"{metric} {value}"]
    out += [
        "# HELP interlock_ratelimit_store_healthy 1 when the latest admission was decided by the store, "
        "0 when it got the failure mode.",
        "# TYPE interlock_ratelimit_store_healthy gauge",
        f"interlock_ratelimit_store_healthy {int(service.store_healthy)}",
        "# HELP interlock_ratelimit_limits Limits in the table being served.",
        "# TYPE interlock_ratelimit_limits gauge",
        f"interlock_ratelimit_limits {limits}",
        "# HELP interlock_ratelimit_reloads_total Config reloads (SIGHUP) by result.",
        "# TYPE interlock_ratelimit_reloads_total counter",
        f'interlock_ratelimit_reloads_total{{result="success"}} {reloads.successes}',
        f'interlock_ratelimit_reloads_total{{result="failure"}} {reloads.failures}',
    ]
    return "\n".join(out) + "\n"


async def _start_metrics(address: str, port: int, render: Callable[[], str]) -> tuple[web.AppRunner, int]:
    """Serve `render()` at GET /metrics on this event loop; returns the runner and the bound port."""
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=render().encode(), headers={"content-type": _CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, address, port).start()
    except OSError as e:
        await runner.cleanup()
        raise OSError(f"metrics: cannot listen on {address}:{port}: {e.strerror or e}") from e
    bound = runner.addresses[0][1]
    return runner, int(bound)


async def serve(config_path: str, address: str, port: int, ready: Callable[[int], None] | None = None, *,
                metrics_port: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT (see the module docstring). `ready(port)` is called once the gRPC
    port is bound and serving; `port` 0 (and `metrics_port` 0) picks a free port, logged."""
    cfg = load_file(config_path)
    table = [limit_table(cfg)]
    reloads = Reloads()
    store = make_store(cfg)
    service = RateLimitService(Limiter(store, lambda: table[0]), failure_mode=FailureMode(cfg.rate_limit.failure_mode))
    metrics: web.AppRunner | None = None
    where = ""
    if metrics_port is not None:
        metrics, bound_metrics = await _start_metrics(address, metrics_port, lambda: metrics_text(
            service, store, store_kind=cfg.rate_limit.store, limits=len(table[0]), reloads=reloads))
        where = f"; metrics on http://{address}:{bound_metrics}/metrics"
    server = Server({SHOULD_RATE_LIMIT: _should_rate_limit(service)})
    try:
        bound = await server.start(address, port)
    except OSError:
        if metrics is not None:
            await metrics.cleanup()
        raise
    # The workers' true-ups: UDP datagrams to the same port number (`extproc.limits.trueup`).
    try:
        datagrams, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: trueup.Receiver(service.true_up), local_addr=(address, bound))
    except OSError as e:
        await server.stop(grace=0)
        if metrics is not None:
            await metrics.cleanup()
        raise OSError(f"true-ups: cannot listen on UDP {address}:{bound}: {e.strerror or e}") from e
    log.info("rate limit service on %s:%d: %d limits, store %s, failure mode %s%s", address, bound,
             len(table[0]), cfg.rate_limit.store, cfg.rate_limit.failure_mode, where)
    if ready:
        ready(bound)
    text = await exposition.serve_or_log(exposition.socket_name(Path(config_path).parent, "ratelimit"), lambda: metrics_text(
        service, store, store_kind=cfg.rate_limit.store, limits=len(table[0]), reloads=reloads))

    def reload() -> None:
        try:
            table[0] = limit_table(load_file(config_path))
        except (ConfigError, ValueError, OSError) as e:
            reloads.failures += 1
            log.error("rate limit reload failed, keeping %d limits: %s", len(table[0]), e)
            return
        reloads.successes += 1
        log.info("rate limits reloaded: %d limits (config generation %d)", len(table[0]),
                 read_generation(config_path))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    await server.stop(grace=2)
    datagrams.close()
    await exposition.close(text)
    await service.drain()
    if metrics is not None:
        await metrics.cleanup()
    await store.close()
    log.info("rate limit service stopped: calls=%d over_limit=%d degraded=%d errors=%d malformed=%d abandoned=%d "
             "store_failures=%s", service.calls, service.over_limit, service.degraded, service.errors,
             service.malformed, service.abandoned, getattr(store, "failures", 0))


SHOULD_RATE_LIMIT = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"


def _should_rate_limit(service: RateLimitService) -> Callable[[bytes], Coroutine[Any, Any, bytes]]:
    async def call(data: bytes) -> bytes:
        request = rls_pb2.RateLimitRequest.FromString(data)
        response = await service.ShouldRateLimit(request, None)
        return bytes(response.SerializeToString())
    return call


def run(config_path: str, address: str, port: int, *, metrics_port: int | None = None) -> None:
    """Blocking: serve until SIGTERM/SIGINT."""
    import uvloop

    uvloop.install()
    freeze_startup_heap()  # before the limit table, which a reload replaces
    asyncio.run(serve(config_path, address, port, metrics_port=metrics_port))
