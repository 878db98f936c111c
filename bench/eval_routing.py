#!/usr/bin/env python3
"""Trace-driven evaluation of routing policies through the running gateway (`make eval-routing`).

Phases, each on a fresh provider simulator (`interlock simulate`) and a fresh gateway (`interlock
run`: real Envoy + ext_proc workers) whose route `eval` lists every model of
`bench/eval/profiles.yaml` under the policy, with the profiles' latency and answer-length behaviour
sent to the simulator, requests sent to `POST /v1/chat/completions` with `"model": "eval"` (arrival
times honoured, bounded concurrency, one httpx client):

- `trace`, once per policy: `bench/eval/trace.jsonl` (~75 % of requests without `max_tokens`),
  with the outage of `profiles.yaml` switched on and off midway through the simulator's control API.
- `slowdown` (Interlock's policy): steady traffic at the trace's mean rate; at `slowdown.start_s`
  the model that served most of the route in the seconds before gets a 2.5 s TTFT, healed at
  `heal_s`; `react_s` and `recover_s` measure how fast its traffic left and came back.
- `slowdown_quarter`: the same at a quarter of the rate.
- `ratelimit` (Interlock's policy): steady traffic; the provider serving most of the route gets a
  request quota (429s with its rate-limit headers) for a stretch; errors and the return measured.

Nothing of the gateway is modelled: the figures are what a client measured.

Per request it records: client-side TTFT (streamed: time to the first SSE `data:` line; not
streamed: time to the whole answer), when it was sent, the served model (`x-interlock-model`) and
attempts (`x-interlock-attempts`), the answer's usage, and any error (a non-200, a broken or
unfinished stream, a transport error). From those (the trace phase):

- cost: usage × the served model's prices (USD; failed attempts are free, as with providers);
- cost vs oracle: each answered request priced at its model's expected answer length, against the
  model an oracle knowing every model's true answer lengths and latencies would have chosen under
  the route's constraints (`bench/eval/phases.py`): whether routing priced the models right;
- TTFT p50/p99: over interactive (streamed) requests that succeeded, linear-interpolated quantiles;
- SLO attainment: share of all requests meeting their class's SLO (`SLO`: interactive TTFT ≤ 1.5 s,
  batch whole answer ≤ 30 s); an error misses it;
- quality misses: share of answered requests served by a model whose quality is below the
  request's hidden requirement (the trace's `quality`, never sent);
- errors: client-visible failures; fallbacks: answers that took more than one attempt.

Prints a progress line per policy and phase, a table, and last, for Interlock's policy:
    routing-eval: cost_vs_best=-NN% slo=NN.N% quality_miss=N.N% errors=N react_s=T recover_s=T
    react_s_quarter=T recover_s_quarter=T cost_vs_oracle=+NN% rl_return_s=T
on one line (cost relative to always-best-quality on the same trace; errors over every phase of
Interlock's policy; T in seconds, `never` when it did not happen within the phase, `n/a` when there
was nothing to measure, `-` when the phase did not run). Exit status 1 when a policy or phase could
not be run (a process failed to start, the time bound was hit, no model to slow down), 0 otherwise
— whether the targets are met is for the reader of the line. See bench/eval/README.md for the
design and every choice.
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
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this folder is sys.path[0] and its bench.py would shadow the `bench` namespace.
sys.path[:] = [str(ROOT)] + [x for x in sys.path if Path(x or ".").resolve() != ROOT / "bench"]

import orjson  # noqa: E402
import yaml  # noqa: E402

from bench.eval import make_trace  # noqa: E402
from bench.eval import phases as ph  # noqa: E402
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
class Slowdown:
    """The slowdown phases' timeline (seconds from the start of the phase) and the patch."""

    start_s: float
    heal_s: float
    end_s: float
    pre_s: float
    window: int
    behaviour: dict[str, Any]


@dataclass(frozen=True)
class RateLimit:
    """The rate-limit phase's timeline (seconds from the start of the phase) and the quota patch."""

    start_s: float
    end_s: float
    run_s: float
    pre_s: float
    window: int
    behaviour: dict[str, Any]


