#!/usr/bin/env python3
"""Trace-driven evaluation of routing policies through the running gateway (`make eval-routing`).

For each policy it starts a fresh provider simulator (`interlock simulate`) and a fresh gateway
(`interlock run`: real Envoy + ext_proc workers) whose route `eval` lists every model of
`bench/eval/profiles.yaml` under that policy, sends the profiles' latency behaviour to the simulator,
and replays `bench/eval/trace.jsonl` against `POST /v1/chat/completions` with `"model": "eval"`:
arrival times honoured (divided by `--speed`), bounded concurrency, one httpx client. Midway through,
the outage of `profiles.yaml` is switched on and off through the simulator's control API. Nothing of
the gateway is modelled: the figures are what a client measured.

Per request it records: client-side TTFT (streamed: time to the first SSE `data:` line; not
streamed: time to the whole answer), the served model (`x-interlock-model`) and attempts
(`x-interlock-attempts`), the answer's usage, and any error (a non-200, a broken or unfinished
stream, a transport error). From those:

- cost: usage × the served model's prices (USD; failed attempts are free, as with providers);
- TTFT p50/p99: over interactive (streamed) requests that succeeded, linear-interpolated quantiles;
- SLO attainment: share of all requests meeting their class's SLO (`SLO`: interactive TTFT ≤ 1.5 s,
  batch whole answer ≤ 30 s); an error misses it;
- quality misses: share of answered requests served by a model whose quality is below the
  request's hidden requirement (the trace's `quality`, never sent);
- errors: client-visible failures; fallbacks: answers that took more than one attempt.

Prints a progress line per policy, a table, and last, for Interlock's policy:
    routing-eval: cost_vs_best=-NN% slo=NN.N% quality_miss=N.N% errors=N
(cost relative to always-best-quality on the same trace). Exit status 1 when a policy could not be
run (a process failed to start, or the time bound was hit), 0 otherwise — whether the targets are
met is for the reader of the line. See bench/eval/README.md for the design and every choice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this folder is sys.path[0] and its bench.py would shadow the `bench` namespace.
sys.path[:] = [str(ROOT)] + [x for x in sys.path if Path(x or ".").resolve() != ROOT / "bench"]

import orjson  # noqa: E402
import yaml  # noqa: E402

from bench.eval import make_trace  # noqa: E402
from tests.support.ports import free_port, free_port_run  # noqa: E402

PROFILES = ROOT / "bench" / "eval" / "profiles.yaml"
TENANT_KEY = "sk-eval-tenant"
PROVIDER_KEY_ENV = "EVAL_PROVIDER_KEY"
AWS_ID_ENV = "EVAL_AWS_ACCESS_KEY_ID"
AWS_SECRET_ENV = "EVAL_AWS_SECRET_ACCESS_KEY"
ROUTE = "eval"
SLO = {"interactive": 1.5, "batch": 30.0}
"""Seconds: interactive requests must see their first token within 1.5 s; batch requests their
whole answer within 30 s."""

INTERLOCK = "interlock"
BEST = "best_quality"
POLICIES: dict[str, dict[str, Any]] = {
    # Interlock's recommended policy for a mixed route: the cheapest model whose p90 TTFT (as the
    # gateway measures it) stays under 1 s — headroom under the 1.5 s client SLO for the tail —
    # and whose quality meets the route's floor of 0.8; 2 % exploration of stale estimates, prompt
    # affinity (default tolerance: within 10 % of the best score), three attempts.
    INTERLOCK: {"kind": "objective", "minimize": "cost", "max_ttft": "1000ms", "ttft_quantile": 0.9,
                "min_quality": 0.8, "exploration": 0.02, "affinity": True, "max_attempts": 3},
    "round_robin": {"kind": "round_robin", "max_attempts": 3},
    "cheapest": {"kind": "cheapest", "max_attempts": 3},
    BEST: {"kind": "best_quality", "max_attempts": 3},
    "last_n_latency": {"kind": "last_n_latency", "n": 10, "max_attempts": 3},
}


# -- profiles and config ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelProfile:
    name: str
    provider: str
    upstream_model: str
    input_per_mtok: float
    output_per_mtok: float
    quality: float
    capabilities: tuple[str, ...]
    context_window: int
    max_output_tokens: int
    behaviour: dict[str, Any]


@dataclass(frozen=True)
class Outage:
    provider: str
    start_s: float
    end_s: float
    behaviour: dict[str, Any]


@dataclass(frozen=True)
class Profiles:
    providers: tuple[dict[str, Any], ...]
    models: dict[str, ModelProfile]
    outage: Outage


def load_profiles(path: Path = PROFILES) -> Profiles:
    doc = yaml.safe_load(path.read_text())
    defaults = doc.get("defaults") or {}
    models = {}
    for m in doc["models"]:
        merged = {**defaults, **m, "behaviour": {**defaults.get("behaviour", {}), **m.get("behaviour", {})}}
        models[m["name"]] = ModelProfile(
            merged["name"], merged["provider"], merged.get("upstream_model", merged["name"]),
            float(merged["price"]["input_per_mtok"]), float(merged["price"]["output_per_mtok"]),
            float(merged["quality"]), tuple(merged.get("capabilities", ())), int(merged["context_window"]),
            int(merged["max_output_tokens"]), merged["behaviour"])
    o = doc["outage"]
    return Profiles(tuple(doc["providers"]), models,
                    Outage(o["provider"], float(o["start_s"]), float(o["end_s"]), dict(o["behaviour"])))


def gateway_config(profiles: Profiles, policy: dict[str, Any], sim_url: str, ports: dict[str, int]) -> dict[str, Any]:
    """The gateway config for one policy: every provider on the simulator, route `eval` over all models."""
    providers = []
    for p in profiles.providers:
        entry: dict[str, Any] = {**p, "endpoint": sim_url}
        if p["type"] == "bedrock":
            entry.update(aws_access_key_id_env=AWS_ID_ENV, aws_secret_access_key_env=AWS_SECRET_ENV)
        else:
            entry["api_key_env"] = PROVIDER_KEY_ENV
        providers.append(entry)
    models = [{"name": m.name, "provider": m.provider, "upstream_model": m.upstream_model,
               "price": {"input_per_mtok": m.input_per_mtok, "output_per_mtok": m.output_per_mtok},
               "quality": m.quality, "capabilities": list(m.capabilities), "context_window": m.context_window,
               "max_output_tokens": m.max_output_tokens} for m in profiles.models.values()]
    return {
        "listen": {"address": "127.0.0.1", "port": ports["listen"]},
        "admin": {"address": "127.0.0.1", "port": ports["admin"]},
        "metrics": {"address": "127.0.0.1", "port": ports["metrics"]},
        "extproc": {"address": "127.0.0.1", "port": ports["extproc"]},
        "providers": providers,
        "models": models,
        "routes": [{"name": ROUTE, "candidates": list(profiles.models), "policy": policy}],
        "tenants": [{"name": "eval", "api_key_sha256": [hashlib.sha256(TENANT_KEY.encode()).hexdigest()],
                     "models": ["*"]}],
    }


def scaled_outage(outage: Outage, factor: float) -> Outage:
    return Outage(outage.provider, outage.start_s * factor, outage.end_s * factor, outage.behaviour)


# -- results and metrics (pure) ---------------------------------------------------------------------


@dataclass
class Result:
    """What the client saw for one trace row."""

    id: int
    cls: str
    required_quality: float
    scheduled_s: float = 0.0
    lag_s: float = 0.0  # how late it was sent (client saturation), seconds
    status: int = 0
    error: str | None = None
    ttft_s: float | None = None  # streamed: first data line; else the whole answer
    total_s: float | None = None
    model: str | None = None
    provider: str | None = None
    attempts: int = 1
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_reported: bool = False
    request_id: str | None = None  # the gateway's x-request-id, to join with its logs

    @property
    def ok(self) -> bool:
        return self.error is None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) with linear interpolation between closest ranks; None when empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def request_cost(r: Result, models: dict[str, ModelProfile]) -> float:
    """USD for an answered request: its usage at the serving model's prices."""
    if not r.ok or r.model not in models:
        return 0.0
    m = models[r.model]
    return (r.prompt_tokens * m.input_per_mtok + r.completion_tokens * m.output_per_mtok) / 1e6


