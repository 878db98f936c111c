"""The simulated model server's engine: continuous batching over a paged KV cache (sans-IO).

Theory of operation (after vLLM v1's scheduler). Requests wait in a FCFS queue. Each engine step
the scheduler builds one batch under a token budget (`max_num_batched_tokens`):

1. every running request gets its next tokens: one decode token, or the next chunk of a prefill
   still in progress (chunked prefill). A request whose next token needs a new KV block gets one;
   when none is free the most recently admitted running request is preempted (recompute: its
   blocks are freed, it goes back to the head of the waiting queue and later prefills its prompt
   and the tokens it already produced again);
2. then waiting requests are admitted in order while a slot (`max_num_seqs`), budget and KV blocks
   for their prompt remain. The longest cached prefix of the prompt (full 16-token blocks, found by
   chain hash, see `kvcache`) is reused and skips its prefill; at least the last prompt token is
   always computed. The first request that does not fit stops admission (FCFS, no overtaking).

The step lasts ``(base_step_s + per_seq_s · decoding requests + prefill tokens /
prefill_tokens_per_s) / speed`` seconds. When it ends, every request whose scheduled tokens cover
all its tokens so far samples one new token (a finished prefill yields the first token, so TTFT =
queueing + prefill chunks + the steps they shared). A request finishes after `max_tokens` tokens.
So TTFT grows with the queue and with prefill contention, inter-token latency with the batch.

The engine never reads a clock or sleeps: `schedule()` returns the planned `Step` (with its
duration) and `complete(step, now)` applies it at the time the caller says the step ended. The
asyncio shell (`server`) and the offline replay (`replay`) drive it. Not thread-safe.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from simulator.modelserver.kvcache import BlockHash, KVCache


@dataclass(frozen=True)
class EngineConfig:
    """One server's capacity. Throughputs are at `speed` 1.0; `speed` divides every step time."""

    max_num_seqs: int = 32
    kv_blocks: int = 2500
    block_size: int = 16
    max_num_batched_tokens: int = 2048
    max_model_len: int = 16384
    prefill_tokens_per_s: float = 10_000.0
    base_step_s: float = 0.015
    per_seq_s: float = 0.0035
    speed: float = 1.0

    def problems(self) -> list[str]:
        out = [f"{name}: must be at least 1" for name in ("max_num_seqs", "kv_blocks", "block_size",
                                                          "max_num_batched_tokens", "max_model_len")
               if getattr(self, name) < 1]
        out += [f"{name}: must be > 0" for name in ("prefill_tokens_per_s", "speed") if getattr(self, name) <= 0]
        out += [f"{name}: must be ≥ 0" for name in ("base_step_s", "per_seq_s") if getattr(self, name) < 0]
        if self.max_model_len > self.kv_blocks * self.block_size:
            out.append("max_model_len: must fit the KV cache (kv_blocks × block_size)")
        return out


# vLLM's histogram buckets (vllm/v1/metrics/loggers.py).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
               40.0, 80.0)
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
                   240.0, 480.0, 960.0, 1920.0, 7680.0)


class Histogram:
    """Cumulative-free bucket counts plus sum and count (rendered cumulatively by `metrics`)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += times
        self.total += value * times
        self.count += times


def token_buckets(max_value: int) -> tuple[int, ...]:
    """vLLM's 1-2-5 buckets up to `max_value` (`build_1_2_5_buckets`)."""
    out: list[int] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10 ** exponent
            if value > max_value:
                return tuple(out)
            out.append(value)
        exponent += 1


