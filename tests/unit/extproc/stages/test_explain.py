"""`extproc.stages.explain`: the one-line explanation of a routing decision — every candidate once
(dropped with the filter and reason, breaking a constraint, or scored with its estimates), ASCII only."""

from __future__ import annotations

import routing
from extproc.stages import explain

A = routing.Deployment(id="cheap@a:up", model="cheap", provider="a", input_per_mtok=1.0, output_per_mtok=4.0,
                       quality=0.9)
B = routing.Deployment(id="weak@b:up", model="weak", provider="b", input_per_mtok=0.1, output_per_mtok=0.4,
                       quality=0.5)
C = routing.Deployment(id="down@c:up", model="down", provider="c", quality=0.9)
POLICY = routing.ObjectivePolicy(minimize="cost", max_ttft_ms=800, min_quality=0.78, exploration=0.0)


def test_every_candidate_appears_with_why() -> None:
    snap = routing.Snapshot(10.0, estimates={
        A.id: routing.LatencyEstimate.of({0.5: 0.2, 0.9: 0.4}, 0.01, last_observed=9.0, weight=12.0),
        B.id: routing.LatencyEstimate.of({0.5: 0.1, 0.9: 0.2}, 0.01, last_observed=8.0, weight=3.0)},
        unavailable={C.id: routing.Unavailable(13.0, "2 consecutive failures")},
        output_tokens={A.id: 300.0}).waiting({A.id: 0.5})
    decision = routing.decide(routing.RouteRequest(est_input_tokens=1000, now=10.0), [A, B, C], POLICY, snap)
    line = explain.text("auto", POLICY, decision, snap, [], 10.0)
    assert line.startswith("route=auto policy=objective(cost,max_ttft=800ms@p90,min_quality=0.78) by=")
    assert "dropped=down@c:up(health: cooling down for 3.0 s (2 consecutive failures))" in line
    assert "failed=" in line and "weak@b:up(quality 0.5 < 0.78)" in line  # min_quality: no `dropped=-`
    # the scores and the estimates behind them: cost with the learned 300-token answers, the TTFT
    # raised by requests still waiting, how much data and how old
    assert "cheap@a:up{total=" in line and "out=300," in line and "cost=$0.002200," in line
    assert "ttft=0.500s" in line and "wait>=0.500s" in line and "n=12.0" in line and "age=1.0s" in line
    assert "weak@b:up{" in line and "age=2.0s" in line
    assert line.isascii() and "\n" not in line


def test_asked_and_ascii() -> None:
    assert explain.asked({"x-interlock-debug": "explain"})
    assert explain.asked({"x-interlock-debug": "trace, Explain"})
    assert not explain.asked({"x-interlock-debug": "trace"}) and not explain.asked({}) and not explain.asked(None)
    assert explain.ascii_only("p90 \u2264 1 s\n") == "p90 ? 1 s?"
