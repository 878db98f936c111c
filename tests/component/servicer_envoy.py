"""Envoy's side of the ext_proc conversation, without Envoy: the product's own gRPC server on a
free loopback port (in a background thread with its own event loop) and a grpcio client that
sends `ProcessingRequest`s exactly as Envoy 1.40 does.

What Envoy 1.40 sends, and how it is built here:
- header values in `raw_value` (bytes), `value` left empty; pseudo-headers (`:path`, `:method`,
  `:status`, ...) among the headers; names lowercase;
- attributes under the filter's name, `envoy.filters.http.ext_proc`, as a Struct; the host
  metadata (`xds.upstream_host_metadata`) as a protobuf text-format `Metadata` string;
- the router stage's dynamic metadata, when forwarded, in `metadata_context.filter_metadata`;
- the stage in the gRPC call's initial metadata (`x-interlock-stage: upstream`) for the
  upstream filter chain's ext_proc.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2, text_format

from extproc.h2grpc import Server
from extproc.runtime import Runtime
from extproc.server import PROCESS, ExternalProcessor

ATTRIBUTES_KEY = "envoy.filters.http.ext_proc"
Headers = Iterable[tuple[str, str]] | Mapping[str, str]


def _items(headers: Headers) -> Iterable[tuple[str, str]]:
    return headers.items() if isinstance(headers, Mapping) else headers


def host_metadata_text(provider: str) -> str:
    """The `xds.upstream_host_metadata` attribute of a host of `provider`'s cluster (Envoy renders
    the host's `Metadata` message in protobuf text format)."""
    md = base_pb2.Metadata()
    md.filter_metadata["interlock"].update({"provider": provider})
    return text_format.MessageToString(md)


def _attributes(req: pb.ProcessingRequest, attributes: Mapping[str, Any] | None) -> None:
    if attributes:
        req.attributes[ATTRIBUTES_KEY].update(dict(attributes))


def headers_msg(headers: Headers, *, end_of_stream: bool = False, phase: str = "request_headers",
                attributes: Mapping[str, Any] | None = None,
                filter_metadata: Mapping[str, Mapping[str, str]] | None = None) -> pb.ProcessingRequest:
    req = pb.ProcessingRequest()
    msg: pb.HttpHeaders = getattr(req, phase)
    msg.SetInParent()
    for key, value in _items(headers):
        msg.headers.headers.add(key=key, raw_value=value.encode("latin-1"))
    msg.end_of_stream = end_of_stream
    _attributes(req, attributes)
    for ns, fields in (filter_metadata or {}).items():
        s = struct_pb2.Struct()
        s.update(dict(fields))
        req.metadata_context.filter_metadata[ns].CopyFrom(s)
    return req


def body_msg(body: bytes, *, end_of_stream: bool = True, phase: str = "request_body",
             attributes: Mapping[str, Any] | None = None) -> pb.ProcessingRequest:
    req = pb.ProcessingRequest()
    msg: pb.HttpBody = getattr(req, phase)
    msg.body = body
    msg.end_of_stream = end_of_stream
    _attributes(req, attributes)
    return req


def response_headers_msg(status: int, headers: Headers = (), *, provider: str | None = None,
                         end_of_stream: bool = False) -> pb.ProcessingRequest:
    """Response headers as the router stage gets them: `:status` first, Envoy's own marks, and the
    answering host's metadata (the filter's `response_attributes`)."""
    attrs = {"xds.upstream_host_metadata": host_metadata_text(provider)} if provider else None
    return headers_msg([(":status", str(status)), *_items(headers)], end_of_stream=end_of_stream,
                       phase="response_headers", attributes=attrs)


def response_body_msg(body: bytes, *, end_of_stream: bool) -> pb.ProcessingRequest:
    return body_msg(body, end_of_stream=end_of_stream, phase="response_body")


def header_mutation(common: pb.CommonResponse) -> tuple[dict[str, str], list[str]]:
    """(set headers by name, removed names) of a CommonResponse."""
    hm = common.header_mutation
    return {o.header.key: o.header.raw_value.decode("latin-1") for o in hm.set_headers}, list(hm.remove_headers)


