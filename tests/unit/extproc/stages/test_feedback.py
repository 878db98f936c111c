"""`extproc.stages.feedback`: what a worker learns from each answer — which deployment answered,
which attempts failed, the provider's rate-limit pressure, latency — read back the way the next
decision reads it, through `RoutingState.stats.snapshot(now)`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

import routing
from extproc.stages import feedback
from extproc.stages.feedback import RoutingState
from tests.unit.extproc.stages.support import dep

NOW = 500.0  # the statistics' monotonic clock
WALL = 1_700_000_000.0  # epoch seconds: providers' absolute reset times are read against it
GPT, CLAUDE, FLASH = dep("gpt"), dep("claude"), dep("flash")
CHAIN = [GPT, CLAUDE, FLASH]  # openai, anthropic, gemini
NAME = {GPT.id: "gpt", CLAUDE.id: "claude", FLASH.id: "flash"}


def state() -> RoutingState:
    return RoutingState(clock=lambda: NOW, rand=lambda: 0.5, wall=lambda: WALL)


def unavailable(s: RoutingState) -> dict[str, routing.Unavailable]:
    return {NAME[k]: v for k, v in s.stats.snapshot(NOW).unavailable.items()}


# -- the provider's rate-limit headers and the tenant's ----------------------------------------------

@pytest.mark.parametrize(("headers", "units", "tenant", "provider"), [
    ({"content-type": "application/json"}, {"tokens"}, [], {}),
    # The provider's only (no tenant limit counts these units): learned, not shown.
    ({"x-ratelimit-remaining-tokens": "9000", "x-ratelimit-limit-tokens": "10000", "x-ratelimit-reset-tokens": "6s"},
     set(), [], {"x-ratelimit-remaining-tokens": "9000", "x-ratelimit-limit-tokens": "10000",
                 "x-ratelimit-reset-tokens": "6s"}),
    ({"x-ratelimit-remaining-requests": "59"}, {"tokens"}, [], {"x-ratelimit-remaining-requests": "59"}),
    # The tenant's only: shown, not learned.
    ({"x-ratelimit-remaining-tokens": "512", "x-ratelimit-limit-tokens": "1000"}, {"tokens"},
     [("x-ratelimit-remaining-tokens", "512"), ("x-ratelimit-limit-tokens", "1000")], {}),
    # Both: Envoy joins the provider's value and the gateway's with a comma, the provider's first.
    ({"x-ratelimit-remaining-tokens": "9000, 512", "x-ratelimit-limit-tokens": "10000,1000",
      "x-ratelimit-remaining-requests": "59"}, {"tokens"},
     [("x-ratelimit-remaining-tokens", "512"), ("x-ratelimit-limit-tokens", "1000")],
     {"x-ratelimit-remaining-tokens": "9000", "x-ratelimit-limit-tokens": "10000",
      "x-ratelimit-remaining-requests": "59"}),
    ({"x-ratelimit-remaining-requests": "59,9", "x-ratelimit-remaining-usd": "1.5"}, {"requests", "usd"},
     [("x-ratelimit-remaining-requests", "9"), ("x-ratelimit-remaining-usd", "1.5")],
     {"x-ratelimit-remaining-requests": "59"}),
], ids=["none", "provider-only", "provider-other-unit", "tenant-only", "combined", "combined-two-units"])
def test_split_limit_headers(headers: dict[str, str], units: set[str], tenant: list[tuple[str, str]],
                             provider: dict[str, str]) -> None:
    assert feedback.split_limit_headers(headers, frozenset(units)) == (tenant, provider)


# -- learn: who answered, who failed -----------------------------------------------------------------

@pytest.mark.parametrize(("answered_by", "status", "attempts", "index", "failed"), [
    ("openai", 200, 1, 0, []),
    ("anthropic", 200, 2, 1, ["gpt"]),
    # Envoy skipped a provider (its hosts ejected) without an attempt: only the attempt made blames.
    ("gemini", 200, 2, 2, ["claude"]),
    # The first attempt landed past the primary: Envoy skipped it, ejected — unavailable for now.
    ("anthropic", 200, 1, 1, ["gpt"]),
    ("gemini", 200, 1, 2, ["gpt", "claude"]),
    ("gemini", 200, 3, 2, ["gpt", "claude"]),
    ("gemini", 200, 9, 2, ["gpt", "claude"]),
    # Retries on the first provider's other hosts blame no other deployment.
    ("openai", 200, 3, 0, []),
    ("openai", 503, 1, 0, ["gpt"]),
    ("anthropic", 429, 2, 1, ["gpt", "claude"]),
    ("anthropic", 500, 1, 1, ["gpt", "claude"]),  # the primary skipped (ejected), the answer a failure
    ("anthropic", 529, 1, 1, ["gpt", "claude"]),
    # The client's mistake is nobody's failure, nor a success.
    ("openai", 400, 1, 0, []),
    ("anthropic", 404, 2, 1, ["gpt"]),
    # Envoy answered itself (no host): attempt N is blamed, and those before it.
    (None, 503, 1, 0, ["gpt"]),
    (None, 503, 2, 1, ["gpt", "claude"]),
    (None, 504, 3, 2, ["gpt", "claude", "flash"]),
    (None, 503, 7, 2, ["gpt", "claude", "flash"]),
    # A host of no provider in the chain is no answer from it either.
    ("azure", 200, 2, 1, ["gpt", "claude"]),
])
def test_learn_who_answered_and_who_failed(answered_by: str | None, status: int, attempts: int, index: int,
                                           failed: list[str]) -> None:
    s = state()
    assert feedback.learn(s, CHAIN, answered_by, status, attempts, {}) == index
    assert sorted(unavailable(s)) == sorted(failed)
    for u in unavailable(s).values():
        assert u == routing.Unavailable(NOW + 1.0, "1 consecutive failure")


def _http_date(seconds_after_wall: float) -> str:
    return format_datetime(datetime.fromtimestamp(WALL, UTC) + timedelta(seconds=seconds_after_wall), usegmt=True)


@pytest.mark.parametrize(("headers", "cooldown_s"), [
    ({}, 1.0),
    ({"retry-after": "30"}, 30.0),
    ({"retry-after-ms": "2500"}, 2.5),
    ({"retry-after-ms": "200"}, 1.0),  # never shorter than the back-off
    ({"retry-after": _http_date(45)}, 45.0),  # an HTTP date, read against the wall clock
    ({"retry-after": "3600"}, 60.0),  # at most the longest cool-down
])
def test_a_refusal_cools_the_deployment_down_for_its_retry_after(headers: dict[str, str], cooldown_s: float) -> None:
    s = state()
    feedback.learn(s, CHAIN[1:], "anthropic", 429, 1, headers)
    assert unavailable(s) == {"claude": routing.Unavailable(NOW + cooldown_s, "1 consecutive failure")}


def test_failures_back_off_and_a_success_resets_the_streak() -> None:
    s = state()
    feedback.learn(s, CHAIN, "openai", 503, 1, {})
    feedback.learn(s, CHAIN, "openai", 503, 1, {})
    assert unavailable(s) == {"gpt": routing.Unavailable(NOW + 2.0, "2 consecutive failures")}
    feedback.learn(s, CHAIN, "openai", 200, 1, {})
    feedback.learn(s, CHAIN, "openai", 503, 1, {})
    assert unavailable(s) == {"gpt": routing.Unavailable(NOW + 2.0, "1 consecutive failure")}


def _iso(seconds_after_wall: float) -> str:
    return (datetime.fromtimestamp(WALL, UTC) + timedelta(seconds=seconds_after_wall)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(("answered_by", "status", "headers", "pressured"), [
    ("openai", 200, {"x-ratelimit-remaining-tokens": "5", "x-ratelimit-limit-tokens": "1000",
                     "x-ratelimit-reset-tokens": "6s"},
     {"gpt": routing.Pressured(NOW + 6.0, 0.005, "x-ratelimit-remaining-tokens")}),
    ("openai", 200, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-limit-requests": "60",
                     "x-ratelimit-reset-requests": "1m30s", "x-ratelimit-remaining-tokens": "900",
                     "x-ratelimit-limit-tokens": "1000", "x-ratelimit-reset-tokens": "1s"},
     {"gpt": routing.Pressured(NOW + 60.0, 0.0, "x-ratelimit-remaining-requests")}),
    # Anthropic's absolute reset times are read against the injected wall clock.
    ("anthropic", 200, {"anthropic-ratelimit-requests-remaining": "1", "anthropic-ratelimit-requests-limit": "50",
                        "anthropic-ratelimit-requests-reset": _iso(20)},
     {"claude": routing.Pressured(NOW + 20.0, 0.02, "anthropic-ratelimit-requests-remaining")}),
    # A refusal still tells how much is left.
    ("openai", 429, {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-limit-tokens": "1000",
                     "x-ratelimit-reset-tokens": "4s"},
     {"gpt": routing.Pressured(NOW + 4.0, 0.0, "x-ratelimit-remaining-tokens")}),
    # Plenty left: no pressure.
    ("openai", 200, {"x-ratelimit-remaining-tokens": "500", "x-ratelimit-limit-tokens": "1000",
                     "x-ratelimit-reset-tokens": "6s"}, {}),
    # Envoy's own reply carries no provider's reading.
    (None, 503, {"x-ratelimit-remaining-tokens": "5", "x-ratelimit-limit-tokens": "1000",
                 "x-ratelimit-reset-tokens": "6s"}, {}),
], ids=["openai-tokens", "most-constraining", "anthropic-absolute-reset", "on-a-429", "plenty-left", "envoys-reply"])
def test_provider_pressure_is_learned_from_the_answering_providers_headers(
        answered_by: str | None, status: int, headers: dict[str, str],
        pressured: dict[str, routing.Pressured]) -> None:
    s = state()
    feedback.learn(s, CHAIN, answered_by, status, 1, headers)
    assert {NAME[k]: v for k, v in s.stats.snapshot(NOW).pressured.items()} == pressured


def test_pressure_ends_when_the_provider_says_there_is_room_again() -> None:
    s = state()
    low = {"x-ratelimit-remaining-tokens": "5", "x-ratelimit-limit-tokens": "1000", "x-ratelimit-reset-tokens": "30s"}
    feedback.learn(s, CHAIN, "openai", 200, 1, low)
    assert GPT.id in s.stats.snapshot(NOW).pressured
    feedback.learn(s, CHAIN, "openai", 200, 1, {**low, "x-ratelimit-remaining-tokens": "800"})
    assert dict(s.stats.snapshot(NOW).pressured) == {}


# -- observe: latency --------------------------------------------------------------------------------

def _blended(observed: float, prior: float) -> float:
    """What the snapshot reads after one observation: RoutingState's prior weighs 0.05."""
    return (observed + 0.05 * prior) / 1.05


