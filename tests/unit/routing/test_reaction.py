"""Reaction to a slowdown and recovery after its heal, in a closed loop of streamed requests with
simulated time: requests arrive, wait for their first token (counted as evidence while they wait), and
their TTFT is learned when the token arrives. Also: answer lengths learned per deployment."""

from __future__ import annotations

import heapq
import random
from collections import Counter

import pytest

from routing import Deployment, LatencyStats, ObjectivePolicy, RouteRequest, decide
from routing.lengths import DEFAULT_PRIOR, OutputLengths

A = Deployment(id="cheap@a#0", model="cheap", provider="a", input_per_mtok=1.0, output_per_mtok=4.0, quality=0.85)
B = Deployment(id="dear@b#0", model="dear", provider="b", input_per_mtok=2.0, output_per_mtok=8.0, quality=0.85)
POLICY = ObjectivePolicy(minimize="cost", max_ttft_ms=1000, ttft_quantile=0.9, exploration=0.02)
SLOW_FROM, HEAL_AT, END = 60.0, 120.0, 200.0


def run(rate: float, seed: int = 3) -> tuple[float, float, float]:
    """Streamed requests at `rate` per second to [A, B]; A's TTFT is 0.05 s, 2.5 s from SLOW_FROM to
    HEAL_AT; B's 0.1 s. Returns (react_s, recover_s, share of A's traffic during the slowdown after the
    reaction) — react: the first second after the slowdown from which A's share, over sliding windows of
    at least one second and 50 requests, stays ≤ 10 % of its share before; recover: the first second
    after the heal from which it stays ≥ 90 % of it."""
    rng = random.Random(seed)
    stats = LatencyStats()
    events: list[tuple[float, int, str, float]] = []  # (first token at, token, deployment, sent at)
    sent: Counter[tuple[int, str]] = Counter()
    t, n = 0.0, 0
    while t < END:
        t += rng.expovariate(rate)
        while events and events[0][0] <= t:  # first tokens that arrived before this request
            at, token, dep_id, sent_at = heapq.heappop(events)
            stats.end(dep_id, token)
            stats.observe_ttft(dep_id, at - sent_at, at)
        snap = stats.snapshot(t).waiting(stats.floors((A.id, B.id), t))
        d = decide(RouteRequest(est_input_tokens=500, now=t), [A, B], POLICY, snap, rand=rng.random())
        assert d.primary is not None
        if d.explanation.chosen_by == "exploration":
            stats.record_probe(d.primary, t)
        slow = d.primary == A.id and SLOW_FROM <= t < HEAL_AT
        ttft = (2.5 if slow else 0.05 if d.primary == A.id else 0.1) * rng.uniform(0.9, 1.1)
        n += 1
        stats.begin(d.primary, n, t)
        heapq.heappush(events, (t + ttft, n, d.primary, t))
        sent[(int(t), d.primary)] += 1

    width = max(1, round(50 / rate))

    def share(s: int) -> float:
        a = sum(sent[(x, A.id)] for x in range(s, s + width))
        total = a + sum(sent[(x, B.id)] for x in range(s, s + width))
        return a / total if total else 0.0

    before = sum(share(s) for s in range(20, int(SLOW_FROM))) / (SLOW_FROM - 20)
    react = next(s for s in range(int(SLOW_FROM), int(HEAL_AT))
                 if all(share(x) <= 0.1 * before for x in range(s, int(HEAL_AT) - width + 1)))
    recover = next(s for s in range(int(HEAL_AT), int(END))
                   if all(share(x) >= 0.9 * before for x in range(s, int(END) - width + 1)))
    during = sum(sent[(s, A.id)] for s in range(react, int(HEAL_AT)))
    total = sum(sent[(s, k)] for s in range(react, int(HEAL_AT)) for k in (A.id, B.id))
    return react - SLOW_FROM, recover - HEAL_AT, during / total


