#!/usr/bin/env python3
"""Micro-benchmark of the pure routing decision (`routing.decide`) at 10 candidates.

The fleet is ten deployments over five providers with realistic prices, qualities and capabilities; the
snapshot comes from `LatencyStats` fed a few hundred observations per deployment, with one deployment
cooling down; requests need tools, carry an affinity key (one of 1000 prefixes) and a random draw. The
policy is "cheapest whose p90 TTFT ≤ 800 ms and quality ≥ 0.8" (exploration 2 %, affinity on). Only
`decide` is timed (perf_counter_ns around each call; no logging or tracing exists in it).

Prints one line per policy and, last:
    routing: decide_us_p50=N.N decide_us_p99=N.N candidates=10
for the headline policy.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from routing import (  # noqa: E402
    BestQualityPolicy,
    CheapestPolicy,
    Deployment,
    LastNLatencyPolicy,
    LatencyStats,
    ObjectivePolicy,
    Policy,
    RoundRobinPolicy,
    RouteRequest,
    Snapshot,
    WeightedPolicy,
    decide,
)

FLEET = [
    # id, input $/Mtok, output $/Mtok, quality, p50 TTFT s, capabilities
    ("claude-haiku-4-5@anthropic#0", 1.0, 5.0, 0.80, 0.45, "tools images json"),
    ("claude-haiku-4-5@bedrock#0", 1.0, 5.0, 0.80, 0.70, "tools images json"),
    ("claude-sonnet-4-5@anthropic#0", 3.0, 15.0, 0.92, 0.80, "tools images json reasoning"),
    ("claude-sonnet-4-5@bedrock#0", 3.0, 15.0, 0.92, 0.55, "tools images json reasoning"),
    ("gpt-5-mini@openai#0", 0.25, 2.0, 0.78, 0.50, "tools images json reasoning"),
    ("gpt-5@openai#0", 1.25, 10.0, 0.90, 0.90, "tools images json reasoning"),
    ("gpt-5@azure#0", 1.25, 10.0, 0.90, 0.60, "tools images json reasoning"),
    ("gemini-2.5-flash@google#0", 0.3, 2.5, 0.82, 0.40, "tools images json"),
    ("gemini-2.5-pro@google#0", 1.25, 10.0, 0.91, 0.95, "tools images json reasoning"),
    ("llama-4-maverick@bedrock#0", 0.24, 0.97, 0.70, 0.35, "tools json"),
]
NOW = 10_000.0


def fleet() -> tuple[list[Deployment], dict[str, float]]:
    deps, p50 = [], {}
    for id_, inp, out, q, ttft, caps in FLEET:
        model, rest = id_.split("@")
        deps.append(Deployment(id=id_, model=model, provider=rest.split("#")[0], input_per_mtok=inp,
                               output_per_mtok=out, quality=q, context_window=200_000, max_output_tokens=16_384,
                               capabilities=frozenset(caps.split())))
        p50[id_] = ttft
    return deps, p50


def snapshot(deps: list[Deployment], p50: dict[str, float], rng: random.Random) -> Snapshot:
    stats = LatencyStats(half_life_s=60.0)
    for i in range(300):
        t = NOW - 300 + i
        for d in deps:
            if d.id == "gemini-2.5-pro@google#0" and i > 100:
                continue  # goes stale: exploration candidate
            stats.observe(d.id, p50[d.id] * rng.lognormvariate(0.0, 0.35), 0.004 + 0.01 * rng.random(), t)
    stats.record_failure("gpt-5@azure#0", NOW - 0.5)
    return stats.snapshot(NOW)


def run(policy: Policy, deps: list[Deployment], snap: Snapshot, n: int, seed: int) -> tuple[float, float]:
    rng = random.Random(seed)
    keys = [hashlib.sha256(f"system prompt {i}".encode()).digest()[:16] for i in range(1000)]
    reqs = [RouteRequest(est_input_tokens=rng.randint(500, 20_000), max_output_tokens=rng.choice([None, 1024, 4096]),
                         needs=frozenset({"tools"}), affinity_key=keys[i % len(keys)] if i % 4 else None, now=NOW)
            for i in range(1000)]
    draws = [rng.random() for _ in range(1000)]
    for i in range(2000):
        decide(reqs[i % 1000], deps, policy, snap, rr_counter=i, rand=draws[i % 1000])
    clock = time.perf_counter_ns
    samples = []
    for i in range(n):
        r, u = reqs[i % 1000], draws[(i * 7) % 1000]
        t0 = clock()
        decide(r, deps, policy, snap, rr_counter=i, rand=u)
        samples.append(clock() - t0)
    samples.sort()
    return samples[n // 2] / 1000, samples[int(n * 0.99)] / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=50_000, help="timed decisions per policy")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    deps, p50 = fleet()
    snap = snapshot(deps, p50, random.Random(args.seed))
    headline = ObjectivePolicy(minimize="cost", max_ttft_ms=800, min_quality=0.8)
    others: list[tuple[str, Policy]] = [
        ("objective latency", ObjectivePolicy(minimize="latency", max_ttft_ms=800)),
        ("weighted", WeightedPolicy(cost=1, latency=1, quality=2, min_quality=0.8)),
        ("round_robin", RoundRobinPolicy()),
        ("cheapest", CheapestPolicy()),
        ("best_quality", BestQualityPolicy()),
        ("last_n_latency", LastNLatencyPolicy()),
    ]
    for name, policy in others:
        a, b = run(policy, deps, snap, args.n // 5, args.seed)
        print(f"{name:>20}: p50 {a:6.1f} us  p99 {b:6.1f} us")
    a, b = run(headline, deps, snap, args.n, args.seed)
    print(f"{'cost+constraints':>20}: p50 {a:6.1f} us  p99 {b:6.1f} us")
    print(f"routing: decide_us_p50={a:.1f} decide_us_p99={b:.1f} candidates={len(deps)}")


if __name__ == "__main__":
    main()
