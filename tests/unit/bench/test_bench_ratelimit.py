"""bench/bench_ratelimit.py times what the rate-limit process really gets from Envoy."""

from __future__ import annotations

import asyncio

from envoy.service.ratelimit.v3 import rls_pb2

from bench import bench_ratelimit
from extproc.limits import Unit, scheme


def test_the_timed_request_is_an_admission_of_the_three_units_the_scheme_defines() -> None:
    parsed = scheme.parse(rls_pb2.RateLimitRequest.FromString(bench_ratelimit.admission()))
    assert not parsed.malformed and not parsed.settlements
    assert [(c.unit, c.fields["tenant"], c.minimum) for _, c in parsed.charges] == [
        (Unit.REQUESTS, bench_ratelimit.TENANT, None), (Unit.TOKENS, bench_ratelimit.TENANT, 500),
        (Unit.USD, bench_ratelimit.TENANT, 400)]


def test_both_tables_admit_it_against_the_tenants_own_limits() -> None:
    for others in (0, 5):
        assert len(bench_ratelimit.table(others)) == 3 + 2 * others
        assert asyncio.run(bench_ratelimit.per_call_us(others, calls=4, runs=1)) > 0