@dataclass(frozen=True)
class Profiles:
    providers: tuple[dict[str, Any], ...]
    models: dict[str, ModelProfile]
    outage: Outage
    slowdown: Slowdown
    ratelimit: RateLimit


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
    o, sd, rl = doc["outage"], doc["slowdown"], doc["ratelimit"]
    return Profiles(tuple(doc["providers"]), models,
                    Outage(o["provider"], float(o["start_s"]), float(o["end_s"]), dict(o["behaviour"])),
                    Slowdown(float(sd["start_s"]), float(sd["heal_s"]), float(sd["end_s"]), float(sd["pre_s"]),
                             int(sd["window"]), dict(sd["behaviour"])),
                    RateLimit(float(rl["start_s"]), float(rl["end_s"]), float(rl["run_s"]), float(rl["pre_s"]),
                              int(rl["window"]), dict(rl["behaviour"])))


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


def scaled_phases(profiles: Profiles, factor: float) -> Profiles:
    """The profiles with the slowdown and rate-limit timelines scaled (`--quick`)."""
    sd, rl = profiles.slowdown, profiles.ratelimit
    return Profiles(profiles.providers, profiles.models, profiles.outage,
                    Slowdown(sd.start_s * factor, sd.heal_s * factor, sd.end_s * factor, sd.pre_s * factor,
                             sd.window, sd.behaviour),
                    RateLimit(rl.start_s * factor, rl.end_s * factor, rl.run_s * factor, rl.pre_s * factor,
                              rl.window, rl.behaviour))


def constraints(policy: dict[str, Any]) -> ph.Constraints:
    """The route constraints of an objective policy, for the oracle (none for other kinds)."""
    return ph.Constraints(float(policy.get("min_quality", 0.0)), ph.duration_s(policy.get("max_ttft")),
                          float(policy.get("ttft_quantile", 0.9)))


# -- results and metrics (pure) ---------------------------------------------------------------------


@dataclass
class Result:
    """What the client saw for one trace row."""

    id: int
    cls: str
    required_quality: float
    scheduled_s: float = 0.0
    lag_s: float = 0.0  # how late it was sent (client saturation), seconds
    sent_s: float = 0.0  # when it was sent, seconds from the start of the replay
    max_tokens: int | None = None  # the request's, if it had one
    tools: int = 0  # tool definitions it carried
    stream: bool = False
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


def priced(r: Result, model: str, models: dict[str, ModelProfile]) -> float:
    """USD of an answered request on `model` at that model's expected answer (`phases.expected_cost`)."""
    return ph.expected_cost(models[model], r.prompt_tokens, r.max_tokens, r.completion_tokens if r.tools else None)


def oracle_costs(results: Iterable[Result], models: dict[str, ModelProfile],
                 c: ph.Constraints) -> tuple[float, float, float | None]:
    """(Σ expected cost on the serving model, Σ expected cost on the oracle's choice, % of them
    served by the oracle's choice) over answered requests served by a known model (see
    `bench/eval/phases.py`)."""
    served = oracle = 0.0
    matched = n = 0
    for r in results:
        if not r.ok or r.model not in models:
            continue
        choice = ph.oracle_choice(models, c, r.prompt_tokens, r.max_tokens, r.completion_tokens if r.tools else None)
        served += priced(r, r.model, models)
        oracle += priced(r, choice or r.model, models)
        matched += choice == r.model
        n += 1
    return served, oracle, _pct(matched, n) if n else None


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
    expected_usd: float = 0.0  # Σ expected cost on the serving models (see `oracle_costs`)
    oracle_usd: float = 0.0  # Σ expected cost on the oracle's choices
    oracle_match_pct: float | None = None  # answered requests served by the oracle's choice


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
              slo: dict[str, float] = SLO, route: ph.Constraints | None = None) -> Summary:
    answered = [r for r in results if r.ok]
    interactive = [r for r in results if r.cls == "interactive"]
    in_outage = [r for r in results if outage and outage.start_s <= r.scheduled_s < outage.end_s]
    ttfts = [r.ttft_s for r in answered if r.cls == "interactive" and r.ttft_s is not None]
    batch = [r.total_s for r in answered if r.cls == "batch" and r.total_s is not None]
    shared = [k for k in make_trace.SYSTEM_PROMPTS]
    expected, oracle, matched = oracle_costs(results, models, route or ph.Constraints())
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
        expected_usd=expected,
        oracle_usd=oracle,
        oracle_match_pct=matched,
    )


def cost_vs(s: Summary, base: Summary) -> float:
    """Relative cost difference in percent (negative = cheaper than `base`)."""
    return 100.0 * (s.cost_usd / base.cost_usd - 1.0) if base.cost_usd else 0.0


