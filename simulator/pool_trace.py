"""The fixed evaluation trace for self-hosted pools (issue 14, "Simulator and proof").

A day compressed into `duration_s` (default 600 s) of replay. Arrivals are a Poisson process
(thinning of a homogeneous one) with the diurnal rate

    rate(t) = trough + (peak − trough) · (1 − cos(2π t / duration_s)) / 2,   trough = peak / 4,

so the replay starts and ends at the trough ("midnight") and peaks halfway ("noon"); the mean
rate is 0.625 × peak. Prompt and output lengths are log-normal (medians 1,500 and 250 tokens,
sigma 0.6 each, clipped to [32, 8,192] and [1, 2,048]). Exactly 30 % of the requests (rounded)
start with one of 20 long shared prefixes (1,024 tokens = 64 whole KV blocks; cut to leave at
least 16 unique tokens when the prompt is shorter); exactly 70 % (rounded) are `interactive`
(TTFT SLO 1 s at p90), the rest `batch`. Everything is drawn from `random.Random(seed)`; the same
seed gives the same trace, byte for byte.

Prompt text: single words (each one token by the simulator's token rule: ``\\w+`` words count 1,
whitespace 0), separated by single spaces. A shared prefix is ``sysNN`` followed by words of its
own seeded stream; the unique part starts with ``qNNNNN`` (the request's index). So a simulated
server counts exactly `prompt_tokens` and finds the reuse from the text alone.

Traffic record (`write_trace_jsonl`, read by `interlock capacity`): one JSON object per line with
`t` (seconds from the start), `prompt_tokens`, `output_tokens`, `priority`, `model`.

Peak rate: `PEAK_RPS` = 4 requests/s (trough 1/s, about 1,500 requests in 600 s). Four default
simulated servers of `simulator.modelserver.pool_specs(4, seed=7)` (speeds 2.0, 1.32, 1.15, 1.0)
serve about 3.7 requests/s of this mix at full throughput and about 3.0/s within the 1 s p90 TTFT
SLO (one server at speed 1.0: 0.67/s and 0.55/s): the peak saturates the pool (it needs
spillover), the trough is served comfortably. Never imports `extproc`.
"""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from simulator.textgen import VOCABULARY

MODEL = "sim-llama-8b"
PEAK_RPS = 4.0
DURATION_S = 600.0
PROMPT_MEDIAN = 1500
OUTPUT_MEDIAN = 250
SIGMA = 0.6
PREFIXES = 20
PREFIX_TOKENS = 1024
PREFIX_SHARE = 0.30
INTERACTIVE_SHARE = 0.70
TTFT_SLO_S = 1.0

Priority = Literal["interactive", "batch"]


@dataclass(frozen=True)
class TraceRequest:
    """One request of the trace; `t` is seconds from the start, `prompt` counts `prompt_tokens`."""

    index: int
    t: float
    prompt: str
    prompt_tokens: int
    output_tokens: int
    priority: Priority
    model: str
    prefix_id: int | None

    @property
    def max_tokens(self) -> int:
        return self.output_tokens

    def chat_body(self, stream: bool = True) -> dict[str, Any]:
        """The OpenAI chat request that replays this entry (one user message, `max_tokens` set)."""
        body: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": self.prompt}],
                                "max_tokens": self.output_tokens}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def record(self) -> dict[str, Any]:
        """The traffic-record line of this entry."""
        return {"t": round(self.t, 6), "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens,
                "priority": self.priority, "model": self.model}


def rate_at(t: float, peak_rps: float = PEAK_RPS, duration_s: float = DURATION_S, trough_ratio: float = 0.25) -> float:
    """The diurnal arrival rate (requests/s) at `t`."""
    trough = peak_rps * trough_ratio
    return trough + (peak_rps - trough) * (1 - math.cos(2 * math.pi * t / duration_s)) / 2


def _lognormal(rng: random.Random, median: float, low: int, high: int) -> int:
    return min(high, max(low, round(median * math.exp(SIGMA * rng.gauss(0.0, 1.0)))))


def _words(rng: random.Random, n: int) -> list[str]:
    return rng.choices(VOCABULARY, k=n)


def make_trace(seed: int = 7, duration_s: float = DURATION_S, peak_rps: float = PEAK_RPS, *,
               trough_ratio: float = 0.25, model: str = MODEL, prefix_share: float = PREFIX_SHARE,
               interactive_share: float = INTERACTIVE_SHARE) -> list[TraceRequest]:
    """The evaluation trace (see the module docstring), ordered by arrival time."""
    if not 0 < duration_s <= DURATION_S:
        raise ValueError(f"duration_s: must be in (0, {DURATION_S:g}]")
    if peak_rps <= 0:
        raise ValueError("peak_rps: must be > 0")
    rng = random.Random(seed)
    times: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak_rps)
        if t >= duration_s:
            break
        if rng.random() * peak_rps < rate_at(t, peak_rps, duration_s, trough_ratio):
            times.append(t)
    n = len(times)
    prefixed = set(rng.sample(range(n), round(prefix_share * n)))
    interactive = set(rng.sample(range(n), round(interactive_share * n)))
    prefix_words = []
    for p in range(PREFIXES):
        stream = random.Random(f"{seed}:prefix:{p}")
        prefix_words.append([f"sys{p:02d}", *_words(stream, PREFIX_TOKENS - 1)])
    out: list[TraceRequest] = []
    for i, at in enumerate(times):
        prompt_tokens = _lognormal(rng, PROMPT_MEDIAN, 32, 8192)
        output_tokens = _lognormal(rng, OUTPUT_MEDIAN, 1, 2048)
        prefix_id = rng.randrange(PREFIXES) if i in prefixed else None
        shared = prefix_words[prefix_id][:min(PREFIX_TOKENS, prompt_tokens - 16)] if prefix_id is not None else []
        unique = [f"q{i:05d}", *_words(rng, prompt_tokens - len(shared) - 1)]
        out.append(TraceRequest(i, at, " ".join(shared + unique), prompt_tokens, output_tokens,
                                "interactive" if i in interactive else "batch", model, prefix_id))
    return out


def write_trace_jsonl(path: str | Path, requests: list[TraceRequest] | None = None, seed: int = 7) -> Path:
    """Write the traffic record of `requests` (default: `make_trace(seed)`) to `path`."""
    requests = make_trace(seed) if requests is None else requests
    target = Path(path)
    target.write_bytes(b"".join(orjson.dumps(r.record()) + b"\n" for r in requests))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.pool_trace",
                                     description="Write the fixed pool evaluation trace as a traffic record (JSONL).")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--duration", type=float, default=DURATION_S, help="seconds of replay (≤ 600)")
    parser.add_argument("--peak-rps", type=float, default=PEAK_RPS)
    parser.add_argument("--out", required=True, help="JSONL file to write")
    args = parser.parse_args(argv)
    try:
        trace = make_trace(args.seed, args.duration, args.peak_rps)
    except ValueError as exc:
        parser.error(str(exc))
    write_trace_jsonl(args.out, trace)
    print(f"{len(trace)} requests written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
