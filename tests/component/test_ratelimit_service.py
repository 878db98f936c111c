"""The RateLimitService through a real grpc.aio server on port 0 and a real client stub."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf import json_format

from extproc.limits import (
    Decision,
    FailureMode,
    Limit,
    Limiter,
    LimitTable,
    MemoryStore,
    Per,
    RateLimitService,
    RedisStore,
    Slot,
    Store,
    Unit,
    trueup,
)
from extproc.limits.limiter import slot_of
from tests.conftest import free_port
from tests.conftest import rls_request as request

OK, OVER = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT
NOW = 1_767_225_630.25
TOKENS = Limit({"tenant": "acme"}, Unit.TOKENS, Per.MINUTE, 10_000)
USD = Limit({"tenant": "acme", "model": "m"}, Unit.USD, Per.DAY, 1.0)
REQUESTS = Limit({"tenant": "acme"}, Unit.REQUESTS, Per.SECOND, 2)
TABLE = LimitTable([TOKENS, USD, REQUESTS])


def service(store: Store | None = None, mode: FailureMode | None = None) -> RateLimitService:
    return RateLimitService(Limiter(store or MemoryStore(), lambda: TABLE, clock=lambda: NOW), failure_mode=mode)


@asynccontextmanager
async def serving(svc: RateLimitService) -> AsyncIterator[rls_pb2_grpc.RateLimitServiceStub]:
    server = grpc.aio.server()
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(svc, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield rls_pb2_grpc.RateLimitServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(None)


def run(svc: RateLimitService, test: Callable[[rls_pb2_grpc.RateLimitServiceStub], Awaitable[None]]) -> None:
    async def main() -> None:
        async with serving(svc) as stub:
            await test(stub)

    asyncio.run(asyncio.wait_for(main(), 30))


def headers(resp: rls_pb2.RateLimitResponse) -> dict[str, str]:
    return {h.key: h.value for h in resp.response_headers_to_add}


ACME = {"tenant": "acme", "model": "m"}


def admission(tokens: int, usd: int) -> rls_pb2.RateLimitRequest:
    return request(({**ACME, "unit": "requests"}, None), ({**ACME, "unit": "tokens"}, tokens),
                   ({**ACME, "unit": "usd"}, usd))


def test_reserve_then_true_up_at_stream_done() -> None:
    svc = service()

    async def body(stub: rls_pb2_grpc.RateLimitServiceStub) -> None:
        resp = await stub.ShouldRateLimit(admission(8000, 600_000))
        assert resp.overall_code == OK and [s.code for s in resp.statuses] == [OK, OK, OK]
        assert [s.limit_remaining for s in resp.statuses] == [1, 2000, 400_000]
        assert headers(resp) == {
            "x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-limit-tokens": "10000", "x-ratelimit-remaining-tokens": "2000",
            "x-ratelimit-reset-tokens": "30s",
            "x-ratelimit-limit-usd": "1", "x-ratelimit-remaining-usd": "0.4", "x-ratelimit-reset-usd": "86370s",
            # what the worker trues up (extproc.limits.trueup)
            "x-interlock-ratelimit-reservation": f"tokens=8000@{round(NOW * 1000)};usd=600000@{round(NOW * 1000)}",
        }
        markers = json_format.MessageToDict(resp.dynamic_metadata)
        assert markers["reservation_tokens"] == f"8000@{round(NOW * 1000)}"

        refused = await stub.ShouldRateLimit(admission(3000, 1))
        assert refused.overall_code == OVER and headers(refused)["retry-after"] == "30"

        done = await stub.ShouldRateLimit(request(
            ({**ACME, "unit": "tokens", "reservation": markers["reservation_tokens"], "actual": "1200"}, None),
            ({**ACME, "unit": "usd", "reservation": markers["reservation_usd"]}, 90_000)))
        assert done.overall_code == OK and list(done.response_headers_to_add) == []
        usage = await svc.limiter.store.usage([slot_of(TOKENS), slot_of(USD)], NOW)
        assert usage == (1200, 90_000)

        again = await stub.ShouldRateLimit(admission(3000, 1))
        assert again.overall_code == OK and headers(again)["x-ratelimit-remaining-tokens"] == "5800"

    run(svc, body)
    assert (svc.over_limit, svc.errors, svc.malformed) == (1, 0, 0)


def test_a_workers_true_up_is_settled_before_the_next_admission() -> None:
    """The worker's true-up datagram and the tenant's next admission can arrive in the same turn
    of the rate-limit process's event loop: the refund must count for that admission (failed
    before: the datagram's settling waited for a task of the next turn, so the next request was
    refused although the last one had used 1,200 of its 10,000 tokens)."""
    svc = service()

    async def body() -> None:
        first = await svc.ShouldRateLimit(admission(10_000, 1))
        assert first.overall_code == OK
        marker = json_format.MessageToDict(first.dynamic_metadata)["reservation_tokens"]
        svc.true_up(trueup.line({"tenant": "acme", "model": "m"}, "tokens", marker, "1200"))
        second = await svc.ShouldRateLimit(admission(8000, 1))  # no turn of the loop in between
        assert second.overall_code == OK, headers(second)
        assert headers(second)["x-ratelimit-remaining-tokens"] == "800"

    asyncio.run(body())
    assert svc.trueups == 1


def test_over_limit_statuses_follow_the_descriptors() -> None:
    svc = service()

    async def body(stub: rls_pb2_grpc.RateLimitServiceStub) -> None:
        # More than the whole window ($1) is reserved as the whole window: then nothing is left.
        assert (await stub.ShouldRateLimit(request(({**ACME, "unit": "usd"}, 2_000_000)))).overall_code == OK
        resp = await stub.ShouldRateLimit(request(
            ({"tenant": "zeta", "unit": "tokens"}, 5), ({**ACME, "unit": "usd"}, 2_000_000),
            ({**ACME, "unit": "tokens"}, 10)))
        assert resp.overall_code == OVER
        assert [s.code for s in resp.statuses] == [OK, OVER, OK]
        assert not resp.statuses[0].HasField("current_limit")
        assert resp.statuses[1].current_limit.unit == rls_pb2.RateLimitResponse.RateLimit.DAY
        assert headers(resp)["retry-after"] == "86370"
        assert not resp.HasField("dynamic_metadata")
        assert await svc.limiter.store.usage([slot_of(TOKENS)], NOW) == (0,)

    run(svc, body)


def test_malformed_descriptors_are_answered_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    svc = service()

    async def body(stub: rls_pb2_grpc.RateLimitServiceStub) -> None:
        resp = await stub.ShouldRateLimit(request(
            ({"tenant": "acme"}, 5), ({**ACME, "unit": "tokens", "reservation": "x"}, None),
            ({**ACME, "unit": "tokens"}, 5)))
        assert resp.overall_code == OK and [s.code for s in resp.statuses] == [OK, OK, OK]

    with caplog.at_level(logging.WARNING, logger="interlock.limits"):
        run(svc, body)
    assert svc.malformed == 2
    assert [r.getMessage() for r in caplog.records] == [
        "rate limit descriptor 0 of domain 'interlock' ignored: unit: expected one of requests, tokens, usd",
        "rate limit descriptor 1 of domain 'interlock' ignored: reservation 'x': expected <amount>@<unix ms>",
    ]


class BrokenStore(MemoryStore):
    async def reserve(self, slots: Sequence[Slot], amount: int | Sequence[int], now: float) -> Decision:
        raise RuntimeError("boom")


@pytest.mark.parametrize("mode", [FailureMode.OPEN, FailureMode.CLOSED])
def test_internal_errors_answer_with_the_failure_mode(mode: FailureMode, caplog: pytest.LogCaptureFixture) -> None:
    svc = service(BrokenStore(), mode)

    async def body(stub: rls_pb2_grpc.RateLimitServiceStub) -> None:
        resp = await stub.ShouldRateLimit(admission(1, 1))
        if mode is FailureMode.OPEN:
            assert resp == rls_pb2.RateLimitResponse(overall_code=OK)
        else:
            assert resp.overall_code == OVER and headers(resp) == {"retry-after": "1"}

    with caplog.at_level(logging.ERROR, logger="interlock.limits"):
        run(svc, body)
    assert svc.errors == 1
    assert caplog.records[0].getMessage() == f"rate limit call failed; answering {mode.value}"
    assert caplog.records[0].exc_info is not None


@pytest.mark.parametrize("mode", [FailureMode.OPEN, FailureMode.CLOSED])
def test_redis_down_answers_with_the_stores_failure_mode(mode: FailureMode) -> None:
    async def main() -> None:
        store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", failure_mode=mode, timeout_s=0.2)
        svc = service(store)
        assert svc.failure_mode is mode  # the store's, by default
        async with serving(svc) as stub:
            resp = await stub.ShouldRateLimit(admission(1, 1))
            settle = await stub.ShouldRateLimit(request(({**ACME, "unit": "tokens", "reservation": f"5@{round(NOW * 1000)}"}, 1)))
        await store.close()
        assert settle.overall_code == OK
        if mode is FailureMode.OPEN:
            assert resp == rls_pb2.RateLimitResponse(overall_code=OK)  # no marker: nothing to true up
        else:
            assert resp.overall_code == OVER and headers(resp) == {"retry-after": "1"}
        assert store.failures == 2 and svc.errors == 0

    asyncio.run(asyncio.wait_for(main(), 30))


class GatedStore(MemoryStore):
    synchronous = False  # its reservations suspend (MemoryStore's never do)

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def reserve(self, slots: Sequence[Slot], amount: int | Sequence[int], now: float) -> Decision:
        await self.gate.wait()
        return await super().reserve(slots, amount, now)


def test_a_reservation_envoy_gave_up_on_is_given_back() -> None:
    async def main() -> None:
        store = GatedStore()
        svc = service(store)
        async with serving(svc) as stub:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.ShouldRateLimit(admission(500, 5), timeout=0.2)
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            for _ in range(500):
                if svc.abandoned:
                    break
                await asyncio.sleep(0.01)
            assert svc.abandoned == 1
            store.gate.set()
            for _ in range(500):
                if svc.released:
                    break
                await asyncio.sleep(0.01)
            assert svc.released == 1
            await svc.drain()
            assert await store.usage([slot_of(TOKENS), slot_of(USD), slot_of(REQUESTS)], NOW) == (0, 0, 0)
            resp = await stub.ShouldRateLimit(admission(10_000, 1_000_000))
            assert resp.overall_code == OK

    asyncio.run(asyncio.wait_for(main(), 30))