@pytest.mark.parametrize("rate", [100.0, 25.0, 6.0])
def test_a_slowdown_is_left_within_seconds_and_a_heal_is_noticed_within_seconds(rate: float) -> None:
    react_s, recover_s, probes = run(rate)
    assert react_s <= 5
    assert recover_s <= 30
    assert probes <= 0.025  # while slow: only probes, at most the exploration rate (and one per 2 s)


def test_waiting_requests_are_evidence_before_any_slow_answer_lands() -> None:
    stats = LatencyStats()
    for _ in range(50):
        stats.observe(A.id, 0.05, 0.01, 0.0)
    assert stats.floors([A.id], 1.0) == {}  # nothing waiting
    for k in range(10):
        stats.begin(A.id, k, 1.0 + k * 0.1)  # ten requests, the oldest 1.9 s into its wait at t=2.9
    floors = stats.floors([A.id], 2.9)
    assert floors[A.id] == pytest.approx(2.9 - 1.4)  # the median wait: half of them waited at least this
    snap = stats.snapshot(2.9).waiting(floors)
    assert snap.estimate(A.id).ttft_quantile(0.9) >= 1.5 and snap.estimate(A.id).ttft_p50_s >= 1.5
    d = decide(RouteRequest(est_input_tokens=500, now=2.9), [A, B], POLICY, snap)
    assert d.primary == B.id and d.explanation.constraint_failures[A.id][0].constraint == "ttft_p90"
    for k in range(10):
        stats.end(A.id, k)
    assert stats.floors([A.id], 3.0) == {}


def test_steady_waits_are_no_evidence() -> None:
    """Requests waiting no longer than a deployment usually takes say nothing new."""
    stats = LatencyStats()
    rng = random.Random(1)
    for _ in range(200):
        stats.observe(A.id, rng.lognormvariate(-1.0, 0.5), 0.01, 0.0)
    for k in range(20):
        stats.begin(A.id, k, 10.0 - k * 0.02)  # waits 0 .. 0.38 s, about the usual TTFT
    assert stats.floors([A.id], 10.0) == {}


def test_answer_lengths_are_learned_per_deployment() -> None:
    lengths = OutputLengths()
    assert lengths.expected(A.id) == DEFAULT_PRIOR
    for _ in range(50):
        lengths.observe(A.id, 900, None)
        lengths.observe(B.id, 300, None)
    assert lengths.expected(A.id) == pytest.approx(900, rel=0.01)
    assert lengths.expected(B.id) == pytest.approx(300, rel=0.01)
    assert lengths.expected("new@c") == DEFAULT_PRIOR and "new@c" not in lengths.view()
    # an answer cut by a small max_tokens says little: not learned ...
    assert not lengths.observe(A.id, 64, 64)
    # ... one cut at a cap above the mean pushes it up, as the truth would
    assert lengths.observe(B.id, 2000, 2000) and lengths.expected(B.id) > 300
    configured = OutputLengths()
    configured.configure({A.id: 120, B.id: None})
    assert configured.expected(A.id) == 120 and configured.expected(B.id) == DEFAULT_PRIOR


def test_an_unseen_candidate_is_assumed_to_answer_like_the_routes_others() -> None:
    """Not like every answer the process has seen: another route's long answers say nothing here."""
    from routing.scorers import answer_lengths
    from routing.snapshot import Snapshot
    c = Deployment(id="new@c#0", model="new", provider="c")
    snap = Snapshot(0.0, output_tokens={A.id: 100.0, B.id: 300.0, "other-route@x": 5000.0})
    assert answer_lengths([A, B, c], snap) == [100.0, 300.0, 200.0]
    assert answer_lengths([c], snap) == [DEFAULT_PRIOR]
    configured = Deployment(id="conf@d#0", model="conf", provider="d", expected_output_tokens=50)
    assert answer_lengths([A, configured], snap) == [100.0, 50.0]


