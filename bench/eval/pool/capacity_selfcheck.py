#!/usr/bin/env python3
"""Self-check of the capacity planner against simulated model servers, without the gateway.

    .venv/bin/python bench/eval/pool/capacity_selfcheck.py [--duration 240] [--peak-rps 2.5]

1. starts `--servers` (4) simulated vLLM-like servers (`python -m simulator.modelserver`, seeded
   speeds 1–2×);
2. profiles each (`interlock capacity profile --parallel`), unless `--profile FILE` is given;
3. writes the fixed evaluation trace's shape (`simulator.pool_trace.make_trace`) compressed into
   `--duration` seconds at `--peak-rps`, and plans it (`interlock capacity plan`): the size that meets
   the SLO all day without spillover (or `--replicas N`);
4. replays the trace at its arrival times straight to the first N servers (least-outstanding
   dispatch, ties to the faster server: the planner's own dispatch rule), streaming, and measures
   TTFT at the client;
5. prints predicted vs measured p90 TTFT (all requests and interactive ones) and the error.

The planner side (`capacity_check`) knows the servers only through the profile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from bench.eval.pool.capacity_check import _servers, error, predict_ttft_ms  # noqa: E402
from routing import capacity as cap  # noqa: E402
from simulator import pool_trace  # noqa: E402

PY = sys.executable
INTERLOCK = str(Path(PY).with_name("interlock"))


def start_servers(n: int, seed: int, first_octet: int) -> tuple[subprocess.Popen, list[dict]]:
    hosts = ",".join(f"127.0.0.{first_octet + i}" for i in range(n))
    proc = subprocess.Popen([PY, "-m", "simulator.modelserver", "--servers", str(n), "--seed", str(seed),
                             "--hosts", hosts, "--port", "0"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    servers = []
    assert proc.stdout is not None
    for _ in range(n):
        line = proc.stdout.readline()
        if not line:
            proc.kill()
            raise SystemExit("the simulated servers did not start")
        servers.append(json.loads(line))
    return proc, servers


async def replay(trace: list, urls: list[str], order: list[int]) -> list[tuple[str, float]]:
    """(priority, TTFT ms) per request, sent at its `t` to the least-outstanding server."""
    outstanding = [0] * len(urls)
    results: list[tuple[str, float]] = []
    failures = 0

    async def one(http: aiohttp.ClientSession, r, i: int) -> None:
        nonlocal failures
        body = {"model": r.model, "messages": [{"role": "user", "content": r.prompt}], "max_tokens": r.output_tokens,
                "stream": True}
        start = time.perf_counter()
        ttft = None
        try:
            async with http.post(f"{urls[i]}/v1/chat/completions", json=body) as resp:
                if resp.status != 200:
                    failures += 1
                    return
                async for line in resp.content:
                    if ttft is None and line.startswith(b"data:") and b'"content"' in line:
                        chunk = json.loads(line[5:])
                        if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                            ttft = (time.perf_counter() - start) * 1000
        except aiohttp.ClientError:
            failures += 1
        finally:
            outstanding[i] -= 1
        if ttft is not None:
            results.append((r.priority, ttft))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=600)) as http:
        t0 = time.perf_counter()
        tasks = []
        for r in trace:
            delay = r.t - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            i = min(range(len(urls)), key=lambda j: (outstanding[j], order.index(j)))
            outstanding[i] += 1
            tasks.append(asyncio.create_task(one(http, r, i)))
        await asyncio.gather(*tasks)
    if failures:
        print(f"warning: {failures} requests failed", file=sys.stderr)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=240.0, help="seconds the compressed day lasts (default 240)")
    ap.add_argument("--peak-rps", type=float, default=2.5, help="peak arrival rate (default 2.5)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--servers", type=int, default=4, help="simulated servers to start and profile (default 4)")
    ap.add_argument("--replicas", type=int, help="replay this many servers (default: the plan's all-day size)")
    ap.add_argument("--profile", help="use this profile instead of measuring one")
    ap.add_argument("--first-octet", type=int, default=51, help="servers listen on 127.0.0.N, N+1, … (default 51)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="capacity-selfcheck-"))
    proc, servers = start_servers(args.servers, args.seed, args.first_octet)
    try:
        urls = [s["url"] for s in servers]
        profile = args.profile or str(work / "profile.json")
        if not args.profile:
            t = time.perf_counter()
            subprocess.run([INTERLOCK, "capacity", "profile", *sum((["--endpoint", u] for u in urls), []), "--parallel",
                            "--concurrency", "1,4,16", "--prompt-tokens", "256,1024,4096", "--duration-s", "3",
                            "--out", profile], check=True, cwd=ROOT)
            print(f"profiled in {time.perf_counter() - t:.0f} s")
        trace = pool_trace.make_trace(args.seed, args.duration, args.peak_rps)
        trace_file = pool_trace.write_trace_jsonl(work / "trace.jsonl", trace)
        plan_file = work / "plan.json"
        subprocess.run([INTERLOCK, "capacity", "plan", "--trace", str(trace_file), "--profile", profile,
                        "--slo-ttft-ms", "1000", "--slo-quantile", "0.9", "--target-utilization", "0.8",
                        "--gpu-hour-usd", "2.5", "--provider-price-in", "0.5", "--provider-price-out", "1.5",
                        "--day-seconds", str(args.duration), "--out-json", str(plan_file)], check=True, cwd=ROOT)
        plan = json.loads(plan_file.read_text())
        n = args.replicas or plan["peak_replicas"]
        if not n or n > len(urls):
            print(f"the plan asks for {n} replicas; this check runs at most {len(urls)}: pass --replicas or lower "
                  "--peak-rps")
            return 1
        models = _servers(json.loads(Path(profile).read_text()))
        slowness = [m.alone_ttft_s(1000.0) + m.step_s(8) for m in models]
        order = sorted(range(n), key=lambda j: (slowness[j], j))
        pred_all = predict_ttft_ms(trace, profile, n)
        pred_int = predict_ttft_ms(trace, profile, n, priority="interactive")
        t = time.perf_counter()
        measured = asyncio.run(replay(trace, urls[:n], order))
        took = time.perf_counter() - t
        meas_all = cap.quantile([v for _, v in measured], 0.9) or 0.0
        meas_int = cap.quantile([v for p, v in measured if p == "interactive"], 0.9) or 0.0
        within = sum(1 for p, v in measured if p == "interactive" and v <= 1000) / max(
            1, sum(1 for p, _ in measured if p == "interactive"))
        print(f"replayed {len(measured)}/{len(trace)} requests through {n} servers in {took:.0f} s")
        print(f"p90 TTFT all:         predicted {pred_all:7.0f} ms, measured {meas_all:7.0f} ms, "
              f"error {error(pred_all, meas_all) * 100:.1f}%")
        print(f"p90 TTFT interactive: predicted {pred_int:7.0f} ms, measured {meas_int:7.0f} ms, "
              f"error {error(pred_int, meas_int) * 100:.1f}%; interactive within 1 s: {within * 100:.1f}%")
        return 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    raise SystemExit(main())
