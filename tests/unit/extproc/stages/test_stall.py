"""The router stage's idle timer for streamed answers (`stall`), on a fake loop: no sockets, no
sleeping."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import yaml

from extproc.config import load_text
from extproc.envoyconf import fallback
from extproc.runtime import compile_runtime
from extproc.stages import stall
from extproc.translate.registry import default_registry
from tests.unit.extproc.stages.support import CONFIG, ENVIRON


class FakeHandle:
    def __init__(self, loop: FakeLoop, when: float, callback: Callable[[], None]) -> None:
        self.loop, self.when, self.callback, self.cancelled = loop, when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """`time` and `call_at` of an event loop; `advance` runs what falls due, in order."""

    def __init__(self) -> None:
        self.now = 100.0
        self.handles: list[FakeHandle] = []
        self.armed = 0  # call_at calls

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None], /) -> FakeHandle:
        self.armed += 1
        h = FakeHandle(self, when, callback)
        self.handles.append(h)
        return h

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while due := sorted((h for h in self.handles if not h.cancelled and h.when <= end), key=lambda h: h.when):
            h = due[0]
            self.handles.remove(h)
            self.now = max(self.now, h.when)
            h.callback()
        self.now = end

    @property
    def pending(self) -> int:
        return sum(1 for h in self.handles if not h.cancelled)


@pytest.mark.parametrize(("bound", "after"), [(300.0, 299.0), (10.0, 9.0), (8.0, 7.2), (1.0, 0.9), (0.5, 0.45)])
def test_the_timer_fires_ten_percent_before_the_bound_at_most_one_second(bound: float, after: float) -> None:
    loop, fired = FakeLoop(), []
    stall.StallTimer(loop, bound, lambda: fired.append(loop.now))
    loop.advance(after - 0.001)
    assert fired == []
    loop.advance(0.002)
    assert fired == [pytest.approx(100.0 + after)]


def test_each_chunk_restarts_the_silence_without_a_new_timer_per_chunk() -> None:
    loop, fired = FakeLoop(), []
    timer = stall.StallTimer(loop, 1.0, lambda: fired.append(loop.now))
    for _ in range(500):  # a chunk every 10 ms for 5 s: never 0.9 s of silence
        loop.advance(0.01)
        timer.touch()
    assert fired == [] and loop.armed <= 1 + 5 / 0.9  # re-armed once per 0.9 s at most, not per chunk
    assert loop.pending == 1
    last = loop.now
    loop.advance(2.0)
    assert fired == [pytest.approx(last + 0.9)]
    assert loop.pending == 0


def test_it_fires_once_and_never_after_stop() -> None:
    loop, fired = FakeLoop(), []
    stall.StallTimer(loop, 1.0, lambda: fired.append(loop.now))
    loop.advance(5)
    loop.advance(5)
    assert len(fired) == 1
    stopped = stall.StallTimer(loop, 1.0, lambda: fired.append(-1.0))
    loop.advance(0.5)
    stopped.stop()
    stopped.stop()  # idempotent
    loop.advance(5)
    assert fired.count(-1.0) == 0 and loop.pending == 0


def test_the_bound_is_the_one_envoy_applies_to_the_attempt() -> None:
    """One provider: its own idle timeout; a fallback order: the shortest of its providers', the
    value `fallback.attempt_idle_timeout` renders as the route's per-try idle timeout."""
    cfg = copy.deepcopy(CONFIG)
    idle = {"openai": 8.0, "anthropic": 30.0, "gemini": 2.0}
    for p in cfg["providers"]:
        if p["name"] in idle:
            p["cluster"] = {"idle_timeout": f"{idle[p['name']]}s"}
    rt = compile_runtime(load_text(yaml.safe_dump(cfg)), default_registry(), environ=ENVIRON)
    providers = {p.name: p for p in rt.config.providers}
    gpt, claude, flash = (rt.deployments[m][0] for m in ("gpt", "claude", "flash"))
    assert stall.idle_bound([claude]) == 30.0 and stall.idle_bound([gpt]) == 8.0
    for chain in ([gpt, claude], [claude, gpt], [claude, flash, gpt]):
        order = tuple(d.provider for d in chain)
        assert stall.idle_bound(chain) == fallback.attempt_idle_timeout(order, providers)