def meets_slo(r: Result, slo: dict[str, float] = SLO) -> bool:
    if not r.ok:
        return False
    measured = r.ttft_s if r.cls == "interactive" else r.total_s
    return measured is not None and measured <= slo[r.cls]


def quality_miss(r: Result, models: dict[str, ModelProfile]) -> bool:
    return r.ok and r.model in models and models[r.model].quality < r.required_quality


@dataclass
class Summary:
    policy: str
    requests: int
    answered: int
    errors: int
    cost_usd: float
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    batch_p50_s: float | None
    slo_pct: float
    slo_interactive_pct: float
    slo_outage_pct: float
    quality_miss_pct: float
    fallbacks: int
    mix: dict[str, int] = field(default_factory=dict)
    sticky_pct: float | None = None
    usage_missing: int = 0
    lag_p99_s: float = 0.0
    error_kinds: dict[str, int] = field(default_factory=dict)


def _pct(n: int, d: int) -> float:
    return 100.0 * n / d if d else 0.0


def stickiness(results: Iterable[Result], system_of: dict[int, str | None], shared: Iterable[str]) -> float | None:
    """Share of answered requests with a shared system prompt that went to the model most often
    serving that prompt (100 % = every prompt prefix always met the same model's cache)."""
    groups: dict[str, Counter[str]] = {}
    names = set(shared)
    for r in results:
        s = system_of.get(r.id)
        if r.ok and r.model and s in names:
            groups.setdefault(s, Counter())[r.model] += 1  # type: ignore[arg-type]
    total = sum(sum(c.values()) for c in groups.values())
    if not total:
        return None
    return _pct(sum(c.most_common(1)[0][1] for c in groups.values()), total)


