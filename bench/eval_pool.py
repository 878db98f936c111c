#!/usr/bin/env python3
"""Self-hosted pool evaluation through the running gateway (`make eval-pool`).

Simulated vLLM-like model servers (`simulator.modelserver`, one process, each server on its own
127.0.0.x address, seeded speeds differing up to 2×) behind a `type: pool` provider, the provider
simulator (`interlock simulate`) as the per-token provider serving an equivalent model, and a fresh
gateway (`interlock run`: real Envoy + ext_proc workers) per run. The traffic is slices of the fixed
trace (`simulator.pool_trace.make_trace`: a day compressed into 600 s), replayed in real time at
their arrival times, every request streamed (`POST /v1/chat/completions`, `max_tokens` = the
trace's output length, `x-interlock-priority` = its class). Nothing is modelled: the figures are
what a client measured.

Phases (each run on fresh servers and a fresh gateway; `--phases` picks a subset):

1. `picking`: the same slice (`--picking-window`, below the pool's saturation) twice, through the
   pool with `picker: round-robin`, then `picker: load-aware`: p90 TTFT of every request,
   `p90_ttft_vs_rr` = round robin's ÷ load-aware's.
2. `spill`: the slice around the trace's peak (`--spill-window`, above the pool's capacity) twice:
   the pool alone (model `llama-pool`), then the route `llama` with `policy: fill_pool` over the
   pool and the provider: interactive SLO attainment (share of interactive requests whose TTFT is
   ≤ 1 s; an error misses it) and provider spend (the provider's usage × its price, USD).
3. `capacity`: `interlock capacity profile` against each simulated server, `interlock capacity
   plan` for the spill slice (SLO: interactive TTFT p90 ≤ 1 s), then the plan's all-day size
   started and the slice replayed through the pool alone, and — when it differs — the plan's
   recommended size (the cheapest meeting the SLO with spillover) replayed through the route
   `fill_pool`: `capacity_ok` = every replay met the SLO, `capacity_err` = the larger
   |predicted p90 TTFT − replayed| ÷ replayed.

Prints a progress line per step and, last, one line:

    pool: p90_ttft_vs_rr=X.Xx spill_slo=NN.N% capacity_ok=yes|no capacity_err=NN%

(`-` for a phase that did not run). Exit status 1 when a phase could not run (a process failed to
start, the time bound was hit), 0 otherwise — whether the targets are met is for the reader.
`--direct` (development only) replays phase 1 against the servers without the gateway, the
harness itself dispatching round robin or to the server with the fewest requests in flight; its
figures are marked `(direct)` and are not the evaluation's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this folder is sys.path[0] and its bench.py would shadow the `bench` namespace.
sys.path[:] = [str(ROOT)] + [x for x in sys.path if Path(x or ".").resolve() != ROOT / "bench"]

import orjson  # noqa: E402
import yaml  # noqa: E402

from bench.eval_routing import Process, percentile  # noqa: E402
from tests.support.ports import free_port, free_port_run  # noqa: E402

SEED = 7
SERVERS = 4
DAY_S = 600.0  # the trace's compressed day (`simulator.pool_trace`): an hour is 25 s
SPILL_SPEED = 1.5
PROFILE_ARGS = "--parallel --concurrency 1,4,16,32 --prompt-tokens 256,1024,4096 --duration-s 4"
GPU_HOUR_USD = 2.5  # one server's price per (compressed) hour, for the plan's trade-off
SLO_TTFT_S = 1.0
ROUTE = "llama"
POOL_MODEL = "llama-pool"
API_MODEL = "llama-api"
SERVED_MODEL = "llama-3.1-8b-instruct"  # what the model servers serve
API_UPSTREAM = "sim-llama-3.1-8b"  # the provider's name for the equivalent model
API_PRICE = (0.20, 0.20)  # USD per million input / output tokens (a hosted 8B model's price point)
API_BEHAVIOUR = {"ttft_ms": 250, "ttft_ms_per_ktok": 40, "ttft_sigma": 0.2, "tokens_per_s": 120,
                 "output_tokens": 100_000}  # max_tokens sets every answer's length
TENANT_KEY = "sk-eval-pool"
PROVIDER_KEY_ENV = "EVAL_POOL_PROVIDER_KEY"
HOST_BASE = 11  # servers on 127.0.0.11, .12, ...
PHASES = ("picking", "spill", "capacity")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- trace -------------------------------------------------------------------------------------------


@dataclass
class Req:
    """One trace request as replayed: arrival `t` (seconds from the slice's start)."""

    t: float
    prompt: str
    prompt_tokens: int
    output_tokens: int
    priority: str


def trace(seed: int) -> list[Any]:
    from simulator.pool_trace import make_trace

    return list(make_trace(seed))


def _out_tokens(r: Any) -> int:
    return int(getattr(r, "output_tokens", None) or r.max_tokens)


def window(rows: Sequence[Any], start: float, end: float, speed: float = 1.0) -> list[Req]:
    """The trace's requests arriving in [start, end), times shifted to start at 0 and divided by
    `speed` (time compression: 1.5 replays the slice in two thirds of its time, 1.5× its rate)."""
    return [Req((r.t - start) / speed, r.prompt, int(r.prompt_tokens), _out_tokens(r), r.priority)
            for r in rows if start <= r.t < end]


def rate_curve(rows: Sequence[Any], bucket_s: float = 10.0) -> list[float]:
    """Arrivals per second in each `bucket_s` bucket of the trace."""
    end = max(r.t for r in rows)
    counts = [0] * (int(end // bucket_s) + 1)
    for r in rows:
        counts[int(r.t // bucket_s)] += 1
    return [c / bucket_s for c in counts]


def peak_window(rows: Sequence[Any], length_s: float) -> tuple[float, float]:
    """The `length_s` window with the most arrivals (10 s steps)."""
    end = max(r.t for r in rows)
    times = sorted(r.t for r in rows)
    best, at = -1, 0.0
    s = 0.0
    while s + length_s <= end + 1e-9:
        n = sum(1 for t in times if s <= t < s + length_s)
        if n > best:
            best, at = n, s
        s += 10.0
    return at, at + length_s


def parse_window(text: str) -> tuple[float, float]:
    a, _, b = text.partition(":")
    return float(a), float(b)


def write_jsonl(reqs: Sequence[Req], path: Path, model: str = SERVED_MODEL) -> None:
    """The slice as a traffic record (`interlock capacity plan --trace`)."""
    with path.open("w") as f:
        for r in reqs:
            f.write(json.dumps({"t": round(r.t, 6), "prompt_tokens": r.prompt_tokens, "output_tokens": r.output_tokens,
                                "priority": r.priority, "model": model}) + "\n")


# -- processes ---------------------------------------------------------------------------------------


class ModelServers:
    """`python -m simulator.modelserver` in its own session: `n` servers on 127.0.0.11.. one port,
    each announcing itself with one JSON line on stdout."""

    def __init__(self, n: int, seed: int, port: int, logfile: Path, speeds: Sequence[float] | None = None) -> None:
        self.hosts = [f"127.0.0.{HOST_BASE + i}" for i in range(n)]
        self.port = port
        self.log = logfile
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulator.modelserver", "--servers", str(n), "--seed", str(seed), "--flavor",
             "vllm", "--hosts", ",".join(self.hosts), "--port", str(port), "--model", SERVED_MODEL,
             *(["--speeds", ",".join(f"{x:g}" for x in speeds)] if speeds else [])],
            stdout=subprocess.PIPE, stderr=logfile.open("wb"), cwd=ROOT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.servers: list[dict[str, Any]] = []

    def wait_ready(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        os.set_blocking(self.proc.stdout.fileno(), False)
        buf = b""
        while len(self.servers) < len(self.hosts) and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            chunk = self.proc.stdout.read() or b""
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                with contextlib.suppress(ValueError):
                    self.servers.append(json.loads(line))
            time.sleep(0.05)
        if len(self.servers) < len(self.hosts):
            raise RuntimeError(f"model servers: {len(self.servers)}/{len(self.hosts)} ready within {timeout:.0f} s; "
                               f"log tail:\n{self.log.read_text(errors='replace')[-2000:]}")
        return self.servers

    @property
    def endpoints(self) -> list[str]:
        return [f"{h}:{self.port}" for h in self.hosts]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def gateway_config(endpoints: Sequence[str], picker: str, sim_url: str, ports: dict[str, int],
                   target_utilization: float, band: float) -> dict[str, Any]:
    """The pool (`llama-pool`), the provider (`llama-api`) and the route `llama` over both under
    `fill_pool`; the tenant may claim every priority class."""
    return {
        "listen": {"address": "127.0.0.1", "port": ports["listen"]},
        "admin": {"address": "127.0.0.1", "port": ports["admin"]},
        "metrics": {"address": "127.0.0.1", "port": ports["metrics"]},
        "extproc": {"address": "127.0.0.1", "port": ports["extproc"]},
        "providers": [
            {"name": "gpu", "type": "pool", "endpoints": list(endpoints), "metrics": "vllm", "picker": picker},
            {"name": "api", "type": "openai", "endpoint": sim_url, "api_key_env": PROVIDER_KEY_ENV},
        ],
        "models": [
            {"name": POOL_MODEL, "provider": "gpu", "upstream_model": SERVED_MODEL, "context_window": 16384},
            {"name": API_MODEL, "provider": "api", "upstream_model": API_UPSTREAM, "context_window": 16384,
             "price": {"input_per_mtok": API_PRICE[0], "output_per_mtok": API_PRICE[1]}},
        ],
        "routes": [{"name": ROUTE, "candidates": [POOL_MODEL, API_MODEL],
                    "policy": {"kind": "fill_pool", "target_utilization": target_utilization, "band": band,
                               "batch": "spill", "then": {"kind": "objective", "minimize": "cost"}}}],
        "tenants": [{"name": "eval", "api_key_sha256": [hashlib.sha256(TENANT_KEY.encode()).hexdigest()],
                     "models": ["*"], "priority": "default", "priorities": ["interactive", "default", "batch"]}],
    }


@contextlib.contextmanager
def stack(work: Path, name: str, n: int, seed: int, picker: str, args: argparse.Namespace,
          gateway: bool = True, speeds: Sequence[float] | None = None) -> Iterator[tuple[str | None, ModelServers, str]]:
    """Fresh model servers, provider simulator and gateway (unless `gateway` is False) for one run;
    yields (gateway URL or None, the servers, the simulator's URL); stops them all."""
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    servers = ModelServers(n, seed, free_port(), d / "modelservers.log", speeds)
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    sim = Process("simulator", ["--log-level", "warning", "simulate", "--port", str(sim_port)], d / "simulator.log")
    gw: Process | None = None
    try:
        servers.wait_ready()
        sim.wait_for("listening", 30)
        _put_behaviour(sim_url)
        url = None
        if gateway:
            ports = {"listen": free_port(), "admin": free_port(), "metrics": free_port(), "extproc": free_port_run(4)}
            cfg = d / "gateway.yaml"
            cfg.write_text(yaml.safe_dump(gateway_config(servers.endpoints, picker, sim_url, ports,
                                                         args.target_utilization, args.band), sort_keys=False))
            gw = Process("gateway", ["--log-level", args.gateway_log_level, "run", "-c", str(cfg), "--workdir",
                                     str(d / "gateway")], d / "gateway.log", {PROVIDER_KEY_ENV: "sk-eval-provider"})
            gw.wait_for("ready:", 60)
            url = f"http://127.0.0.1:{ports['listen']}"
        yield url, servers, sim_url
    finally:
        if gw is not None:
            gw.stop(signal.SIGINT)
        sim.stop(signal.SIGTERM)
        servers.stop()


def _put_behaviour(sim_url: str) -> None:
    import httpx

    r = httpx.put(f"{sim_url}/_sim/models/{API_UPSTREAM}", content=orjson.dumps(API_BEHAVIOUR),
                  headers={"content-type": "application/json"}, timeout=10)
    if r.status_code != 200:
        raise RuntimeError(f"simulator refused the provider's behaviour: {r.text[:300]}")


# -- replay ------------------------------------------------------------------------------------------


@dataclass
class Result:
    t: float
    priority: str
    prompt_tokens: int
    output_tokens: int
    ttft_s: float | None = None
    total_s: float | None = None
    lag_s: float = 0.0
    status: int | None = None
    provider: str | None = None
    endpoint: str | None = None
    usage_in: int = 0
    usage_out: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.ttft_s is not None


class Direct:
    """Development-only dispatch straight to the servers (no gateway): round robin, or the server
    with the fewest of this client's requests in flight."""

    def __init__(self, endpoints: Sequence[str], how: str) -> None:
        self.endpoints = list(endpoints)
        self.how = how
        self.n = 0
        self.inflight = dict.fromkeys(self.endpoints, 0)

    def take(self) -> str:
        if self.how == "round-robin":
            e = self.endpoints[self.n % len(self.endpoints)]
            self.n += 1
        else:
            e = min(self.endpoints, key=lambda x: (self.inflight[x], self.endpoints.index(x)))
        self.inflight[e] += 1
        return e

    def give(self, e: str) -> None:
        self.inflight[e] -= 1


async def _one(http: Any, url: str, model: str, req: Req, r: Result, t0: float, direct: Direct | None) -> None:
    await asyncio.sleep(max(0.0, t0 + req.t - time.monotonic()))
    began = time.monotonic()
    r.lag_s = began - (t0 + req.t)
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": req.prompt}],
                         "max_tokens": req.output_tokens, "stream": True, "stream_options": {"include_usage": True}})
    headers = {"authorization": f"Bearer {TENANT_KEY}", "content-type": "application/json",
               "x-interlock-priority": req.priority}
    target = None
    if direct is not None:
        target = direct.take()
        url = f"http://{target}"
        r.endpoint = target
    try:
        async with http.stream("POST", f"{url}/v1/chat/completions", content=body, headers=headers) as resp:
            r.status = resp.status_code
            r.provider = resp.headers.get("x-interlock-provider") or ("gpu" if direct else None)
            r.endpoint = r.endpoint or resp.headers.get("x-gateway-destination-endpoint-served")
            if resp.status_code != 200:
                r.error = f"http {resp.status_code}: {(await resp.aread())[:200].decode(errors='replace')}"
                return
            done = False
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    continue
                chunk = orjson.loads(payload)
                if "error" in chunk:
                    r.error = f"stream error: {str(chunk['error'])[:200]}"
                    return
                if r.ttft_s is None and any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or ()):
                    r.ttft_s = time.monotonic() - began
                usage = chunk.get("usage")
                if usage:
                    r.usage_in = int(usage.get("prompt_tokens") or 0)
                    r.usage_out = int(usage.get("completion_tokens") or 0)
            if not done:
                r.error = "stream error: ended without [DONE]"
    except Exception as e:  # noqa: BLE001 — every failure is a client-visible error to count
        r.error = f"transport: {type(e).__name__}: {e}"[:300]
    finally:
        r.total_s = time.monotonic() - began
        if direct is not None and target is not None:
            direct.give(target)


async def _replay(url: str, model: str, reqs: Sequence[Req], deadline_s: float,
                  direct: Direct | None = None) -> list[Result]:
    import httpx

    results = [Result(q.t, q.priority, q.prompt_tokens, q.output_tokens) for q in reqs]
    limits = httpx.Limits(max_connections=1024, max_keepalive_connections=256)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0, connect=5.0)) as http:
        t0 = time.monotonic() + 0.3
        tasks = [asyncio.create_task(_one(http, url, model, q, r, t0, direct)) for q, r in zip(reqs, results, strict=True)]
        _, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for r in results:
        if r.ttft_s is None and r.error is None:
            r.error = "timeout: not finished within the run's time bound"
    return results


