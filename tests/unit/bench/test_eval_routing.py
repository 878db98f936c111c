"""The routing evaluation's inputs and metrics: the committed trace is the seeded generator's output,
and the figures computed from a synthetic result set are the expected ones. No gateway runs here."""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml

from bench import eval_routing as ev
from bench.eval import make_trace
from bench.eval import phases as ph
from simulator.textgen import count_tokens


def test_committed_trace_is_the_generators_output() -> None:
    assert make_trace.TRACE.read_bytes() == make_trace.dumps(make_trace.generate())
    assert make_trace.main(["--check"]) == 0


def test_trace_shape_matches_its_documentation() -> None:
    rows = make_trace.load()
    assert 300 <= len(rows) <= 1000
    assert [r["id"] for r in rows] == list(range(len(rows)))
    assert all(a["t"] <= b["t"] for a, b in zip(rows, rows[1:], strict=False))
    assert rows[0]["t"] >= 0 and rows[-1]["t"] < make_trace.DURATION_S
    interactive = [r for r in rows if r["class"] == "interactive"]
    batch = [r for r in rows if r["class"] == "batch"]
    assert all(r["stream"] for r in interactive) and not any(r["stream"] for r in batch)
    assert 0.6 < len(interactive) / len(rows) < 0.9
    assert not any(r["tools"] for r in batch) and 0.15 < sum(r["tools"] > 0 for r in interactive) / len(interactive) < 0.35
    hard = sum(r["quality"] > 0.85 for r in rows) / len(rows)
    above_small = sum(r["quality"] > 0.6 for r in rows) / len(rows)
    assert 0.02 < hard < 0.06 and above_small > 0.5
    assert {r["system"] for r in rows} == {None, "short", *make_trace.SYSTEM_PROMPTS}
    assert max(r["user_tokens"] for r in rows) > 4000 and min(r["user_tokens"] for r in rows) < 50
    without = [r for r in rows if r["max_tokens"] is None]
    assert len(without) >= 0.7 * len(rows)  # as SDK traffic: most requests carry no max_tokens
    assert all(r["max_tokens"] >= 16 for r in rows if r["max_tokens"] is not None)
    assert {r["class"] for r in without} == {"interactive", "batch"}


def test_steady_traffic_for_the_phases() -> None:
    rows = make_trace.steady(5, 100.0, 4.0)
    assert rows == make_trace.steady(5, 100.0, 4.0) and [r["id"] for r in rows] == list(range(len(rows)))
    assert 300 < len(rows) < 500 and all(0 <= r["t"] < 100 for r in rows)
    assert 0.7 < sum(r["class"] == "interactive" for r in rows) / len(rows) < 0.86
    halves = [sum(lo <= r["t"] < lo + 50 for r in rows) for lo in (0, 50)]
    assert abs(halves[0] - halves[1]) < 0.25 * len(rows)  # no wave, no bursts
    assert sum(r["max_tokens"] is None for r in rows) >= 0.7 * len(rows)


def test_generator_is_seeded_and_scales() -> None:
    assert make_trace.generate(7, 10.0) == make_trace.generate(7, 10.0)
    assert make_trace.generate(7, 10.0) != make_trace.generate(8, 10.0)
    quick = make_trace.generate(make_trace.SEED, make_trace.QUICK_DURATION_S)
    assert 50 < len(quick) < 200 and max(r["t"] for r in quick) < make_trace.QUICK_DURATION_S