def summarize(policy: str, results: Sequence[Result], models: dict[str, ModelProfile],
              outage: Outage | None = None, system_of: dict[int, str | None] | None = None,
              slo: dict[str, float] = SLO) -> Summary:
    answered = [r for r in results if r.ok]
    interactive = [r for r in results if r.cls == "interactive"]
    in_outage = [r for r in results if outage and outage.start_s <= r.scheduled_s < outage.end_s]
    ttfts = [r.ttft_s for r in answered if r.cls == "interactive" and r.ttft_s is not None]
    batch = [r.total_s for r in answered if r.cls == "batch" and r.total_s is not None]
    shared = [k for k in make_trace.SYSTEM_PROMPTS]
    return Summary(
        policy=policy,
        requests=len(results),
        answered=len(answered),
        errors=len(results) - len(answered),
        cost_usd=sum(request_cost(r, models) for r in results),
        ttft_p50_s=percentile(ttfts, 0.5),
        ttft_p99_s=percentile(ttfts, 0.99),
        batch_p50_s=percentile(batch, 0.5),
        slo_pct=_pct(sum(meets_slo(r, slo) for r in results), len(results)),
        slo_interactive_pct=_pct(sum(meets_slo(r, slo) for r in interactive), len(interactive)),
        slo_outage_pct=_pct(sum(meets_slo(r, slo) for r in in_outage), len(in_outage)),
        quality_miss_pct=_pct(sum(quality_miss(r, models) for r in answered), len(answered)),
        fallbacks=sum(r.attempts > 1 for r in answered),
        mix=dict(Counter(r.model or "?" for r in answered).most_common()),
        sticky_pct=stickiness(results, system_of or {}, shared),
        usage_missing=sum(not r.usage_reported for r in answered),
        lag_p99_s=percentile([r.lag_s for r in results], 0.99) or 0.0,
        error_kinds=dict(Counter((r.error or "").split(":")[0] for r in results if not r.ok)),
    )


def cost_vs(s: Summary, base: Summary) -> float:
    """Relative cost difference in percent (negative = cheaper than `base`)."""
    return 100.0 * (s.cost_usd / base.cost_usd - 1.0) if base.cost_usd else 0.0


def final_line(s: Summary, best: Summary) -> str:
    return (f"routing-eval: cost_vs_best={cost_vs(s, best):+.0f}% slo={s.slo_pct:.1f}% "
            f"quality_miss={s.quality_miss_pct:.1f}% errors={s.errors}")


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f}"


