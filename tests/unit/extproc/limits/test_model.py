"""Limits: validation, the matcher, fixed windows and ticks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extproc.limits import Limit, LimitTable, Per, Unit, match, ticks, window_of

ACME_TOKENS = Limit({"tenant": "acme"}, Unit.TOKENS, Per.MINUTE, 1000)
ACME_GPT_TOKENS = Limit({"tenant": "acme", "model": "gpt-4o"}, Unit.TOKENS, Per.MINUTE, 500)
GPT_TOKENS = Limit({"tenant": "*", "model": "gpt-4o"}, Unit.TOKENS, Per.HOUR, 10_000)
ALL_TOKENS = Limit({}, Unit.TOKENS, Per.DAY, 1e6)
BATCH_REQUESTS = Limit({"priority": "batch"}, Unit.REQUESTS, Per.SECOND, 5)
ACME_USD = Limit({"tenant": "acme"}, Unit.USD, Per.DAY, 12.5)
TABLE = LimitTable([ACME_TOKENS, ACME_GPT_TOKENS, GPT_TOKENS, ALL_TOKENS, BATCH_REQUESTS, ACME_USD])


@pytest.mark.parametrize(("descriptor", "unit", "expected"), [
    ({"tenant": "acme", "model": "gpt-4o"}, Unit.TOKENS, [ACME_TOKENS, ACME_GPT_TOKENS, GPT_TOKENS, ALL_TOKENS]),
    ({"tenant": "acme", "model": "claude"}, Unit.TOKENS, [ACME_TOKENS, ALL_TOKENS]),
    ({"tenant": "zeta", "model": "gpt-4o"}, Unit.TOKENS, [GPT_TOKENS, ALL_TOKENS]),
    ({"tenant": "zeta"}, Unit.TOKENS, [ALL_TOKENS]),
    ({}, Unit.TOKENS, [ALL_TOKENS]),
    ({"tenant": "acme", "model": "gpt-4o"}, Unit.USD, [ACME_USD]),
    ({"tenant": "acme", "model": "gpt-4o"}, Unit.REQUESTS, []),
    ({"tenant": "acme", "priority": "batch"}, Unit.REQUESTS, [BATCH_REQUESTS]),
    ({"tenant": "acme", "priority": "interactive"}, Unit.REQUESTS, []),
    ({"tenant": "ACME"}, Unit.USD, []),
])
def test_matcher(descriptor: dict[str, str], unit: Unit, expected: list[Limit]) -> None:
    assert list(TABLE.match(descriptor, unit)) == expected
    assert list(match(TABLE.limits, descriptor, unit)) == expected


_VALUES = st.sampled_from(["*", "a", "b", "c"])
_LIMITS = st.lists(st.builds(
    lambda tenant, model, priority, unit, per: Limit({"tenant": tenant, "model": model, "priority": priority},
                                                     unit, per, 10),
    _VALUES, _VALUES, _VALUES, st.sampled_from(list(Unit)), st.sampled_from(list(Per))),
    max_size=24, unique_by=lambda lim: lim.id)
_DESCRIPTORS = st.dictionaries(st.sampled_from(["tenant", "model", "priority"]), st.sampled_from(["a", "b", "c", "d"]))


@given(_LIMITS, _DESCRIPTORS, st.sampled_from(list(Unit)))
def test_the_tables_index_matches_what_a_scan_of_every_limit_matches(
        limits: list[Limit], descriptor: dict[str, str], unit: Unit) -> None:
    """The table looks only at the descriptor's tenant's limits and every tenant's (`*`): the same
    limits, in the same order, as matching the descriptor against every limit of the table."""
    assert LimitTable(limits).match(descriptor, unit) == match(limits, descriptor, unit)


def test_limit_ids_are_canonical_and_escaped() -> None:
    assert ACME_TOKENS.id == "tokens/minute/tenant=acme,model=*,priority=*"
    assert Limit({"model": "*", "tenant": "acme"}, Unit.TOKENS, Per.MINUTE, 1).id == ACME_TOKENS.id
    odd = Limit({"model": "org/m,1=x:y"}, Unit.REQUESTS, Per.DAY, 1)
    assert odd.id == "requests/day/tenant=*,model=org/m%2C1%3Dx%3Ay,priority=*"
    assert odd.label == odd.id and Limit({}, Unit.USD, Per.DAY, 1, name="daily").label == "daily"
    assert len({ACME_TOKENS, Limit({"tenant": "acme"}, Unit.TOKENS, Per.MINUTE, 1000)}) == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"key_fields": {"team": "x"}}, "key_fields: unknown field 'team'"),
    ({"key_fields": {"tenant": ""}}, "key_fields.tenant: must be a non-empty string"),
    ({"amount": -1}, "amount: must be ≥ 0"),
    ({"amount": float("inf")}, "amount: must be ≥ 0"),
    ({"unit": "bytes"}, "'bytes' is not a valid Unit"),
    ({"per": "week"}, "'week' is not a valid Per"),
])
def test_invalid_limits(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"key_fields": {}, "unit": "tokens", "per": "minute", "amount": 1}
    with pytest.raises(ValueError, match=message):
        Limit(**{**args, **kwargs})  # type: ignore[arg-type]


def test_duplicate_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate limit tokens/minute/tenant=acme"):
        LimitTable([ACME_TOKENS, Limit({"tenant": "acme"}, Unit.TOKENS, Per.MINUTE, 5)])


@pytest.mark.parametrize(("per", "now", "start", "end"), [
    (Per.SECOND, 100.0, 100.0, 101.0),
    (Per.SECOND, 100.999, 100.0, 101.0),
    (Per.MINUTE, 119.999, 60.0, 120.0),
    (Per.MINUTE, 120.0, 120.0, 180.0),
    (Per.HOUR, 7199.5, 3600.0, 7200.0),
    (Per.DAY, 1767225600.0, 1767225600.0, 1767312000.0),  # 2026-01-01T00:00:00Z
    (Per.DAY, 1767311999.9, 1767225600.0, 1767312000.0),
])
def test_fixed_windows_are_aligned_to_the_unit(per: Per, now: float, start: float, end: float) -> None:
    w = window_of(per, now)
    assert (w.start, w.end, w.index) == (start, end, int(start // per.seconds))
    assert w.reset_after(now) == pytest.approx(end - now)
    assert w.reset_after(end + 5) == 0.0


@pytest.mark.parametrize(("limit", "capacity"), [
    (ACME_USD, 12_500_000), (ACME_TOKENS, 1000), (Limit({}, Unit.USD, Per.DAY, 0.0000015), 2),
])
def test_capacity_in_ticks(limit: Limit, capacity: int) -> None:
    assert limit.capacity == capacity


@pytest.mark.parametrize(("amount", "unit", "expected"), [
    (1.5, Unit.USD, 1_500_000), (0.0000001, Unit.USD, 1), (0.3, Unit.USD, 300_000),
    (1536, Unit.TOKENS, 1536), (0, Unit.TOKENS, 0),
])
def test_ticks_round_up(amount: float, unit: Unit, expected: int) -> None:
    assert ticks(amount, unit) == expected