def test_build_request_is_deterministic_and_hides_the_quality() -> None:
    rows = make_trace.load()
    row = next(r for r in rows if r["tools"] and r["system"] in make_trace.SYSTEM_PROMPTS)
    body = make_trace.build_request(row)
    assert body == make_trace.build_request(row)
    assert body["model"] == "eval" and body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert len(body["tools"]) == row["tools"] and body.get("max_tokens") == row["max_tokens"]
    capped = next(r for r in rows if r["max_tokens"] is not None)
    uncapped = next(r for r in rows if r["max_tokens"] is None)
    assert make_trace.build_request(capped)["max_tokens"] == capped["max_tokens"]
    assert "max_tokens" not in make_trace.build_request(uncapped)  # absent, not null
    assert body["messages"][0]["content"] == make_trace.system_text(row["system"])
    assert count_tokens(body["messages"][0]["content"]) == make_trace.SYSTEM_PROMPTS[row["system"]]
    assert count_tokens(body["messages"][1]["content"]) == row["user_tokens"]
    assert "quality" not in str(body).replace("'", "")  # never sent
    batch = make_trace.build_request(next(r for r in rows if r["class"] == "batch"))
    assert "stream" not in batch and "tools" not in batch


def _profiles() -> ev.Profiles:
    return ev.load_profiles()


def test_profiles_make_the_trade_off_real() -> None:
    p = _profiles()
    models = p.models
    assert len(models) >= 5 and len({m.provider for m in models.values()}) >= 3
    types = {x["name"]: x["type"] for x in p.providers}
    assert len({types[m.provider] for m in models.values()}) >= 3
    best = max(models.values(), key=lambda m: m.quality)
    cheapest = min(models.values(), key=lambda m: m.input_per_mtok + m.output_per_mtok)
    assert best.output_per_mtok == max(m.output_per_mtok for m in models.values())
    rows = make_trace.load()
    assert sum(r["quality"] > cheapest.quality for r in rows) > len(rows) / 2
    assert p.outage.provider in types and 0 < p.outage.start_s < p.outage.end_s < make_trace.DURATION_S
    sd, rl = p.slowdown, p.ratelimit
    assert sd.pre_s <= sd.start_s < sd.heal_s < sd.end_s and sd.heal_s - sd.start_s >= 45
    assert sd.end_s - sd.heal_s > 30 and sd.behaviour["ttft_ms"] >= 2000  # far above max_ttft, longer than the target
    assert rl.pre_s <= rl.start_s < rl.end_s < rl.run_s and rl.behaviour["request_limit"] >= 1


def test_answer_lengths_differ_so_no_single_prior_prices_them_right() -> None:
    """Among the models meeting Interlock's floor and latency limit, the cheapest per token is not
    the cheapest per answer for a typical request without max_tokens, nor the other way round for
    every request; and the models' output caps say nothing of their answers' lengths."""
    p = _profiles()
    route = ev.constraints(ev.POLICIES[ev.INTERLOCK])
    fit = {n: m for n, m in p.models.items() if m.quality >= route.min_quality
           and ph.ttft_quantile_s(m, 1000, route.quantile) <= (route.max_ttft_s or 0)}
    assert len(fit) >= 3
    per_token = min(fit, key=lambda n: fit[n].output_per_mtok)
    lengths = {n: m.behaviour["output_tokens"] for n, m in fit.items()}
    assert max(lengths.values()) >= 2.5 * min(lengths.values())
    choice = {prompt: ph.oracle_choice(p.models, route, prompt, None, None) for prompt in (150, 1000, 6000)}
    assert per_token not in choice.values()  # a text answer without max_tokens: the terse model
    assert ph.oracle_choice(p.models, route, 1000, 64, None) == per_token  # the request's shape matters:
    assert ph.oracle_choice(p.models, route, 1000, None, 20) == per_token  # a small cap, a tool call
    by_cap = min(fit, key=lambda n: fit[n].max_output_tokens / 4 * fit[n].output_per_mtok)
    assert by_cap != choice[1000]  # pricing answers at a quarter of the cap misprices the common case