@pytest.mark.parametrize(("completion_tokens", "tpot_s"), [
    (None, None), (0, None), (1, None),  # no time per token without a second token
    (2, 1.0), (11, 0.1), (101, 0.01),
])
def test_observe_learns_ttft_and_time_per_output_token(completion_tokens: int | None, tpot_s: float | None) -> None:
    s = RoutingState(clock=lambda: 11.3, rand=lambda: 0.5, wall=lambda: WALL)
    feedback.first_token(s, GPT, sent_at=10.0, headers_at=10.3)  # learned when the first token arrives
    feedback.observe(s, GPT, headers_at=10.3, completion_tokens=completion_tokens, max_output_tokens=None)
    est = s.stats.snapshot(11.3).estimate(GPT.id)
    assert est.weight == pytest.approx(1.0, rel=0.03)
    assert est.last_observed == 10.3
    assert est.ttft_p50_s == pytest.approx(_blended(0.3, 1.0), rel=0.03)
    if tpot_s is None:
        assert est.tpot_p50_s == 0.02  # the prior
    else:
        assert est.tpot_p50_s == pytest.approx(_blended(tpot_s, 0.02), rel=0.03)


def test_observe_learns_the_answer_length_of_streamed_and_whole_answers() -> None:
    s = state()
    for _ in range(30):
        feedback.observe(s, GPT, None, 900, None)  # a whole (not streamed) answer: length only
        feedback.observe(s, CLAUDE, NOW - 1, 300, 4096)
    snap = s.stats.snapshot(NOW)
    assert snap.expected_output(GPT.id) == pytest.approx(900, rel=0.01)
    assert snap.expected_output(CLAUDE.id) == pytest.approx(300, rel=0.01)
    assert GPT.id not in snap.estimates  # no latency from a whole answer
    feedback.observe(s, GPT, None, None, None)  # no usage: nothing learned
    assert s.stats.snapshot(NOW).expected_output(GPT.id) == snap.expected_output(GPT.id)


