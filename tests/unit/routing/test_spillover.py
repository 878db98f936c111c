"""`routing.spillover` and the `fill_pool` policy in `routing.decide`: the pool first until it is busy,
then the per-token providers, with hysteresis per priority class (batch first out, last back), and the
decision's explanation saying which and why."""

from __future__ import annotations

import pytest

import routing
from extproc.stages import explain
from routing.policy import FillPoolPolicy
from routing.pool import PoolLoad
from routing.spillover import NO_SPILL, SpillState, advance, combined, reason, thresholds

POOL = routing.Deployment(id="llama@gpu:llama-3.1-8b", model="llama", provider="gpu")
API = routing.Deployment(id="llama@together:llama-3.1-8b", model="llama", provider="together", input_per_mtok=0.2,
                         output_per_mtok=0.2)
API2 = routing.Deployment(id="llama@fireworks:llama-3.1-8b", model="llama", provider="fireworks",
                          input_per_mtok=0.3, output_per_mtok=0.3)
POLICY = FillPoolPolicy(target_utilization=0.8, band=0.05,
                        then=routing.ObjectivePolicy(minimize="cost", exploration=0.0))
WAIT = FillPoolPolicy(target_utilization=0.8, band=0.05, batch="wait", then=POLICY.then)


def load(util: float, waiting: int = 0, ready: int = 4, stale: bool = False) -> PoolLoad:
    return PoolLoad(utilization=util, waiting=waiting, running=int(util * 40), ready=ready, endpoints=4, stale=stale)


def step(state: SpillState, x: PoolLoad | None, policy: FillPoolPolicy = POLICY) -> SpillState:
    return advance(state, policy.target_utilization, policy.band, policy.batch == "wait", x)


def route(priority: str, state: SpillState, x: PoolLoad | None, policy: FillPoolPolicy = POLICY,
          candidates: tuple[routing.Deployment, ...] = (POOL, API, API2)) -> routing.Decision:
    snap = routing.Snapshot(10.0, pool_loads={"gpu": x} if x is not None else {})
    return routing.decide(routing.RouteRequest(est_input_tokens=1500, now=10.0), candidates, policy, snap,
                          priority=priority, spill=state)


def test_thresholds_per_class() -> None:
    assert thresholds(0.8, 0.05, "batch") == pytest.approx((0.85, 0.75))
    assert thresholds(0.8, 0.05, "default") == pytest.approx((0.9, 0.8))
    assert thresholds(0.8, 0.05, "interactive") == pytest.approx((0.95, 0.85))
    assert thresholds(0.8, 0.05, "unknown") == thresholds(0.8, 0.05, "default")
    assert thresholds(0.95, 0.05, "interactive") == pytest.approx((1.0, 1.0))  # capped


@pytest.mark.parametrize("util, spilling", [
    (0.50, set()), (0.84, set()), (0.85, {"batch"}), (0.90, {"batch", "default"}),
    (0.95, {"batch", "default", "interactive"}), (1.0, {"batch", "default", "interactive"}),
])
def test_starts_spilling_batch_first(util: float, spilling: set[str]) -> None:
    assert step(NO_SPILL, load(util)).spilling == spilling


def test_a_queue_spills_every_class_and_batch_may_wait() -> None:
    assert step(NO_SPILL, load(0.6, waiting=2)).spilling == {"batch", "default", "interactive"}
    assert step(NO_SPILL, load(0.6, waiting=2), WAIT).spilling == {"default", "interactive"}
    assert step(NO_SPILL, load(0.99), WAIT).spilling == {"default", "interactive"}