def test_gateway_config_per_policy() -> None:
    p = _profiles()
    ports = {"listen": 1, "admin": 2, "metrics": 3, "extproc": 4}
    cfg = ev.gateway_config(p, ev.POLICIES[ev.INTERLOCK], "http://127.0.0.1:9", ports)
    assert cfg["routes"] == [{"name": "eval", "candidates": list(p.models), "policy": ev.POLICIES[ev.INTERLOCK]}]
    assert {m["name"]: m["quality"] for m in cfg["models"]} == {n: m.quality for n, m in p.models.items()}
    assert all(x["endpoint"] == "http://127.0.0.1:9" for x in cfg["providers"])
    bedrock = next(x for x in cfg["providers"] if x["type"] == "bedrock")
    assert bedrock["aws_access_key_id_env"] == ev.AWS_ID_ENV and "api_key_env" not in bedrock
    yaml.safe_dump(cfg)  # serialisable as written to disk
    assert set(ev.POLICIES) == {"interlock", "round_robin", "cheapest", "best_quality", "last_n_latency"}


def test_outage_restore_patch() -> None:
    p = _profiles()
    m = next(m for m in p.models.values() if m.provider == p.outage.provider)
    patch = ev.restored(m, p.outage.behaviour)
    assert set(patch) == set(p.outage.behaviour)
    assert patch.get("status", None) is None and patch.get("retry_after_s", 1) == 1
    quick = ev.scaled_outage(p.outage, 0.2)
    assert quick.start_s == pytest.approx(p.outage.start_s * 0.2)


MODELS = {
    "big": ev.ModelProfile("big", "a", "big-1", 10.0, 20.0, 0.9, (), 1000, 100, {}),
    "small": ev.ModelProfile("small", "b", "small-1", 1.0, 2.0, 0.5, (), 1000, 100, {}),
}


def _r(i: int, cls: str, q: float, model: str | None, ttft: float | None, total: float | None = None,
       error: str | None = None, attempts: int = 1, t: float = 0.0, tokens: tuple[int, int] = (1000, 500)) -> ev.Result:
    return ev.Result(i, cls, q, scheduled_s=t, status=200 if error is None else 503, error=error,
                     ttft_s=ttft, total_s=total if total is not None else ttft, model=model, attempts=attempts,
                     prompt_tokens=tokens[0], completion_tokens=tokens[1], usage_reported=True)


def test_percentile_interpolates() -> None:
    assert ev.percentile([], 0.5) is None
    assert ev.percentile([3.0], 0.99) == 3.0
    assert ev.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert ev.percentile(list(map(float, range(101))), 0.99) == pytest.approx(99.0)
    assert ev.percentile([5.0, 1.0], 0.0) == 1.0 and ev.percentile([5.0, 1.0], 1.0) == 5.0