def test_a_request_waiting_for_its_first_token_is_evidence_until_its_wait_ends() -> None:
    s = RoutingState(clock=lambda: NOW, rand=lambda: 0.5, wall=lambda: WALL)
    for _ in range(20):
        feedback.first_token(s, GPT, NOW - 10.1, NOW - 10.0)  # 100 ms usually
    token = object()
    feedback.waiting(s, GPT, token, NOW - 3.0)
    assert s.stats.floors([GPT.id], NOW) == {GPT.id: pytest.approx(3.0)}
    feedback.waited(s, GPT.id, token)
    feedback.waited(s, GPT.id, token)  # idempotent
    assert s.stats.floors([GPT.id], NOW) == {}


def test_observe_touches_only_the_deployment_observed() -> None:
    s = state()
    feedback.first_token(s, CLAUDE, NOW - 2, NOW - 1.5)
    feedback.observe(s, CLAUDE, NOW - 1.5, 5, None)
    assert set(s.stats.snapshot(NOW).estimates) == {CLAUDE.id}


# -- the state's counters ----------------------------------------------------------------------------

def test_a_broken_2xx_is_a_failure_after_its_success() -> None:
    """`learn` counted the 2xx a success; `broken` (a page, invalid JSON, a cut stream) makes it a
    failure: the deployment cools down like after a 5xx, the others are untouched."""
    s = state()
    feedback.learn(s, [GPT, CLAUDE], "openai", 200, 1, {})
    assert not s.stats.cooling_down(GPT.id, NOW)
    feedback.broken(s, GPT, "stream cut before its final event", "r1")
    assert s.stats.cooling_down(GPT.id, NOW) and not s.stats.cooling_down(CLAUDE.id, NOW)


