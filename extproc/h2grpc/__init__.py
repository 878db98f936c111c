"""A small gRPC-over-HTTP/2 (h2c) server: unary methods, and bidirectional streams that answer
each request message with exactly one response message (the ext_proc protocol).

Why not grpcio's server: every Envoy request costs the gateway four ext_proc messages and two
rate-limit calls, and grpcio's Python server spends ~100–200 µs of CPU on each, several times
the gateway's own work. This server parses frames on one asyncio protocol per connection and
runs a handler inline while it does not suspend, so a message costs tens of microseconds.

Modules:
- `wire`: the protocol's codes as enums, frame and header-block encoders;
- `frames`: the sans-IO core, `Connection`: bytes in → events out, sends → bytes out;
- `streams`: per-stream state for it (gRPC message reassembly, the flow-controlled send queue);
- `headers`: HPACK decoding of request header blocks (field by field, with memories of repeated
  strings and blocks);
- `events`: what the core reports;
- `server`: the asyncio protocol, the calls and their handlers, `Server` (with gRPC health).

What it implements (RFC 9113 and gRPC over HTTP/2):
- the client preface; SETTINGS (acknowledged before any data a larger window lets out: grpc-core
  checks what it receives against the window it knows acknowledged; the peer's initial window and
  maximum frame size honoured), PING (answered), GOAWAY (both ways), RST_STREAM (the call is
  cancelled and closed);
- HEADERS with CONTINUATION, padding and priority, HPACK-decoded (`headers`, on `hpack`'s tables
  and exceptions) for `:path` and the call's metadata; responses use literal fields without
  indexing, so the peer's decoder table is never touched;
- DATA with padding; gRPC length-prefixed messages reassembled across frames (several per frame,
  or one over many), uncompressed only (a compressed one fails the call with UNIMPLEMENTED);
- flow control both ways: a large receive window, replenished at half; sends wait for the peer's
  connection and stream windows and are split at its maximum frame size;
- malformed input is a connection error (GOAWAY with its code), never an exception.

Not implemented (no client of ours needs it): server push, server- or client-streaming calls
with other cardinalities, compression, TLS.
"""

from extproc.h2grpc.server import HEALTH_CHECK, Result, Server, Stream, StreamFactory, UnaryHandler

__all__ = ["HEALTH_CHECK", "Result", "Server", "Stream", "StreamFactory", "UnaryHandler"]