def test_summary_metrics_on_a_synthetic_result_set() -> None:
    outage = ev.Outage("a", 10.0, 20.0, {"status": 503})
    results = [
        _r(0, "interactive", 0.8, "big", 0.5, t=1),                   # ok, in SLO, no miss
        _r(1, "interactive", 0.8, "small", 2.0, t=11),                # SLO miss (TTFT), quality miss
        _r(2, "interactive", 0.4, "small", 1.0, t=12, attempts=2),    # fallback, fine
        _r(3, "batch", 0.95, "big", 40.0, t=13),                      # batch SLO miss (30 s), quality miss
        _r(4, "batch", 0.3, "small", 10.0, t=30),                     # fine
        _r(5, "interactive", 0.1, None, None, error="http 503: x", t=15, tokens=(0, 0)),  # error
    ]
    system_of: dict[int, Any] = {0: "agent-coding", 1: "agent-coding", 2: "agent-coding", 3: None, 4: "short", 5: None}
    s = ev.summarize("p", results, MODELS, outage, system_of)
    cost_big = (1000 * 10.0 + 500 * 20.0) / 1e6
    cost_small = (1000 * 1.0 + 500 * 2.0) / 1e6
    assert s.cost_usd == pytest.approx(2 * cost_big + 3 * cost_small)
    assert (s.requests, s.answered, s.errors, s.fallbacks) == (6, 5, 1, 1)
    assert s.ttft_p50_s == pytest.approx(1.0) and s.ttft_p99_s == pytest.approx(1.0 + 0.98 * 1.0)
    assert s.batch_p50_s == pytest.approx(25.0)
    assert s.slo_pct == pytest.approx(100 * 3 / 6)            # 0, 2, 4
    assert s.slo_interactive_pct == pytest.approx(100 * 2 / 4)
    assert s.slo_outage_pct == pytest.approx(100 * 1 / 4)     # rows 1, 2, 3, 5 arrived in [10, 20)
    assert s.quality_miss_pct == pytest.approx(100 * 2 / 5)   # over answered requests
    assert s.mix == {"small": 3, "big": 2}
    assert s.sticky_pct == pytest.approx(100 * 2 / 3)         # agent-coding: small ×2, big ×1
    assert s.error_kinds == {"http 503": 1}

    best = ev.summarize("best", [_r(i, "interactive", 0.5, "big", 0.3) for i in range(6)], MODELS)
    assert best.cost_usd == pytest.approx(6 * cost_big)
    expected = 100 * ((2 * cost_big + 3 * cost_small) / (6 * cost_big) - 1)
    assert ev.cost_vs(s, best) == pytest.approx(expected)
    line = ev.final_line(s, best)
    # Oracle (no constraints, no answer-length profile: answers priced at 0 tokens): `small` for all five.
    assert (s.expected_usd, s.oracle_usd) == (pytest.approx(2 * 0.01 + 3 * 0.001), pytest.approx(5 * 0.001))
    assert s.oracle_match_pct == pytest.approx(100 * 3 / 5)
    assert line == (f"routing-eval: cost_vs_best={expected:+.0f}% slo=50.0% quality_miss=40.0% errors=1 "
                    f"react_s=- recover_s=- react_s_quarter=- recover_s_quarter=- cost_vs_oracle=+360% "
                    f"rl_return_s=-")
    assert line.startswith("routing-eval: cost_vs_best=-")
    text = ev.table([s, best], best)
    assert text.splitlines()[0].startswith("| policy") and "| best " in text and "+0%" in text


def test_request_cost_and_miss_rules() -> None:
    failed = _r(0, "interactive", 0.99, "big", None, error="transport: x")
    assert ev.request_cost(failed, MODELS) == 0.0 and not ev.quality_miss(failed, MODELS)
    assert not ev.meets_slo(failed)
    assert ev.meets_slo(_r(1, "interactive", 0.5, "big", 1.5))
    assert not ev.meets_slo(_r(1, "interactive", 0.5, "big", 1.5 + 1e-9))
    assert ev.meets_slo(_r(1, "batch", 0.5, "big", 30.0))
    unknown = _r(2, "batch", 0.5, "other", 1.0)
    assert ev.request_cost(unknown, MODELS) == 0.0
    assert math.isclose(ev.request_cost(_r(3, "batch", 0.9, "big", 1.0, tokens=(10**6, 0)), MODELS), 10.0)
    assert ev.quality_miss(_r(4, "batch", 0.91, "big", 1.0, tokens=(1, 1)), MODELS)
    assert not ev.quality_miss(_r(5, "batch", 0.9, "big", 1.0), MODELS)


def test_the_phase_acts_on_the_model_the_route_used_most_just_before() -> None:
    rs = [ev.Result(i, "interactive", 0.5, sent_s=t, model=m)
          for i, (t, m) in enumerate([(1, "a"), (2, "a"), (11, "b"), (12, "b"), (13, "a"), (14, None), (25, "a")])]
    assert ev.top_model(rs, 10, 20) == "b" and ev.top_model(rs, 0, 30) == "a" and ev.top_model(rs, 30, 40) is None
    p = _profiles()
    quick = ev.scaled_phases(p, 0.25)
    assert quick.slowdown.heal_s == p.slowdown.heal_s / 4 and quick.slowdown.window == p.slowdown.window
    assert quick.ratelimit.run_s == p.ratelimit.run_s / 4 and quick.outage == p.outage
    assert ev.constraints(ev.POLICIES[ev.INTERLOCK]) == ph.Constraints(0.8, 1.0, 0.9)
    assert ev.constraints(ev.POLICIES["round_robin"]) == ph.Constraints()