def test_round_robin_counters_are_per_route() -> None:
    s = state()
    assert [s.next_rr("a"), s.next_rr("a"), s.next_rr("b"), s.next_rr("a")] == [0, 1, 0, 2]


def test_exploration_is_paced_not_drawn() -> None:
    """At exploration 0.1, one streamed decision in ten probes the demoted deployment — whatever the
    random draws say — and a run of whole answers (which teach no latency) banks at most two probes."""
    fast = routing.Deployment(id="fast@a", model="fast", provider="a", input_per_mtok=5.0, output_per_mtok=5.0)
    slow = routing.Deployment(id="slow@b", model="slow", provider="b", input_per_mtok=1.0, output_per_mtok=1.0)
    policy = routing.ObjectivePolicy(minimize="cost", max_ttft_ms=1000, exploration=0.1, affinity=False)
    now = [100.0]
    s = RoutingState(clock=lambda: now[0], rand=lambda: 0.99, wall=lambda: WALL)
    for _ in range(10):
        s.stats.observe_ttft(fast.id, 0.1, 90.0)
        s.stats.observe_ttft(slow.id, 3.0, 90.0)  # cheaper, but past the TTFT bound: demoted by latency
    explored = []
    for _ in range(100):
        now[0] += 2.0  # every probe's answer is older than PROBE_AFTER_S by the next turn
        d, _ = s.decide("r", [fast, slow], policy, routing.RouteRequest(est_input_tokens=10, now=now[0]))
        explored.append(d.explanation.chosen_by == "exploration")
    assert sum(explored) == 10 and all(explored[k] == (k % 10 == 9) for k in range(100))
    for _ in range(50):  # whole answers: they cannot probe, and bank at most two probes
        now[0] += 2.0
        s.decide("r", [fast, slow], policy, routing.RouteRequest(est_input_tokens=10, now=now[0], observes_latency=False))
    burst = []
    for _ in range(3):
        now[0] += 2.0
        d, _ = s.decide("r", [fast, slow], policy, routing.RouteRequest(est_input_tokens=10, now=now[0]))
        burst.append(d.explanation.chosen_by == "exploration")
    assert burst == [True, True, False]
