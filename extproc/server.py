"""The worker's gRPC services, ext_proc (both stages) and gRPC health, on `extproc.h2grpc`.

One worker process serves one port. Each gRPC stream is one client request and gets its own
`RouterStream` (or `UpstreamStream` for a per-attempt call, named by the call's
`x-interlock-stage: upstream` metadata); nothing is shared between streams but the immutable
`Runtime`, the worker's routing statistics and its admission gate, so any worker process can
serve any request. A stream's `close` runs when the call ends for any reason — answered, failed,
or cancelled because the client went away — and gives back its concurrency slot.

The one error boundary (`_Call.message`): a `GatewayError` a stage raises is rendered by that
stage's `fail` (an immediate response in the client's format, or an error event when the
answer has started); any other exception is logged with its traceback and rendered as an
`InternalError` naming only the request id.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from extproc import metadata
from extproc.admission import Board, Gate
from extproc.errors import GatewayError, InternalError
from extproc.h2grpc import Server
from extproc.limits import trueup
from extproc.limits.model import KEY_FIELDS
from extproc.runtime import Runtime
from extproc.stages.feedback import RoutingState
from extproc.stages.router import RouterStream
from extproc.stages.upstream import UpstreamStream

log = logging.getLogger("interlock.server")

PROCESS = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"


_USAGE_KEYS = {"usage_tokens": "tokens", "usage_usd": "usd"}


class _Call:
    """One ext_proc gRPC stream: each ProcessingRequest answered by one ProcessingResponse (and, for
    a stream that stalls, one error event sent unasked).

    The rate-limit true-up (`extproc.limits.trueup`): the router stage reports what a request of a
    tenant with limits has spent as `usage_<unit>` dynamic metadata (the admission's descriptor
    fields first, then each update). Envoy is not asked to true up, so those keys are kept here and
    taken out of the message; the rate-limit service's reservation header is read from the answer's
    headers (and removed); when the call ends, the last spend goes to the rate-limit process."""

    __slots__ = ("stage", "trueups", "fields", "spent", "markers")

    def __init__(self, stage: RouterStream | UpstreamStream, trueups: trueup.Sender | None = None) -> None:
        self.stage = stage
        self.trueups = trueups
        self.fields: dict[str, str] | None = None  # the admission's descriptor fields (tenant, ...)
        self.spent: dict[str, str] = {}  # unit → ticks spent so far, as last reported
        self.markers: dict[str, str] | None = None  # unit → reservation marker

    async def message(self, data: bytes) -> bytes:
        stage = self.stage
        req = pb.ProcessingRequest.FromString(data)
        try:
            response = await stage.handle(req)
        except GatewayError as e:
            response = stage.fail(e, req.WhichOneof("request"))
        except Exception:
            phase = req.WhichOneof("request")
            log.exception("internal error request_id=%s stage=%s phase=%s", stage.request_id, type(stage).__name__,
                          phase)
            response = stage.fail(InternalError(stage.request_id), phase)
        if self.fields is not None and self.markers is None and req.HasField("response_headers"):
            self._reservation(req, response)
        return self._bytes(response)

    def _bytes(self, response: pb.ProcessingResponse) -> bytes:
        if self.trueups is not None and response.HasField("dynamic_metadata"):
            self._keep_spent(response)
        return bytes(response.SerializeToString())

    def _keep_spent(self, response: pb.ProcessingResponse) -> None:
        namespaces = response.dynamic_metadata.fields
        if metadata.NAMESPACE not in namespaces:
            return
        values = namespaces[metadata.NAMESPACE].struct_value.fields
        if "tenant" in values:
            self.fields = {k: values[k].string_value for k in KEY_FIELDS if k in values}
        for key, unit in _USAGE_KEYS.items():
            if key in values:
                self.spent[unit] = values[key].string_value
                del values[key]
        if not values:
            del namespaces[metadata.NAMESPACE]
            if not namespaces:
                response.ClearField("dynamic_metadata")

    def _reservation(self, req: pb.ProcessingRequest, response: pb.ProcessingResponse) -> None:
        # From the end: Envoy's rate-limit filter appends its headers to the provider's.
        for h in reversed(req.response_headers.headers.headers):
            if h.key == trueup.RESERVATION_HEADER:
                self.markers = trueup.parse_header((h.raw_value or h.value.encode()).decode("latin-1"))
                if response.HasField("response_headers"):  # never shown to the client
                    response.response_headers.response.header_mutation.remove_headers.append(h.key)
                return

    def attach(self, send: Callable[[bytes], bool]) -> None:
        """The transport's way to send a message unasked: the router stage ends a stalled stream
        with it (on the running loop's clock)."""
        if isinstance(self.stage, RouterStream):
            self.stage.attach(lambda resp: send(self._bytes(resp)), asyncio.get_running_loop())

    def close(self) -> None:
        if isinstance(self.stage, RouterStream):
            self.stage.close()
        if self.trueups is not None and self.fields is not None and self.markers:
            lines = [trueup.line(self.fields, unit, marker, self.spent[unit])
                     for unit, marker in self.markers.items() if unit in self.spent]
            self.markers = None
            if lines:
                self.trueups.send(lines)


class ExternalProcessor:
    """Serves both stages; Envoy names the stage in the call's metadata (`x-interlock-stage`)."""

    def __init__(self, runtime: Callable[[], Runtime], board: Board | None = None) -> None:
        self._runtime = runtime
        self._routing = RoutingState()
        self.gate = Gate(board or Board(), lambda: runtime().config.admission, self._routing.clock)
        rl = runtime().config.rate_limit
        self.trueups = trueup.Sender(rl.address, rl.port)

    def call(self, headers: dict[str, str]) -> _Call:
        if headers.get(metadata.STAGE_METADATA) == "upstream":
            return _Call(UpstreamStream(self._runtime()))
        stream = RouterStream(self._runtime(), self._routing, gate=self.gate)
        stream.trace_parent = headers.get("traceparent")  # Envoy's span of this ext_proc call
        return _Call(stream, self.trueups)


async def serve(address: str, port: int, runtime: Callable[[], Runtime],
                ready: Callable[[int], None] | None = None, on_reload: Callable[[], None] | None = None,
                board: Board | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting and let open streams finish (5 s).
    SIGHUP calls `on_reload` (the worker re-reads its config and swaps its runtime)."""
    processor = ExternalProcessor(runtime, board)
    server = Server(streams={PROCESS: processor.call})
    bound = await server.start(address, port)
    if ready:
        ready(bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if on_reload is not None:
        loop.add_signal_handler(signal.SIGHUP, on_reload)
    await stop.wait()
    await server.stop(grace=5)
    processor.trueups.flush()  # the last true-ups go now, not after the loop is gone
    processor.trueups.close()
    if processor.gate.replicas is not None:  # hand this pod's share of the budgets back at once
        await processor.gate.replicas.stop()
