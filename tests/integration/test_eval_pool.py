"""`make eval-pool`'s harness (bench/eval_pool.py) end to end on a few seconds of the trace: the spill
phase's two runs through the real gateway (pool alone, then the `fill_pool` route), its progress
lines and the final line's format; and the pure pieces (trace windows, the final line)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bench import eval_pool

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^pool: p90_ttft_vs_rr=(-|\d+\.\dx) spill_slo=(-|\d+\.\d%) capacity_ok=(-|yes|no) "
                  r"capacity_err=(-|\d+%)$")


def test_windows_and_final_line() -> None:
    rows = eval_pool.trace(eval_pool.SEED)
    start, end = eval_pool.peak_window(rows, 90.0)
    assert end - start == 90.0
    peak = sum(start <= r.t < end for r in rows)
    assert all(sum(s <= r.t < s + 90 for r in rows) <= peak for s in range(0, 510, 10))
    a, b = eval_pool.picking_window(rows)
    assert (a, b) == (start - 40, start + 50)
    reqs = eval_pool.window(rows, a, b)
    assert reqs and min(q.t for q in reqs) >= 0 and max(q.t for q in reqs) < 90
    fast = eval_pool.window(rows, a, b, 1.5)
    assert [q.t * 1.5 for q in fast] == [q.t for q in reqs] and max(q.t for q in fast) < 60
    assert {q.priority for q in reqs} == {"interactive", "batch"}
    assert eval_pool.final_line(2.04, 99.25, True, 0.071) == \
        "pool: p90_ttft_vs_rr=2.0x spill_slo=99.2% capacity_ok=yes capacity_err=7%"
    assert eval_pool.final_line(None, None, None, None) == \
        "pool: p90_ttft_vs_rr=- spill_slo=- capacity_ok=- capacity_err=-"
    assert LINE.match(eval_pool.final_line(17.3, 100.0, False, 0.5))


def test_spill_phase_through_the_gateway(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "bench/eval_pool.py", "--phases", "spill", "--spill-window", "300:304",
                        "--drain", "20", "--workdir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                       timeout=240)
    lines = p.stdout.splitlines()
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert any(re.search(r"pool-only: (\d+)/\1 answered", x) for x in lines), lines
    assert any(re.search(r"spillover: (\d+)/\1 answered", x) for x in lines), lines
    m = LINE.match(lines[-1])
    assert m and m.group(1) == "-" and m.group(2) != "-" and m.group(3) == "-", lines[-1]
    assert (tmp_path / "spill-spillover" / "gateway.yaml").exists()
