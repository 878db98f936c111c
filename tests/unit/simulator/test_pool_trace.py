"""The fixed pool evaluation trace: its statistics are the ones issue 14 fixes."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from simulator.pool_trace import PREFIX_TOKENS, TraceRequest, make_trace, rate_at, write_trace_jsonl
from simulator.textgen import count_tokens


@pytest.fixture(scope="module")
def trace() -> list[TraceRequest]:
    return make_trace(7)


def test_a_day_fits_in_ten_minutes(trace: list[TraceRequest]) -> None:
    times = [r.t for r in trace]
    assert times == sorted(times)
    assert times[0] >= 0 and times[-1] <= 600


def test_the_diurnal_peak_is_four_times_the_trough(trace: list[TraceRequest]) -> None:
    assert rate_at(300) / rate_at(0) == pytest.approx(4.0)
    trough = sum(1 for r in trace if r.t < 60 or r.t >= 540)
    peak = sum(1 for r in trace if 240 <= r.t < 360)
    expected = (sum(rate_at(t + 0.5) for t in range(240, 360))
                / sum(rate_at(t + 0.5) for t in [*range(0, 60), *range(540, 600)]))
    assert expected == pytest.approx(3.56, abs=0.02)  # 2-minute windows around the extremes
    assert peak / trough == pytest.approx(expected, rel=0.15)


def test_arrivals_are_poisson_within_a_window(trace: list[TraceRequest]) -> None:
    gaps = [b.t - a.t for a, b in zip(trace, trace[1:], strict=False) if 250 <= a.t < 350]
    mean = statistics.mean(gaps)
    assert statistics.stdev(gaps) / mean == pytest.approx(1.0, abs=0.15)  # exponential: CV 1


def test_lengths_are_log_normal_with_the_fixed_medians(trace: list[TraceRequest]) -> None:
    prompts = [r.prompt_tokens for r in trace]
    outputs = [r.output_tokens for r in trace]
    assert statistics.median(prompts) == pytest.approx(1500, rel=0.10)
    assert statistics.median(outputs) == pytest.approx(250, rel=0.10)
    logs = [math.log(p) for p in prompts]
    assert statistics.stdev(logs) == pytest.approx(0.6, abs=0.05)


def test_shares_of_prefix_and_priority(trace: list[TraceRequest]) -> None:
    n = len(trace)
    prefixed = [r for r in trace if r.prefix_id is not None]
    assert len(prefixed) / n == pytest.approx(0.30, abs=0.03)
    assert {r.prefix_id for r in prefixed} == set(range(20))
    assert sum(r.priority == "interactive" for r in trace) / n == pytest.approx(0.70, abs=0.01)
    assert {r.priority for r in trace} == {"interactive", "batch"}


def test_prompts_count_their_tokens_and_share_their_prefix_text(trace: list[TraceRequest]) -> None:
    assert all(count_tokens(r.prompt) == r.prompt_tokens for r in trace)
    by_prefix: dict[int, list[TraceRequest]] = {}
    for r in trace:
        if r.prefix_id is not None and r.prompt_tokens >= PREFIX_TOKENS + 16:
            by_prefix.setdefault(r.prefix_id, []).append(r)
    for group in by_prefix.values():
        heads = {" ".join(r.prompt.split()[:PREFIX_TOKENS]) for r in group}
        assert len(heads) == 1
    unshared = [r for r in trace if r.prefix_id is None]
    assert len({r.prompt.split()[0] for r in unshared}) == len(unshared)


def test_the_same_seed_gives_the_same_trace(tmp_path: Path) -> None:
    a = write_trace_jsonl(tmp_path / "a.jsonl", make_trace(7, duration_s=60))
    b = write_trace_jsonl(tmp_path / "b.jsonl", make_trace(7, duration_s=60))
    assert a.read_bytes() == b.read_bytes()
    assert make_trace(8, duration_s=60) != make_trace(7, duration_s=60)


def test_the_traffic_record_has_the_planner_fields(tmp_path: Path, trace: list[TraceRequest]) -> None:
    path = write_trace_jsonl(tmp_path / "trace.jsonl", trace)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == len(trace)
    assert set(lines[0]) == {"t", "prompt_tokens", "output_tokens", "priority", "model"}
    assert lines[5]["prompt_tokens"] == trace[5].prompt_tokens


def test_a_longer_day_is_refused() -> None:
    with pytest.raises(ValueError, match="duration_s"):
        make_trace(7, duration_s=601)