def test_no_flapping_inside_the_band() -> None:
    # utilization oscillating between the stop and start thresholds of every class: nothing switches
    state = NO_SPILL
    for util in [0.76, 0.84, 0.78, 0.83, 0.80] * 20:
        assert step(state, load(util)) is state
    spilling = SpillState(frozenset({"batch"}))
    for util in [0.76, 0.84, 0.78, 0.86, 0.80] * 20:
        assert step(spilling, load(util)).spilling == {"batch"}
    # a class switches once when its threshold is crossed, not on every wobble
    changes, state = 0, NO_SPILL
    for util in [0.70, 0.86, 0.80, 0.84, 0.78, 0.86, 0.76, 0.74, 0.80, 0.84, 0.76]:
        new = step(state, load(util))
        changes += new != state
        state = new
    assert changes == 2  # on at the first 0.86, off at 0.74


def test_returns_as_it_drains_interactive_first() -> None:
    state = step(NO_SPILL, load(1.0, waiting=3))
    assert state.spilling == {"batch", "default", "interactive"}
    state = step(state, load(0.90))  # the queue is gone, still busy: everyone stays out
    assert state.spilling == {"batch", "default", "interactive"}
    state = step(state, load(0.84))
    assert state.spilling == {"batch", "default"}  # interactive back first
    state = step(state, load(0.79))
    assert state.spilling == {"batch"}
    state = step(state, load(0.74))
    assert state == NO_SPILL


def test_stale_load_keeps_the_state_and_no_ready_endpoint_spills_all() -> None:
    spilling = SpillState(frozenset({"batch"}))
    assert step(spilling, load(0.1, stale=True)) is spilling
    assert step(NO_SPILL, load(1.0, ready=0, stale=True)) is NO_SPILL
    assert step(NO_SPILL, load(0.0, ready=0), WAIT).spilling == {"batch", "default", "interactive"}
    assert step(spilling, None) == NO_SPILL


def test_combined_pools() -> None:
    a = PoolLoad(utilization=1.0, waiting=1, running=8, ready=2, endpoints=2, stale=False)
    b = PoolLoad(utilization=0.5, waiting=0, running=4, ready=6, endpoints=6, stale=True)
    c = combined([a, b])
    assert c is not None
    assert c.utilization == pytest.approx(0.625) and c.waiting == 1 and c.ready == 8 and c.endpoints == 8
    assert not c.stale
    assert combined([]) is None and combined([a]) is a


def test_decision_pool_first_until_the_class_spills() -> None:
    state = step(NO_SPILL, load(0.87))  # batch spills, interactive keeps the pool
    interactive = route("interactive", state, load(0.87))
    batch = route("batch", state, load(0.87))
    assert interactive.deployments == (POOL.id, API.id, API2.id)
    assert batch.deployments == (API.id, API2.id, POOL.id)  # the cheapest provider, the pool last
    assert interactive.explanation.chosen_by == "pool interactive: pool at 0.87 < 0.95; objective"
    assert batch.explanation.chosen_by == "spill batch: pool at 0.87 >= 0.85; objective"


def test_decision_reasons_while_spilling_and_returning() -> None:
    state = step(NO_SPILL, load(0.7, waiting=2))
    assert route("interactive", state, load(0.7, waiting=2)).explanation.chosen_by.startswith(
        "spill interactive: 2 waiting in the pool (pool at 0.70)")
    assert route("interactive", state, load(0.9)).explanation.chosen_by.startswith(
        "spill interactive: pool at 0.90, not yet < 0.85")
    assert route("batch", NO_SPILL, load(0.9), WAIT).deployments[0] == POOL.id
    assert route("batch", NO_SPILL, load(0.9), WAIT).explanation.chosen_by.startswith(
        "pool batch: batch waits for the pool (pool at 0.90, 0 waiting)")


def test_spilling_with_nowhere_to_spill_stays_in_the_pool() -> None:
    state = SpillState(frozenset({"batch"}))
    d = route("batch", state, load(0.9), candidates=(POOL,))
    assert d.deployments == (POOL.id,)
    assert d.explanation.chosen_by.startswith("pool batch: pool at 0.90 >= 0.85 (no other candidate)")


