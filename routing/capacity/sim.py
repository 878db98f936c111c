"""The pool simulation: a record's arrivals through N fitted servers, event by event (see the package
docstring: engine steps, dispatch, the spillover policy). Pure and deterministic; not thread-safe
within one call (it keeps no state between calls)."""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from routing.capacity.profile import ServerModel
from routing.capacity.traffic import PRIORITIES, TrafficRecord

# Per priority class: spilling starts at target + k·band (or a queue) and stops below target + j·band.
SPILL_THRESHOLDS = {"batch": (1, -1), "default": (2, 0), "interactive": (3, 1)}


@dataclass
class _Server:
    model: ServerModel
    waiting: deque = field(default_factory=deque)  # request indexes
    prefilling: list = field(default_factory=list)  # [index, prompt tokens left to compute]
    finishes: list = field(default_factory=list)  # heap of (`count` at its last token, index)
    count: int = 0  # decode steps taken so far
    running: int = 0  # prefilling + decoding
    kv_prompt: int = 0  # Σ prompt tokens of running requests
    kv_first: int = 0  # Σ (`count` at the first token − 1) of decoding requests
    busy: bool = False
    completing: list = field(default_factory=list)  # indexes whose prefill the current step completes
    steps: int = 1  # decode steps the current step stands for

    @property
    def decoding(self) -> int:
        return self.running - len(self.prefilling)

    def kv_used(self) -> int:
        return self.kv_prompt + self.decoding * self.count - self.kv_first

    def utilization(self) -> float:
        if self.waiting:
            return 1.0
        u = self.running / self.model.slots if self.model.slots else 0.0
        if self.model.kv_tokens:
            u = max(u, self.kv_used() / self.model.kv_tokens)
        return min(u, 1.0)

    def outstanding(self) -> int:
        return self.running + len(self.waiting)

    def would_queue(self) -> bool:
        return bool(self.waiting) or (self.model.slots is not None and self.running >= self.model.slots)


@dataclass(frozen=True)
class Outcome:
    """What happened to one request: `spilled`, or its TTFT and TPOT on the pool (seconds)."""

    record: TrafficRecord
    spilled: bool = False
    ttft_s: float = 0.0
    tpot_s: float = 0.0


@dataclass(frozen=True)
class SimResult:
    outcomes: tuple[Outcome, ...]
    utilization: tuple[float, ...]  # per hour bin: mean pool utilization
    hour_s: float


