"""The planner's side of the capacity replay (`make eval-pool` phase 3; `capacity_selfcheck`).

    from bench.eval.pool.capacity_check import predict_p90_ttft
    predicted_ms = predict_p90_ttft("trace.jsonl", "profile.json", replicas=3)

Replica i of the prediction is the profile's endpoint i mod k (the order `interlock capacity
profile --endpoint …` measured them in), so a replay that compares must run the same servers in that
order. Dispatch in the prediction is least-outstanding (ties: the faster server); the prediction
knows the servers only through the profile (`routing.capacity`; this module never imports the
simulator). The replay itself (the simulated servers, the gateway) is the caller's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from routing import capacity as cap


def _records(trace: str | Path | Iterable[Any]) -> list[cap.TrafficRecord]:
    if isinstance(trace, (str, Path)):
        with open(trace, encoding="utf-8") as f:
            return list(cap.parse_traffic(f, source=str(trace)).records)
    out = []
    for r in trace:
        if isinstance(r, cap.TrafficRecord):
            out.append(r)
        elif isinstance(r, Mapping):
            out.extend(cap.parse_traffic([json.dumps(dict(r))]).records)
        else:  # a simulator.pool_trace.TraceRequest or anything with the record's attributes
            out.append(cap.TrafficRecord(float(r.t), int(r.prompt_tokens), int(r.output_tokens),
                                         str(getattr(r, "priority", "interactive")), str(getattr(r, "model", ""))))
    return sorted(out, key=lambda r: r.t)


def _servers(profile: str | Path | Mapping[str, Any]) -> list[cap.ServerModel]:
    data = json.loads(Path(profile).read_text()) if isinstance(profile, (str, Path)) else profile
    return cap.load_profile(dict(data))


def predict_ttft_ms(trace: str | Path | Iterable[Any], profile: str | Path | Mapping[str, Any], replicas: int,
                    *, quantile: float = 0.9, priority: str | None = None) -> float:
    """The predicted TTFT quantile (ms) of `trace` replayed through the first `replicas` servers of
    `profile`, no spillover; over every request, or those of `priority`. Raises CapacityError."""
    records = _records(trace)
    sim = cap.simulate(records, _servers(profile), replicas, None, hour_s=max([r.t for r in records] + [1.0]) + 1,
                       hours=1)
    values = [o.ttft_s * 1000 for o in sim.outcomes if priority is None or o.record.priority == priority]
    result = cap.quantile(values, quantile)
    if result is None:
        raise cap.CapacityError(["the trace has no request to predict"])
    return result


def predict_p90_ttft(trace: str | Path | Iterable[Any], profile: str | Path | Mapping[str, Any], replicas: int,
                     priority: str | None = None) -> float:
    """`predict_ttft_ms` at p90 (nearest rank)."""
    return predict_ttft_ms(trace, profile, replicas, quantile=0.9, priority=priority)


def error(predicted: float, measured: float) -> float:
    """|predicted − measured| / measured: the issue's capacity_err."""
    return abs(predicted - measured) / measured