class ServicerHarness:
    """`ExternalProcessor` + `h2grpc.Server` on 127.0.0.1:0 in a background event-loop thread,
    and a grpcio channel to it. `runtime` is read per stream (swap `.runtime` to change it)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="servicer", daemon=True)
        self.server: Server | None = None
        self.port = 0
        self.channel: grpc.Channel | None = None

    def _run(self, coro: Any, timeout: float = 10) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def start(self) -> ServicerHarness:
        self.thread.start()

        async def start() -> int:
            processor = ExternalProcessor(lambda: self.runtime)
            self.server = Server(streams={PROCESS: processor.call})
            return await self.server.start("127.0.0.1", 0)

        self.port = self._run(start())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        return self

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.server is not None:
            self._run(self.server.stop(grace=1))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def process(self, requests: Iterable[pb.ProcessingRequest], stage: str | None = None,
                timeout: float = 10) -> list[pb.ProcessingResponse]:
        """One ext_proc stream (= one client request or one upstream attempt): each request sent in
        order, every response returned in order; the call must end OK."""
        assert self.channel is not None
        call: Callable[..., Any] = self.channel.stream_stream(
            PROCESS, request_serializer=pb.ProcessingRequest.SerializeToString,
            response_deserializer=pb.ProcessingResponse.FromString)
        md = (("x-interlock-stage", stage),) if stage else None
        return list(call(iter(list(requests)), metadata=md, timeout=timeout))

    def open(self, stage: str | None = None, timeout: float = 10) -> ExtProcStream:
        """One ext_proc stream driven message by message, as Envoy does (it waits for each reply)."""
        assert self.channel is not None
        return ExtProcStream(self.channel, stage, timeout)


_END = object()


class ExtProcStream:
    def __init__(self, channel: grpc.Channel, stage: str | None, timeout: float) -> None:
        self._requests: queue.Queue[Any] = queue.Queue()
        call = channel.stream_stream(PROCESS, request_serializer=pb.ProcessingRequest.SerializeToString,
                                     response_deserializer=pb.ProcessingResponse.FromString)
        md = (("x-interlock-stage", stage),) if stage else None
        self._responses = call(iter(self._requests.get, _END), metadata=md, timeout=timeout)

    def send(self, req: pb.ProcessingRequest) -> pb.ProcessingResponse:
        self._requests.put(req)
        return next(self._responses)  # type: ignore[no-any-return]

    def receive(self) -> pb.ProcessingResponse:
        """The next message the ext_proc sends without being asked (FULL_DUPLEX_STREAMED)."""
        return next(self._responses)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Envoy ends the stream (half-close); the call must then finish OK with no more replies."""
        self._requests.put(_END)
        assert list(self._responses) == []


def apply_header_mutation(headers: Mapping[str, str], common: pb.CommonResponse) -> dict[str, str]:
    """The request or response headers after Envoy applies `common`'s header mutation (removals,
    then sets, each set overwriting)."""
    out = dict(headers)
    hm = common.header_mutation
    for name in hm.remove_headers:
        out.pop(name, None)
    for opt in hm.set_headers:
        out[opt.header.key] = opt.header.raw_value.decode("latin-1")
    return out


def body_after(common: pb.CommonResponse, original: bytes) -> bytes:
    """The body Envoy passes on after `common`'s body mutation (FULL_DUPLEX_STREAMED: the
    `streamed_response` bytes, whatever Envoy sent)."""
    if common.body_mutation.HasField("streamed_response"):
        return common.body_mutation.streamed_response.body
    if common.body_mutation.HasField("body"):
        return common.body_mutation.body
    if common.body_mutation.clear_body:
        return b""
    return original


def passed_on(reply: pb.ProcessingResponse, chunk: bytes) -> bool:
    """A FULL_DUPLEX_STREAMED body reply gives `chunk` back unchanged (Envoy keeps no copy of it)."""
    streamed = reply.response_body.response.body_mutation.streamed_response
    return reply.response_body.response.body_mutation.HasField("streamed_response") and streamed.body == chunk
