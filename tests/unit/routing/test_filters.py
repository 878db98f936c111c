"""Routing filters: one table row per reason a filter keeps or drops a deployment, then the runner's
order, first-filter-wins reporting and duplicate handling."""

from __future__ import annotations

import math
from typing import Any

import pytest

from routing import FILTERS, Deployment, Dropped, RouteRequest, Snapshot, Unavailable, run_filters
from routing.filters import check


def dep(id: str = "m@p#0", **kw: Any) -> Deployment:
    kw.setdefault("model", id.split("@")[0])
    kw.setdefault("provider", id.split("@")[1].split("#")[0] if "@" in id else "p")
    kw.setdefault("context_window", 10_000)
    kw.setdefault("max_output_tokens", 1_000)
    return Deployment(id=id, **kw)


def req(**kw: Any) -> RouteRequest:
    kw.setdefault("est_input_tokens", 100)
    kw.setdefault("now", 100.0)
    return RouteRequest(**kw)


SNAP = Snapshot(0.0)
COOLING = Snapshot(0.0, unavailable={"m@p#0": Unavailable(105.0, "2 consecutive failures")})
OPEN = Snapshot(0.0, unavailable={"m@p#0": Unavailable(math.inf, "circuit open")})
EXPIRED = Snapshot(0.0, unavailable={"m@p#0": Unavailable(100.0, "1 consecutive failure")})
BY_NAME = {f.name: f for f in FILTERS}

CASES = [
    # filter, request kwargs, deployment kwargs, snapshot, expected reason (None = kept)
    ("allow_list", {"allowed_models": frozenset({"m"})}, {}, SNAP, None),
    ("allow_list", {"allowed_models": frozenset({"other"})}, {}, SNAP, "model m is not in the tenant's allow-list"),
    ("allow_list", {"allowed_models": frozenset()}, {}, SNAP, "model m is not in the tenant's allow-list"),
    ("capabilities", {"needs": frozenset({"tools"})}, {"capabilities": frozenset({"tools", "json"})}, SNAP, None),
    ("capabilities", {"needs": frozenset({"images"})}, {"capabilities": frozenset({"tools"})}, SNAP,
     "lacks images"),
    ("capabilities", {"needs": frozenset({"tools", "images", "json"})}, {"capabilities": frozenset({"json"})},
     SNAP, "lacks images, tools"),
    ("capabilities", {"needs": frozenset({"reasoning"})}, {}, SNAP, "lacks reasoning"),
    ("capabilities", {"needs": frozenset({"embeddings"})}, {"capabilities": frozenset({"embeddings"})}, SNAP,
     None),
    ("context", {"est_input_tokens": 8_999, "max_output_tokens": 1_000}, {}, SNAP, None),
    ("context", {"est_input_tokens": 9_000, "max_output_tokens": 1_000}, {}, SNAP, None),
    ("context", {"est_input_tokens": 9_001, "max_output_tokens": 1_000}, {}, SNAP,
     "needs ~10001 tokens (input ~9001 + output 1000) > context window 10000"),
    ("context", {"est_input_tokens": 9_001}, {}, SNAP,
     "needs ~10001 tokens (input ~9001 + output 1000) > context window 10000"),
    ("context", {"est_input_tokens": 9_500, "max_output_tokens": 500}, {}, SNAP, None),
    ("context", {"max_output_tokens": 1_001}, {}, SNAP, "max output tokens 1001 > the deployment's limit 1000"),
    ("budget", {"exhausted": frozenset({"m@p#0"})}, {}, SNAP, "budget exhausted for deployment m@p#0"),
    ("budget", {"exhausted": frozenset({"m"})}, {}, SNAP, "budget exhausted for model m"),
    ("budget", {"exhausted": frozenset({"other"})}, {}, SNAP, None),
    ("health", {}, {}, COOLING, "cooling down for 5.0 s (2 consecutive failures)"),
    ("health", {"now": 104.9}, {}, COOLING, "cooling down for 0.1 s (2 consecutive failures)"),
    ("health", {"now": 105.0}, {}, COOLING, None),
    ("health", {}, {}, EXPIRED, None),
    ("health", {}, {}, OPEN, "circuit open"),
    ("health", {}, {"model": "x"}, Snapshot(0.0, unavailable={"other": Unavailable(200.0, "x")}), None),
]


@pytest.mark.parametrize(("name", "rkw", "dkw", "snap", "reason"), CASES)
def test_filter_table(name: str, rkw: dict, dkw: dict, snap: Snapshot, reason: str | None) -> None:
    r, d = req(**rkw), dep(**dkw)
    f = BY_NAME[name]
    assert check(f, r, snap, d) == reason
    kept, dropped = run_filters(r, snap, [d])
    if reason is None:
        assert kept == [d] and dropped == {}
    else:
        assert kept == [] and dropped == {d.id: Dropped(name, reason)}


@pytest.mark.parametrize(("name", "rkw", "snap"), [
    ("allow_list", {}, SNAP),
    ("capabilities", {}, SNAP),
    ("budget", {}, SNAP),
    ("health", {}, SNAP),
])
def test_filters_with_nothing_to_check_pass_the_list_through(name: str, rkw: dict, snap: Snapshot) -> None:
    ds = [dep("a@p#0"), dep("b@p#0")]
    kept, drops = BY_NAME[name].run(req(**rkw), snap, ds)
    assert kept is ds and drops == []


def test_order_of_filters() -> None:
    assert [f.name for f in FILTERS] == ["allow_list", "capabilities", "context", "budget", "health"]


def test_first_filter_that_drops_is_reported() -> None:
    d = dep(capabilities=frozenset())
    r = req(allowed_models=frozenset({"other"}), needs=frozenset({"tools"}), exhausted=frozenset({"m"}))
    _, dropped = run_filters(r, COOLING, [d])
    assert dropped == {"m@p#0": Dropped("allow_list", "model m is not in the tenant's allow-list")}


def test_runner_keeps_order_and_reports_each_drop() -> None:
    ds = [dep("a@p#0", capabilities=frozenset({"tools"})), dep("b@p#0"),
          dep("c@q#0", capabilities=frozenset({"tools"}), context_window=500), dep("d@q#0", capabilities=frozenset({"tools"})),
          dep("e@q#0", capabilities=frozenset({"tools"}))]
    r = req(needs=frozenset({"tools"}), allowed_models=frozenset({"a", "b", "c", "d"}))
    kept, dropped = run_filters(r, SNAP, ds)
    assert [d.id for d in kept] == ["a@p#0", "d@q#0"]
    assert {k: v.filter for k, v in dropped.items()} == {
        "e@q#0": "allow_list", "b@p#0": "capabilities", "c@q#0": "context"}


def test_repeated_ids_count_once() -> None:
    a = dep("a@p#0")
    kept, dropped = run_filters(req(), SNAP, [a, dep("b@p#0"), a])
    assert [d.id for d in kept] == ["a@p#0", "b@p#0"] and dropped == {}


def test_no_candidates() -> None:
    assert run_filters(req(), SNAP, []) == ([], {})
