"""grpc.aio servicers: ext_proc (router stage) and gRPC health. The error boundary.

One worker process serves one port. Each gRPC stream is one client request and gets its own
`RouterStream`; nothing is shared between streams but the immutable `Runtime`, so any worker
process can serve any request.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from extproc import metadata
from extproc.admission import Board, Gate
from extproc.runtime import Runtime
from extproc.stages.decide import RoutingState
from extproc.stages.router import RouterStream
from extproc.stages.upstream import UpstreamStream

log = logging.getLogger("interlock.server")


class ExternalProcessor(pb_grpc.ExternalProcessorServicer):
    """Serves both stages; Envoy names the stage in the call's metadata (`x-interlock-stage`)."""

    def __init__(self, runtime: Callable[[], Runtime], board: Board | None = None) -> None:
        self._runtime = runtime
        self._routing = RoutingState()
        self.gate = Gate(board or Board(), lambda: runtime().config.admission, self._routing.clock)

    async def Process(self, request_iterator: AsyncIterator[pb.ProcessingRequest],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ProcessingResponse]:
        if any(k == metadata.STAGE_METADATA and v == "upstream" for k, v in context.invocation_metadata() or ()):
            upstream = UpstreamStream(self._runtime())
            async for req in request_iterator:
                yield await upstream.handle(req)
            return
        stream = RouterStream(self._runtime(), self._routing, gate=self.gate)
        try:
            async for req in request_iterator:
                yield await stream.handle(req)
        finally:
            # Answered, failed, or the client went away (the call is cancelled): the budget
            # slot is free again.
            stream.close()


async def serve(address: str, port: int, runtime: Callable[[], Runtime],
                ready: Callable[[int], None] | None = None, on_reload: Callable[[], None] | None = None,
                board: Board | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting and let open streams finish (5 s).
    SIGHUP calls `on_reload` (the worker re-reads its config and swaps its runtime)."""
    server = grpc.aio.server(options=[
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", 100000),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10000),
    ])
    pb_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(runtime, board), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{address}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {address}:{port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    if ready:
        ready(bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if on_reload is not None:
        loop.add_signal_handler(signal.SIGHUP, on_reload)
    await stop.wait()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=5)
