"""Capacity planning for self-hosted pools: replicas needed per hour, spillover spend, size trade-off.

Pure: no I/O, no clock; the randomness is seeded (the same inputs give the same plan). It knows
the model servers only through a measured serving profile (the JSON `interlock capacity profile`
writes); it never imports the simulator.

Modules: `traffic` (records → `TrafficRecord`), `profile` (a profile → `ServerModel`s), `sim` (the
pool simulation), `plan` (needs per hour, the fixed size, the size trade-off).

Inputs
------
Traffic records (`parse_traffic`), one JSON object per line, either form:

    {"t": 12.5, "prompt_tokens": 1480, "output_tokens": 240, "priority": "interactive", "model": "m"}
    {"time": "2026-12-05T09:00:01.250Z", "input_tokens": 1480, "output_tokens": 240, "model": "m", ...}

The first is a trace file (`t`: seconds from the start of the record); the second is the gateway's
JSON access log (`time`, or `start_time`, ISO 8601; `input_tokens`/`output_tokens`). `priority` is
optional (absent: `interactive`, so the SLO applies); `cached_tokens` (prompt tokens a server's prefix
cache served, as vLLM reports in `usage.prompt_tokens_details.cached_tokens`) is optional and skips
that much prefill. Lines without token counts (a failed request, `GET /v1/models`) are skipped and
counted; a line that is not a JSON object is an error.

Profile (format `interlock-capacity-profile/1`):

    {"format": "interlock-capacity-profile/1", "model": "m",
     "endpoints": [{"url": "http://10.0.0.5:8000", "model": "m",
                    "prefill": [{"prompt_tokens": 2048.0, "requests": 3, "ttft_ms": {"mean": 230.5, ...}}, ...],
                    "points": [{"concurrency": 4, "prompt_tokens": 1024.0, "output_tokens": 128.0,
                                "requests": 37, "ttft_ms": {"mean": 95.1, "p50": 90.2, "p90": 120.3},
                                "tpot_ms": {"mean": 21.0, "p50": 20.8, "p90": 23.9},
                                "output_tokens_per_s": 180.5, "requests_per_s": 1.4}, ...],
                    "metrics": {"flavor": "vllm", "slots": 16 | null, "block_size": 16,
                                "num_gpu_blocks": 4096, "kv_usage_max": 0.62} | null}]}

`prefill` (optional) is TTFT against prompt length for one request at a time (`prompt_tokens`,
`requests`, `ttft_ms`), a finer sweep than `points`. `prompt_tokens`/`output_tokens` are the means
the server reported in `usage`; TTFT and TPOT are client side (TPOT: (last token − first token) /
(output tokens − 1) per request). `metrics` is what the server's Prometheus endpoint showed during
the run (vLLM or SGLang names), or null: `slots` is a slot limit (`max_num_seqs`) seen at work — the
server never ran all of a step's clients at once while some waited with the KV cache not full — or
null; `num_gpu_blocks × block_size` is the KV cache in tokens (SGLang: `max_total_num_tokens`,
block size 1).

Theory of operation
-------------------
`server_model` fits each endpoint's points to a continuous-batching engine: one engine step admits
waiting requests (first come first served) while slots and KV cache allow, prefills them and decodes
one token for every running request; it takes

    step_s = step_base_s + step_per_seq_s × decoding requests + prefill tokens / prefill_tokens_per_s

and a request's first token comes at the end of the step that prefilled it (plus the client-side
overhead `ttft_overhead_s`). The prefill rate and the overhead come from the TTFT of one request
at a time against prompt length (`prefill`, else the lowest concurrency's points; a straight line);
the step costs from the mean TPOT against concurrency at the shortest prompt (closed-loop clients
with equal answer lengths fall into step, so their prefills stay out of each other's TPOT). Slots
and KV capacity are the profile's `metrics` (unbounded when absent). A step computes at most a token
budget (vLLM's chunked prefill, `max_num_batched_tokens`): a prompt longer than that prefills over
several steps. The budget is the one (of 256 … 16,384 or none) whose chunk count makes that TTFT
line fit best (by 4× in squared error over a larger budget).

`simulate` replays the record's arrivals through N such servers (an event-driven simulation: steps
with no admission and no finish are taken in bulk, so 10,000 requests take well under a second) with
least-outstanding dispatch (ties: the faster server). Replica i behaves as the profile's endpoint
i mod k: a pool whose servers differ is profiled per server. With `spill_at` set, arrivals follow the
gateway's utilization-first spillover (`kind: fill_pool`, routing.spillover) with target `spill_at`
and `band`: a priority class starts spilling when the pool's utilization reaches target + k·band or
any request waits in the pool, and comes back below target + j·band with no request waiting (batch
k=1, j=−1; default k=2, j=0; interactive k=3, j=1). Utilization is the gateway's PoolLoad: per
server max(running / slots, KV in use), a waiting queue counting as 1.0, averaged over the servers
(time-weighted per hour here).

Each figure of `predict` and `plan` is the median (spill and spend: the mean) of `runs`
simulations: the record at its own times and with each arrival moved uniformly within ±`jitter_s`
(seeded per run). One simulation of a pool near saturation is one draw from a wide spread (see
`plan.JITTER_S` for the figures); a real day is another draw, so the median is the prediction.

`plan` tries every pool size from `min_replicas` up, hour by hour: an hour's need is the smallest
size at which its SLO class (`slo_priority`) meets the TTFT (and TPOT) quantile with no spillover
and the hour's mean utilization stays at or below the target (each hour is simulated after the hour
before it at the same size, so a queue carries over as it would in an autoscaled pool). The fixed
size is the smallest that meets every hour so, the whole record simulated at once. Then each
candidate size (by default the hourly needs' smallest, median and largest, one more and one less
than the largest, the fixed size, and one less than the smallest: spillover may carry what that
pool cannot serve) is simulated with spillover for the trade-off: GPU cost (replicas × GPU-hour price ×
the record's hours) + provider spend (spilled tokens × price per million). Hours of the day are
`day_seconds / 24` of record time: a day compressed into 600 s has 25 s hours. GPU time is priced by
the record's own seconds (an hour bin of 25 s costs 25/3,600 of a GPU hour), since the record's
requests are what those seconds bring at its rates: GPU and provider costs stay comparable.
"""

from routing.capacity.plan import (
    JITTER_S,
    RUNS,
    HourNeed,
    HourStats,
    Plan,
    Prices,
    SizeResult,
    Slo,
    plan,
    predict,
    quantile,
)
from routing.capacity.profile import PROFILE_FORMAT, ServerModel, load_profile, server_model
from routing.capacity.sim import SPILL_THRESHOLDS, Outcome, SimResult, simulate
from routing.capacity.traffic import PRIORITIES, CapacityError, Traffic, TrafficRecord, parse_traffic

__all__ = ["JITTER_S", "PRIORITIES", "PROFILE_FORMAT", "SPILL_THRESHOLDS", "CapacityError", "HourNeed", "HourStats", "Outcome",
           "Plan", "Prices", "RUNS", "ServerModel", "SimResult", "SizeResult", "Slo", "Traffic", "TrafficRecord",
           "load_profile", "parse_traffic", "plan", "predict", "quantile", "server_model", "simulate"]
