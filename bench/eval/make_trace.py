#!/usr/bin/env python3
"""Seeded trace generator for the routing evaluation: writes bench/eval/trace.jsonl.

    .venv/bin/python bench/eval/make_trace.py            # regenerate the committed trace
    .venv/bin/python bench/eval/make_trace.py --check    # exit 1 if the committed file differs

One JSON object per line, sorted by arrival time `t` (seconds from the start of the replay):

    {"id": 17, "t": 3.214, "class": "interactive", "stream": true, "system": "agent-support",
     "user_tokens": 153, "max_tokens": null, "tools": 2, "quality": 0.74}

- `class`: "interactive" (streamed; SLO on time to first token) or "batch" (not streamed; SLO on the
  time to the whole answer). The SLOs are the runner's (`bench/eval_routing.py`, `SLO`).
- `system`: the id of a shared system prompt (`SYSTEM_PROMPTS`, long and reused, so prompt-cache
  affinity has something to do), "short" (a one-line system prompt) or null (no system message).
- `user_tokens`: the length of the user message in the simulator's tokens.
- `max_tokens`: the request's `max_tokens`, or null (~75 % of rows) for a request sent without one,
  as SDK calls usually are. The answer's length is the serving model's (its profile's median,
  spread per request: `profiles.yaml`), cut at `max_tokens` when the request has one; a request
  with tools gets a tool call instead.
- `tools`: how many tool definitions the request carries (0 = none).
- `quality`: the quality level the request needs, hidden from the router (the runner never sends
  it): served by a model of lower quality, the request counts as a quality miss.

`build_request(row)` turns a row into the exact Chat Completions body the runner sends; text is
made of words from a fixed vocabulary, seeded by the row's id, so each request is unique and every
run sends the same bytes.

The distributions (all drawn from `random.Random(SEED)`, in a fixed order):

| what | interactive (~78 %) | batch (~22 %) |
|---|---|---|
| arrivals | Poisson, 8/s with a ±35 % wave (period 40 s) | Poisson trickle 1.2/s to t=40 s, plus two bursts of 40 in 3 s (t=8 s, t=27 s) |
| user tokens | log-normal, median 150, clipped to [8, 4000] | log-normal, median 1800, clipped to [200, 8000] |
| system prompt | 45 % one of 4 shared agent prompts (700–3600 tokens), 35 % short, 20 % none | 35 % the shared extraction prompt (1200 tokens), 65 % short |
| `max_tokens` | null for 75 %; else log-normal, median 160, clipped to [16, 900] | null for 75 %; else log-normal, median 450, clipped to [64, 1400] |
| tools | 25 % carry 1–4 tools | none |
| required quality | 30 % "simple" U[0.30, 0.60]; 66 % "standard" U[0.60, 0.82]; 4 % "hard" U[0.86, 0.95] (both classes) | |

Required quality is drawn independently of everything else: the router cannot infer it, and no
visible feature predicts it. With the committed profiles (`profiles.yaml`) only the best-quality
model meets a "hard" request, the cheapest model meets only "simple" ones, and every mid-priced
model meets "simple" and "standard" ones.

`steady(seed, duration_s, rate)` draws rows the same way at a constant Poisson rate (78 %
interactive) without the wave and the bursts: the traffic of the runner's slowdown and rate-limit
phases, where a share of traffic per time window is measured.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
TOKEN_RE = re.compile(r"\w+|[^\w\s]")  # the simulator's token rule (extproc/simulator/textgen.py)
TRACE = HERE / "trace.jsonl"
SEED = 20251101
DURATION_S = 50.0
QUICK_DURATION_S = 10.0
NO_MAX_TOKENS = 0.75  # share of rows sent without `max_tokens`
INTERACTIVE_SHARE = 0.78  # of `steady` rows

SYSTEM_PROMPTS = {  # id → tokens
    "agent-support": 700,
    "agent-coding": 3600,
    "agent-sales": 1500,
    "agent-research": 2500,
    "batch-extract": 1200,
}
AGENTS = ("agent-support", "agent-coding", "agent-sales", "agent-research")
QUALITY_TIERS = (  # name, share, low, high
    ("simple", 0.30, 0.30, 0.60),
    ("standard", 0.66, 0.60, 0.82),
    ("hard", 0.04, 0.86, 0.95),
)

WORDS = (
    "account", "order", "invoice", "refund", "shipment", "customer", "product", "review", "summary",
    "report", "quarter", "revenue", "latency", "cluster", "service", "database", "query", "index",
    "schema", "migration", "release", "feature", "incident", "ticket", "priority", "owner", "deadline",
    "contract", "clause", "policy", "region", "market", "forecast", "budget", "team", "meeting", "agenda",
    "function", "variable", "module", "test", "error", "stack", "trace", "request", "response", "token",
    "model", "prompt", "answer", "question", "please", "explain", "compare", "list", "draft", "rewrite",
    "translate", "classify", "extract", "the", "a", "of", "to", "and", "in", "for", "with", "on", "by",
)
TOOLS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("get_order", {"order_id": {"type": "string"}}),
    ("search_docs", {"query": {"type": "string"}, "limit": {"type": "integer"}}),
    ("create_ticket", {"title": {"type": "string"}, "priority": {"type": "string", "enum": ["low", "high"]}}),
    ("run_sql", {"sql": {"type": "string"}}),
    ("get_weather", {"city": {"type": "string"}}),
    ("send_email", {"to": {"type": "string"}, "body": {"type": "string"}}),
)


def _lognormal(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, round(median * math.exp(sigma * rng.gauss(0.0, 1.0)))))


def _poisson_times(rng: random.Random, rate: Callable[[float], float], until: float) -> list[float]:
    """Arrival times in [0, until) of a Poisson process of time-varying `rate(t)` (by thinning
    against its peak, sampled every 0.1 s)."""
    peak = max(rate(x / 10) for x in range(int(until * 10) + 1))
    out: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= until:
            return out
        if rng.random() < rate(t) / peak:
            out.append(t)


def _quality(rng: random.Random) -> float:
    u = rng.random()
    acc = 0.0
    for _, share, lo, hi in QUALITY_TIERS:
        acc += share
        if u < acc:
            return round(rng.uniform(lo, hi), 2)
    _, _, lo, hi = QUALITY_TIERS[-1]
    return round(rng.uniform(lo, hi), 2)


def generate(seed: int = SEED, duration_s: float = DURATION_S) -> list[dict[str, Any]]:
    """The trace's rows (see the module docstring); `duration_s` scales every time (and burst)."""
    rng = random.Random(seed)
    k = duration_s / DURATION_S

    def wave(t: float) -> float:
        return 8.0 * (1 + 0.35 * math.sin(2 * math.pi * t / (40.0 * k)))

    arrivals = [(t, "interactive") for t in _poisson_times(rng, wave, duration_s)]
    arrivals += [(t, "batch") for t in _poisson_times(rng, lambda t: 1.2, 40.0 * k)]
    for at in (8.0, 27.0):
        arrivals += [(at * k + rng.uniform(0, 3.0 * k), "batch") for _ in range(max(1, round(40 * k)))]
    arrivals.sort()
    return [_row(rng, i, t, cls) for i, (t, cls) in enumerate(arrivals)]


