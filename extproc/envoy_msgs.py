"""The only builder of ext_proc `ProcessingResponse` messages.

Envoy 1.40 facts this module encodes: header values go in `raw_value` (bytes); a body mutation
that changes the length must come with a `content-length` header mutation (request side) or
the header removed (response side, done at response-headers time); routing on a header we set
needs `clear_route_cache`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.type.v3 import http_status_pb2

from extproc import metadata

ProcessingResponse = pb.ProcessingResponse
ProcessingRequest = pb.ProcessingRequest
_APPEND_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_MODE = processing_mode_pb2.ProcessingMode
BODY_NONE = _MODE.NONE
BODY_STREAMED = _MODE.STREAMED
BODY_BUFFERED = _MODE.BUFFERED
BODY_FULL_DUPLEX = _MODE.FULL_DUPLEX_STREAMED  # needs trailers sent too (set with the override)

Headers = Iterable[tuple[str, str]]


def header_map(msg: pb.HttpHeaders) -> dict[str, str]:
    """Envoy's headers as a dict (lowercase names; repeated headers joined with ',')."""
    out: dict[str, str] = {}
    for h in msg.headers.headers:
        value = h.raw_value.decode("latin-1") if h.raw_value else h.value
        out[h.key] = f"{out[h.key]},{value}" if h.key in out else value
    return out


def _common(set_headers: Headers = (), remove: Iterable[str] = (), body: bytes | None = None,
            clear_route_cache: bool = False) -> pb.CommonResponse:
    common = pb.CommonResponse()
    mutation = common.header_mutation
    for key, value in set_headers:
        opt = mutation.set_headers.add()
        opt.header.key = key
        opt.header.raw_value = value.encode("latin-1", "replace")
        opt.append_action = _APPEND_OVERWRITE
    mutation.remove_headers.extend(remove)
    if body is not None:
        if body:
            common.body_mutation.body = body
        else:
            common.body_mutation.clear_body = True
    if clear_route_cache:
        common.clear_route_cache = True
    return common


def request_headers(set_headers: Headers = (), remove: Iterable[str] = ()) -> pb.ProcessingResponse:
    resp = pb.ProcessingResponse()
    resp.request_headers.response.CopyFrom(_common(set_headers, remove))
    return resp


def request_body(body: bytes | None, set_headers: Headers = (), remove: Iterable[str] = (),
                 clear_route_cache: bool = False,
                 dynamic_metadata: Mapping[str, Mapping[str, object]] | None = None) -> pb.ProcessingResponse:
    """`dynamic_metadata`: {namespace: {key: value}}, emitted for later filters (the namespace
    must be in the filter's `metadata_options.receiving_namespaces`); values are JSON-like
    (strings, numbers, lists, nested objects), stored as a `google.protobuf.Struct`."""
    resp = pb.ProcessingResponse()
    resp.request_body.response.CopyFrom(_common(set_headers, remove, body, clear_route_cache))
    if dynamic_metadata:
        _set_metadata(resp, dynamic_metadata)
    return resp


def response_headers(set_headers: Headers = (), remove: Iterable[str] = (),
                     body_mode: int | None = None, body: bytes | None = None) -> pb.ProcessingResponse:
    """`body`: replace the answer's body from here (CONTINUE_AND_REPLACE), e.g. when the headers
    end the stream and no body message will follow."""
    resp = pb.ProcessingResponse()
    resp.response_headers.response.CopyFrom(_common(set_headers, remove, body))
    if body is not None:
        resp.response_headers.response.status = pb.CommonResponse.CONTINUE_AND_REPLACE
    if body_mode is not None:
        resp.mode_override.response_body_mode = body_mode  # type: ignore[assignment]
        if body_mode == BODY_FULL_DUPLEX:  # Envoy refuses FULL_DUPLEX_STREAMED without trailers
            resp.mode_override.response_trailer_mode = _MODE.SEND  # type: ignore[assignment]
    return resp


def response_body(body: bytes | None, set_headers: Headers = (),
                  dynamic_metadata: Mapping[str, Mapping[str, object]] | None = None) -> pb.ProcessingResponse:
    resp = pb.ProcessingResponse()
    resp.response_body.response.CopyFrom(_common(set_headers, (), body))
    if dynamic_metadata:
        _set_metadata(resp, dynamic_metadata)
    return resp


def streamed_body(body: bytes, end_of_stream: bool,
                  dynamic_metadata: Mapping[str, Mapping[str, object]] | None = None) -> pb.ProcessingResponse:
    """A FULL_DUPLEX_STREAMED response body reply: Envoy keeps nothing of the chunk it sent, so
    these bytes are what goes on (empty: held back), and `end_of_stream` ends the client's body.
    Also sent unsolicited (a stalled stream's error event, `end_of_stream` true)."""
    resp = pb.ProcessingResponse()
    streamed = resp.response_body.response.body_mutation.streamed_response
    streamed.body = body
    streamed.end_of_stream = end_of_stream
    if dynamic_metadata:
        _set_metadata(resp, dynamic_metadata)
    return resp


def _set_metadata(resp: pb.ProcessingResponse, md: Mapping[str, Mapping[str, object]]) -> None:
    """`resp.dynamic_metadata.update(md)`, with string values set directly: the same message in
    0.55–0.75 of the time (a streamed reply with eight fields: 6.5–8.8 µs against 11.6–12.3 µs,
    measured alternately in-process on the loaded machine; the `Struct` update converts value by
    value in Python)."""
    namespaces = resp.dynamic_metadata.fields
    for ns, fields in md.items():
        struct = namespaces[ns].struct_value
        struct.SetInParent()
        values = struct.fields
        for key, value in fields.items():
            if type(value) is str:
                values[key].string_value = value
            else:
                struct.update({key: value})


def response_trailers() -> pb.ProcessingResponse:
    """The answer to response trailers (sent in FULL_DUPLEX_STREAMED mode): unchanged."""
    resp = pb.ProcessingResponse()
    resp.response_trailers.SetInParent()
    return resp


def immediate(status: int, body: bytes, headers: Headers = ()) -> pb.ProcessingResponse:
    """Answer the client now; Envoy sends nothing upstream."""
    resp = pb.ProcessingResponse()
    imm = resp.immediate_response
    imm.status.code = http_status_pb2.StatusCode.Value(_STATUS_NAMES.get(status, "InternalServerError"))
    imm.body = body
    imm.details = metadata.IMMEDIATE_DETAILS
    for key, value in headers:
        opt = imm.headers.set_headers.add()
        opt.header.key = key
        opt.header.raw_value = value.encode("latin-1", "replace")
        opt.append_action = _APPEND_OVERWRITE
    return resp


_STATUS_NAMES = {v: k for k, v in http_status_pb2.StatusCode.items() if v}


def answering_provider(req: pb.ProcessingRequest) -> str | None:
    """The provider of the host picked for this attempt (or that answered), from the
    `xds.upstream_host_metadata` attribute
    (a protobuf text-format Metadata string) Envoy sends when asked to."""
    attrs = req.attributes.get("envoy.filters.http.ext_proc")
    if attrs is None:
        return None
    value = attrs.fields.get("xds.upstream_host_metadata")
    if value is None:
        return None
    m = _PROVIDER.search(value.string_value)
    return m.group(1) if m else None


_PROVIDER = re.compile(r'key: "provider"\s+value \{\s*string_value: "([^"]*)"')