def cost_vs_oracle(s: Summary) -> float:
    """Expected cost on the served models relative to the oracle's choices, percent (0 = priced right)."""
    return 100.0 * (s.expected_usd / s.oracle_usd - 1.0) if s.oracle_usd else 0.0


def final_line(s: Summary, best: Summary, errors: int | None = None, slow: ph.Shift | None = None,
               slow_quarter: ph.Shift | None = None, ratelimit: ph.Shift | None = None) -> str:
    """The headline: the trace's figures for `s` against `best`, `errors` over every phase of `s`'s
    policy (default: the trace's), then the phases' times (`-` where a phase did not run)."""
    def t(x: ph.Shift | None, recover: bool) -> str:
        return ph.fmt_s(None if x is None else x.recover_s if recover else x.react_s)

    return (f"routing-eval: cost_vs_best={cost_vs(s, best):+.0f}% slo={s.slo_pct:.1f}% "
            f"quality_miss={s.quality_miss_pct:.1f}% errors={s.errors if errors is None else errors} "
            f"react_s={t(slow, False)} recover_s={t(slow, True)} "
            f"react_s_quarter={t(slow_quarter, False)} recover_s_quarter={t(slow_quarter, True)} "
            f"cost_vs_oracle={cost_vs_oracle(s):+.0f}% rl_return_s={t(ratelimit, True)}")


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f}"