@dataclass
class Stats:
    """Everything `/metrics` reports besides the live gauges; counters only grow."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    preemptions: int = 0
    finished: dict[str, int] = field(default_factory=lambda: {"stop": 0, "length": 0, "abort": 0})
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    itl: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    request_tpot: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    queue: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    prefill: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    decode: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    inference: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    prompt_len: Histogram = field(default_factory=lambda: Histogram(token_buckets(16384)))
    generation_len: Histogram = field(default_factory=lambda: Histogram(token_buckets(16384)))


class Sequence_:
    """One request inside the engine; `owner` is whatever the shell attaches (its exchange)."""

    __slots__ = ("id", "prompt_len", "hashes", "max_tokens", "finish_reason", "arrival", "generated",
                 "computed", "blocks", "registered", "first_token_at", "scheduled_at", "last_token_at",
                 "done", "cached_tokens", "owner", "aborted")

    def __init__(self, seq_id: str, prompt_len: int, hashes: list[BlockHash], max_tokens: int, arrival: float,
                 finish_reason: str = "length", owner: object = None) -> None:
        self.id = seq_id
        self.prompt_len = prompt_len
        self.hashes = hashes
        self.max_tokens = max_tokens
        self.finish_reason = finish_reason
        self.arrival = arrival
        self.generated = 0
        self.computed = 0
        self.blocks: list[int] = []
        self.registered = 0
        self.first_token_at: float | None = None
        self.scheduled_at: float | None = None
        self.last_token_at: float | None = None
        self.done = False
        self.aborted = False
        self.cached_tokens = 0
        self.owner = owner

    @property
    def total(self) -> int:
        """Tokens whose KV the request needs: its prompt and the tokens produced so far."""
        return self.prompt_len + self.generated


@dataclass
class Step:
    """One planned batch: tokens scheduled per request, and how long the step takes."""

    work: list[tuple[Sequence_, int]]
    prefill_tokens: int
    decoding: int
    duration: float


class Engine:
    """Waiting queue, running batch, KV cache and statistics of one simulated server."""

    def __init__(self, config: EngineConfig) -> None:
        problems = config.problems()
        if problems:
            raise ValueError("; ".join(problems))
        self.config = config
        self.speed = config.speed
        self.kv = KVCache(config.kv_blocks, config.block_size)
        self.waiting: deque[Sequence_] = deque()
        self.running: list[Sequence_] = []
        self.stats = Stats()
        self.version = 0  # grows with every change of state or statistics (lets `/metrics` cache its text)

    # -- requests -------------------------------------------------------------------------------

    def refusal(self, prompt_len: int, max_tokens: int) -> str | None:
        """vLLM's 400 text for a request that can never fit, or None."""
        limit = self.config.max_model_len
        if prompt_len + max_tokens > limit:
            return (f"This model's maximum context length is {limit} tokens. However, you requested "
                    f"{prompt_len + max_tokens} tokens ({prompt_len} in the messages, {max_tokens} in the "
                    "completion). Please reduce the length of the messages or completion.")
        return None

    def submit(self, seq: Sequence_) -> None:
        """Queue `seq` (its `refusal` must be None)."""
        self.waiting.append(seq)
        self.version += 1

    def abort(self, seq: Sequence_) -> None:
        """Drop `seq` wherever it is (a client went away); its blocks return to the cache."""
        if seq.done:
            return
        seq.done = seq.aborted = True
        self.version += 1
        if seq in self.running:
            self.running.remove(seq)
            self._release(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.stats.finished["abort"] += 1

    @property
    def busy(self) -> bool:
        return bool(self.running or self.waiting)

    # -- scheduling -----------------------------------------------------------------------------

    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.config.block_size)

    def _release(self, seq: Sequence_) -> None:
        self.kv.free(seq.blocks)
        seq.blocks = []
        seq.registered = 0

    def _preempt(self, victim: Sequence_) -> None:
        self.running.remove(victim)
        self._release(victim)
        victim.computed = 0
        self.waiting.appendleft(victim)
        self.stats.preemptions += 1
        self.version += 1

    def _grow(self, seq: Sequence_, upto: int) -> bool:
        """Give `seq` the blocks for `upto` tokens, preempting later requests; False if `seq` itself went."""
        need = self._blocks_for(upto) - len(seq.blocks)
        while need > 0 and not self.kv.can_allocate(need):
            victim = self.running[-1]
            self._preempt(victim)
            if victim is seq:
                return False
        if need > 0:
            seq.blocks.extend(self.kv.allocate(need))
        return True

    def schedule(self) -> Step | None:
        """Plan the next batch (allocating its KV blocks), or None when there is nothing to do."""
        cfg = self.config
        budget = cfg.max_num_batched_tokens
        work: list[tuple[Sequence_, int]] = []
        prefill = decoding = 0
        for seq in list(self.running):
            if budget <= 0:
                break
            if seq not in self.running:
                continue
            remaining = seq.total - seq.computed
            n = min(remaining, budget)
            if not self._grow(seq, seq.computed + n):
                continue
            work.append((seq, n))
            budget -= n
            if remaining == 1 and seq.generated > 0:
                decoding += 1
            else:
                prefill += n
        while self.waiting and budget > 0 and len(self.running) < cfg.max_num_seqs:
            seq = self.waiting[0]
            max_hit = (seq.total - 1) // cfg.block_size
            hits = self.kv.cached_prefix(seq.hashes, max_hit)
            start = len(hits) * cfg.block_size
            n = min(seq.total - start, budget)
            need = self._blocks_for(start + n) - len(hits)
            if not self.kv.can_allocate(need, hits):
                break
            self.waiting.popleft()
            self.kv.touch(hits)
            seq.blocks = hits + self.kv.allocate(need)
            seq.registered = len(hits)
            seq.computed = start
            if seq.generated == 0:
                seq.cached_tokens = start
            self.stats.prefix_queries += seq.total
            self.stats.prefix_hits += start
            self.running.append(seq)
            work.append((seq, n))
            budget -= n
            prefill += n
        if not work:
            return None
        self.version += 1
        duration = (cfg.base_step_s + cfg.per_seq_s * decoding + prefill / cfg.prefill_tokens_per_s) / self.speed
        return Step(work, prefill, decoding, duration)

    def complete(self, step: Step, now: float) -> list[Sequence_]:
        """Apply `step` as ended at `now`: computed tokens, new tokens, finished requests.
        Returns the requests that produced a token or finished (in batch order)."""
        progressed: list[Sequence_] = []
        self.version += 1
        bs = self.config.block_size
        stats = self.stats
        for seq, n in step.work:
            if seq.done or seq not in self.running:
                continue
            if seq.scheduled_at is None:
                seq.scheduled_at = now - step.duration
                stats.queue.observe(max(0.0, seq.scheduled_at - seq.arrival))
            seq.computed += n
            full = min(seq.computed, seq.prompt_len) // bs
            while seq.registered < full and seq.registered < len(seq.hashes):
                self.kv.register(seq.blocks[seq.registered], seq.hashes[seq.registered])
                seq.registered += 1
            if seq.computed < seq.total:
                continue
            seq.generated += 1
            stats.generation_tokens += 1
            if seq.first_token_at is None:
                seq.first_token_at = now
                stats.ttft.observe(now - seq.arrival)
                stats.prompt_tokens += seq.prompt_len
            elif seq.last_token_at is not None:
                stats.itl.observe(now - seq.last_token_at)
            seq.last_token_at = now
            if seq.generated >= seq.max_tokens:
                self._finish(seq, now)
            progressed.append(seq)
        return progressed

    def _finish(self, seq: Sequence_, now: float) -> None:
        seq.done = True
        self.running.remove(seq)
        self._release(seq)
        stats = self.stats
        stats.finished[seq.finish_reason] += 1
        first = seq.first_token_at if seq.first_token_at is not None else now
        started = seq.scheduled_at if seq.scheduled_at is not None else seq.arrival
        stats.e2e.observe(now - seq.arrival)
        stats.prefill.observe(first - started)
        stats.decode.observe(now - first)
        stats.inference.observe(now - started)
        stats.prompt_len.observe(seq.prompt_len)
        stats.generation_len.observe(seq.generated)
        if seq.generated > 1:
            stats.request_tpot.observe((now - first) / (seq.generated - 1))