def table(summaries: Sequence[Summary], best: Summary | None) -> str:
    head = ("policy", "cost $", "vs best", "TTFT p50 ms", "TTFT p99 ms", "SLO %", "SLO outage %",
            "quality miss %", "errors", "fallbacks", "sticky %", "served mix")
    rows = [head]
    for s in summaries:
        share = ", ".join(f"{m} {_pct(n, s.answered):.0f}%" for m, n in s.mix.items())
        rows.append((s.policy, f"{s.cost_usd:.4f}", f"{cost_vs(s, best):+.0f}%" if best else "-",
                     _ms(s.ttft_p50_s), _ms(s.ttft_p99_s), f"{s.slo_pct:.1f}", f"{s.slo_outage_pct:.1f}",
                     f"{s.quality_miss_pct:.1f}", str(s.errors), str(s.fallbacks),
                     "-" if s.sticky_pct is None else f"{s.sticky_pct:.0f}", share))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    lines = []
    for k, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:-1], widths[1:], strict=True)]
        lines.append("| " + " | ".join(cells) + " | " + r[-1] + " |")
        if k == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|---|")
    return "\n".join(lines)


# -- processes ---------------------------------------------------------------------------------------


class Process:
    """A child started in its own session (so its children can be stopped with it), logging to a file."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "extproc.cmd.cli", *args], stdout=log.open("wb"),
                                     stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: {needle!r} not printed within {timeout:.0f} s; log tail:\n"
                           f"{self.text()[-3000:]}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> None:
        """Signal our child by its PID; if it has not exited in `timeout`, kill its process group
        (the session we created for it, so only its own descendants)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


# -- replay ------------------------------------------------------------------------------------------


async def _control(http: Any, sim_url: str, model: str, patch: dict[str, Any]) -> None:
    r = await http.put(f"{sim_url}/_sim/models/{model}", content=orjson.dumps(patch),
                       headers={"content-type": "application/json"})
    if r.status_code != 200:
        raise RuntimeError(f"simulator refused the behaviour of {model}: {r.text}")


async def apply_profiles(http: Any, sim_url: str, profiles: Profiles) -> None:
    for m in profiles.models.values():
        await _control(http, sim_url, m.upstream_model, m.behaviour)


def restored(m: ModelProfile, outage: Outage) -> dict[str, Any]:
    """The patch that undoes the outage for `m`: its own value of each field the outage set, else
    the simulator's default."""
    from simulator.state import Behaviour

    default = Behaviour()
    return {k: m.behaviour.get(k, getattr(default, k)) for k in outage.behaviour}


async def _run_outage(http: Any, sim_url: str, profiles: Profiles, outage: Outage, t0: float, speed: float,
                      log: list[str]) -> None:
    hit = [m for m in profiles.models.values() if m.provider == outage.provider]
    await asyncio.sleep(max(0.0, t0 + outage.start_s / speed - time.monotonic()))
    for m in hit:
        await _control(http, sim_url, m.upstream_model, outage.behaviour)
    log.append(f"outage on at {time.monotonic() - t0:.1f} s")
    await asyncio.sleep(max(0.0, t0 + outage.end_s / speed - time.monotonic()))
    for m in hit:
        await _control(http, sim_url, m.upstream_model, restored(m, outage))
    log.append(f"outage off at {time.monotonic() - t0:.1f} s")