def test_no_pool_load_ranks_as_then() -> None:
    d = route("interactive", NO_SPILL, None)
    plain = routing.decide(routing.RouteRequest(est_input_tokens=1500, now=10.0), (POOL, API, API2), POLICY.then,
                           routing.Snapshot(10.0))
    assert d.deployments == plain.deployments  # the pool has no per-token price: first by cost anyway
    assert d.explanation.chosen_by == "pool interactive: no pool load known; objective"


def test_max_attempts_is_thens() -> None:
    policy = FillPoolPolicy(then=routing.ObjectivePolicy(minimize="cost", exploration=0.0, max_attempts=2))
    assert policy.max_attempts == 2
    assert route("batch", SpillState(frozenset({"batch"})), load(0.9), policy).deployments == (API.id, API2.id)
    assert route("interactive", NO_SPILL, load(0.9), policy).deployments == (POOL.id, API.id)


def test_dropped_pool_goes_to_the_providers() -> None:
    snap = routing.Snapshot(10.0, pool_loads={"gpu": load(0.5)},
                            unavailable={POOL.id: routing.Unavailable(20.0, "2 consecutive failures")})
    d = routing.decide(routing.RouteRequest(est_input_tokens=1500, now=10.0), (POOL, API), POLICY, snap,
                       priority="interactive", spill=NO_SPILL)
    assert d.deployments == (API.id,)


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="target_utilization: must be in"):
        FillPoolPolicy(target_utilization=0.0)
    with pytest.raises(ValueError, match="band: must be in"):
        FillPoolPolicy(band=0.6)
    with pytest.raises(ValueError, match="batch: must be spill or wait"):
        FillPoolPolicy(batch="later")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="then: must be a policy other than fill_pool"):
        FillPoolPolicy(then=FillPoolPolicy())  # type: ignore[arg-type]


def test_static_fallback_order_puts_the_pool_first() -> None:
    deps = [("together", 0.2, 0.2, 0.5), ("gpu", 0.0, 0.0, 0.5), ("fireworks", 0.1, 0.1, 0.5)]
    assert routing.fallback_providers(deps, POLICY) == ("gpu", "fireworks", "together")
    assert routing.fallback_providers(deps, POLICY, pools={"together"}) == ("together", "gpu", "fireworks")
    assert routing.fallback_providers(deps, POLICY.then) == ("gpu", "fireworks", "together")
    listed = FillPoolPolicy(then=routing.RoundRobinPolicy())
    assert routing.fallback_providers(deps, listed) == ("gpu", "together", "fireworks")


def test_explanation_text() -> None:
    x = load(0.86)
    state = step(NO_SPILL, x)
    snap = routing.Snapshot(10.0, pool_loads={"gpu": x})
    d = routing.decide(routing.RouteRequest(est_input_tokens=1500, now=10.0), (POOL, API), POLICY, snap,
                       priority="batch", spill=state)
    line = explain.text("llama", POLICY, d, snap, [], 10.0)
    assert line.startswith("route=llama policy=fill_pool(target=0.8,band=0.05,batch=spill,then=objective(cost)) "
                           "by=spill batch: pool at 0.86 >= 0.85; objective ")
    assert "pools=gpu(util=0.86,waiting=1,ready=4/4)" not in line
    assert "pools=gpu(util=0.86,waiting=0,ready=4/4)" in line
    assert line.isascii()
    assert reason(state, 0.8, 0.05, False, load(0.2, stale=True), "batch") == "spill batch: pool load stale, state kept"


def test_step_reads_the_candidates_pools_under_fill_pool_only() -> None:
    loads = {"gpu": load(0.87), "other-gpu": load(1.0, waiting=5)}
    assert step_of(POLICY, loads).spilling == {"batch"}  # other-gpu is not behind this route
    assert step_of(POLICY.then, loads) == NO_SPILL
    assert step_of(POLICY, {}) == NO_SPILL


def step_of(policy: routing.Policy, loads: dict[str, PoolLoad]) -> SpillState:
    from routing.spillover import step as step_fn

    return step_fn(NO_SPILL, policy, loads, (POOL, API))