def replay(url: str, model: str, reqs: Sequence[Req], drain_s: float, direct: Direct | None = None) -> list[Result]:
    duration = max((q.t for q in reqs), default=0.0)
    return asyncio.run(_replay(url, model, reqs, duration + drain_s, direct))


# -- figures -----------------------------------------------------------------------------------------


def p90_ttft(results: Sequence[Result], priority: str | None = None) -> float | None:
    xs = [r.ttft_s for r in results if r.ttft_s is not None and r.error is None
          and (priority is None or r.priority == priority)]
    return percentile(xs, 0.9) if xs else None


def slo_share(results: Sequence[Result], priority: str = "interactive", slo_s: float = SLO_TTFT_S) -> float:
    mine = [r for r in results if r.priority == priority]
    if not mine:
        return math.nan
    return 100.0 * sum(r.ok and (r.ttft_s or 0.0) <= slo_s for r in mine) / len(mine)


def spend_usd(results: Sequence[Result], provider: str = "api") -> float:
    return sum(r.usage_in * API_PRICE[0] / 1e6 + r.usage_out * API_PRICE[1] / 1e6
               for r in results if r.provider == provider and r.error is None)


def describe(name: str, results: Sequence[Result], seconds: float) -> str:
    errors = [r for r in results if r.error]
    kinds: dict[str, int] = {}
    for r in errors:
        k = (r.error or "").split(":", 1)[0]
        kinds[k] = kinds.get(k, 0) + 1
    by_provider: dict[str, int] = {}
    for r in results:
        if r.error is None:
            by_provider[r.provider or "?"] = by_provider.get(r.provider or "?", 0) + 1
    p90, p90i = p90_ttft(results), p90_ttft(results, "interactive")
    lag = percentile([r.lag_s for r in results], 0.99) or 0.0
    return (f"{name}: {len(results) - len(errors)}/{len(results)} answered in {seconds:.0f} s; TTFT p90 "
            f"{_ms(p90)} ms (interactive {_ms(p90i)} ms); interactive SLO {slo_share(results):.1f}%; "
            f"served by {', '.join(f'{k} {v}' for k, v in sorted(by_provider.items())) or '-'}; provider spend "
            f"${spend_usd(results):.4f}; errors {len(errors)}"
            f"{' (' + ', '.join(f'{k} x{v}' for k, v in kinds.items()) + ')' if kinds else ''}; "
            f"client send lag p99 {lag * 1000:.0f} ms")


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f}"


