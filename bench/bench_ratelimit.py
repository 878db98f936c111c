#!/usr/bin/env python3
"""Micro-benchmark of one rate-limit decision in the rate-limit process, without the network.

What Envoy's rate-limit filter sends for a tenant with a requests, a tokens and a USD limit
(three descriptors: tenant, model, priority, the unit, and for tokens and USD the reservation's
`minimum` and `hits_addend`), serialized once; each call parses it, decides it against the memory
store and serializes the answer, as the process's gRPC handler does
(`extproc.cmd.ratelimit._should_rate_limit`). Timed with `perf_counter` over `--calls` calls after
a warm-up, `--runs` times; the median run is reported. Run with the table holding that tenant
alone, then beside `--tenants` other tenants of two limits each: the decision looks only at the
calling tenant's limits (`LimitTable`), so the two figures should be alike.

Prints, last:
    ratelimit: call_us=N.N call_us_with_N_tenants=N.N
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envoy.service.ratelimit.v3 import rls_pb2  # noqa: E402

from extproc.cmd.ratelimit import _should_rate_limit  # noqa: E402
from extproc.limits import Limit, Limiter, LimitTable, MemoryStore, RateLimitService  # noqa: E402

TENANT = "bench"


def table(others: int) -> LimitTable:
    mine = [Limit({"tenant": TENANT}, "requests", "second", 1_000_000),
            Limit({"tenant": TENANT}, "tokens", "minute", 10**11),
            Limit({"tenant": TENANT}, "usd", "day", 10**6)]
    theirs = [lim for i in range(others) for lim in (
        Limit({"tenant": f"tenant-{i:04d}"}, "requests", "second", 100),
        Limit({"tenant": f"tenant-{i:04d}", "model": "claude-haiku-4-5"}, "tokens", "minute", 10**6))]
    return LimitTable([*theirs[: len(theirs) // 2], *mine, *theirs[len(theirs) // 2:]])


def admission() -> bytes:
    req = rls_pb2.RateLimitRequest(domain="interlock")
    for unit, amount, minimum in (("requests", 1, None), ("tokens", 8700, 500), ("usd", 4400, 400)):
        d = req.descriptors.add()
        for key, value in (("tenant", TENANT), ("model", "claude-haiku-4-5"), ("priority", "default")):
            d.entries.add(key=key, value=value)
        if minimum is not None:
            d.entries.add(key="minimum", value=str(minimum))
        d.entries.add(key="unit", value=unit)
        d.hits_addend.value = amount
    return req.SerializeToString()


async def per_call_us(others: int, calls: int, runs: int) -> float:
    limits = table(others)
    service = RateLimitService(Limiter(MemoryStore(), lambda: limits))
    call, data = _should_rate_limit(service), admission()
    answer = rls_pb2.RateLimitResponse.FromString(await call(data))
    assert answer.overall_code == rls_pb2.RateLimitResponse.OK, answer
    assert len(answer.statuses) == 3 and all(s.current_limit.name for s in answer.statuses), answer
    for _ in range(calls // 2):
        await call(data)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(calls):
            await call(data)
        times.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=5000, help="calls per timed run (default 5000)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs; the median is reported (default 5)")
    ap.add_argument("--tenants", type=int, default=200, help="other tenants in the second table (default 200)")
    args = ap.parse_args()
    alone = asyncio.run(per_call_us(0, args.calls, args.runs))
    crowded = asyncio.run(per_call_us(args.tenants, args.calls, args.runs))
    print(f"ratelimit: one call of three descriptors, in-process: {alone:.1f} µs with its tenant alone, "
          f"{crowded:.1f} µs beside {args.tenants} other tenants")
    print(f"ratelimit: call_us={alone:.1f} call_us_with_{args.tenants}_tenants={crowded:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