def simulate(records: Sequence[TrafficRecord], servers: Sequence[ServerModel], replicas: int,
             spill_at: float | None = None, hour_s: float = 3600.0, hours: int = 24, band: float = 0.05,
             arrivals: Sequence[float] | None = None) -> SimResult:
    """Replay `records` (sorted by `t`) through `replicas` servers (replica i is `servers[i % len(servers)]`).
    `spill_at`: the target utilization of the spillover policy, `band` its hysteresis (None: never spill).
    `arrivals`: when each record reaches the pool (default: its `t`; any order); TTFT counts from
    there, and the outcomes keep the records' own order and hour bins."""
    if replicas < 1 or not servers:
        raise ValueError("simulate needs at least one replica and one server model")
    if arrivals is not None and len(arrivals) != len(records):
        raise ValueError("simulate needs one arrival time per record")
    at = [r.t for r in records] if arrivals is None else list(arrivals)
    order = sorted(range(len(records)), key=at.__getitem__) if arrivals is not None else range(len(records))
    pool = [_Server(servers[i % len(servers)]) for i in range(replicas)]
    slowness = [s.model.alone_ttft_s(1000.0) + s.model.step_s(8) for s in pool]
    util = [0.0] * hours
    n = len(records)
    first = [0.0] * n  # end of the step that completed the prefill
    done = [0.0] * n
    spilled = [False] * n
    first_count = [0] * n
    served_by = [0] * n
    steps: list[tuple[float, int]] = []  # heap of (step end, server index)
    spilling = dict.fromkeys(PRIORITIES, False)

    def start_step(i: int, now: float, next_arrival: float) -> None:
        s = pool[i]
        m = s.model
        budget = math.inf if m.batch_tokens is None else m.batch_tokens
        decoding = s.decoding
        budget -= decoding
        prefill = 0.0
        s.completing = []
        for entry in s.prefilling:
            if budget <= 0:
                break
            take = min(entry[1], budget)
            entry[1] -= take
            budget -= take
            prefill += take
            if entry[1] == 0:
                s.completing.append(entry[0])
        while s.waiting and budget > 0:
            idx = s.waiting[0]
            r = records[idx]
            if m.slots is not None and s.running >= m.slots:
                break
            if m.kv_tokens is not None and s.running and s.kv_used() + r.prompt_tokens > m.kv_tokens:
                break
            s.waiting.popleft()
            s.running += 1
            s.kv_prompt += r.prompt_tokens
            left = max(r.prompt_tokens - r.cached_tokens, 1)
            take = min(left, budget)
            budget -= take
            prefill += take
            s.prefilling.append([idx, left - take])
            if left == take:
                s.completing.append(idx)
        if s.running == 0:
            s.busy = False
            return
        s.busy = True
        dur = m.step_s(decoding, prefill)
        k = 1
        if not s.prefilling and not s.waiting:
            # Nothing to admit before the next arrival or the next finish: take those steps at once.
            left_steps = s.finishes[0][0] - s.count
            k = left_steps if next_arrival == math.inf else max(1, min(left_steps,
                                                                        math.ceil((next_arrival - now) / dur)))
        s.steps = k
        h = int(now // hour_s)
        if 0 <= h < hours:
            util[h] += s.utilization() * dur * k
        heapq.heappush(steps, (now + dur * k, i))

    def end_step(i: int, now: float) -> None:
        s = pool[i]
        s.count += s.steps
        if s.completing:
            done_set = set(s.completing)
            s.prefilling = [e for e in s.prefilling if e[0] not in done_set]
            for idx in s.completing:
                first[idx] = now
                first_count[idx] = s.count
                s.kv_first += s.count - 1
                heapq.heappush(s.finishes, (s.count + max(records[idx].output_tokens, 1) - 1, idx))
        while s.finishes and s.finishes[0][0] <= s.count:
            _, idx = heapq.heappop(s.finishes)
            s.running -= 1
            s.kv_prompt -= records[idx].prompt_tokens
            s.kv_first -= first_count[idx] - 1
            done[idx] = now
        s.completing = []

    a = 0  # arrivals so far; the next one is records[order[a]]
    while a < n or steps:
        t_arr = at[order[a]] if a < n else math.inf
        if steps and steps[0][0] <= t_arr:
            now, i = heapq.heappop(steps)
            end_step(i, now)
            start_step(i, now, t_arr)
            continue
        idx = order[a]
        r = records[idx]
        best = min(range(replicas), key=lambda j: (pool[j].outstanding(), slowness[j], j))
        b = pool[best]
        if spill_at is not None:
            load = sum(s.utilization() for s in pool) / replicas
            queue = any(s.waiting for s in pool)
            start, stop = SPILL_THRESHOLDS.get(r.priority, SPILL_THRESHOLDS["default"])
            if spilling[r.priority]:
                spilling[r.priority] = queue or load >= spill_at + stop * band
            else:
                spilling[r.priority] = queue or load >= spill_at + start * band
            if spilling[r.priority]:
                spilled[idx] = True
                a += 1
                continue
        b.waiting.append(idx)
        served_by[idx] = best
        a += 1
        if not b.busy:
            start_step(best, t_arr, at[order[a]] if a < n else math.inf)
    outcomes = []
    for idx, r in enumerate(records):
        if spilled[idx]:
            outcomes.append(Outcome(r, spilled=True))
            continue
        outcomes.append(Outcome(r, ttft_s=first[idx] - at[idx] + pool[served_by[idx]].model.ttft_overhead_s,
                                tpot_s=(done[idx] - first[idx]) / max(r.output_tokens - 1, 1)))
    return SimResult(tuple(outcomes), tuple(u / (hour_s * replicas) for u in util), hour_s)