def steady(seed: int, duration_s: float, rate: float) -> list[dict[str, Any]]:
    """Rows at a constant Poisson `rate` (per second) over [0, `duration_s`), drawn as `generate`'s."""
    rng = random.Random(seed)
    arrivals = [(t, "interactive") for t in _poisson_times(rng, lambda t: rate * INTERACTIVE_SHARE, duration_s)]
    arrivals += [(t, "batch") for t in _poisson_times(rng, lambda t: rate * (1 - INTERACTIVE_SHARE), duration_s)]
    arrivals.sort()
    return [_row(rng, i, t, cls) for i, (t, cls) in enumerate(arrivals)]


def _row(rng: random.Random, i: int, t: float, cls: str) -> dict[str, Any]:
    if cls == "interactive":
        u = rng.random()
        system = rng.choice(AGENTS) if u < 0.45 else "short" if u < 0.80 else None
        user = _lognormal(rng, 150, 1.0, 8, 4000)
        max_tokens: int | None = _lognormal(rng, 160, 0.7, 16, 900)
        tools = rng.randint(1, 4) if rng.random() < 0.25 else 0
    else:
        system = "batch-extract" if rng.random() < 0.35 else "short"
        user = _lognormal(rng, 1800, 0.6, 200, 8000)
        max_tokens = _lognormal(rng, 450, 0.5, 64, 1400)
        tools = 0
    if rng.random() < NO_MAX_TOKENS:
        max_tokens = None
    return {"id": i, "t": round(t, 3), "class": cls, "stream": cls == "interactive", "system": system,
            "user_tokens": user, "max_tokens": max_tokens, "tools": tools, "quality": _quality(rng)}


def dumps(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def load(path: Path = TRACE) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


_SYSTEM_CACHE: dict[str, str] = {}


def system_text(name: str) -> str:
    """The shared system prompt `name` (seeded by its name: identical in every request)."""
    text = _SYSTEM_CACHE.get(name)
    if text is None:
        n = SYSTEM_PROMPTS[name]
        head = f"You are the {name} assistant."
        text = head + " " + _words(random.Random(f"system:{name}"), n - len(TOKEN_RE.findall(head)))
        _SYSTEM_CACHE[name] = text
    return text


def build_request(row: dict[str, Any], model: str = "eval") -> dict[str, Any]:
    """The Chat Completions body for a trace row (deterministic)."""
    rng = random.Random(f"request:{row['id']}")
    messages: list[dict[str, Any]] = []
    if row["system"] == "short":
        messages.append({"role": "system", "content": "You are a helpful assistant. Answer concisely."})
    elif row["system"] is not None:
        messages.append({"role": "system", "content": system_text(row["system"])})
    messages.append({"role": "user", "content": f"Request {row['id']}: " + _words(rng, max(1, row["user_tokens"] - 3))})
    body: dict[str, Any] = {"model": model, "messages": messages}
    if row["max_tokens"] is not None:
        body["max_tokens"] = row["max_tokens"]
    if row["tools"]:
        body["tools"] = [{"type": "function", "function": {
            "name": name, "description": f"Call {name.replace('_', ' ')}.",
            "parameters": {"type": "object", "properties": props, "required": sorted(props)}}}
            for name, props in rng.sample(TOOLS, row["tools"])]
    if row["stream"]:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="compare with the committed trace instead of writing")
    p.add_argument("-o", "--output", type=Path, default=TRACE, help=f"where to write (default: {TRACE})")
    args = p.parse_args(argv)
    data = dumps(generate())
    if args.check:
        same = args.output.exists() and args.output.read_bytes() == data
        print("trace: up to date" if same else f"trace: {args.output} differs from the generator's output")
        return 0 if same else 1
    args.output.write_bytes(data)
    print(f"trace: wrote {len(data.splitlines())} requests to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
