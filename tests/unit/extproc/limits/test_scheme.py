"""The descriptor scheme: parsing, rendering, and the Envoy `rate_limits` that produce it.

`EnvoySim` evaluates rendered `rate_limits` the way Envoy 1.40's rate-limit filter does (metadata
actions read string values only; a missing value drops the descriptor unless `skip_if_absent`;
`hits_addend.format` must yield a number or a numeric string in [0, 1e9], else the descriptor is
dropped; stream-done policies are evaluated when the stream ends; the service's response
`dynamic_metadata` lands in `envoy.filters.http.ratelimit`), so the scheme is tested end to end.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from envoy.config.route.v3 import route_components_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import json_format

from extproc.limits import (
    Limit,
    Limiter,
    LimitTable,
    MemoryStore,
    Per,
    Reservation,
    Settlement,
    Unit,
    envoy_rate_limits,
    scheme,
)
from extproc.limits.limiter import slot_of
from extproc.limits.store import FailureMode
from tests.conftest import rls_request as request

OK, OVER = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT


@pytest.mark.parametrize(("own", "request_level", "amount"), [
    (1500, 0, 1500), (0, 7, 0), (None, 7, 7), (None, 0, 1),
])
def test_admission_amount(own: int | None, request_level: int, amount: int) -> None:
    p = scheme.parse(request(({"tenant": "t", "unit": "tokens"}, own), hits_addend=request_level))
    [(i, charge)] = p.charges
    assert (i, charge.amount, charge.unit, dict(charge.fields)) == (0, amount, Unit.TOKENS, {"tenant": "t"})


@pytest.mark.parametrize(("entries", "minimum", "floor", "malformed"), [
    ({}, None, 1500, ()),
    ({"minimum": "300"}, 300, 300, ()),
    ({"minimum": "0"}, 0, 0, ()),
    ({"minimum": "9000"}, 9000, 1500, ()),  # never more than the amount
    ({"minimum": "-3"}, None, 1500, ((0, "minimum '-3': expected an integer ≥ 0"),)),
    ({"minimum": "²"}, None, 1500, ((0, "minimum '²': expected an integer ≥ 0"),)),
])
def test_a_charges_minimum(entries: dict[str, str], minimum: int | None, floor: int, malformed: Any) -> None:
    p = scheme.parse(request(({"tenant": "t", "unit": "tokens", **entries}, 1500)))
    [(_, charge)] = p.charges
    assert (charge.amount, charge.minimum, charge.floor, p.malformed) == (1500, minimum, floor, malformed)


def test_descriptors_by_role_keep_their_index() -> None:
    p = scheme.parse(request(
        ({"generic_key": "x", "tenant": "t", "model": "m", "priority": "p", "unit": "usd"}, 3000),
        ({"tenant": "t", "unit": "tokens", "reservation": "1500@1000000", "actual": "700"}, None),
        ({"tenant": "t", "unit": "tokens", "reservation": "1500@1000000"}, 650),
        ({"tenant": "t", "unit": "requests", "unit ": "x", "tenant ": "y"}, None),
    ))
    assert [(i, dict(c.fields), c.unit) for i, c in p.charges] == [
        (0, {"tenant": "t", "model": "m", "priority": "p"}, Unit.USD), (3, {"tenant": "t"}, Unit.REQUESTS)]
    assert [(i, s.reservation.amount, s.reservation.at, s.actual, s.delta) for i, s in p.settlements] == [
        (1, 1500, 1000.0, 700, -800), (2, 1500, 1000.0, 650, -850)]
    assert p.malformed == () and p.size == 4


def test_the_first_of_repeated_entries_counts() -> None:
    req = rls_pb2.RateLimitRequest()
    d = req.descriptors.add()
    for k, v in [("tenant", "t"), ("unit", "tokens"), ("tenant", "u"), ("unit", "usd")]:
        d.entries.add(key=k, value=v)
    [(_, charge)] = scheme.parse(req).charges
    assert (dict(charge.fields), charge.unit) == ({"tenant": "t"}, Unit.TOKENS)


@pytest.mark.parametrize(("entries", "addend", "reason"), [
    ({"tenant": "t"}, None, "unit: expected one of requests, tokens, usd"),
    ({"tenant": "t", "unit": "bytes"}, None, "unit: expected one of requests, tokens, usd"),
    ({"unit": "tokens", "reservation": "1500"}, None, "reservation '1500': expected <amount>@<unix ms>"),
    ({"unit": "tokens", "reservation": "1@2"}, None, "no actual entry and no hits_addend"),
    ({"unit": "tokens", "reservation": "1@2", "actual": "1.5"}, 3, "actual '1.5': expected an integer ≥ 0"),
    ({"unit": "tokens", "reservation": "1@2", "actual": "-4"}, None, "actual '-4': expected an integer ≥ 0"),
])
def test_malformed_descriptors(entries: dict[str, str], addend: int | None, reason: str) -> None:
    p = scheme.parse(request(({"tenant": "t", "unit": "tokens"}, 5), (entries, addend)))
    assert p.malformed == ((1, reason),) and len(p.charges) == 1 and p.settlements == ()


TOKENS = Limit({"tenant": "acme"}, Unit.TOKENS, Per.MINUTE, 10_000)
MODEL_TOKENS = Limit({"model": "m"}, Unit.TOKENS, Per.HOUR, 5000)
USD = Limit({"tenant": "acme"}, Unit.USD, Per.DAY, 2.5)
REQUESTS = Limit({"tenant": "acme", "priority": "batch"}, Unit.REQUESTS, Per.SECOND, 1)
NOW = 1_767_225_630.25  # 2026-01-01T00:00:30.25Z


async def respond(limiter: Limiter, req: rls_pb2.RateLimitRequest) -> rls_pb2.RateLimitResponse:
    parsed = scheme.parse(req)
    if parsed.settlements:
        await limiter.settle([s for _, s in parsed.settlements])
    verdict = await limiter.admit([c for _, c in parsed.charges]) if parsed.charges else None
    return scheme.render(parsed, verdict)


def limiter(*limits: Limit) -> Limiter:
    table = LimitTable(limits or (TOKENS, MODEL_TOKENS, USD, REQUESTS))
    return Limiter(MemoryStore(), lambda: table, clock=lambda: NOW)


def headers(resp: rls_pb2.RateLimitResponse) -> dict[str, str]:
    return {h.key: h.value for h in resp.response_headers_to_add}


def test_render_ok_statuses_headers_and_markers() -> None:
    async def run() -> None:
        resp = await respond(limiter(), request(
            ({"tenant": "acme", "model": "m", "unit": "tokens"}, 4000),
            ({"tenant": "acme", "unit": "tokens", "reservation": "5@6", "actual": "5"}, None),
            ({"tenant": "acme", "model": "m", "unit": "usd"}, 1_250_000),
            ({"tenant": "acme", "unit": "bytes"}, None),
            ({"tenant": "zeta", "unit": "requests"}, None),
        ))
        assert resp.overall_code == OK
        assert [s.code for s in resp.statuses] == [OK] * 5
        tokens = resp.statuses[0]
        assert (tokens.current_limit.name, tokens.current_limit.requests_per_unit, tokens.limit_remaining) == (
            MODEL_TOKENS.id, 5000, 1000)
        assert tokens.current_limit.unit == rls_pb2.RateLimitResponse.RateLimit.HOUR
        assert tokens.duration_until_reset.ToMilliseconds() == 3600_000 - 30_250
        assert [s.HasField("current_limit") for s in resp.statuses] == [True, False, True, False, False]
        assert headers(resp) == {
            "x-ratelimit-limit-tokens": "5000", "x-ratelimit-remaining-tokens": "1000",
            "x-ratelimit-reset-tokens": "3570s",
            "x-ratelimit-limit-usd": "2.5", "x-ratelimit-remaining-usd": "1.25", "x-ratelimit-reset-usd": "86370s",
            "x-interlock-ratelimit-reservation": f"tokens=4000@{round(NOW * 1000)};usd=1250000@{round(NOW * 1000)}",
        }
        assert json_format.MessageToDict(resp.dynamic_metadata) == {
            "reservation_tokens": f"4000@{round(NOW * 1000)}", "reservation_usd": f"1250000@{round(NOW * 1000)}"}

    asyncio.run(run())


def test_render_over_limit() -> None:
    async def run() -> None:
        lim = limiter()
        batch = ({"tenant": "acme", "priority": "batch", "unit": "requests"}, None)
        assert (await respond(lim, request(batch))).overall_code == OK
        resp = await respond(lim, request(({"tenant": "acme", "model": "m", "unit": "tokens"}, 100), batch))
        assert resp.overall_code == OVER
        assert [s.code for s in resp.statuses] == [OK, OVER]
        assert resp.statuses[1].limit_remaining == 0
        assert headers(resp)["retry-after"] == "1"
        assert headers(resp)["x-ratelimit-remaining-requests"] == "0"
        assert headers(resp)["x-ratelimit-remaining-tokens"] == "5000"  # nothing was taken
        assert not resp.HasField("dynamic_metadata")
        assert headers(resp)[scheme.EXCEEDED_HEADER] == (
            "unit=requests;per=second;amount=1;remaining=0;needed=1;model=0;priority=1")
        # More than the whole window ($2.5) is reserved as the whole window; then $0.5 is left, and
        # a request that needs at least $0.6 of it waits for the day's window to reset.
        usd = await respond(lim, request(({"tenant": "acme", "unit": "usd"}, 3_000_000)))
        assert usd.overall_code == OK and headers(usd)["x-ratelimit-remaining-usd"] == "0"
        assert json_format.MessageToDict(usd.dynamic_metadata)["reservation_usd"].startswith("2500000@")
        await lim.settle([Settlement({"tenant": "acme"}, Unit.USD, Reservation(2_500_000, NOW), 2_000_000)])
        usd = await respond(lim, request(({"tenant": "acme", "unit": "usd", "minimum": "600000"}, 1_000_000)))
        assert usd.overall_code == OVER and headers(usd)["retry-after"] == "86370"
        assert headers(usd)[scheme.EXCEEDED_HEADER] == (
            "unit=usd;per=day;amount=2500000;remaining=500000;needed=600000;model=0;priority=0")

    asyncio.run(run())


def test_render_clips_to_uint32() -> None:
    async def run() -> None:
        big = Limit({}, Unit.USD, Per.DAY, 10_000)
        resp = await respond(limiter(big), request(({"unit": "usd"}, 1)))
        assert resp.statuses[0].current_limit.requests_per_unit == 2**32 - 1
        assert resp.statuses[0].limit_remaining == 2**32 - 1
        assert headers(resp)["x-ratelimit-remaining-usd"] == "9999.999999"

    asyncio.run(run())


def test_failure_responses() -> None:
    assert scheme.failure_response(FailureMode.OPEN) == rls_pb2.RateLimitResponse(overall_code=OK)
    closed = scheme.failure_response(FailureMode.CLOSED)
    assert closed.overall_code == OVER and headers(closed) == {"retry-after": "1"}


# --- the rendered Envoy config, evaluated as Envoy does -------------------------------------

_FORMAT = re.compile(r"^%DYNAMIC_METADATA\(([^:)]+):([^:)]+)\)%$")


class EnvoySim:
    """One HTTP stream through the rate-limit filter: descriptors at admission and at stream end."""

    def __init__(self, policies: list[dict[str, Any]]) -> None:
        self.policies = [json_format.ParseDict(p, route_components_pb2.RateLimit()) for p in policies]
        self.metadata: dict[str, dict[str, Any]] = {}

    def descriptors(self, on_stream_done: bool) -> rls_pb2.RateLimitRequest:
        req = rls_pb2.RateLimitRequest(domain="interlock")
        for policy in self.policies:
            if policy.apply_on_stream_done != on_stream_done:
                continue
            entries: list[tuple[str, str]] = []
            for action in policy.actions:
                kind = action.WhichOneof("action_specifier")
                if kind == "generic_key":
                    entries.append((action.generic_key.descriptor_key or "generic_key",
                                    action.generic_key.descriptor_value))
                    continue
                assert kind == "metadata" and action.metadata.source == 0
                key = action.metadata.metadata_key
                value = self.metadata.get(key.key, {}).get(key.path[0].key)
                if isinstance(value, str) and value:
                    entries.append((action.metadata.descriptor_key, value))
                elif action.metadata.default_value:
                    entries.append((action.metadata.descriptor_key, action.metadata.default_value))
                elif not action.metadata.skip_if_absent:
                    break
            else:
                addend: int | None = None
                if policy.HasField("hits_addend"):
                    if policy.hits_addend.HasField("number"):
                        addend = policy.hits_addend.number.value
                    else:
                        m = _FORMAT.match(policy.hits_addend.format)
                        assert m, policy.hits_addend.format
                        raw = self.metadata.get(m[1], {}).get(m[2])
                        try:
                            number = float(raw)  # type: ignore[arg-type]
                        except (TypeError, ValueError):
                            continue
                        if not 0 <= number <= 1e9:
                            continue
                        addend = int(number)
                d = req.descriptors.add()
                for k, v in entries:
                    d.entries.add(key=k, value=v)
                if addend is not None:
                    d.hits_addend.value = addend
        return req

    async def admit(self, lim: Limiter) -> rls_pb2.RateLimitResponse | None:
        req = self.descriptors(on_stream_done=False)
        if not req.descriptors:
            return None
        resp = await respond(lim, req)
        if resp.HasField("dynamic_metadata"):
            self.metadata[scheme.RATELIMIT_NAMESPACE] = json_format.MessageToDict(resp.dynamic_metadata)
        return resp

    async def stream_done(self, lim: Limiter) -> rls_pb2.RateLimitRequest | None:
        req = self.descriptors(on_stream_done=True)
        if not req.descriptors:
            return None
        assert (await respond(lim, req)).overall_code == OK
        return req


def test_rendered_rate_limits_are_valid_envoy_config() -> None:
    policies = envoy_rate_limits(stream_done=True)
    assert [(p.get("apply_on_stream_done", False), p["actions"][-1]) for p in policies][:2] == [
        (False, {"generic_key": {"descriptor_key": "unit", "descriptor_value": "requests"}}),
        (False, {"generic_key": {"descriptor_key": "unit", "descriptor_value": "tokens"}}),
    ]
    assert len(policies) == 5
    for p in policies:
        json_format.ParseDict(p, route_components_pb2.RateLimit())
    # By default Envoy only admits: the workers true up (`trueup`).
    assert [p.get("apply_on_stream_done", False) for p in envoy_rate_limits()] == [False] * 3
    custom = envoy_rate_limits("x", units=[Unit.TOKENS], fields={"tenant": "t"}, reserve_key="r_{unit}",
                               usage_key="u_{unit}", stream_done=True)
    assert custom[0]["hits_addend"] == {"format": "%DYNAMIC_METADATA(x:r_tokens)%"}
    assert [a["metadata"]["metadata_key"]["path"][0]["key"] for a in custom[1]["actions"] if "metadata" in a] == [
        "t", "reservation_tokens", "u_tokens"]


def ext_proc_metadata(**values: str) -> dict[str, str]:
    return {"tenant": "acme", "model": "m", **values}


async def used(lim: Limiter, limit: Limit) -> int:
    return (await lim.store.usage([slot_of(limit)], NOW))[0]


def test_end_to_end_reserve_then_true_up() -> None:
    async def run() -> None:
        lim = limiter()
        s = EnvoySim(envoy_rate_limits(stream_done=True))
        s.metadata["interlock"] = ext_proc_metadata(reserve_tokens="1500", reserve_usd="30000")
        resp = await s.admit(lim)
        assert resp is not None and resp.overall_code == OK and len(resp.statuses) == 3
        assert await used(lim, TOKENS) == 1500 and await used(lim, USD) == 30000
        s.metadata["interlock"].update(usage_tokens="734", usage_usd="14680")
        done = await s.stream_done(lim)
        assert done is not None and [{e.key: e.value for e in d.entries}["actual"] for d in done.descriptors] == [
            "734", "14680"]
        assert await used(lim, TOKENS) == 734 and await used(lim, MODEL_TOKENS) == 734
        assert await used(lim, USD) == 14680

    asyncio.run(run())


def test_end_to_end_a_reservation_shrinks_to_what_is_left_but_not_below_its_minimum() -> None:
    """MODEL_TOKENS: 5,000 an hour. A request that may produce 65,536 tokens reserves what is left
    (its true-up then charges what it used); one whose prompt needs more than is left is refused,
    with the limit named and a Retry-After that the window's reset makes true."""
    async def run() -> None:
        lim = limiter()
        big = EnvoySim(envoy_rate_limits(units=[Unit.TOKENS], stream_done=True))
        big.metadata["interlock"] = ext_proc_metadata(reserve_tokens="65836", reserve_min_tokens="300")
        resp = await big.admit(lim)
        assert resp is not None and resp.overall_code == OK
        assert json_format.MessageToDict(resp.dynamic_metadata)["reservation_tokens"].startswith("5000@")
        big.metadata["interlock"]["usage_tokens"] = "4200"
        await big.stream_done(lim)
        assert await used(lim, MODEL_TOKENS) == 4200
        second = EnvoySim(envoy_rate_limits(units=[Unit.TOKENS], stream_done=True))
        second.metadata["interlock"] = ext_proc_metadata(reserve_tokens="65836", reserve_min_tokens="300")
        resp = await second.admit(lim)
        assert resp is not None and resp.overall_code == OK and headers(resp)["x-ratelimit-remaining-tokens"] == "0"
        assert await used(lim, MODEL_TOKENS) == 5000
        third = EnvoySim(envoy_rate_limits(units=[Unit.TOKENS], stream_done=True))
        third.metadata["interlock"] = ext_proc_metadata(reserve_tokens="65836", reserve_min_tokens="300")
        resp = await third.admit(lim)
        assert resp is not None and resp.overall_code == OVER
        assert headers(resp)["retry-after"] == str(3600 - 30)
        assert headers(resp)[scheme.EXCEEDED_HEADER] == (
            "unit=tokens;per=hour;amount=5000;remaining=0;needed=300;model=1;priority=0")

    asyncio.run(run())