async def _one(http: Any, url: str, row: dict[str, Any], body: bytes, t0: float, speed: float,
               sem: asyncio.Semaphore) -> Result:
    r = Result(row["id"], row["class"], row["quality"], scheduled_s=row["t"])
    await asyncio.sleep(max(0.0, t0 + row["t"] / speed - time.monotonic()))
    async with sem:
        began = time.monotonic()
        r.lag_s = max(0.0, began - (t0 + row["t"] / speed))
        headers = {"authorization": f"Bearer {TENANT_KEY}", "content-type": "application/json"}
        try:
            async with http.stream("POST", url, content=body, headers=headers) as resp:
                r.status = resp.status_code
                r.model = resp.headers.get("x-interlock-model")
                r.provider = resp.headers.get("x-interlock-provider")
                r.request_id = resp.headers.get("x-request-id")
                attempts = resp.headers.get("x-interlock-attempts", "1")
                r.attempts = int(attempts) if attempts.isdigit() else 1
                if resp.status_code != 200:
                    text = (await resp.aread())[:300].decode(errors="replace")
                    r.error = f"http {resp.status_code}: {text}"
                elif row["stream"]:
                    await _read_stream(resp, r, began)
                else:
                    data = orjson.loads(await resp.aread())
                    r.ttft_s = r.total_s = time.monotonic() - began
                    _take_usage(r, data.get("usage"))
                    if not data.get("choices"):
                        r.error = "bad answer: no choices"
        except Exception as e:  # noqa: BLE001 — every failure is a client-visible error to count
            r.error = f"transport: {type(e).__name__}: {e}"[:300]
        if r.total_s is None:
            r.total_s = time.monotonic() - began
    return r


def _take_usage(r: Result, usage: Any) -> None:
    if isinstance(usage, dict):
        r.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        r.completion_tokens = int(usage.get("completion_tokens") or 0)
        r.usage_reported = True


async def _read_stream(resp: Any, r: Result, began: float) -> None:
    done = False
    async for line in resp.aiter_lines():
        if not line.startswith("data:"):
            continue
        if r.ttft_s is None:
            r.ttft_s = time.monotonic() - began
        payload = line[5:].strip()
        if payload == "[DONE]":
            done = True
            continue
        chunk = orjson.loads(payload)
        if "error" in chunk:
            r.error = f"stream error: {str(chunk['error'])[:200]}"
            return
        if chunk.get("usage"):
            _take_usage(r, chunk["usage"])
    r.total_s = time.monotonic() - began
    if not done:
        r.error = "stream error: ended without [DONE]"


async def _loop_lag(stop: asyncio.Event, out: list[float]) -> None:
    while not stop.is_set():
        t = time.monotonic()
        await asyncio.sleep(0.05)
        out.append(time.monotonic() - t - 0.05)


async def _sample_envoy(http: Any, admin: str, t0: float, stop: asyncio.Event,
                        out: list[tuple[float, dict[str, dict[str, int]]]]) -> None:
    """Every 0.5 s: each provider cluster's active outlier ejections and upstream requests, from
    Envoy's admin (evidence of what Envoy did, beside what the client saw)."""
    pattern = r"^cluster\.provider_[^.]*\.(outlier_detection\.ejections_active|upstream_rq_total)$"
    while not stop.is_set():
        with contextlib.suppress(Exception):
            r = await http.get(f"{admin}/stats", params={"filter": pattern}, timeout=2.0)
            sample: dict[str, dict[str, int]] = {}
            for line in r.text.splitlines():
                name, _, value = line.partition(": ")
                parts = name.split(".")
                if len(parts) >= 3 and value.strip().isdigit():
                    sample.setdefault(parts[1].removeprefix("provider_"), {})[parts[-1]] = int(value)
            out.append((time.monotonic() - t0, sample))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


def envoy_notes(samples: Sequence[tuple[float, dict[str, dict[str, int]]]], outage: Outage, speed: float) -> list[str]:
    """When Envoy ejected the outage provider, and how many requests reached it after the outage."""
    ejected = [t for t, s in samples if s.get(outage.provider, {}).get("ejections_active", 0) > 0]
    notes = []
    if ejected:
        notes.append(f"Envoy ejected {outage.provider} from {ejected[0]:.1f} s to {ejected[-1]:.1f} s (sampled)")
    end = outage.end_s / speed
    after = [s.get(outage.provider, {}).get("upstream_rq_total", 0) for t, s in samples if t >= end]
    if after:
        notes.append(f"{after[-1] - after[0]} requests reached {outage.provider} after the outage ended")
    return notes