def final_line(ratio: float | None, spill_slo: float | None, capacity_ok: bool | None,
               capacity_err: float | None) -> str:
    return ("pool: p90_ttft_vs_rr=" + ("-" if ratio is None else f"{ratio:.1f}x")
            + " spill_slo=" + ("-" if spill_slo is None else f"{spill_slo:.1f}%")
            + " capacity_ok=" + ("-" if capacity_ok is None else "yes" if capacity_ok else "no")
            + " capacity_err=" + ("-" if capacity_err is None else f"{capacity_err * 100:.0f}%"))


# -- phases ------------------------------------------------------------------------------------------


def phase_picking(rows: Sequence[Any], args: argparse.Namespace, work: Path, out: dict[str, Any]) -> float | None:
    start, end = args.picking_window
    reqs = window(rows, start, end)
    log(f"picking: trace {start:.0f}-{end:.0f} s, {len(reqs)} requests ({len(reqs) / (end - start):.2f} req/s), "
        f"{SERVERS} servers{' (direct, development only)' if args.direct else ''}")
    p90: dict[str, float | None] = {}
    for picker in ("round-robin", "load-aware"):
        began = time.monotonic()
        with stack(work, f"picking-{picker}", SERVERS, args.seed, picker, args, gateway=not args.direct) as (
                url, servers, _):
            if args.direct:
                direct = Direct(servers.endpoints, "round-robin" if picker == "round-robin" else "least-request")
                results = replay("", SERVED_MODEL, reqs, args.drain, direct)
            else:
                assert url is not None
                results = replay(url, POOL_MODEL, reqs, args.drain)
        p90[picker] = p90_ttft(results)
        out[f"picking-{picker}"] = [asdict(r) for r in results]
        log("  " + describe(picker, results, time.monotonic() - began))
    rr, la = p90["round-robin"], p90["load-aware"]
    return rr / la if rr and la else None


