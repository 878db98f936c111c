"""The `fill_pool` route policy in the config: parsed into `routing.policy.FillPoolPolicy`, every problem
reported with its path."""

from __future__ import annotations

import pytest

from extproc.config import ConfigError, load_text
from routing.policy import FillPoolPolicy, ObjectivePolicy, RoundRobinPolicy

HEAD = """
providers:
  - {name: gpu, type: openai, endpoint: "http://127.0.0.1:8000", api_key_env: K}
  - {name: api, type: openai, api_key_env: K}
models:
  - {name: llama-pool, provider: gpu, upstream_model: llama}
  - {name: llama-api, provider: api, upstream_model: llama, price: {input_per_mtok: 0.2, output_per_mtok: 0.2}}
tenants: []
routes:
  - name: llama
    candidates: [llama-pool, llama-api]
"""


def policy_of(text: str) -> FillPoolPolicy:
    p = load_text(HEAD + "    policy: " + text).routes[0].policy
    assert isinstance(p, FillPoolPolicy)
    return p


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_text(HEAD + "    policy: " + text)
    return e.value.problems


def test_defaults() -> None:
    p = policy_of("{kind: fill_pool}")
    assert (p.target_utilization, p.band, p.batch) == (0.8, 0.05, "spill")
    assert p.then == ObjectivePolicy(minimize="cost")
    assert p.max_attempts == 3


def test_every_setting() -> None:
    p = policy_of("{kind: fill_pool, target_utilization: 0.7, band: 0.1, batch: wait, "
                  "then: {kind: round_robin, max_attempts: 2}}")
    assert (p.target_utilization, p.band, p.batch) == (0.7, 0.1, "wait")
    assert p.then == RoundRobinPolicy(max_attempts=2)
    assert p.max_attempts == 2


@pytest.mark.parametrize("text, expected", [
    ("{kind: fill_pool, target_utilization: 1.5}", "routes[0].policy.target_utilization: must be <= 1"),
    ("{kind: fill_pool, target_utilization: high}", "routes[0].policy.target_utilization: must be a number"),
    ("{kind: fill_pool, band: -0.1}", "routes[0].policy.band: must be >= 0"),
    ("{kind: fill_pool, batch: later}", "routes[0].policy.batch: must be one of: spill, wait"),
    ("{kind: fill_pool, spill_at: 0.9}",
     "routes[0].policy.spill_at: unknown key (expected one of: kind, target_utilization, band, batch, then)"),
    ("{kind: fill_pool, then: {kind: fill_pool}}",
     "routes[0].policy.then.kind: must be a policy other than fill_pool (it ranks the spill candidates)"),
    ("{kind: fill_pool, then: {kind: objective}}",
     "routes[0].policy.then: an objective policy takes exactly one of minimize (cost, latency) or maximize (quality)"),
    ("{kind: fill_pool, then: {kind: cheapest, exploration: -1}}", "routes[0].policy.then.exploration: must be >= 0"),
    ("{kind: fill_pool, then: cheapest}", "routes[0].policy.then: must be a mapping with a kind"),
    ("{kind: fill-pool}", "routes[0].policy.kind: must be one of: objective, weighted, round_robin, cheapest, "
                          "best_quality, last_n_latency, fill_pool"),
])
def test_errors_name_the_field(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_several_problems_at_once() -> None:
    assert sorted(problems("{kind: fill_pool, band: 2, batch: 1}")) == [
        "routes[0].policy.band: must be <= 0.49", "routes[0].policy.batch: must be a non-empty string"]
