"""The `envoy.service.ratelimit.v3.RateLimitService` servicer: the error boundary. The rate-limit
process serves it on `extproc.h2grpc` (`context` is then None). It has the servicer's method, so
a grpcio server takes it too (`rls_pb2_grpc.add_RateLimitServiceServicer_to_server`, as the
component tests do), but nothing here imports grpc.

Each call is parsed (`scheme.parse`), its true-ups applied and its admissions reserved through one
`Limiter`, and answered (`scheme.render`). The call never fails at the gRPC level:

- the store could not decide (`Verdict.degraded`: Redis unreachable, erroring or too slow): the
  store's failure mode answers (open: OK without markers; closed: OVER_LIMIT, `retry-after: 1`),
  counted in `degraded`; `store_healthy` is False until an admission is decided by the store again
  (the store itself logs the first failure and the recovery);
- an internal error: the service's `failure_mode` answers the same way, logged and counted in
  `errors`;
- a descriptor that does not follow the scheme is answered OK, logged and counted in `malformed`.

If Envoy gives up on a call (its timeout, or the downstream went away) while the reservation is
being made, the work still completes, and anything it reserved is given back, since Envoy never
saw the marker that would true it up (`abandoned` counts such calls, `released` the ones that had
reserved something).

The workers' true-ups (`trueup`, datagrams the rate-limit process hands to `true_up`) are settled
as each datagram arrives with a store that never suspends (memory), so an admission that comes
after it counts it; with Redis, in the background. Counted in `trueups`.

Counters (all only grow; read by the process's `/metrics`, see `extproc.cmd.ratelimit`): `calls` (every call,
admission and true-up alike), `trueups` (the workers' true-ups), `over_limit` (refused by a limit the store decided on), `degraded`,
`errors`, `malformed`, `abandoned`, `released`.
"""

from __future__ import annotations

import asyncio
import logging

from envoy.service.ratelimit.v3 import rls_pb2

from extproc.limits import scheme, trueup
from extproc.limits.limiter import Limiter, Settlement, Verdict
from extproc.limits.store import FailureMode

log = logging.getLogger("interlock.limits")


class RateLimitService:
    """Shared by all calls of a server; per-call state lives in the call. Counters only grow;
    `store_healthy` follows the latest admission (see the module docstring)."""

    def __init__(self, limiter: Limiter, *, failure_mode: FailureMode | str | None = None) -> None:
        """`failure_mode` defaults to the store's own (`RedisStore.failure_mode`), else open."""
        self.limiter = limiter
        default: FailureMode = getattr(limiter.store, "failure_mode", FailureMode.OPEN)
        self.failure_mode = FailureMode(failure_mode) if failure_mode is not None else default
        self.calls = 0
        self.degraded = 0
        self.store_healthy = True
        self.errors = 0
        self.malformed = 0
        self.over_limit = 0
        self.abandoned = 0
        self.released = 0
        self.trueups = 0
        self._background: set[asyncio.Task[None]] = set()

    async def ShouldRateLimit(self, request: rls_pb2.RateLimitRequest,
                              context: object = None) -> rls_pb2.RateLimitResponse:
        self.calls += 1
        if getattr(self.limiter.store, "synchronous", False):
            # A store that never suspends (memory) decides before any cancellation can land:
            # no task and no shield needed (they cost as much as the decision).
            try:
                parsed, verdict = await self._decide(request)
            except Exception:
                self.errors += 1
                log.exception("rate limit call failed; answering %s", self.failure_mode.value)
                return scheme.failure_response(self.failure_mode)
            if verdict is not None and not verdict.allowed:
                self.over_limit += 1
            return scheme.render(parsed, verdict)
        work = asyncio.ensure_future(self._decide(request))
        try:
            parsed, verdict = await asyncio.shield(work)
            if verdict is not None:
                self.store_healthy = not verdict.degraded
                if verdict.degraded:
                    self.degraded += 1
                    return scheme.failure_response(FailureMode.OPEN if verdict.allowed else FailureMode.CLOSED)
                if not verdict.allowed:
                    self.over_limit += 1
            return scheme.render(parsed, verdict)
        except asyncio.CancelledError:
            self.abandoned += 1
            work.add_done_callback(self._release_abandoned)
            raise
        except Exception:
            self.errors += 1
            log.exception("rate limit call failed; answering %s", self.failure_mode.value)
            return scheme.failure_response(self.failure_mode)

    def true_up(self, datagram: bytes) -> None:
        """The workers' true-ups (`trueup`): applied like a stream-done call's settlements, at once
        with a synchronous store, else in the background; lines that do not parse are counted in
        `malformed`."""
        settlements, bad = trueup.decode(datagram)
        self.trueups += len(settlements)
        if bad:
            self.malformed += bad
            log.warning("%d rate-limit true-up line(s) ignored: not in the worker's format", bad)
        if not settlements:
            return
        work = self._settle(settlements)
        if getattr(self.limiter.store, "synchronous", False):
            # A store that never suspends (`Store`) settles at once, before any admission that
            # comes after the datagram; a task would also cost about as much as the settling.
            try:
                work.send(None)
            except StopIteration:
                return
            work.close()
            raise RuntimeError(f"{type(self.limiter.store).__name__} is synchronous but suspended")
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _settle(self, settlements: list[Settlement]) -> None:
        try:
            await self.limiter.settle(settlements)
        except Exception:
            self.errors += 1
            log.exception("rate-limit true-up failed")

    async def _decide(self, request: rls_pb2.RateLimitRequest) -> tuple[scheme.Parsed, Verdict | None]:
        parsed = scheme.parse(request)
        for i, reason in parsed.malformed:
            self.malformed += 1
            log.warning("rate limit descriptor %d of domain %r ignored: %s", i, request.domain, reason)
        if parsed.settlements:
            await self.limiter.settle([s for _, s in parsed.settlements])
        verdict = await self.limiter.admit([c for _, c in parsed.charges]) if parsed.charges else None
        return parsed, verdict

    def _release_abandoned(self, work: asyncio.Future[tuple[scheme.Parsed, Verdict | None]]) -> None:
        if work.cancelled() or work.exception() is not None:
            return
        _, verdict = work.result()
        if verdict is None or not verdict.charged:
            return
        self.released += 1
        task = asyncio.ensure_future(self._release(verdict))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _release(self, verdict: Verdict) -> None:
        try:
            await self.limiter.release(verdict)
        except Exception:
            self.errors += 1
            log.exception("could not give back an abandoned reservation")

    async def drain(self) -> None:
        """Wait for pending releases (for shutdown and tests)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

