"""Traffic records: a trace's JSON lines or the gateway's access log → `TrafficRecord`s (see the
package docstring for both forms). Pure."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

PRIORITIES = ("interactive", "default", "batch")


class CapacityError(ValueError):
    """A traffic record or profile the planner cannot use; `problems` lists each, with where."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class TrafficRecord:
    t: float  # seconds: from the start of the record (trace) or since 00:00 UTC of its first day (log)
    prompt_tokens: int
    output_tokens: int
    priority: str = "interactive"
    model: str = ""
    cached_tokens: int = 0


@dataclass(frozen=True)
class Traffic:
    records: tuple[TrafficRecord, ...]
    skipped: int = 0  # lines without token counts
    models: tuple[str, ...] = ()


def _iso_seconds(value: str) -> float:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt.timestamp()


def parse_traffic(lines: Iterable[str], source: str = "traffic") -> Traffic:
    """Traffic records from JSONL text lines (both forms above), sorted by time. Raises CapacityError
    listing every bad line (`source:LINE: why`, at most 10)."""
    problems: list[str] = []
    rows: list[tuple[float, bool, int, int, str, str, int]] = []  # time, from an ISO time?, ...
    skipped = 0
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            problems.append(f"{source}:{n}: not a JSON object")
            continue
        when = obj.get("t", obj.get("start_time", obj.get("time")))
        prompt = obj.get("prompt_tokens", obj.get("input_tokens"))
        output = obj.get("output_tokens")
        if prompt is None or output is None:
            skipped += 1
            continue
        try:
            prompt_i, output_i = int(prompt), int(output)
            cached = int(obj.get("cached_tokens") or 0)
        except (TypeError, ValueError):
            problems.append(f"{source}:{n}: token counts must be integers")
            continue
        if prompt_i < 0 or output_i < 0 or not 0 <= cached <= prompt_i:
            problems.append(f"{source}:{n}: token counts must be ≥ 0 (cached ≤ prompt)")
            continue
        if isinstance(when, str):
            try:
                at, iso = _iso_seconds(when), True
            except ValueError:
                problems.append(f"{source}:{n}: `{when[:40]}` is not an ISO 8601 time")
                continue
        elif isinstance(when, (int, float)) and not isinstance(when, bool) and math.isfinite(when):
            at, iso = float(when), False
        else:
            problems.append(f"{source}:{n}: no arrival time (`t` seconds, or `time`/`start_time` ISO 8601)")
            continue
        priority = str(obj.get("priority") or "interactive")
        if priority not in PRIORITIES:
            problems.append(f"{source}:{n}: priority must be one of {', '.join(PRIORITIES)}")
            continue
        rows.append((at, iso, prompt_i, output_i, priority, str(obj.get("model") or ""), cached))
    if problems:
        raise CapacityError(problems[:10] + ([f"… and {len(problems) - 10} more"] if len(problems) > 10 else []))
    if len({iso for _, iso, *_ in rows}) > 1:
        raise CapacityError([f"{source}: mixes trace lines (`t`) and access-log lines (`time`)"])
    midnight = 0.0
    if rows and rows[0][1]:  # an access log: seconds since midnight UTC of its first day
        first = min(r[0] for r in rows)
        midnight = first - first % 86400
    records = sorted((TrafficRecord(at - midnight, p, o, pr, m, c) for at, _, p, o, pr, m, c in rows),
                     key=lambda r: r.t)
    return Traffic(tuple(records), skipped, tuple(sorted({r.model for r in records})))