def test_end_to_end_disconnect_is_trued_up_with_what_was_produced() -> None:
    async def run() -> None:
        lim = limiter()
        s = EnvoySim(envoy_rate_limits(units=[Unit.TOKENS], stream_done=True))
        s.metadata["interlock"] = ext_proc_metadata(reserve_tokens="4000", usage_tokens="0")
        await s.admit(lim)
        s.metadata["interlock"]["usage_tokens"] = "212"  # the last body chunk the ext_proc answered
        await s.stream_done(lim)
        assert await used(lim, TOKENS) == 212

    asyncio.run(run())


def test_end_to_end_refused_and_unreported_requests() -> None:
    async def run() -> None:
        lim = limiter()
        first = EnvoySim(envoy_rate_limits(units=[Unit.TOKENS], stream_done=True))
        first.metadata["interlock"] = ext_proc_metadata(reserve_tokens="4500")
        await first.admit(lim)
        assert await first.stream_done(lim) is None  # no usage written: the reservation stands
        second = EnvoySim(envoy_rate_limits(units=[Unit.TOKENS], stream_done=True))
        second.metadata["interlock"] = ext_proc_metadata(reserve_tokens="1000", usage_tokens="0")
        resp = await second.admit(lim)
        assert resp is not None and resp.overall_code == OVER
        assert await second.stream_done(lim) is None  # refused: no marker, so no refund
        assert await used(lim, TOKENS) == 4500

    asyncio.run(run())


@pytest.mark.parametrize(("metadata", "expected"), [
    ({"model": "m", "reserve_tokens": "1"}, None),  # no tenant: no descriptor
    ({"tenant": "acme", "reserve_tokens": "1"}, {"tenant": "acme", "unit": "tokens"}),
    ({"tenant": "acme", "priority": "batch", "reserve_tokens": "1"}, {"tenant": "acme", "priority": "batch",
                                                                      "unit": "tokens"}),
    ({"tenant": "acme", "reserve_tokens": "lots"}, None),  # not a number: Envoy drops the descriptor
    ({"tenant": "acme", "reserve_tokens": "2000000000"}, None),  # over Envoy's 1e9 cap
    ({"tenant": "acme"}, None),
])
def test_admission_descriptor_shapes(metadata: dict[str, str], expected: dict[str, str] | None) -> None:
    s = EnvoySim(envoy_rate_limits(units=[Unit.TOKENS], stream_done=True))
    s.metadata["interlock"] = metadata
    req = s.descriptors(on_stream_done=False)
    assert [{e.key: e.value for e in d.entries} for d in req.descriptors] == ([expected] if expected else [])