async def replay(url: str, sim_url: str, rows: list[dict[str, Any]], profiles: Profiles, outage: Outage,
                 speed: float, concurrency: int, deadline_s: float,
                 admin: str | None = None) -> tuple[list[Result], list[str], list[Any]]:
    """Send every row at its time; returns the results (trace order), event notes and Envoy samples."""
    import httpx

    bodies = [orjson.dumps(make_trace.build_request(row, ROUTE)) for row in rows]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    notes: list[str] = []
    lags: list[float] = []
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0, connect=5.0)) as http:
        await apply_profiles(http, sim_url, profiles)
        sem = asyncio.Semaphore(concurrency)
        t0 = time.monotonic() + 0.5
        stop = asyncio.Event()
        lag_task = asyncio.create_task(_loop_lag(stop, lags))
        samples: list[tuple[float, dict[str, dict[str, int]]]] = []
        envoy_task = asyncio.create_task(_sample_envoy(http, admin, t0, stop, samples) if admin else asyncio.sleep(0))
        outage_task = asyncio.create_task(_run_outage(http, sim_url, profiles, outage, t0, speed, notes))
        tasks = [asyncio.create_task(_one(http, f"{url}/v1/chat/completions", row, body, t0, speed, sem))
                 for row, body in zip(rows, bodies, strict=True)]
        finished, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for t in pending:
            t.cancel()
        stop.set()
        outage_task.cancel()
        await asyncio.gather(lag_task, outage_task, envoy_task, *pending, return_exceptions=True)
    results = []
    for row, t in zip(rows, tasks, strict=True):
        if t in finished and t.exception() is None:
            results.append(t.result())
        else:
            results.append(Result(row["id"], row["class"], row["quality"], scheduled_s=row["t"],
                                  error="timeout: not finished within the run's time bound"))
    notes += envoy_notes(samples, outage, speed)
    if lags:
        notes.append(f"client loop lag p99 {(percentile(lags, 0.99) or 0) * 1000:.0f} ms, "
                     f"max {max(lags) * 1000:.0f} ms")
    return results, notes, samples


