#!/usr/bin/env python3
"""Soak: sustained mixed load through Interlock; RSS of every gateway process over time.

`make soak` (not part of `make test`): the paced streaming mock of `bench/bench_stream.py` as the
provider, Interlock from the production renderer's config (auth on, one ext_proc worker per core,
default metrics and tracing settings), and in this process a load generator of closed-loop lanes
(each sends its next request when the previous answer ended, after its think time):

- 12 stream lanes, 100-event streams paced 10 ms: OpenAI → OpenAI (half of them asking for
  `stream_options.include_usage`), OpenAI → Anthropic, Anthropic → Anthropic; a third through
  the tenant with rate limits (never reached);
- 8 non-streamed lanes (think 200 ms, so ≤ 40 req/s): both APIs, with and without rate limits;
- 2 error lanes: a provider's 400, an unknown model and a wrong key (think 500 ms), and a tenant
  limited to 5 requests/s sent ~10 (think 100 ms; its 429s and 200s are both expected).
The load is bounded (~1.2k events/s and ~60 req/s) so a shared machine keeps serving others.

After `--warmup` seconds (default 60) the RSS of every process of the gateway (Envoy, each
ext_proc worker, the rate-limit process, the supervisor, and any other child) is sampled from
/proc/<pid>/status every `--interval` seconds (10) for `--minutes` (30); a progress line every
minute. Then the load stops and `--open-streams` (1,000) slow streams (1 s per event) are opened
at once, half OpenAI → OpenAI, half OpenAI → Anthropic; when every one has its first event the
RSS is read again, the streams are closed, and the difference per process is reported per 1,000
open streams. Prints per process: RSS at start (after the warm-up), end, max, drift = (end -
start) / start against the ±20 % floor and ±10 % target, and, last, one line:

    soak: minutes=M requests=N errors_expected=E errors_unexpected=U max_drift_pct=D worst=<process>
          rss_per_1000_streams_mb=<gateway total> verdict=target|floor|over
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if __package__:
    from bench import bench_stream as bs  # noqa: E402
else:
    import bench_stream as bs  # type: ignore[no-redef]  # noqa: E402

FLOOR, TARGET = 20.0, 10.0


def rss_kib(pid: int) -> int:
    """Resident set size of one process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Lane:
    """A closed-loop client cycling through its requests; counts answers by (kind, status)."""

    name: str
    requests: list[tuple[str, bytes, int]]  # (kind, request bytes, text events expected)
    think: float
    seen: Counter[tuple[str, int]] = field(default_factory=Counter)
    short: int = 0
    lost: int = 0


class LaneClient(bs.StreamClient):
    def __init__(self, lane: Lane, stats: bs.Stats, running: Callable[[], bool]) -> None:
        self.lane, self.cycle, self.running = lane, itertools.cycle(lane.requests), running
        self.kind, request, expect = next(self.cycle)
        super().__init__(request, expect, stats, self._ended)

    def _ended(self, c: bs.StreamClient) -> None:
        status = self.parser.status
        self.lane.seen[(self.kind, status)] += 1
        if status == 200 and not self.parser.error and self.texts < self.expect:
            self.lane.short += 1
        if not self.running():
            self.close()
            return
        self.kind, self.request, self.expect = next(self.cycle)
        loop = asyncio.get_running_loop()
        if self.lane.think:
            loop.call_later(self.lane.think, self._again)
        else:
            self.send()

    def _again(self) -> None:
        if self.transport is not None and self.running():
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_flight and self.running():
            self.lane.lost += 1
        super().connection_lost(exc)