def table(summaries: Sequence[Summary], best: Summary | None) -> str:
    head = ("policy", "cost $", "vs best", "vs oracle", "oracle's pick %", "TTFT p50 ms", "TTFT p99 ms", "SLO %", "SLO outage %",
            "quality miss %", "errors", "fallbacks", "sticky %", "served mix")
    rows = [head]
    for s in summaries:
        share = ", ".join(f"{m} {_pct(n, s.answered):.0f}%" for m, n in s.mix.items())
        rows.append((s.policy, f"{s.cost_usd:.4f}", f"{cost_vs(s, best):+.0f}%" if best else "-",
                     f"{cost_vs_oracle(s):+.0f}%", "-" if s.oracle_match_pct is None else f"{s.oracle_match_pct:.0f}",
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


def restored(m: ModelProfile, patch: dict[str, Any]) -> dict[str, Any]:
    """The patch that undoes `patch` for `m`: its own value of each field `patch` set, else the
    simulator's default."""
    from simulator.state import Behaviour

    default = Behaviour()
    return {k: m.behaviour.get(k, getattr(default, k)) for k in patch}


Control = Callable[[Any, str, float, list[Result], list[str]], Coroutine[Any, Any, None]]
"""What happens to the providers during a replay: (httpx client, simulator URL, t0 on the monotonic
clock, the replay's results as they fill in, notes to append to)."""


async def _until(t0: float, at_s: float) -> None:
    await asyncio.sleep(max(0.0, t0 + at_s - time.monotonic()))


def outage_control(profiles: Profiles, outage: Outage, speed: float) -> Control:
    """The trace phase's outage: `outage.behaviour` for every model of its provider, then restored."""
    hit = [m for m in profiles.models.values() if m.provider == outage.provider]

    async def run(http: Any, sim_url: str, t0: float, results: list[Result], notes: list[str]) -> None:
        await _until(t0, outage.start_s / speed)
        for m in hit:
            await _control(http, sim_url, m.upstream_model, outage.behaviour)
        notes.append(f"outage on at {time.monotonic() - t0:.1f} s")
        await _until(t0, outage.end_s / speed)
        for m in hit:
            await _control(http, sim_url, m.upstream_model, restored(m, outage.behaviour))
        notes.append(f"outage off at {time.monotonic() - t0:.1f} s")

    return run


def top_model(results: Iterable[Result], t_from: float, t_to: float) -> str | None:
    """The model that served the most requests sent in [t_from, t_to) (None: no answer seen yet)."""
    seen = Counter(r.model for r in results if r.model is not None and t_from <= r.sent_s < t_to)
    return seen.most_common(1)[0][0] if seen else None


def event_control(profiles: Profiles, start_s: float, end_s: float, pre_s: float, patch: dict[str, Any],
                  whole_provider: bool, chosen: dict[str, Any]) -> Control:
    """At `start_s`, `patch` the model that served the largest share in the `pre_s` seconds before
    (with `whole_provider`: every model of its provider); at `end_s` restore them. The models hit
    go into `chosen["targets"]` (empty when no request had been answered)."""

    async def run(http: Any, sim_url: str, t0: float, results: list[Result], notes: list[str]) -> None:
        chosen["targets"] = []
        await _until(t0, start_s)
        top = top_model(results, start_s - pre_s, start_s)
        if top is None or top not in profiles.models:
            notes.append(f"nothing to act on at {start_s:.0f} s: no answer in the {pre_s:.0f} s before")
            return
        provider = profiles.models[top].provider
        hit = [m for m in profiles.models.values() if m.provider == provider] if whole_provider else \
            [profiles.models[top]]
        chosen["targets"] = [m.name for m in hit]
        for m in hit:
            await _control(http, sim_url, m.upstream_model, patch)
        notes.append(f"{', '.join(chosen['targets'])} {patch} at {time.monotonic() - t0:.1f} s")
        await _until(t0, end_s)
        for m in hit:
            await _control(http, sim_url, m.upstream_model, restored(m, patch))
        notes.append(f"restored at {time.monotonic() - t0:.1f} s")

    return run


def _result(row: dict[str, Any]) -> Result:
    return Result(row["id"], row["class"], row["quality"], scheduled_s=row["t"], max_tokens=row["max_tokens"],
                  tools=row["tools"], stream=row["stream"])


async def _one(http: Any, url: str, r: Result, body: bytes, t0: float, speed: float,
               sem: asyncio.Semaphore) -> Result:
    await asyncio.sleep(max(0.0, t0 + r.scheduled_s / speed - time.monotonic()))
    async with sem:
        began = time.monotonic()
        r.lag_s = max(0.0, began - (t0 + r.scheduled_s / speed))
        r.sent_s = began - t0
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
                elif r.stream:
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


async def replay(url: str, sim_url: str, rows: list[dict[str, Any]], profiles: Profiles, control: Control,
                 speed: float, concurrency: int, deadline_s: float,
                 admin: str | None = None) -> tuple[list[Result], list[str], list[Any]]:
    """Send every row at its time while `control` acts on the simulator; returns the results (trace
    order), event notes and Envoy samples."""
    import httpx

    bodies = [orjson.dumps(make_trace.build_request(row, ROUTE)) for row in rows]
    results = [_result(row) for row in rows]
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
        control_task = asyncio.create_task(control(http, sim_url, t0, results, notes))
        tasks = [asyncio.create_task(_one(http, f"{url}/v1/chat/completions", r, body, t0, speed, sem))
                 for r, body in zip(results, bodies, strict=True)]
        finished, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for t in pending:
            t.cancel()
        stop.set()
        if control_task.done() and not control_task.cancelled() and control_task.exception() is not None:
            notes.append(f"control failed: {control_task.exception()}")
        control_task.cancel()
        await asyncio.gather(lag_task, control_task, envoy_task, *pending, return_exceptions=True)
    for r, t in zip(results, tasks, strict=True):
        if t not in finished or t.exception() is not None:
            r.error = "timeout: not finished within the run's time bound"
    if lags:
        notes.append(f"client loop lag p99 {(percentile(lags, 0.99) or 0) * 1000:.0f} ms, "
                     f"max {max(lags) * 1000:.0f} ms")
    return results, notes, samples


def run_policy(name: str, policy: dict[str, Any], rows: list[dict[str, Any]], profiles: Profiles,
               control: Control, args: argparse.Namespace, work: Path,
               speed: float = 1.0) -> tuple[list[Result], list[str], list[Any]]:
    """Fresh simulator + gateway for one policy (or phase: `name` is its folder), the replay, then both stopped."""
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
        duration = max(r["t"] for r in rows) / speed
        return asyncio.run(replay(url, sim_url, rows, profiles, control, speed, args.concurrency,
                                  duration + args.drain, f"http://127.0.0.1:{ports['admin']}"))
    finally:
        if gateway is not None:
            gateway.stop(signal.SIGINT)
        sim.stop(signal.SIGTERM)


PHASES = ("trace", "slowdown", "slowdown_quarter", "ratelimit")


@dataclass
class PhaseRun:
    """What one of Interlock's phases measured."""

    phase: str
    rate: float
    requests: int
    answered: int
    errors: int
    slo_pct: float
    targets: list[str]
    shift: ph.Shift
    error_kinds: dict[str, int]


def phase_rows(phase: str, rate: float, profiles: Profiles) -> list[dict[str, Any]]:
    """The steady traffic of a phase (seeded per phase) at `rate` requests per second."""
    seed = make_trace.SEED + 1 + PHASES.index(phase)
    run_s = profiles.ratelimit.run_s if phase == "ratelimit" else profiles.slowdown.end_s
    return make_trace.steady(seed, run_s, rate)


def run_phase(phase: str, policy: dict[str, Any], rate: float, profiles: Profiles, args: argparse.Namespace,
              work: Path) -> tuple[PhaseRun, list[Result], list[str]]:
    """One of Interlock's phases on a fresh simulator and gateway: steady traffic at `rate`, the
    slowdown or the rate-limit window on the model the policy was using most, the shift measured."""
    rows = phase_rows(phase, rate, profiles)
    chosen: dict[str, Any] = {}
    if phase == "ratelimit":
        rl = profiles.ratelimit
        start, heal, end, pre_s, window = rl.start_s, rl.end_s, rl.run_s, rl.pre_s, rl.window
        control = event_control(profiles, start, heal, pre_s, rl.behaviour, True, chosen)
    else:
        sd = profiles.slowdown
        start, heal, end, pre_s, window = sd.start_s, sd.heal_s, sd.end_s, sd.pre_s, sd.window
        control = event_control(profiles, start, heal, pre_s, sd.behaviour, False, chosen)
    results, notes, _ = run_policy(f"{INTERLOCK}-{phase}", policy, rows, profiles, control, args, work)
    targets = set(chosen.get("targets") or [])
    shift = ph.shift(results, targets, start, heal, end, pre_s, window) if targets else \
        ph.Shift(None, None, ph.NOT_MEASURED, ph.NOT_MEASURED)
    answered = sum(r.ok for r in results)
    return PhaseRun(phase, rate, len(results), answered, len(results) - answered,
                    _pct(sum(meets_slo(r) for r in results), len(results)), sorted(targets), shift,
                    dict(Counter((r.error or "").split(":")[0] for r in results if not r.ok))), results, notes


def phase_line(run: PhaseRun, seconds: float, notes: Sequence[str]) -> str:
    sh = run.shift
    pre = "-" if sh.pre_share is None else f"{100 * sh.pre_share:.0f}%"
    low = "-" if sh.low_share is None else f"{100 * sh.low_share:.0f}%"
    kinds = ", ".join(f"{k} ×{n}" for k, n in run.error_kinds.items())
    which = "return" if run.phase == "ratelimit" else "recover"
    return (f"  {INTERLOCK} {run.phase} at {run.rate:.2f} req/s: {run.answered}/{run.requests} answered in "
            f"{seconds:.0f} s; errors {run.errors}{f' ({kinds})' if kinds else ''}; SLO {run.slo_pct:.1f}%; "
            f"{'+'.join(run.targets) or 'no target'}: share before {pre}, lowest window {low}, "
            f"react_s {ph.fmt_s(sh.react_s)}, {which}_s {ph.fmt_s(sh.recover_s)}; {'; '.join(notes)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Design, profiles, trace, phases and figures: bench/eval/README.md.")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: a {make_trace.QUICK_DURATION_S:.0f} s trace from the same generator "
                        "(outage scaled to it) and the phases' timelines at a quarter, instead of the committed ones")
    p.add_argument("--policies", default=",".join(POLICIES),
                   help=f"comma-separated subset of: {', '.join(POLICIES)} replayed on the trace (default: "
                        f"all; the final line needs {INTERLOCK} and {BEST})")
    p.add_argument("--phases", default=",".join(PHASES),
                   help=f"comma-separated subset of: {', '.join(PHASES)} (default: all; the phases after "
                        f"`trace` run {INTERLOCK}'s policy only)")
    p.add_argument("--trace", type=Path, default=make_trace.TRACE, help="trace file (default: the committed one)")
    p.add_argument("--profiles", type=Path, default=PROFILES, help="provider profiles (default: the committed ones)")
    p.add_argument("--speed", type=float, default=1.0, help="time compression of the trace's arrivals (default 1: "
                   "the trace is already in replay seconds; the other phases run in real time)")
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
    wanted = [n.strip() for n in args.phases.split(",") if n.strip()]
    unknown_phases = [n for n in wanted if n not in PHASES]
    if unknown or unknown_phases:
        p.error(f"unknown policies or phases: {', '.join(unknown + unknown_phases)}")
    profiles = load_profiles(args.profiles)
    policies = dict(POLICIES)
    if args.interlock_policy is not None:
        policies[INTERLOCK] = args.interlock_policy
    if args.quick:
        rows = make_trace.generate(make_trace.SEED, make_trace.QUICK_DURATION_S)
        outage = scaled_outage(profiles.outage, make_trace.QUICK_DURATION_S / make_trace.DURATION_S)
        profiles = scaled_phases(profiles, 0.25)
    else:
        rows = make_trace.load(args.trace)
        outage = profiles.outage
    rate = len(rows) / max(r["t"] for r in rows)
    route = constraints(policies[INTERLOCK])
    system_of = {r["id"]: r["system"] for r in rows}
    if "trace" not in wanted:
        names = []
    print(f"routing-eval: trace {len(rows)} requests over {max(r['t'] for r in rows) / args.speed:.0f} s "
          f"({sum(r['max_tokens'] is None for r in rows) / len(rows):.0%} without max_tokens), outage of "
          f"{outage.provider} {outage.start_s / args.speed:.0f}–{outage.end_s / args.speed:.0f} s, policies: "
          f"{', '.join(names) or '-'}; {INTERLOCK}'s phases: {', '.join(w for w in wanted if w != 'trace') or '-'} "
          f"at {rate:.2f} req/s (quarter {rate / 4:.2f})", flush=True)

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="interlock-eval-")
        work = Path(tmp.name)
    else:
        work = args.workdir
        work.mkdir(parents=True, exist_ok=True)
    summaries: list[Summary] = []
    runs: dict[str, PhaseRun] = {}
    raw: dict[str, Any] = {}
    failed = False
    try:
        for name in names:
            began = time.monotonic()
            try:
                results, notes, samples = run_policy(name, policies[name], rows, profiles,
                                                     outage_control(profiles, outage, args.speed), args, work,
                                                     args.speed)
            except (RuntimeError, OSError) as e:
                print(f"  {name}: could not run: {e}", flush=True)
                failed = True
                continue
            notes += envoy_notes(samples, outage, args.speed)
            s = summarize(name, results, profiles.models, outage, system_of, route=route)
            summaries.append(s)
            raw[name] = {"policy": policies[name], "summary": asdict(s), "notes": notes,
                         "results": [asdict(r) for r in results], "envoy": samples}
            kinds = ", ".join(f"{k} ×{n}" for k, n in s.error_kinds.items())
            print(f"  {name}: {s.answered}/{s.requests} answered in {time.monotonic() - began:.0f} s; "
                  f"cost ${s.cost_usd:.4f} ({cost_vs_oracle(s):+.0f}% vs oracle, "
                  f"{s.oracle_match_pct or 0:.0f}% on the oracle's pick); TTFT p50/p99 "
                  f"{_ms(s.ttft_p50_s)}/{_ms(s.ttft_p99_s)} ms; SLO {s.slo_pct:.1f}%; quality miss "
                  f"{s.quality_miss_pct:.1f}%; errors {s.errors}{f' ({kinds})' if kinds else ''}; fallbacks "
                  f"{s.fallbacks}; {'; '.join(notes)}", flush=True)
            if any(r.error and r.error.startswith("timeout") for r in results):
                failed = True
        for phase in (w for w in PHASES[1:] if w in wanted):
            began = time.monotonic()
            at = rate / 4 if phase == "slowdown_quarter" else rate
            try:
                run, results, notes = run_phase(phase, policies[INTERLOCK], at, profiles, args, work)
            except (RuntimeError, OSError) as e:
                print(f"  {INTERLOCK} {phase}: could not run: {e}", flush=True)
                failed = True
                continue
            runs[phase] = run
            raw[f"{INTERLOCK}:{phase}"] = {"run": asdict(run), "notes": notes,
                                           "results": [asdict(r) for r in results]}
            print(phase_line(run, time.monotonic() - began, notes), flush=True)
            if not run.targets or any(r.error and r.error.startswith("timeout") for r in results):
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
        errors = by_name[INTERLOCK].errors + sum(r.errors for r in runs.values())
        shifts = {k: v.shift for k, v in runs.items()}
        print(final_line(by_name[INTERLOCK], best, errors, shifts.get("slowdown"), shifts.get("slowdown_quarter"),
                         shifts.get("ratelimit")))
    else:
        print(f"routing-eval: no final line: it needs both {INTERLOCK} and {BEST} to have run on the trace")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