def run_policy(name: str, policy: dict[str, Any], rows: list[dict[str, Any]], profiles: Profiles,
               outage: Outage, args: argparse.Namespace, work: Path) -> tuple[list[Result], list[str], list[Any]]:
    """Fresh simulator + gateway for one policy, the replay, then both stopped."""
    from simulator.aws_auth import DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY

    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    ports = {"listen": free_port(), "admin": free_port(), "metrics": free_port(), "extproc": free_port_run(4)}
    cfg_path = d / "gateway.yaml"
    cfg_path.write_text(yaml.safe_dump(gateway_config(profiles, policy, sim_url, ports), sort_keys=False))
    env = {PROVIDER_KEY_ENV: "sk-eval-provider", AWS_ID_ENV: DEMO_ACCESS_KEY_ID, AWS_SECRET_ENV: DEMO_SECRET_ACCESS_KEY}
    sim = Process("simulator", ["--log-level", "warning", "simulate", "--port", str(sim_port)], d / "simulator.log")
    gateway: Process | None = None
    try:
        sim.wait_for("listening", 30)
        gateway = Process("gateway", ["--log-level", args.gateway_log_level, "run", "-c", str(cfg_path),
                                      "--workdir", str(d / "gateway")], d / "gateway.log", env)
        gateway.wait_for("ready:", 60)
        url = f"http://127.0.0.1:{ports['listen']}"
        duration = max(r["t"] for r in rows) / args.speed
        return asyncio.run(replay(url, sim_url, rows, profiles, outage, args.speed, args.concurrency,
                                  duration + args.drain, f"http://127.0.0.1:{ports['admin']}"))
    finally:
        if gateway is not None:
            gateway.stop(signal.SIGINT)
        sim.stop(signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Design, profiles, trace and figures: bench/eval/README.md.")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: a {make_trace.QUICK_DURATION_S:.0f} s trace from the same generator "
                        "(outage scaled to it) instead of the committed one")
    p.add_argument("--policies", default=",".join(POLICIES),
                   help=f"comma-separated subset of: {', '.join(POLICIES)} (default: all; the final line "
                        f"needs {INTERLOCK} and {BEST})")
    p.add_argument("--trace", type=Path, default=make_trace.TRACE, help="trace file (default: the committed one)")
    p.add_argument("--profiles", type=Path, default=PROFILES, help="provider profiles (default: the committed ones)")
    p.add_argument("--speed", type=float, default=1.0, help="time compression of arrivals (default 1: the "
                   "trace is already in replay seconds)")
    p.add_argument("--concurrency", type=int, default=256, help="most requests in flight (default 256)")
    p.add_argument("--drain", type=float, default=45.0,
                   help="seconds allowed after the last arrival before unfinished requests count as errors")
    p.add_argument("--gateway-log-level", default="warning", choices=["debug", "info", "warning", "error"],
                   help="log level of the gateway's Python processes (info logs every routing decision)")
    p.add_argument("--interlock-policy", type=orjson.loads, metavar="JSON",
                   help="replace Interlock's policy for an experiment, e.g. "
                        "'{\"kind\": \"objective\", \"minimize\": \"cost\", \"min_quality\": 0.8}'")
    p.add_argument("--workdir", type=Path, help="keep configs and logs here (default: a temp dir, removed)")
    p.add_argument("--json", type=Path, help="write every request's result and the summaries here")
    args = p.parse_args(argv)

    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        p.error(f"unknown policies: {', '.join(unknown)}")
    profiles = load_profiles(args.profiles)
    policies = dict(POLICIES)
    if args.interlock_policy is not None:
        policies[INTERLOCK] = args.interlock_policy
    if args.quick:
        rows = make_trace.generate(make_trace.SEED, make_trace.QUICK_DURATION_S)
        outage = scaled_outage(profiles.outage, make_trace.QUICK_DURATION_S / make_trace.DURATION_S)
    else:
        rows = make_trace.load(args.trace)
        outage = profiles.outage
    system_of = {r["id"]: r["system"] for r in rows}
    print(f"routing-eval: {len(rows)} requests over {max(r['t'] for r in rows) / args.speed:.0f} s, "
          f"outage of {outage.provider} {outage.start_s / args.speed:.0f}–{outage.end_s / args.speed:.0f} s, "
          f"policies: {', '.join(names)}", flush=True)

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="interlock-eval-")
        work = Path(tmp.name)
    else:
        work = args.workdir
        work.mkdir(parents=True, exist_ok=True)
    summaries: list[Summary] = []
    raw: dict[str, Any] = {}
    failed = False
    try:
        for name in names:
            began = time.monotonic()
            try:
                results, notes, samples = run_policy(name, policies[name], rows, profiles, outage, args, work)
            except (RuntimeError, OSError) as e:
                print(f"  {name}: could not run: {e}", flush=True)
                failed = True
                continue
            s = summarize(name, results, profiles.models, outage, system_of)
            summaries.append(s)
            raw[name] = {"policy": policies[name], "summary": asdict(s), "notes": notes,
                         "results": [asdict(r) for r in results], "envoy": samples}
            kinds = ", ".join(f"{k} ×{n}" for k, n in s.error_kinds.items())
            print(f"  {name}: {s.answered}/{s.requests} answered in {time.monotonic() - began:.0f} s; "
                  f"cost ${s.cost_usd:.4f}; TTFT p50/p99 {_ms(s.ttft_p50_s)}/{_ms(s.ttft_p99_s)} ms; "
                  f"SLO {s.slo_pct:.1f}%; quality miss {s.quality_miss_pct:.1f}%; errors {s.errors}"
                  f"{f' ({kinds})' if kinds else ''}; fallbacks {s.fallbacks}; {'; '.join(notes)}", flush=True)
            if any(r.error and r.error.startswith("timeout") for r in results):
                failed = True
    finally:
        if tmp is not None:
            tmp.cleanup()
    by_name = {s.policy: s for s in summaries}
    best = by_name.get(BEST)
    if summaries:
        print()
        print(table(summaries, best))
        missing = sum(s.usage_missing for s in summaries)
        if missing:
            print(f"note: {missing} answers carried no usage; they count as free")
    if args.json:
        args.json.write_bytes(orjson.dumps(raw, option=orjson.OPT_INDENT_2))
    if INTERLOCK in by_name and best is not None:
        print(final_line(by_name[INTERLOCK], best))
    else:
        print(f"routing-eval: no final line: it needs both {INTERLOCK} and {BEST} to have run")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