def phase_spill(rows: Sequence[Any], args: argparse.Namespace, work: Path, out: dict[str, Any]) -> float | None:
    start, end = args.spill_window
    reqs = window(rows, start, end, args.spill_speed)
    log(f"spill: trace {start:.0f}-{end:.0f} s (the peak) at {args.spill_speed:g}x, {len(reqs)} requests in "
        f"{(end - start) / args.spill_speed:.0f} s ({len(reqs) * args.spill_speed / (end - start):.2f} req/s, "
        f"{sum(q.priority == 'interactive' for q in reqs)} interactive), {SERVERS} servers, fill_pool target "
        f"{args.target_utilization} band {args.band}")
    slo = None
    for name, model in (("pool-only", POOL_MODEL), ("spillover", ROUTE)):
        began = time.monotonic()
        with stack(work, f"spill-{name}", SERVERS, args.seed, "load-aware", args) as (url, _, _):
            assert url is not None
            results = replay(url, model, reqs, args.drain)
        out[f"spill-{name}"] = [asdict(r) for r in results]
        log("  " + describe(name, results, time.monotonic() - began))
        if name == "spillover":
            slo = slo_share(results)
    return slo


def phase_capacity(rows: Sequence[Any], args: argparse.Namespace, work: Path,
                   out: dict[str, Any]) -> tuple[bool | None, float | None]:
    """Profile each server, plan for the spill slice, replay the plan's size (see the module docstring).

    The size replayed is the plan's `peak_replicas` (the fixed size meeting the SLO in every hour
    without spillover: the replay goes to the pool alone); replica i runs at the speed of profiled
    server i mod 4, as the planner assumes. Predicted and replayed p90 are the same statistic:
    nearest-rank p90 TTFT of the interactive requests."""
    from routing import capacity

    start, end = args.spill_window
    reqs = window(rows, start, end)
    d = work / "capacity"
    d.mkdir(parents=True, exist_ok=True)
    trace_path = d / "trace.jsonl"
    write_jsonl(reqs, trace_path)
    profile = d / "profile.json"
    began = time.monotonic()
    with stack(work, "capacity-profile", SERVERS, args.seed, "load-aware", args, gateway=False) as (_, servers, _):
        speeds = [float(s["speed"]) for s in servers.servers]
        cmd = [sys.executable, "-m", "extproc.cmd.cli", "capacity", "profile", "--model", SERVED_MODEL,
               "--out", str(profile), *[a for s in servers.servers for a in ("--endpoint", _url(s))],
               *args.profile_args]
        _run(cmd, d / "profile.log", "capacity profile", timeout=240.0)
    log(f"  capacity profile of {SERVERS} servers (speeds {', '.join(f'{x:g}' for x in speeds)}) in "
        f"{time.monotonic() - began:.0f} s")
    hour_s = DAY_S / 24
    plan_cmd = [sys.executable, "-m", "extproc.cmd.cli", "capacity", "plan", "--trace", str(trace_path),
                "--profile", str(profile), "--slo-ttft-ms", f"{SLO_TTFT_S * 1000:g}", "--slo-quantile", "0.9",
                "--target-utilization", f"{args.target_utilization:g}", "--day-seconds", f"{DAY_S:g}",
                "--gpu-hour-usd", f"{GPU_HOUR_USD:g}", "--provider-price-in", f"{API_PRICE[0]:g}",
                "--provider-price-out", f"{API_PRICE[1]:g}", "--out-html", str(d / "plan.html")]
    text = _run(plan_cmd, d / "plan.log", "capacity plan", ok=(0, 3))  # 3: no size meets the SLO
    log("  capacity plan's table:\n" + "\n".join("    " + line for line in text.splitlines()[:40]))
    traffic = capacity.parse_traffic(trace_path.read_text().splitlines(), str(trace_path))
    models = capacity.load_profile(json.loads(profile.read_text()))
    slo = capacity.Slo(ttft_ms=SLO_TTFT_S * 1000, quantile=0.9, priority="interactive")
    prices = capacity.Prices(GPU_HOUR_USD, *API_PRICE)
    the_plan = capacity.plan(traffic.records, models, slo, prices, args.target_utilization, hour_s)
    replicas = the_plan.peak_replicas
    if replicas is None:
        log(f"  capacity plan: infeasible: {'; '.join(the_plan.infeasible)}")
        return False, None
    predicted_ms = capacity.predict(traffic.records, models, replicas, slo, prices, None, hour_s).ttft_ms
    if predicted_ms is None:
        raise RuntimeError("capacity plan: no prediction for the interactive requests")
    log(f"  capacity plan: {replicas} servers at the peak, predicted p90 TTFT (interactive) {predicted_ms:.0f} ms")
    began = time.monotonic()
    with stack(work, "capacity-replay", replicas, args.seed, "load-aware", args,
               speeds=[speeds[i % len(speeds)] for i in range(replicas)]) as (url, _, _):
        assert url is not None
        results = replay(url, POOL_MODEL, reqs, args.drain)
    out["capacity-replay"] = [asdict(r) for r in results]
    log("  " + describe(f"replay on {replicas} servers", results, time.monotonic() - began))
    ttfts = [r.ttft_s * 1000 for r in results if r.priority == "interactive" and r.ok and r.ttft_s is not None]
    measured = capacity.quantile(ttfts, 0.9)
    errors = sum(r.error is not None for r in results)
    if measured is None:
        return False, None
    err = abs(predicted_ms - measured) / measured
    log(f"  capacity: predicted p90 {predicted_ms:.0f} ms, replayed {measured:.0f} ms ({err * 100:.0f}% off), "
        f"{errors} errors")
    ok = errors == 0 and measured <= SLO_TTFT_S * 1000
    rec = the_plan.recommended
    if rec is None or rec.replicas == replicas:
        return ok, err
    # The plan's recommendation (the cheapest size meeting the SLO with spillover) replayed too:
    # that many servers behind the route `fill_pool` at the plan's target utilization and band.
    # Predicted and replayed p90 are of the interactive requests the pool served; the SLO is
    # checked over every interactive request, spilled ones included.
    if rec.ttft_ms is None:
        raise RuntimeError("capacity plan: no prediction for the recommended size")
    log(f"  capacity plan: recommended {rec.replicas} servers with spillover, predicted p90 TTFT (interactive, "
        f"pool-served) {rec.ttft_ms:.0f} ms, {rec.spill_share * 100:.1f}% spilled")
    began = time.monotonic()
    with stack(work, "capacity-recommended", rec.replicas, args.seed, "load-aware", args,
               speeds=[speeds[i % len(speeds)] for i in range(rec.replicas)]) as (url, _, _):
        assert url is not None
        spilled = replay(url, ROUTE, reqs, args.drain)
    out["capacity-recommended"] = [asdict(r) for r in spilled]
    log("  " + describe(f"replay on {rec.replicas} servers with spillover", spilled, time.monotonic() - began))
    on_pool = capacity.quantile([r.ttft_s * 1000 for r in spilled if r.priority == "interactive" and r.ok
                                 and r.ttft_s is not None and r.provider == "gpu"], 0.9)
    overall = p90_ttft(spilled, "interactive")
    spill_errors = sum(r.error is not None for r in spilled)
    if on_pool is None or overall is None:
        return False, err
    rec_err = abs(rec.ttft_ms - on_pool) / on_pool
    log(f"  capacity (recommended): predicted p90 {rec.ttft_ms:.0f} ms, replayed {on_pool:.0f} ms "
        f"({rec_err * 100:.0f}% off), every interactive request p90 {overall * 1000:.0f} ms, {spill_errors} errors")
    return ok and spill_errors == 0 and overall <= SLO_TTFT_S, max(err, rec_err)


