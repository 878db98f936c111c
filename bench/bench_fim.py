#!/usr/bin/env python3
"""Paced streaming fill-in-the-middle: the time to first token the gateway adds, against plain Envoy.

Code completion is the most latency-sensitive traffic a gateway carries: an editor sends a
completion on every pause in typing and shows nothing until the first token. This scenario sends
streamed `POST /v1/completions` requests with a `suffix` at a steady rate (`--rate` per second
for `--duration` seconds, over a keep-alive connection pool per target, as an editor's client), to

- plain Envoy (a router to the provider, nothing else), with the request the provider gets:
  the prompt already in the model's FIM template;
- Interlock, with the client's request (`prompt` + `suffix`) for a prompt-only model with
  `fim_template: qwen` (the gateway writes the template), a tenant with rate limits it never
  reaches (admission and true-up are in the figures; `--no-limits` leaves them out), one ext_proc
  worker per core;

alternating request by request, so both see the same machine. The provider is the simulator
(`ttft_ms` 20, 200 tokens/s, 24 tokens). TTFT is from sending the request to the first event
that carries text. Prints p50/p90/p99 per target and, last, one line:

    bench-fim: envoy_ttft_p50_ms=X interlock_ttft_p50_ms=Y added_p50_ms=Z added_p99_ms=W n=N errors=E
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from extproc.cmd.run import envoy_binary  # noqa: E402
from extproc.cmd.supervisor import port_open, wait_until  # noqa: E402
from extproc.translate.completions_fim import PRESETS, apply_template  # noqa: E402
from tests.support.ports import free_port, free_port_run  # noqa: E402

if __package__:  # imported as bench.bench_fim
    from bench.bench_stream import plain_envoy_config  # noqa: E402
    from bench.procs import start, stop  # noqa: E402
else:  # run as a script: bench/ is on sys.path
    from bench_stream import plain_envoy_config  # type: ignore[no-redef]  # noqa: E402
    from procs import start, stop  # type: ignore[no-redef]  # noqa: E402

KEY = "sk-bench-fim-tenant"
PROVIDER_KEY = "sk-bench-fim-provider"
UPSTREAM = "Qwen/Qwen2.5-Coder-7B"
PREFIX = "import os\n\n\ndef read_config(path):\n    with open(path) as f:\n        "
SUFFIX = "\n    return config\n\n\nif __name__ == '__main__':\n    print(read_config('app.yaml'))\n"




def gateway_config(port: int, sim_port: int, limits: bool = True) -> dict:
    tenant: dict = {"name": "bench", "api_key_sha256": [hashlib.sha256(KEY.encode()).hexdigest()]}
    if limits:
        tenant["limits"] = [{"unit": "requests", "per": "second", "amount": 1_000_000},
                            {"unit": "tokens", "per": "minute", "amount": 10**11}]
    return {
        "listen": {"address": "127.0.0.1", "port": port}, "admin": {"port": free_port()},
        "metrics": {"port": free_port()}, "rate_limit": {"port": free_port()},
        "extproc": {"port": free_port_run(os.cpu_count() or 1), "workers": 0},
        "providers": [{"name": "vllm", "type": "openai", "endpoint": f"http://127.0.0.1:{sim_port}",
                       "api_key_env": "FIM_PROVIDER_KEY"}],
        "models": [{"name": "qwen-coder", "provider": "vllm", "upstream_model": UPSTREAM, "capabilities": ["fim"],
                    "fim_template": "qwen", "max_output_tokens": 256}],
        "tenants": [tenant],
    }


def quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")






async def _one(session: Any, url: str, headers: dict[str, str], body: dict) -> float | None:
    """TTFT in seconds of one streamed completion (None: it failed or carried no text)."""
    t0 = time.perf_counter()
    ttft = None
    async with session.post(url, json=body, headers=headers) as r:
        if r.status != 200:
            await r.read()
            return None
        async for line in r.content:
            if ttft is None and line.startswith(b"data: {") and b'"text":"S' in line:
                ttft = time.perf_counter() - t0
    return ttft


async def drive(targets: dict[str, tuple[str, dict[str, str], dict]], rate: float, duration: float
                ) -> dict[str, list[float | None]]:
    """Send to every target in turn, `rate` requests per second each, for `duration` seconds."""
    import aiohttp

    out: dict[str, list[float | None]] = {name: [] for name in targets}
    tasks: list[tuple[str, asyncio.Task[float | None]]] = []
    gap = 1.0 / (rate * len(targets))
    sessions = {name: aiohttp.ClientSession() for name in targets}  # keep-alive, as an editor's client
    try:
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < duration:
            name = list(targets)[i % len(targets)]
            url, headers, body = targets[name]
            tasks.append((name, asyncio.create_task(_one(sessions[name], url, headers, body))))
            i += 1
            await asyncio.sleep(max(0.0, start + i * gap - time.perf_counter()))
        for name, task in tasks:
            try:
                out[name].append(await task)
            except Exception:  # noqa: BLE001 - a failed request is counted as an error
                out[name].append(None)
    finally:
        for session in sessions.values():
            await session.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=10.0, help="requests per second to each target")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds of load (after a 2 s warm-up)")
    ap.add_argument("--no-limits", action="store_true", help="a tenant without rate limits (no rate-limit calls)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-fim-"))
    env = {**os.environ, "FIM_PROVIDER_KEY": PROVIDER_KEY, "PYTHONPATH": str(ROOT)}
    sim_port, envoy_port, envoy_admin, gw_port = free_port(), free_port(), free_port(), free_port()
    cli = [sys.executable, "-m", "extproc.cmd.cli", "--log-level", "warning"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(start([*cli, "simulate", "--port", str(sim_port), "--api-key", PROVIDER_KEY],
                            work / "sim.log", env))
        if not wait_until(lambda: port_open("127.0.0.1", sim_port), 30):
            raise SystemExit("bench-fim: the simulator did not start")
        behaviour = {"ttft_ms": 20, "tokens_per_s": 200, "output_tokens": 24, "capabilities": ["tools"]}
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{sim_port}/_sim/models/{UPSTREAM}",
                                                      data=json.dumps(behaviour).encode(), method="PUT"), timeout=5)
        (work / "plain.yaml").write_text(yaml.safe_dump(plain_envoy_config(envoy_port, envoy_admin, sim_port)))
        procs.append(start([envoy_binary(), "-c", str(work / "plain.yaml"), "--disable-hot-restart",
                             "--concurrency", "1"], work / "plain.log"))
        (work / "gateway.yaml").write_text(yaml.safe_dump(gateway_config(gw_port, sim_port, not args.no_limits)))
        procs.append(start([*cli, "run", "-c", str(work / "gateway.yaml"), "--workdir", str(work / "rendered")],
                            work / "gateway.log", env))
        if not wait_until(lambda: "ready:" in (work / "gateway.log").read_text(), 90, 0.2) or \
                not wait_until(lambda: port_open("127.0.0.1", envoy_port), 30):
            raise SystemExit(f"bench-fim: the gateway did not start:\n{(work / 'gateway.log').read_text()[-3000:]}")
        options = {"max_tokens": 24, "stream": True, "stream_options": {"include_usage": True}}
        targets = {
            "envoy": (f"http://127.0.0.1:{envoy_port}/v1/completions", {"authorization": f"Bearer {PROVIDER_KEY}"},
                      {"model": UPSTREAM, "prompt": apply_template(PRESETS["qwen"], PREFIX, SUFFIX), **options}),
            "interlock": (f"http://127.0.0.1:{gw_port}/v1/completions", {"authorization": f"Bearer {KEY}"},
                          {"model": "qwen-coder", "prompt": PREFIX, "suffix": SUFFIX, **options}),
        }
        asyncio.run(drive(targets, args.rate, 2.0))  # warm-up: connections, caches, the workers' first requests
        results = asyncio.run(drive(targets, args.rate, args.duration))
    finally:
        for p in reversed(procs):
            stop(p, signal.SIGINT)
    ok = {name: [x * 1000 for x in xs if x is not None] for name, xs in results.items()}
    errors = sum(x is None for xs in results.values() for x in xs)
    print(f"{'target':<10} {'n':>5} {'ttft p50 ms':>12} {'p90':>8} {'p99':>8}")
    for name, xs in ok.items():
        print(f"{name:<10} {len(xs):>5} {quantile(xs, 0.5):>12.2f} {quantile(xs, 0.9):>8.2f} {quantile(xs, 0.99):>8.2f}")
    e, g = ok["envoy"], ok["interlock"]
    print(f"bench-fim: envoy_ttft_p50_ms={quantile(e, 0.5):.2f} interlock_ttft_p50_ms={quantile(g, 0.5):.2f} "
          f"added_p50_ms={quantile(g, 0.5) - quantile(e, 0.5):.2f} added_p99_ms={quantile(g, 0.99) - quantile(e, 0.99):.2f} "
          f"n={len(e) + len(g)} errors={errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
