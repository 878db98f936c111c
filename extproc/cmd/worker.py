"""One ext_proc worker process: load the config, compile it, serve gRPC on one port.

SIGHUP re-reads the config file and swaps the compiled runtime atomically: streams already open
keep the runtime they started with; new streams get the new one. The supervisor only sends
SIGHUP after validating the file (and after Envoy has the clusters it needs), so a failure here
is unexpected; it is logged and the previous runtime keeps serving. The runtime's generation is
the supervisor's (`extproc.cmd.reload.read_generation`), logged on every reload.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from extproc.admission import Board
from extproc.cmd.heap import freeze_startup_heap
from extproc.cmd.reload import read_generation
from extproc.config import ConfigError, load_file
from extproc.runtime import Runtime, compile_runtime
from extproc.server import serve
from extproc.telemetry import exposition
from extproc.telemetry.install import install_worker, settings_or_default
from extproc.translate.base import Registry
from extproc.translate.registry import default_registry

log = logging.getLogger("interlock.worker")


class RuntimeSlot:
    """The worker's current runtime. A reload replaces it whole (one attribute store, atomic for
    the event loop); a stream asks for it once, when it starts, and keeps that one."""

    __slots__ = ("current",)

    def __init__(self, runtime: Runtime) -> None:
        self.current = runtime

    def __call__(self) -> Runtime:
        return self.current


def run_worker(config_path: str, address: str, port: int, *, board: str | None = None, worker_index: int = 0,
               workers: int = 1) -> None:
    """Blocking: serve until SIGTERM/SIGINT. Raises ConfigError on a bad config. `board`: the
    file the pod's workers count requests in flight in (row `worker_index` of `workers`)."""
    import uvloop

    registry = default_registry()
    freeze_startup_heap()  # before the runtime, which a reload replaces
    slot = RuntimeSlot(compile_runtime(load_file(config_path), registry, generation=read_generation(config_path)))
    uvloop.install()
    shared = Board(board, worker_index, workers) if board else Board()
    installed = install_worker(settings_or_default(os.environ), {"interlock.process": f"worker-{worker_index}"})

    async def main() -> None:
        text = await exposition.serve_or_log(exposition.socket_name(Path(config_path).parent, f"worker-{worker_index}"),
                                             installed.text)
        try:
            await serve(address, port, slot, on_reload=reloader(slot, config_path, registry), board=shared)
        finally:
            await exposition.close(text)

    try:
        asyncio.run(main())
    finally:
        installed.shutdown()


def reloader(slot: RuntimeSlot, config_path: str, registry: Registry) -> Callable[[], None]:
    """What SIGHUP does: compile the config file as the generation the supervisor wrote (the
    previous one + 1 when it wrote none) and swap it in; a config that does not load keeps the
    current runtime."""
    def reload() -> None:
        previous = slot.current.generation
        try:
            runtime = compile_runtime(load_file(config_path), registry,
                                      generation=read_generation(config_path, default=previous + 1))
        except ConfigError as e:
            log.error("reload failed, keeping generation %d: %s", previous, "; ".join(e.problems))
            return
        slot.current = runtime
        log.info("config generation %d loaded (was %d)", runtime.generation, previous)

    return reload
