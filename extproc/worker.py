"""One ext_proc worker process: load the config, compile it, serve gRPC on one port."""

from __future__ import annotations

import asyncio

from extproc.config import load_file
from extproc.runtime import compile_runtime
from extproc.server import serve
from extproc.translate.registry import default_registry


def run_worker(config_path: str, address: str, port: int) -> None:
    """Blocking: serve until SIGTERM/SIGINT. Raises ConfigError on a bad config."""
    import uvloop

    runtime = compile_runtime(load_file(config_path), default_registry())
    uvloop.install()
    asyncio.run(serve(address, port, lambda: runtime))
