"""A pool that names an external Endpoint Picker (`epp:`): Envoy calls it with the ext_proc
protocol after the router stage, and routes to the endpoint it names in
`x-gateway-destination-endpoint` and `envoy.lb` metadata, as with Interlock's own picker. The
picker here is a small grpcio ext_proc server that always names the third server (which
Interlock's own load-aware picker would not choose first). Envoy tells the picker which endpoint
served each request (`envoy.lb` `x-gateway-destination-endpoint-served` in the response headers'
metadata context), as the Endpoint Picker Protocol asks of the data plane."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import openai
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from tests.conftest import free_port
from tests.integration.conftest import TENANT_KEY, sha, start_gateway
from tests.integration.pool_standin import StandIns
from tests.integration.test_pool import ask, client, wait_metric

SERVED_HEADER = "x-interlock-served-endpoint"  # Envoy's own, between the route and the metadata


class Picker(pb_grpc.ExternalProcessorServicer):
    def __init__(self, choice: str) -> None:
        self.choice = choice
        self.bodies: list[bytes] = []
        self.served: list[str | None] = []  # per response: envoy.lb x-gateway-destination-endpoint-served
        self.response_header_names: list[set[str]] = []
        self.lock = threading.Lock()

    def Process(self, request_iterator: Iterator[pb.ProcessingRequest], context: Any) -> Iterator[pb.ProcessingResponse]:  # noqa: N802
        for req in request_iterator:
            phase = req.WhichOneof("request")
            if phase == "request_headers":
                yield pb.ProcessingResponse(request_headers=pb.HeadersResponse())
            elif phase == "request_body":
                with self.lock:
                    self.bodies.append(req.request_body.body)
                resp = pb.ProcessingResponse()
                resp.request_body.response.header_mutation.set_headers.append(base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key="x-gateway-destination-endpoint", raw_value=self.choice.encode())))
                resp.dynamic_metadata.update({"envoy.lb": {"x-gateway-destination-endpoint": self.choice}})
                yield resp
            elif phase == "response_headers":
                lb = req.metadata_context.filter_metadata.get("envoy.lb")
                value = lb.fields.get("x-gateway-destination-endpoint-served") if lb is not None else None
                with self.lock:
                    self.served.append(value.string_value if value is not None else None)
                    self.response_header_names.append({h.key for h in req.response_headers.headers.headers})
                yield pb.ProcessingResponse(response_headers=pb.HeadersResponse())
            else:
                yield pb.ProcessingResponse()


@pytest.fixture
def servers() -> Iterator[StandIns]:
    s = StandIns(3, free_port(), first=81)
    try:
        yield s
    finally:
        s.close()


def test_an_external_endpoint_picker_chooses_the_endpoint(servers: StandIns, tmp_path: Path) -> None:
    choice = servers.servers[2].address
    picker = Picker(choice)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_ExternalProcessorServicer_to_server(picker, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servers.servers[2].waiting = 4  # the busiest: Interlock's picker would put it last
    config = {
        "providers": [{"name": "picked", "type": "pool", "endpoints": [s.address for s in servers.servers],
                       "epp": f"127.0.0.1:{port}"}],
        "models": [{"name": "llama", "provider": "picked"}],
        "tenants": [{"name": "it", "api_key_sha256": [sha(TENANT_KEY)], "models": ["*"]}],
    }
    (tmp_path / "gw").mkdir()
    gw = start_gateway(SimpleNamespace(port=free_port()), tmp_path / "gw", config=config)  # type: ignore[arg-type]
    try:
        wait_metric(gw, 'interlock_pool_endpoints{pool="picked",state="ready"}', 3)
        answered = {ask(gw, f"pick for me {i}") for i in range(6)}
        assert answered == {choice}
        assert len(picker.bodies) == 6 and b"pick for me 5" in picker.bodies[-1]
        # Interlock set no list of its own: the picker's is the one the server saw.
        assert {seen["list"] for seen in servers.servers[2].served} == {choice}
        # Envoy told the picker who served each answer, and the helper header stayed inside Envoy.
        assert picker.served == [choice] * 6
        assert not any(SERVED_HEADER in names for names in picker.response_header_names)
        # The first endpoint of the list refuses connections: Envoy walks on to the second, and
        # the picker learns that the second served.
        servers.stop(0)
        first, second = servers.servers[0].address, servers.servers[1].address
        picker.choice = f"{first},{second}"
        raw = client(gw).chat.completions.with_raw_response.create(
            model="llama", messages=[{"role": "user", "content": "walk the list"}])
        assert raw.parse().choices[0].message.content == f"served by {second}"
        assert SERVED_HEADER not in raw.headers
        assert picker.served[-1] == second
        # No server answers (both refuse): a 503, and no endpoint is named as having served it.
        servers.stop(1)
        with pytest.raises(openai.InternalServerError):
            ask(gw, "nobody home")
        assert len(picker.served) == 8 and picker.served[-1] is None
    finally:
        gw.process.stop()
        server.stop(0)
