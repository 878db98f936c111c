"""Policy and deployment construction: defaults, the typed union's kinds, and validation messages."""

from __future__ import annotations

import re
from typing import Any

import pytest

from routing import (
    BestQualityPolicy,
    CheapestPolicy,
    Deployment,
    LastNLatencyPolicy,
    ObjectivePolicy,
    Policy,
    RoundRobinPolicy,
    WeightedPolicy,
)
from routing.policy import uses_latency


def test_kinds_and_defaults() -> None:
    p = ObjectivePolicy(minimize="cost", max_ttft_ms=800, min_quality=0.8)
    assert (p.kind, p.objective, p.ttft_quantile, p.exploration, p.affinity, p.affinity_tolerance,
            p.max_attempts) == ("objective", "cost", 0.9, 0.02, True, 0.1, 3)
    assert ObjectivePolicy(maximize="quality").objective == "quality"
    assert WeightedPolicy().kind == "weighted"
    baselines: list[tuple[Policy, str]] = [(RoundRobinPolicy(), "round_robin"), (CheapestPolicy(), "cheapest"),
                                           (BestQualityPolicy(), "best_quality"),
                                           (LastNLatencyPolicy(), "last_n_latency")]
    for b, kind in baselines:
        assert b.kind == kind and b.exploration == 0.0 and b.affinity is False
    assert LastNLatencyPolicy().n == 10


def test_kind_is_not_settable() -> None:
    with pytest.raises(TypeError):
        ObjectivePolicy(kind="weighted", minimize="cost")  # type: ignore[call-arg]


@pytest.mark.parametrize(("cls", "kw", "message"), [
    (ObjectivePolicy, {}, "exactly one of minimize, maximize must be set"),
    (ObjectivePolicy, {"minimize": "cost", "maximize": "quality"}, "exactly one of minimize, maximize"),
    (ObjectivePolicy, {"minimize": "quality"}, "minimize: must be cost or latency"),
    (ObjectivePolicy, {"maximize": "cost"}, "maximize: must be quality"),
    (ObjectivePolicy, {"minimize": "cost", "max_ttft_ms": 0}, "max_ttft_ms: must be > 0"),
    (ObjectivePolicy, {"minimize": "cost", "ttft_quantile": 1.0}, "ttft_quantile: must be in (0, 1)"),
    (ObjectivePolicy, {"minimize": "cost", "min_quality": 1.5}, "min_quality: must be in [0, 1]"),
    (ObjectivePolicy, {"minimize": "cost", "exploration": -0.1}, "exploration: must be in [0, 1]"),
    (ObjectivePolicy, {"minimize": "cost", "affinity_tolerance": -1}, "affinity_tolerance: must be >= 0"),
    (ObjectivePolicy, {"minimize": "cost", "max_attempts": 0}, "max_attempts: must be >= 1"),
    (WeightedPolicy, {"cost": -1}, "weights: must be >= 0"),
    (WeightedPolicy, {"cost": 0, "latency": 0, "quality": 0}, "weights: at least one must be > 0"),
    (LastNLatencyPolicy, {"n": 0}, "n: must be >= 1"),
    (CheapestPolicy, {"diversity_tolerance": -1}, "diversity_tolerance: must be >= 0"),
    (RoundRobinPolicy, {"stale_after_s": -1}, "stale_after_s: must be >= 0"),
])
def test_validation(cls: Any, kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=r"^" + cls.__name__ + ": .*" + re.escape(message)):
        cls(**kw)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValueError) as e:
        ObjectivePolicy(minimize="cost", exploration=2, max_attempts=0, min_quality=-1)
    assert str(e.value) == ("ObjectivePolicy: exploration: must be in [0, 1]; max_attempts: must be >= 1; "
                            "min_quality: must be in [0, 1]")


@pytest.mark.parametrize(("policy", "reads"), [
    (ObjectivePolicy(minimize="cost"), False),
    (ObjectivePolicy(minimize="cost", max_ttft_ms=800), True),
    (ObjectivePolicy(minimize="latency"), True),
    (ObjectivePolicy(maximize="quality", min_quality=0.5), False),
    (WeightedPolicy(latency=0), False),
    (WeightedPolicy(), True),
    (LastNLatencyPolicy(), True),
    (CheapestPolicy(), False),
    (RoundRobinPolicy(), False),
])
def test_uses_latency(policy: Any, reads: bool) -> None:
    assert uses_latency(policy) is reads


@pytest.mark.parametrize(("kw", "message"), [
    ({"id": ""}, "id: must not be empty"),
    ({"input_per_mtok": -1}, "prices: must be >= 0"),
    ({"quality": 1.1}, "quality: must be in [0, 1], got 1.1"),
    ({"context_window": 0}, "context_window, max_output_tokens: must be >= 1"),
    ({"capabilities": frozenset({"tools", "video"})}, "capabilities: unknown video"),
    ({"expected_output_tokens": -5}, "expected_output_tokens: must be >= 0"),
])
def test_deployment_validation(kw: dict, message: str) -> None:
    base: dict[str, Any] = {"id": "m@p#0", "model": "m", "provider": "p"}
    with pytest.raises(ValueError, match=re.escape(message)):
        Deployment(**{**base, **kw})


def test_deployment_is_frozen_hashable_and_salted_by_id() -> None:
    a = Deployment(id="m@p#0", model="m", provider="p")
    b = Deployment(id="m@p#0", model="m", provider="p")
    c = Deployment(id="m@p#1", model="m", provider="p")
    assert a == b and hash(a) == hash(b) and a.salt == b.salt != c.salt
    with pytest.raises(AttributeError):
        a.quality = 1.0  # type: ignore[misc]