def lanes(port: int) -> list[Lane]:
    chat, msgs = "/v1/chat/completions", "/v1/messages"

    def bearer(key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    def anth(key: str) -> dict[str, str]:
        return {"x-api-key": key, "anthropic-version": "2023-06-01"}

    def whole(body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k != "stream"}

    n = bs.EVENTS
    s_pass = ("stream passthrough", bs.http_request(chat, bearer(bs.KEY_NORL), bs.chat_body("stream-gpt", n)), n)
    s_usage = ("stream passthrough+usage",
               bs.http_request(chat, bearer(bs.KEY_NORL), bs.chat_body("stream-gpt", n, include_usage=True)), n)
    s_trans = ("stream translated", bs.http_request(chat, bearer(bs.KEY_NORL), bs.chat_body("stream-claude", n)), n)
    s_anth = ("stream anthropic", bs.http_request(msgs, anth(bs.KEY_NORL), bs.messages_body("stream-claude", n)), n)
    s_trans_rl = ("stream translated rl",
                  bs.http_request(chat, bearer(bs.KEY_RL), bs.chat_body("stream-claude", n)), n)
    s_pass_rl = ("stream passthrough rl", bs.http_request(chat, bearer(bs.KEY_RL), bs.chat_body("stream-gpt", n)), n)
    n_oa = ("whole openai", bs.http_request(chat, bearer(bs.KEY_NORL), whole(bs.chat_body("stream-gpt", 64))), 0)
    n_tr = ("whole translated", bs.http_request(chat, bearer(bs.KEY_NORL), whole(bs.chat_body("stream-claude", 64))), 0)
    n_tr_rl = ("whole translated rl",
               bs.http_request(chat, bearer(bs.KEY_RL), whole(bs.chat_body("stream-claude", 64))), 0)
    n_an_rl = ("whole anthropic rl",
               bs.http_request(msgs, anth(bs.KEY_RL), whole(bs.messages_body("stream-claude", 64))), 0)
    e_provider = ("error provider 400", bs.http_request(chat, bearer(bs.KEY_NORL), bs.chat_body("fail-gpt", n)), 0)
    e_model = ("error unknown model", bs.http_request(chat, bearer(bs.KEY_NORL), bs.chat_body("no-such-model", n)), 0)
    e_key = ("error wrong key", bs.http_request(msgs, anth("sk-wrong"), bs.messages_body("stream-claude", n)), 0)
    e_tight = ("tight tenant", bs.http_request(chat, bearer(bs.KEY_TIGHT), whole(bs.chat_body("stream-gpt", 64))), 0)
    stream_sets = [[s_pass, s_usage], [s_trans], [s_anth], [s_trans_rl, s_pass_rl]]
    out = [Lane(f"stream{i}", stream_sets[i % len(stream_sets)], 0.0) for i in range(12)]
    whole_sets = [[n_oa], [n_tr], [n_tr_rl], [n_an_rl]]
    out += [Lane(f"whole{i}", whole_sets[i % len(whole_sets)], 0.2) for i in range(8)]
    out += [Lane("errors", [e_provider, e_model, e_key], 0.5), Lane("tight", [e_tight] * 3 + [n_oa], 0.1)]
    return out


EXPECTED = {"error provider 400": {400}, "error unknown model": {400, 404}, "error wrong key": {401},
            "tight tenant": {200, 429}}


def unexpected(seen: Counter[tuple[str, int]]) -> int:
    """Answers whose status is not the one their kind should get (200 unless listed in EXPECTED)."""
    return sum(n for (kind, status), n in seen.items() if status not in EXPECTED.get(kind, {200}))


async def open_streams(port: int, count: int, procs: dict[str, int], settle: float = 3.0
                       ) -> tuple[dict[str, int], dict[str, int], int]:
    """RSS before, with `count` slow streams open (each past its first event), and how many opened."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(settle)
    before = {name: rss_kib(pid) for name, pid in procs.items()}
    stats = bs.Stats(recording=True)
    chat = "/v1/chat/completions"
    reqs = [bs.http_request(chat, {"authorization": f"Bearer {bs.KEY_NORL}"}, bs.chat_body(model, 1000))
            for model in ("slow-gpt", "slow-claude")]
    clients: list[bs.StreamClient] = []
    for i in range(count):
        _t, c = await loop.create_connection(
            lambda r=reqs[i % 2]: bs.StreamClient(r, 1000, stats, lambda c: None), "127.0.0.1", port)
        clients.append(c)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(c.first for c in clients) < count:
        await asyncio.sleep(0.5)
    opened = sum(c.first for c in clients)
    await asyncio.sleep(settle)
    during = {name: rss_kib(pid) for name, pid in procs.items()}
    for c in clients:
        c.close()
    await asyncio.sleep(settle)
    return before, during, opened


async def soak(port: int, procs: Callable[[], dict[str, int]], minutes: float, warmup: float, interval: float,
               open_count: int) -> tuple[dict[str, list[int]], list[Lane], tuple[dict[str, int], dict[str, int], int]]:
    loop = asyncio.get_running_loop()
    running = True
    all_lanes = lanes(port)
    stats = bs.Stats()
    clients: list[LaneClient] = []
    for lane in all_lanes:
        _t, c = await loop.create_connection(lambda ln=lane: LaneClient(ln, stats, lambda: running),
                                             "127.0.0.1", port)
        clients.append(c)

    async def keep_connected() -> None:  # a lane whose connection the gateway closed reconnects
        while running:
            await asyncio.sleep(1)
            for i, c in enumerate(clients):
                if c.transport is None and running:
                    _t, clients[i] = await loop.create_connection(
                        lambda ln=c.lane: LaneClient(ln, stats, lambda: running), "127.0.0.1", port)

    keeper = asyncio.create_task(keep_connected())
    print(f"soak: warm-up {warmup:.0f} s ({len(all_lanes)} lanes)", flush=True)
    await asyncio.sleep(warmup)
    samples: dict[str, list[int]] = {}
    start = time.monotonic()
    end = start + minutes * 60
    next_progress = start + 60
    while True:
        for name, pid in procs().items():
            samples.setdefault(name, []).append(rss_kib(pid))
        now = time.monotonic()
        if now >= next_progress or now >= end:
            total = sum(sum(ln.seen.values()) for ln in all_lanes)
            bad = sum(unexpected(ln.seen) + ln.short + ln.lost for ln in all_lanes)
            rss = " ".join(f"{n}={v[-1] / 1024:.0f}" for n, v in sorted(samples.items()))
            print(f"soak: {(now - start) / 60:4.1f}/{minutes:g} min, {total} answers, {bad} unexpected; "
                  f"RSS MiB {rss}", flush=True)
            next_progress += 60
        if now >= end:
            break
        await asyncio.sleep(min(interval, max(0.0, end - now)))
    running = False
    keeper.cancel()
    for c in clients:
        if not c.in_flight:
            c.close()
    await asyncio.sleep(bs.EVENTS * bs.PACE_MS / 1000 + 1)
    for c in clients:
        c.close()
    opened = await open_streams(port, open_count, procs()) if open_count else ({}, {}, 0)
    return samples, all_lanes, opened


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30, help="minutes of sampled load (default 30)")
    ap.add_argument("--warmup", type=float, default=60, help="seconds of load before the first sample (default 60)")
    ap.add_argument("--interval", type=float, default=10, help="seconds between RSS samples (default 10)")
    ap.add_argument("--open-streams", type=int, default=1000, help="slow streams opened at the end (default 1000)")
    ap.add_argument("--workers", type=int, default=0, help="ext_proc workers (default: one per core)")
    args = ap.parse_args()
    bs._uvloop()
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    with bs.Setup(work, args.workers, plain=False) as setup:
        assert setup.gateway is not None
        gw = setup.gateway.pid
        first = bs.gateway_processes(gw)
        print(f"soak: gateway processes {', '.join(f'{n} ({p})' for n, p in sorted(first.items()))}; "
              f"logs in {work}", flush=True)
        samples, all_lanes, (before, during, opened) = asyncio.run(soak(
            setup.gw_port, lambda: bs.gateway_processes(gw), args.minutes, args.warmup, args.interval,
            args.open_streams))
        restarted = sorted(n for n, p in bs.gateway_processes(gw).items() if first.get(n) != p)
    print(f"\n{'process':<16}{'start MiB':>11}{'end MiB':>10}{'max MiB':>10}{'drift':>9}  verdict"
          f"{'':<4}{'per 1,000 open streams':>24}")
    worst, worst_name = 0.0, ""
    for name, xs in sorted(samples.items()):
        xs = [x for x in xs if x] or [0]
        drift = (xs[-1] - xs[0]) / xs[0] * 100 if xs[0] else 0.0
        if abs(drift) >= abs(worst):
            worst, worst_name = drift, name
        verdict = "target" if abs(drift) <= TARGET else "floor" if abs(drift) <= FLOOR else "OVER"
        per = ((during.get(name, 0) - before.get(name, 0)) / max(1, opened) * 1000 / 1024) if opened else 0.0
        print(f"{name:<16}{xs[0] / 1024:>11.1f}{xs[-1] / 1024:>10.1f}{max(xs) / 1024:>10.1f}{drift:>+8.1f}%  "
              f"{verdict:<10}{per:>+20.1f} MiB")
    per_total = (sum(during.values()) - sum(before.values())) / max(1, opened) * 1000 / 1024 if opened else 0.0
    print(f"{'gateway (sum)':<16}{'':>50}{per_total:>+20.1f} MiB")
    print()
    kinds: Counter[tuple[str, int]] = Counter()
    for lane in all_lanes:
        kinds.update(lane.seen)
    for (kind, status), count in sorted(kinds.items()):
        print(f"  {kind:<28} {status:>4}: {count}")
    bad = sum(unexpected(ln.seen) for ln in all_lanes)
    short = sum(ln.short for ln in all_lanes)
    lost = sum(ln.lost for ln in all_lanes)
    expected_errors = sum(n for (kind, status), n in kinds.items()
                          if status != 200 and status in EXPECTED.get(kind, {200}))
    total = sum(kinds.values())
    if restarted:
        print(f"soak: restarted during the run: {', '.join(restarted)}")
    print(f"soak: {opened}/{args.open_streams} slow streams opened; {short} streams cut short, {lost} connections lost")
    verdict = "target" if abs(worst) <= TARGET else "floor" if abs(worst) <= FLOOR else "over"
    print(f"soak: minutes={args.minutes:g} requests={total} errors_expected={expected_errors} "
          f"errors_unexpected={bad + short + lost} max_drift_pct={worst:+.1f} worst={worst_name} "
          f"rss_per_1000_streams_mb={per_total:.1f} verdict={verdict}")
    return 0 if verdict != "over" and not (bad + short + lost) and not restarted else 1


if __name__ == "__main__":
    sys.exit(main())