def replay(config: EngineConfig, arrivals: Sequence[tuple[float, int, list[BlockHash], int]]
           ) -> list[Sequence_]:
    """Run `arrivals` (time, prompt tokens, block hashes, output tokens) through one engine on a
    virtual clock and return the finished requests (for tests and calibration; no I/O, no sleeping)."""
    engine = Engine(config)
    pending = deque(sorted(arrivals, key=lambda a: a[0]))
    seqs: list[Sequence_] = []
    now = 0.0
    while pending or engine.busy:
        while pending and pending[0][0] <= now:
            t, prompt, hashes, out = pending.popleft()
            seq = Sequence_(str(len(seqs)), prompt, hashes, out, t)
            seqs.append(seq)
            engine.submit(seq)
        step = engine.schedule()
        if step is None:
            now = max(now, pending[0][0]) if pending else now
            continue
        now += step.duration
        engine.complete(step, now)
        if not math.isfinite(now):
            raise AssertionError("clock overflow")
    return seqs


Arrival = tuple[float, int, list[BlockHash], int]
Picker = Callable[[Sequence[Engine], int], int]


def replay_pool(configs: Sequence[EngineConfig], arrivals: Sequence[Arrival], pick: Picker) -> list[tuple[int, Sequence_]]:
    """Run `arrivals` through one engine per config on a shared virtual clock; `pick(engines, i)`
    chooses the engine of arrival `i` from their state at its arrival time (perfectly fresh metrics).
    Returns (engine index, request) per arrival, in arrival order."""
    engines = [Engine(c) for c in configs]
    steps: list[Step | None] = [None] * len(engines)
    ends = [math.inf] * len(engines)
    out: list[tuple[int, Sequence_]] = []
    order = sorted(range(len(arrivals)), key=lambda i: arrivals[i][0])
    k = 0
    now = 0.0

    def kick(e: int) -> None:
        step = engines[e].schedule()
        steps[e] = step
        ends[e] = now + step.duration if step is not None else math.inf

    while k < len(order) or any(e.busy for e in engines):
        next_end = min(ends)
        if k < len(order) and arrivals[order[k]][0] <= next_end:
            t, prompt, hashes, tokens = arrivals[order[k]]
            now = t
            e = pick(engines, k)
            seq = Sequence_(str(order[k]), prompt, hashes, tokens, t)
            engines[e].submit(seq)
            out.append((e, seq))
            k += 1
            if steps[e] is None:
                kick(e)
            continue
        e = ends.index(next_end)
        now = next_end
        step = steps[e]
        assert step is not None
        engines[e].complete(step, now)
        kick(e)
    return out