def test_learned_lengths_reach_the_decision() -> None:
    """Two models at equal prices per token: the one whose answers are three times longer is the dearer."""
    long_ = Deployment(id="long@a#0", model="long", provider="a", input_per_mtok=1.0, output_per_mtok=4.0)
    short = Deployment(id="short@b#0", model="short", provider="b", input_per_mtok=1.0, output_per_mtok=4.0)
    stats = LatencyStats()
    policy = ObjectivePolicy(minimize="cost", exploration=0.0)
    r = RouteRequest(est_input_tokens=100, now=1.0)
    assert decide(r, [long_, short], policy, stats.snapshot(1.0)).primary == long_.id  # a tie: config order
    for _ in range(20):
        stats.observe_output(long_.id, 900, None)
        stats.observe_output(short.id, 300, None)
    d = decide(r, [long_, short], policy, stats.snapshot(2.0))
    assert d.primary == short.id
    assert d.explanation.scores[long_.id].output_tokens == pytest.approx(900, rel=0.02)
    # the client's own max_tokens caps the expectation: both capped at 200, a tie again
    capped = RouteRequest(est_input_tokens=100, max_output_tokens=200, now=3.0)
    assert decide(capped, [long_, short], policy, stats.snapshot(3.0)).primary == long_.id


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_a_steady_deployment_rarely_looks_like_it_changed(sigma: float) -> None:
    """Log-normal TTFTs, 20,000 answers: a regime (three answers in a row beyond normal) starts by
    chance only a handful of times, and each ends within a few answers."""
    rng = random.Random(5)
    stats = LatencyStats()
    starts, in_regime = 0, 0
    for k in range(20_000):
        before = stats.regime(A.id)
        stats.observe_ttft(A.id, 0.3 * rng.lognormvariate(0.0, sigma), k * 0.01)
        starts += before == 0 and stats.regime(A.id) != 0
        in_regime += stats.regime(A.id) != 0
    assert starts <= 10
    assert in_regime <= 100


def test_a_slowdown_longer_than_the_memory_becomes_normal_and_its_heal_is_still_seen() -> None:
    stats = LatencyStats(half_life_s=10.0)
    for k in range(100):
        stats.observe_ttft(A.id, 0.1, k * 0.1)
    for k in range(300):  # 30 s slow: past two half-lives, the new normal
        stats.observe_ttft(A.id, 2.0, 10.0 + k * 0.1)
    assert stats.regime(A.id) == 0 and stats.snapshot(40.0).estimate(A.id).ttft_p50_s == pytest.approx(2.0, rel=0.1)
    for k in range(3):  # healed: three answers far below that normal
        stats.observe_ttft(A.id, 0.1, 41.0 + k)
    assert stats.regime(A.id) == -1
    assert stats.snapshot(44.0).estimate(A.id).ttft_s[0.9] == pytest.approx(0.1)


def test_probes_go_to_the_deployment_that_slowed_down_not_the_one_always_slow() -> None:
    """Both break the TTFT bound; only `A` broke it lately (a slow regime): its heal is the one that
    would change decisions, so every probe goes to it."""
    from routing.pickers import explore
    from routing.snapshot import LatencyEstimate, Snapshot
    always = Deployment(id="always@c#0", model="always", provider="c", input_per_mtok=1.5, output_per_mtok=5.0,
                        quality=0.85)
    snap = Snapshot(10.0, estimates={A.id: LatencyEstimate({0.5: 2.5, 0.9: 2.5}, 2.5, 0.01, 5.0, 0.0, regime=1),
                                     always.id: LatencyEstimate.of(2.0, 0.01, last_observed=0.0),
                                     B.id: LatencyEstimate.of(0.1, 0.01, last_observed=9.9)})
    decisions = [decide(RouteRequest(est_input_tokens=500, now=10.0), [A, always, B], POLICY, snap,
                        rand=k / 100, explore_due=True) for k in range(100)]
    assert {d.primary for d in decisions} == {A.id}
    assert explore(POLICY, [2, 0, 1], [A, always, B], snap, 10.0, 0.5, (("x",), (), ()), True, False) is None
