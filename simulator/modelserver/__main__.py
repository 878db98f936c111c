"""`python -m simulator.modelserver`: start simulated model servers and print one JSON line each."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import orjson

from simulator.modelserver.pool import pool_specs, start_pool
from simulator.modelserver.server import MODEL


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m simulator.modelserver",
        description="Simulated vLLM/SGLang model servers (continuous batching, paged KV cache with prefix "
                    "caching, Prometheus /metrics). Prints one JSON line per server once all listen; runs "
                    "until SIGINT/SIGTERM.")
    p.add_argument("--servers", type=int, default=4, help="how many servers (default 4)")
    p.add_argument("--seed", type=int, default=7, help="seeds the servers' speeds (1.0–2.0; default 7)")
    p.add_argument("--flavor", choices=("vllm", "sglang"), default="vllm", help="metric names (default vllm)")
    p.add_argument("--hosts", default=None,
                   help="comma-separated listen addresses, one per server (default 127.0.0.11, .12, …)")
    p.add_argument("--port", type=int, default=8000, help="port of every server (default 8000; 0 = any free)")
    p.add_argument("--model", default=MODEL, help=f"served model name (default {MODEL})")
    p.add_argument("--speeds", default=None, help="comma-separated speeds instead of the seeded ones")
    return p


async def _serve(args: argparse.Namespace) -> int:
    specs = pool_specs(args.servers, args.seed, args.flavor, model=args.model)
    if args.speeds:
        try:
            speeds = [float(s) for s in args.speeds.split(",")]
        except ValueError:
            speeds = []
        if len(speeds) != len(specs) or not all(0 < v < float("inf") for v in speeds):
            print(f"--speeds: give {len(specs)} positive numbers", file=sys.stderr)
            return 2
        specs = [s.__class__(**{**s.__dict__, "speed": v}) for s, v in zip(specs, speeds, strict=True)]
    hosts = args.hosts.split(",") if args.hosts else None
    try:
        servers = await start_pool(specs, base_port=args.port, hosts=hosts)
    except (OSError, ValueError) as exc:
        print(f"cannot start the servers: {exc}", file=sys.stderr)
        return 1
    for server in servers:
        sys.stdout.write(orjson.dumps(server.describe()).decode() + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        await server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.servers < 1:
        _parser().error("--servers: must be at least 1")
    try:
        import uvloop

        return uvloop.run(_serve(args))
    except ImportError:
        return asyncio.run(_serve(args))


if __name__ == "__main__":
    raise SystemExit(main())
