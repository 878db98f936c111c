#!/usr/bin/env python3
"""Traffic spike: a burst of 10× what the provider sustains never cascades into it.

One simulated OpenAI deployment with a concurrency limit (429 above it, never queued), a short
time to first token and paced streaming, behind the gateway (real Envoy, real workers) whose
budget for it (`max_concurrency`) is that limit. Mixed traffic, all streamed, every request with
a deadline (`x-interlock-deadline-ms`):

  unloaded  interactive requests alone: their p99 time to first token is the reference
  before    interactive + batch at 40 % of the sustainable rate, evenly spaced (the pre-burst
            throughput)
  burst     interactive at the same rate + batch up to 10× the sustainable rate
            (sustainable = the provider's concurrency limit / its mean service time)
  after     as before; recovery = seconds from the burst's end until the requests started
            per second that get a complete answer are back to the pre-burst level (every later
            2-second window, ≥ 90 %)

A request is *hung* when it has neither a complete answer (the stream's `[DONE]`) nor an error
by its deadline + 1 s. Prints the phases, then, last, one line:

    spike: max_seen=N limit=N interactive_p99_ratio=X.X batch_429=N hung=N recovery_s=X.X

`max_seen` is the provider's own record of its peak in-flight requests; every 429 the gateway
sends must carry Retry-After (counted in `batch_429` only if it does).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from extproc.cmd.supervisor import port_open, wait_until  # noqa: E402
from tests.support.ports import free_port, free_port_run  # noqa: E402

if __package__:  # imported as bench.bench_spike
    from bench.procs import start, stop  # noqa: E402
else:  # run as a script: bench/ is on sys.path
    from procs import start, stop  # type: ignore[no-redef]  # noqa: E402

CLI = [sys.executable, "-m", "extproc.cmd.cli"]

KEY = "sk-spike-tenant"
PROVIDER_KEY = "sk-spike-provider"
MODEL = "spiky"
UPSTREAM = "gpt-4o-mini-2024-07-18"


@dataclass(frozen=True)
class Params:
    limit: int = 10  # the provider's concurrency limit = the gateway's budget for it
    ttft_ms: float = 40.0  # the provider's time to first token (≤ 50 ms: the ratio means something)
    output_tokens: int = 40
    tokens_per_s: float = 100.0  # service time ≈ ttft + output_tokens / tokens_per_s
    interactive_rps: float = 3.0
    steady_share: float = 0.4  # before and after the burst: this share of the sustainable rate
    burst_factor: float = 10.0
    unloaded_s: float = 8.0
    before_s: float = 4.0
    burst_s: float = 5.0
    after_s: float = 8.0
    interactive_deadline_ms: int = 5000
    batch_deadline_ms: int = 10000
    seed: int = 7

    @property
    def service_s(self) -> float:
        return self.ttft_ms / 1000 + self.output_tokens / self.tokens_per_s

    @property
    def sustainable_rps(self) -> float:
        return self.limit / self.service_s


@dataclass
class Outcome:
    kind: str  # interactive | batch
    phase: str
    start: float  # seconds since the run began
    status: int = 0
    ttft_s: float | None = None
    end: float | None = None
    complete: bool = False
    retry_after: str | None = None
    deadline_s: float = 0.0

    @property
    def hung(self) -> bool:
        finished = self.end is not None and (self.complete or self.status >= 400)
        return not finished or (self.end is not None and self.end - self.start > self.deadline_s + 1.0)


@dataclass
class Result:
    params: Params
    outcomes: list[Outcome] = field(default_factory=list)
    max_seen: int = 0
    provider_rejected: int = 0
    burst_end: float = 0.0

    def ttfts(self, kind: str, phase: str) -> list[float]:
        return sorted(o.ttft_s for o in self.outcomes if o.kind == kind and o.phase == phase and o.ttft_s is not None)

    @property
    def interactive_p99_ratio(self) -> float:
        base, burst = self.ttfts("interactive", "unloaded"), self.ttfts("interactive", "burst")
        return quantile(burst, 0.99) / quantile(base, 0.99)

    @property
    def batch_429(self) -> int:
        return sum(1 for o in self.outcomes if o.kind == "batch" and o.status == 429 and o.retry_after)

    @property
    def unexplained_429(self) -> int:
        return sum(1 for o in self.outcomes if o.status == 429 and not o.retry_after)

    @property
    def hung(self) -> int:
        return sum(1 for o in self.outcomes if o.hung)

    def served_per_s(self, since: float, until: float) -> float:
        """Requests started in [since, until) that got a complete answer, per second. Counting
        by start time (not completion time) keeps the yardstick free of completion jitter."""
        n = sum(1 for o in self.outcomes if o.complete and since <= o.start < until)
        return n / (until - since)

    @property
    def before_rps(self) -> float:
        starts = [o.start for o in self.outcomes if o.phase == "before"]
        return self.served_per_s(min(starts), max(starts))

    @property
    def recovery_s(self) -> float:
        """Seconds after the burst until the requests started in every later 2-second window are
        served at ≥ 90 % of the pre-burst rate."""
        target = 0.9 * self.before_rps
        starts = [o.start for o in self.outcomes if o.phase == "after"]
        last = max(starts) if starts else self.burst_end
        t, found = self.burst_end, None
        while t + 2.0 <= last:
            ok = self.served_per_s(t, t + 2.0) >= target
            if ok and found is None:
                found = t
            elif not ok:
                found = None
            t += 0.1
        return (found - self.burst_end) if found is not None else math.inf

    def summary(self) -> str:
        return (f"spike: max_seen={self.max_seen} limit={self.params.limit} "
                f"interactive_p99_ratio={self.interactive_p99_ratio:.1f} batch_429={self.batch_429} "
                f"hung={self.hung} recovery_s={self.recovery_s:.1f}")


def quantile(xs: list[float], q: float) -> float:
    if not xs:
        return math.nan
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def gateway_config(p: Params, sim_port: int) -> dict:
    return {
        "listen": {"address": "127.0.0.1", "port": free_port()},
        "admin": {"port": free_port()},
        "metrics": {"port": free_port()},
        "rate_limit": {"port": free_port()},
        "extproc": {"port": free_port_run(2), "workers": 2},
        "providers": [{"name": "openai", "type": "openai", "endpoint": f"http://127.0.0.1:{sim_port}",
                       "api_key_env": "SPIKE_PROVIDER_KEY"}],
        "models": [{"name": MODEL, "provider": "openai", "upstream_model": UPSTREAM, "max_concurrency": p.limit}],
        # Its interactive requests claim the class with x-interlock-priority: the tenant is entitled to it.
        "tenants": [{"name": "spike", "api_key_sha256": [hashlib.sha256(KEY.encode()).hexdigest()],
                     "priorities": ["batch", "default", "interactive"]}],
    }






def _http(method: str, url: str, body: object = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


@contextmanager
def running(p: Params, work: Path) -> Iterator[tuple[str, str]]:
    """The simulator and the gateway; yields (gateway URL, simulator URL)."""
    env = {**os.environ, "SPIKE_PROVIDER_KEY": PROVIDER_KEY, "PYTHONPATH": str(ROOT)}
    sim_port = free_port()
    sim = start([*CLI, "--log-level", "warning", "simulate", "--port", str(sim_port), "--api-key", PROVIDER_KEY],
                work / "sim.log", env)
    gw = None
    try:
        if not wait_until(lambda: port_open("127.0.0.1", sim_port), 30):
            raise SystemExit("spike: the simulator did not start")
        cfg = gateway_config(p, sim_port)
        (work / "gateway.yaml").write_text(yaml.safe_dump(cfg))
        gw = start([*CLI, "--log-level", "warning", "run", "-c", str(work / "gateway.yaml"), "--workdir",
                    str(work / "rendered")], work / "gateway.log", env)
        if not wait_until(lambda: "ready:" in (work / "gateway.log").read_text(), 90, 0.2):
            raise SystemExit(f"spike: the gateway did not start:\n{(work / 'gateway.log').read_text()[-3000:]}")
        yield f"http://127.0.0.1:{cfg['listen']['port']}", f"http://127.0.0.1:{sim_port}"
    finally:
        if gw is not None:
            stop(gw, signal.SIGINT)
        stop(sim)


async def _one(session, url: str, kind: str, phase: str, t0: float, deadline_ms: int) -> Outcome:  # type: ignore[no-untyped-def]
    import aiohttp

    o = Outcome(kind, phase, time.monotonic() - t0, deadline_s=deadline_ms / 1000)
    body = {"model": MODEL, "stream": True, "max_tokens": 64,
            "messages": [{"role": "user", "content": f"{kind} request"}]}
    headers = {"authorization": f"Bearer {KEY}", "x-interlock-priority": kind,
               "x-interlock-deadline-ms": str(deadline_ms)}
    try:
        async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=deadline_ms / 1000 + 1.0)) as r:
            o.status = r.status
            o.retry_after = r.headers.get("retry-after")
            if r.status == 200:
                async for line in r.content:
                    if o.ttft_s is None and line.startswith(b"data: {"):
                        o.ttft_s = time.monotonic() - t0 - o.start
                    if line.strip() == b"data: [DONE]":
                        o.complete = True
            else:
                await r.read()
        o.end = time.monotonic() - t0
    except (TimeoutError, aiohttp.ClientError):
        o.end = None if o.status == 0 or o.status == 200 else time.monotonic() - t0
    return o


async def _drive(url: str, p: Params) -> tuple[list[Outcome], float]:
    """Open-loop Poisson arrivals per phase; returns the outcomes and when the burst ended."""
    import aiohttp

    rng = random.Random(p.seed)
    sustainable = p.sustainable_rps
    batch_before = max(0.0, p.steady_share * sustainable - p.interactive_rps)
    batch_burst = max(0.0, p.burst_factor * sustainable - p.interactive_rps)
    phases = [("unloaded", p.unloaded_s, p.interactive_rps, 0.0), ("before", p.before_s, p.interactive_rps, batch_before),
              ("burst", p.burst_s, p.interactive_rps, batch_burst), ("after", p.after_s, p.interactive_rps, batch_before)]
    tasks: list[asyncio.Task[Outcome]] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.monotonic()
        start = 0.0
        burst_end = 0.0
        for name, length, irps, brps in phases:
            print(f"spike: phase {name}: {length:.0f} s, interactive {irps:.1f}/s, batch {brps:.1f}/s", flush=True)
            arrivals = []
            for kind, rate, deadline in (("interactive", irps, p.interactive_deadline_ms),
                                         ("batch", brps, p.batch_deadline_ms)):
                # Steady phases arrive evenly (their throughput is the yardstick); the burst is Poisson.
                t = start + (rng.random() / rate if rate > 0 else 0.0)
                while rate > 0 and t < start + length:
                    arrivals.append((t, kind, deadline))
                    t += rng.expovariate(rate) if name == "burst" else 1 / rate
            arrivals.sort()
            for at, kind, deadline in arrivals:
                delay = at - (time.monotonic() - t0)
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(_one(session, url, kind, name, t0, deadline)))
            start += length
            if name == "burst":
                burst_end = start
            if name == "unloaded":
                await asyncio.gather(*tasks)  # the reference is taken without anything else in flight
                start = time.monotonic() - t0
        outcomes = await asyncio.gather(*tasks)
    return list(outcomes), burst_end


def run_spike(p: Params, work: Path | None = None) -> Result:
    work = work or Path(tempfile.mkdtemp(prefix="interlock-spike-"))
    with running(p, work) as (url, sim):
        _http("PUT", f"{sim}/_sim/models/{UPSTREAM}", {
            "max_concurrency": p.limit, "ttft_ms": p.ttft_ms, "output_tokens": p.output_tokens,
            "tokens_per_s": p.tokens_per_s})
        outcomes, burst_end = asyncio.run(_drive(url, p))
        stats = _http("GET", f"{sim}/_sim/stats")
    assert isinstance(stats, dict)
    conc = stats.get("concurrency", {}).get(UPSTREAM, {})
    return Result(p, outcomes, int(conc.get("peak", 0)), int(conc.get("rejected", 0)), burst_end)


def report(r: Result) -> None:
    p = r.params
    print(f"spike: provider limit {p.limit} in flight, service {p.service_s * 1000:.0f} ms → sustainable "
          f"{p.sustainable_rps:.1f} req/s; burst {p.burst_factor:.0f}× = {p.burst_factor * p.sustainable_rps:.0f} req/s")
    for phase in ("unloaded", "before", "burst", "after"):
        rows = [o for o in r.outcomes if o.phase == phase]
        for kind in ("interactive", "batch"):
            xs = [o for o in rows if o.kind == kind]
            if not xs:
                continue
            t = r.ttfts(kind, phase)
            codes: dict[int, int] = {}
            for o in xs:
                codes[o.status] = codes.get(o.status, 0) + 1
            print(f"spike: {phase:8} {kind:11} n={len(xs):4} statuses={dict(sorted(codes.items()))} "
                  f"ttft_p50={quantile(t, 0.5) * 1000:.0f}ms ttft_p99={quantile(t, 0.99) * 1000:.0f}ms", flush=True)
    print(f"spike: provider peak in flight {r.max_seen} (limit {p.limit}), provider 429s {r.provider_rejected}, "
          f"429 without Retry-After {r.unexplained_429}, pre-burst {r.before_rps:.1f} served/s", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=Params.limit, help="provider concurrency limit (default 10)")
    ap.add_argument("--burst-s", type=float, default=Params.burst_s, help="burst length in seconds (default 5)")
    ap.add_argument("--burst-factor", type=float, default=Params.burst_factor,
                    help="burst rate / sustainable rate (default 10)")
    args = ap.parse_args()
    p = Params(limit=args.limit, burst_s=args.burst_s, burst_factor=args.burst_factor)
    work = Path(tempfile.mkdtemp(prefix="interlock-spike-"))
    print(f"spike: logs in {work}", flush=True)
    r = run_spike(p, work)
    report(r)
    print(r.summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