def _url(server: dict[str, Any]) -> str:
    return str(server.get("url") or f"http://{server['host']}:{server['port']}")


def _run(cmd: list[str], logfile: Path, what: str, timeout: float = 300.0, ok: Sequence[int] = (0,)) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    logfile.write_text(p.stdout + p.stderr)
    if p.returncode not in ok:
        raise RuntimeError(f"{what} failed (exit {p.returncode}):\n{(p.stdout + p.stderr)[-1500:]}")
    return p.stdout


# -- main --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of: {', '.join(PHASES)}")
    p.add_argument("--seed", type=int, default=SEED, help=f"trace and server seed (default {SEED})")
    p.add_argument("--picking-window", type=parse_window, metavar="START:END",
                   help="trace seconds replayed by the picking phase (default: 90 s from 40 s before the "
                        "busiest 90 s)")
    p.add_argument("--spill-window", type=parse_window, metavar="START:END",
                   help="trace seconds replayed by the spill and capacity phases (default: the busiest 90 s)")
    p.add_argument("--spill-speed", type=float, default=SPILL_SPEED,
                   help=f"time compression of the spill phase's slice (default {SPILL_SPEED:g}: the trace's peak "
                        "is about the pool's capacity under load-aware picking; compressed, it saturates it)")
    p.add_argument("--target-utilization", type=float, default=0.8, help="fill_pool target (default 0.8)")
    p.add_argument("--band", type=float, default=0.05, help="fill_pool hysteresis band (default 0.05)")
    p.add_argument("--drain", type=float, default=45.0,
                   help="seconds allowed after the last arrival before unfinished requests count as errors")
    p.add_argument("--profile-args", default=PROFILE_ARGS,
                   help=f"arguments for `interlock capacity profile` besides --endpoint/--model/--out "
                        f"(default: {PROFILE_ARGS!r})")
    p.add_argument("--gateway-log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument("--direct", action="store_true",
                   help="development only: phase 1 without the gateway (the harness dispatches)")
    p.add_argument("--workdir", type=Path, help="keep configs and logs here (default: a temp dir, removed)")
    p.add_argument("--json", type=Path, help="write every request's result here")
    args = p.parse_args(argv)
    args.profile_args = args.profile_args.split()
    wanted = [x.strip() for x in args.phases.split(",") if x.strip()]
    if any(w not in PHASES for w in wanted):
        p.error(f"unknown phases: {', '.join(w for w in wanted if w not in PHASES)}")

    began = time.monotonic()
    rows = trace(args.seed)
    curve = rate_curve(rows)
    if args.spill_window is None:
        args.spill_window = peak_window(rows, 90.0)
    if args.picking_window is None:
        args.picking_window = picking_window(rows)
    log(f"pool-eval: trace seed {args.seed}, {len(rows)} requests over {max(r.t for r in rows):.0f} s, "
        f"rate {min(curve):.2f}-{max(curve):.2f} req/s (10 s buckets); phases: {', '.join(wanted)}")
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="interlock-eval-pool-")
        work = Path(tmp.name)
    else:
        work = args.workdir
        work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    ratio = spill_slo = cap_err = None
    cap_ok = None
    failed = False
    try:
        for phase in wanted:
            try:
                if phase == "picking":
                    ratio = phase_picking(rows, args, work, out)
                    log(f"picking: p90 TTFT round robin / load-aware = {'-' if ratio is None else f'{ratio:.2f}'}"
                        f"{' (direct)' if args.direct else ''}")
                elif phase == "spill":
                    spill_slo = phase_spill(rows, args, work, out)
                elif phase == "capacity":
                    cap_ok, cap_err = phase_capacity(rows, args, work, out)
            except (RuntimeError, OSError, subprocess.TimeoutExpired, ImportError) as e:
                log(f"{phase}: could not run: {e}")
                failed = True
        if args.json:
            args.json.write_text(json.dumps(out))
    finally:
        if tmp is not None:
            tmp.cleanup()
    log(f"pool-eval: done in {time.monotonic() - began:.0f} s")
    print(final_line(ratio, spill_slo, cap_ok, cap_err), flush=True)
    return 1 if failed else 0


def picking_window(rows: Sequence[Any], length_s: float = 90.0) -> tuple[float, float]:
    """The `length_s` seconds from 40 s before the trace's busiest 90 s: about the pool's capacity,
    so a server given more than its share (round robin's slowest) queues while the pool as a whole
    can still serve it."""
    start, _ = peak_window(rows, 90.0)
    return max(0.0, start - 40.0), max(0.0, start - 40.0) + length_s


if __name__ == "__main__":
    sys.exit(main())
