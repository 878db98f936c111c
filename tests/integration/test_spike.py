"""The spike proof through the real Envoy, with the code `make bench-spike` runs (shorter phases):
a burst of 10× the provider's sustainable rate of mixed interactive and batch traffic."""

from __future__ import annotations

from pathlib import Path

from bench.bench_spike import Params, report, run_spike


def test_a_burst_of_ten_times_the_sustainable_rate_never_cascades_into_the_provider(tmp_path: Path) -> None:
    p = Params(unloaded_s=6, before_s=3, burst_s=3, after_s=7)
    r = run_spike(p, tmp_path)
    report(r)
    print(r.summary())
    assert r.max_seen <= p.limit and r.provider_rejected == 0
    assert r.interactive_p99_ratio <= 1.5, r.summary()
    assert r.batch_429 > 0 and r.unexplained_429 == 0
    assert r.hung == 0
    assert r.recovery_s <= 5.0
    # Every interactive request was served.
    assert all(o.status == 200 and o.complete for o in r.outcomes if o.kind == "interactive")
