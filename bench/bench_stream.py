#!/usr/bin/env python3
"""Paced streaming through plain Envoy and Interlock: time to first event, gaps, CPU per event.

Pieces (all on 127.0.0.1):

- **mock upstream** (`bench_stream.py mock --port P`, its own process; its CPU is not the
  gateway's): a raw asyncio (uvloop) HTTP/1.1 server speaking both APIs. `POST
  /v1/chat/completions` with `"stream": true` answers OpenAI chat chunks, `POST /v1/messages`
  Anthropic Messages events; a stream carries `max_tokens` text events (default 100) paced
  `--pace-ms` apart (10), the first written with the headers; usage comes as each provider sends
  it (OpenAI: a last chunk with `choices: []` only when the request asked for
  `stream_options.include_usage`; Anthropic: `message_start` and `message_delta`). An upstream
  model whose name contains `slow` is paced 1 s per event (the soak's open streams), `fail`
  answers a 400 in the provider's error format. Requests without `stream` get the recorded
  bodies of `bench/recorded/`.
- **plain Envoy**: a router straight to the mock, nothing else.
- **Interlock**: `interlock run` with the production renderer's config, auth on, one ext_proc
  worker per core; tenant `bench` with rate limits it never reaches (every request makes the
  admission and true-up calls), tenant `norl` without limits (and `tight`, the soak's).
- **load generator** (this process): N concurrent streams in a closed loop (each connection sends
  the next request as soon as its stream ends; the N first starts spread over one stream's length
  so the streams do not run in step), raw asyncio protocols on uvloop, HTTP/1.1
  keep-alive, a sans-IO response parser (`ResponseParser`: chunked or sized body, SSE events split
  on the blank line, text events recognised by their token). Each loaded run prints its own CPU
  and the mock's (share of one core) so a starved gateway is visible.

Paths: `envoy` (plain Envoy, OpenAI chat), `passthrough` (OpenAI → OpenAI, tenant norl, the
client does NOT ask for `stream_options.include_usage`), `translated` (OpenAI → Anthropic,
norl), `anthropic` (Anthropic → Anthropic, norl), `translated_rl` (OpenAI → Anthropic, tenant
with rate limits).

Scenarios (`--scenario`, repeatable, default all; `--path`, repeatable, narrows each scenario to
those paths, plain Envoy always running as the baseline):

- `unloaded`: one stream at a time, the paths alternated stream by stream for `--unloaded`
  seconds; streams of 10 events (the time to first event does not depend on the stream's length,
  and short streams give more samples). Time to first event (TTFE) = from writing the request to
  reading the first text event; p50 per path and added over plain Envoy.
- `cpu64`: 64 concurrent 100-event streams per path (envoy, passthrough, translated,
  translated_rl; anthropic when named with `--path`), a warm-up then `--duration` seconds; CPU
  per text event of each gateway process (Envoy, each ext_proc worker, the rate-limit process,
  the supervisor and any other child, summed as `gateway`) from /proc/<pid>/stat utime+stime
  over the timed window, divided by the text events the clients received in it.
- `stream128`: 128 concurrent streams, plain Envoy then translated (norl): events/s, TTFE
  p50/p99 and the gap between consecutive text events of a stream, p50/p99 (pace: 10 ms; events
  read together count a gap of 0).

Prints a table per scenario and, last, one line (only the figures of the scenarios that ran):

    bench-stream: ttfe_added_ms=X stream128_ttfe_p99_ms=X stream128_gap_p99_ms=X
                  translate_cpu_us_per_event=N passthrough_cpu_ratio=R.RR

`ttfe_added_ms` = the largest p50 TTFE added over plain Envoy among the four Interlock paths;
`translate_cpu_us_per_event` = gateway CPU µs per event, translated at 64 streams;
`passthrough_cpu_ratio` = passthrough's gateway CPU per event / plain Envoy's.
`bench/bench.py` runs this in `make bench` and puts the figures on its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

if __package__:  # imported as bench.bench_stream
    from bench.procs import descendants, proc_cpu, start, stop  # noqa: E402
else:  # run as a script: bench/ is on sys.path
    from procs import descendants, proc_cpu, start, stop  # type: ignore[no-redef]  # noqa: E402

TOKEN = b"Zq "  # every text event carries it (and nothing else in a stream does)
PACE_MS = 10.0
EVENTS = 100
KEY_RL = "sk-bench-stream-limited"
KEY_NORL = "sk-bench-stream-nolimits"
KEY_TIGHT = "sk-bench-stream-tight"  # 5 requests per second: the soak's refusals
PROVIDER_KEY = "sk-bench-stream-provider"
RECORDED = Path(__file__).resolve().parent / "recorded"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
PATHS = ("envoy", "passthrough", "translated", "anthropic", "translated_rl")


# ---------------------------------------------------------------------------------------------
# Percentiles and the response parser (pure: tests/unit/bench/test_bench_stream.py)

def percentile(xs: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of xs; NaN when empty."""
    s = sorted(xs)
    if not s:
        return float("nan")
    rank = max(1, -(-int(round(q * len(s) * 1e9)) // 1_000_000_000))  # ceil(q * n), exact for q*n whole
    return s[min(len(s), rank) - 1]


class ResponseParser:
    """One HTTP/1.1 response carrying SSE, fed bytes as they arrive (sans-IO).

    `feed(data)` returns how many text events (events containing TOKEN) completed in `data`;
    afterwards `done` tells whether the response ended (the last chunk of a chunked body, or a sized
    body read whole), `status` is the HTTP status, `error` is set for a non-200 status or an
    `error` event. `reset()` readies it for the next response on the same connection."""

    __slots__ = ("status", "done", "error", "events", "_buf", "_sse", "_state", "_left", "_chunked")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.status = 0
        self.done = False
        self.error = False
        self.events = 0  # SSE events of any kind
        self._buf = b""
        self._sse = b""
        self._state = 0  # 0 head, 1 chunk size line, 2 chunk data, 3 chunk's CRLF, 4 sized body, 5 trailer
        self._left = 0
        self._chunked = False

    def feed(self, data: bytes) -> int:
        buf = self._buf + data if self._buf else data
        texts = 0
        pos = 0
        n = len(buf)
        while pos < n and not self.done:
            state = self._state
            if state == 2 or state == 4:  # body bytes
                take = min(self._left, n - pos)
                texts += self._body(buf[pos:pos + take])
                pos += take
                self._left -= take
                if self._left == 0:
                    if state == 2:
                        self._state = 3
                    else:
                        self._finish()
                continue
            if state == 0:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    break
                self._head(buf[pos:end])
                pos = end + 4
                continue
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            line = buf[pos:end]
            pos = end + 2
            if state == 3:  # the CRLF after a chunk's data
                self._state = 1
            elif state == 1:
                size = int(line.split(b";", 1)[0], 16)
                if size:
                    self._left, self._state = size, 2
                else:
                    self._state = 5
            elif not line:  # state 5: trailers end with an empty line
                self._finish()
        self._buf = buf[pos:] if pos < n else b""
        return texts

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split(b" ", 2)[1])
        if self.status != 200:
            self.error = True
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True
            elif name == b"content-length":
                length = int(value)
        if self._chunked:
            self._state = 1
        elif length:
            self._left, self._state = length, 4
        else:
            self._finish()

    def _body(self, data: bytes) -> int:
        sse = self._sse + data if self._sse else data
        cut = sse.rfind(b"\n\n")
        if cut < 0:
            self._sse = sse
            return 0
        whole, self._sse = sse[:cut], sse[cut + 2:]
        events = whole.split(b"\n\n")
        self.events += len(events)
        texts = whole.count(TOKEN)
        if b'"error"' in whole or b"event: error" in whole:
            self.error = True
        return texts

    def _finish(self) -> None:
        self.done = True
        if self._sse.strip():  # a last event without its blank line
            self.events += 1
            if b'"error"' in self._sse:
                self.error = True


# ---------------------------------------------------------------------------------------------
# The mock upstream

def _openai_chunk(model: str, delta: str, finish: str | None = None, usage: bool = False) -> bytes:
    choice = {"index": 0, "delta": json.loads(delta), "logprobs": None, "finish_reason": finish}
    body: dict[str, Any] = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1764000000,
                            "model": model, "system_fingerprint": None, "choices": [choice]}
    if usage:
        body["usage"] = None
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def openai_stream(model: str, n: int, include_usage: bool) -> list[bytes]:
    """The writes of an OpenAI chat stream of n text events: write i carries text event i (the first
    also the role chunk, the last the finish chunk, the usage chunk when asked for, and [DONE])."""
    text = _openai_chunk(model, json.dumps({"content": TOKEN.decode()}), usage=include_usage)
    writes = [text] * n
    writes[0] = _openai_chunk(model, '{"role":"assistant","content":""}', usage=include_usage) + text
    tail = _openai_chunk(model, "{}", "stop", usage=include_usage)
    if include_usage:
        tail += b"data: " + json.dumps({
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1764000000, "model": model,
            "system_fingerprint": None, "choices": [],
            "usage": {"prompt_tokens": 412, "completion_tokens": n, "total_tokens": 412 + n}},
            separators=(",", ":")).encode() + b"\n\n"
    writes[-1] = writes[-1] + tail + b"data: [DONE]\n\n"
    return writes


def _event(kind: str, body: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: ".encode() + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def anthropic_stream(model: str, n: int) -> list[bytes]:
    """The writes of an Anthropic Messages stream of n text deltas (framing events ride with the
    first and the last)."""
    text = _event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": TOKEN.decode()}})
    writes = [text] * n
    writes[0] = _event("message_start", {"type": "message_start", "message": {
        "id": "msg_bench", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 412, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 1}}}) + _event("content_block_start", {
                      "type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}) + text
    writes[-1] = writes[-1] + _event("content_block_stop", {"type": "content_block_stop", "index": 0}) + _event(
        "message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                          "usage": {"output_tokens": n}}) + _event("message_stop", {"type": "message_stop"})
    return writes


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n\r\n")


def _sized(status: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
            .encode() + body)


class MockConnection(asyncio.Protocol):
    """One keep-alive connection of the mock upstream: requests one at a time (Content-Length or
    chunked bodies), a paced SSE answer scheduled with loop.call_at (no task per stream)."""

    def __init__(self, server: MockServer) -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.open -= 1
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._next()

    def _next(self) -> None:
        while not self.busy and self.transport is not None:
            request = take_request(self.buf)
            if request is None:
                return
            path, body, rest = request
            self.buf = rest
            self._answer(path, body)

    def _answer(self, path: bytes, raw: bytes) -> None:
        assert self.transport is not None
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        model = str(body.get("model", "mock"))
        anthropic = path.startswith(b"/v1/messages")
        if "fail" in model:  # a 4xx: a 5xx would eject the only host (the gateway's outlier detection)
            err = ({"type": "error", "error": {"type": "invalid_request_error", "message": "Refused (mock)"}}
                   if anthropic else {"error": {"message": "Refused (mock).", "type": "invalid_request_error",
                                                "param": None, "code": None}})
            self.transport.write(_sized("400 Bad Request", json.dumps(err).encode()))
            return
        if not body.get("stream"):
            name = "anthropic_message.json" if anthropic else "openai_chat_completion.json"
            self.transport.write(_sized("200 OK", self.server.recorded[name]))
            return
        n = int(body.get("max_tokens") or EVENTS)
        n = max(1, min(n, 10_000))
        if anthropic:
            writes = anthropic_stream(model, n)
        else:
            opts = body.get("stream_options")
            writes = openai_stream(model, n, bool(isinstance(opts, dict) and opts.get("include_usage")))
        pace = 1.0 if "slow" in model else self.server.pace
        self.busy = True
        self.transport.write(SSE_HEAD + _chunk(writes[0]))
        self.server.streams += 1
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        if n == 1:
            self._end()
            return
        loop.call_at(t0 + pace, self._write, writes, 1, t0, pace)

    def _write(self, writes: list[bytes], i: int, t0: float, pace: float) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(_chunk(writes[i]))
        if i + 1 < len(writes):
            asyncio.get_running_loop().call_at(t0 + (i + 1) * pace, self._write, writes, i + 1, t0, pace)
        else:
            self._end()

    def _end(self) -> None:
        assert self.transport is not None
        self.transport.write(b"0\r\n\r\n")
        self.busy = False
        self._next()


def take_request(buf: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(path, body, the bytes after it) of the first whole HTTP/1.1 request in buf, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buf[:end].split(b"\r\n")
    path = lines[0].split(b" ")[1]
    length, chunked = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    pos = end + 4
    if not chunked:
        if len(buf) < pos + length:
            return None
        return path, buf[pos:pos + length], buf[pos + length:]
    body = b""
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(buf[pos:eol].split(b";", 1)[0], 16)
        if size == 0:
            fin = buf.find(b"\r\n\r\n", eol)  # no trailers expected: "0\r\n\r\n"
            if fin < 0:
                return None
            return path, body, buf[fin + 4:]
        if len(buf) < eol + 2 + size + 2:
            return None
        body += buf[eol + 2:eol + 2 + size]
        pos = eol + 2 + size + 2


@dataclass
class MockServer:
    pace: float
    recorded: dict[str, bytes]
    open: int = 0
    streams: int = 0


def _uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_mock(port: int, pace_ms: float) -> None:
    _uvloop()
    server = MockServer(pace_ms / 1000, {p.name: p.read_bytes() for p in RECORDED.glob("*.json")})

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(lambda: MockConnection(server), "127.0.0.1", port, backlog=4096)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"mock: listening on 127.0.0.1:{port}", flush=True)
        await stop.wait()
        srv.close()

    asyncio.run(serve())


# ---------------------------------------------------------------------------------------------
# The load generator

@dataclass
class Stats:
    """What the clients measured while `recording` (between the window's start and end)."""

    recording: bool = False
    ttfe: array = field(default_factory=lambda: array("d"))
    gaps: array = field(default_factory=lambda: array("d"))
    texts: int = 0
    streams: int = 0
    errors: int = 0
    short: int = 0  # streams that ended with fewer text events than asked for


class StreamClient(asyncio.Protocol):
    """One keep-alive connection: `send()` writes the request; when its streamed answer ends the
    stats are updated and `on_end(self)` decides what next (send again, close, wake a waiter)."""

    def __init__(self, request: bytes, expect: int, stats: Stats, on_end: Callable[[StreamClient], None],
                 send_on_connect: bool = True, clock: Callable[[], float] = time.perf_counter) -> None:
        self.request, self.expect, self.stats, self.on_end = request, expect, stats, on_end
        self.send_on_connect, self.clock = send_on_connect, clock
        self.parser = ResponseParser()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.t0 = self.last = 0.0
        self.first = False
        self.texts = 0
        self.in_flight = False
        self.sent_recording = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.send_on_connect:
            self.send()

    def send(self) -> None:
        assert self.transport is not None
        self.parser.reset()
        self.first, self.texts, self.in_flight = False, 0, True
        self.sent_recording = self.stats.recording
        self.t0 = self.clock()
        self.transport.write(self.request)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        now = self.clock()
        p = self.parser
        n = p.feed(data)
        st = self.stats
        if n:
            self.texts += n
            if st.recording:
                st.texts += n
                if not self.first:
                    if self.sent_recording:
                        st.ttfe.append(now - self.t0)
                else:
                    st.gaps.append(now - self.last)
                for _ in range(n - 1):
                    st.gaps.append(0.0)
            self.first, self.last = True, now
        if p.done and self.in_flight:
            self.in_flight = False
            if st.recording:
                st.streams += 1
                if p.error:
                    st.errors += 1
                elif self.texts < self.expect:
                    st.short += 1
            self.on_end(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.in_flight and self.stats.recording:
            self.stats.errors += 1
        self.in_flight = False
        if not self.lost.done():
            self.lost.set_result(None)


def http_request(path: str, headers: dict[str, str], body: dict[str, Any]) -> bytes:
    raw = json.dumps(body, separators=(",", ":")).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{head}"
            f"content-length: {len(raw)}\r\n\r\n").encode() + raw


_FILLER = ("Envoy is an L7 proxy and communication bus designed for large modern service oriented "
           "architectures. ") * 4


def chat_body(model: str, n: int, include_usage: bool = False) -> dict[str, Any]:
    """A ~2 KB streamed chat request (the non-streamed bench's conversation)."""
    body: dict[str, Any] = {"model": model, "max_tokens": n, "stream": True, "messages": [
        {"role": "system", "content": "You are a concise assistant. " + _FILLER},
        {"role": "user", "content": "Summarise what a service proxy does. " + _FILLER},
        {"role": "assistant", "content": "A service proxy sits between services. " + _FILLER},
        {"role": "user", "content": "And Envoy in particular, in two sentences?"}]}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return body


def messages_body(model: str, n: int) -> dict[str, Any]:
    return {"model": model, "max_tokens": n, "stream": True, "system": "You are a concise assistant. " + _FILLER,
            "messages": [{"role": "user", "content": "Summarise what a service proxy does. " + _FILLER},
                         {"role": "assistant", "content": "A service proxy sits between services. " + _FILLER},
                         {"role": "user", "content": "And Envoy in particular, in two sentences?"}]}


@dataclass(frozen=True)
class Target:
    port: int
    path: str
    headers: dict[str, str]
    body: Callable[[int], dict[str, Any]]

    def request(self, n: int) -> bytes:
        return http_request(self.path, self.headers, self.body(n))


def targets(envoy_port: int, gw_port: int) -> dict[str, Target]:
    """The paths, by name (see the module docstring)."""
    chat, msgs = "/v1/chat/completions", "/v1/messages"

    def bearer(key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    anthropic_headers = {"x-api-key": KEY_NORL, "anthropic-version": "2023-06-01"}
    return {
        "envoy": Target(envoy_port, chat, bearer(PROVIDER_KEY), lambda n: chat_body("mock-gpt", n)),
        "passthrough": Target(gw_port, chat, bearer(KEY_NORL), lambda n: chat_body("stream-gpt", n)),
        "translated": Target(gw_port, chat, bearer(KEY_NORL), lambda n: chat_body("stream-claude", n)),
        "anthropic": Target(gw_port, msgs, anthropic_headers, lambda n: messages_body("stream-claude", n)),
        "translated_rl": Target(gw_port, chat, bearer(KEY_RL), lambda n: chat_body("stream-claude", n)),
    }


async def run_streams(target: Target, concurrency: int, events: int, warmup: float, duration: float,
                      on_window: Callable[[bool], None] = lambda start: None) -> tuple[Stats, float]:
    """`concurrency` closed-loop streams of `events` text events, their starts spread over one
    stream's length: warm-up (at least that length), then `duration` seconds recorded;
    on_window(True/False) at the window's start and end (CPU readings). Returns the stats and the
    window's real length."""
    loop = asyncio.get_running_loop()
    stats = Stats()
    running = True
    request = target.request(events)

    def again(c: StreamClient) -> None:
        c.send() if running else c.close()

    clients = []
    for _ in range(concurrency):
        _t, c = await loop.create_connection(
            lambda: StreamClient(request, events, stats, again, send_on_connect=False), "127.0.0.1", target.port)
        clients.append(c)
    # The streams start spread over one stream's length, so they do not start (and tick) in step.
    spread = events * PACE_MS / 1000 / concurrency
    for i, c in enumerate(clients):
        loop.call_later(i * spread, c.send)
    await asyncio.sleep(max(warmup, events * PACE_MS / 1000))
    on_window(True)
    t0 = time.perf_counter()
    stats.recording = True
    await asyncio.sleep(duration)
    stats.recording = False
    window = time.perf_counter() - t0
    on_window(False)
    running = False
    # Streams in flight finish (bounded: a stream lasts events x pace), then each connection closes.
    for c in clients:
        if not c.in_flight:
            c.close()
    try:
        await asyncio.wait_for(asyncio.gather(*(c.lost for c in clients)), events * PACE_MS / 1000 + 10)
    except TimeoutError:
        for c in clients:
            c.close()
    return stats, window


async def run_unloaded(tg: dict[str, Target], names: list[str], seconds: float, events: int = 10,
                       rounds: int = 0) -> dict[str, Stats]:
    """One stream at a time, the paths alternated stream by stream, for `seconds` (at least
    `rounds` rounds)."""
    loop = asyncio.get_running_loop()
    out = {name: Stats(recording=True) for name in names}
    clients: dict[str, StreamClient] = {}
    waiter: list[asyncio.Future[None]] = []

    def wake(c: StreamClient) -> None:
        if waiter and not waiter[0].done():
            waiter[0].set_result(None)

    async def connect(name: str) -> StreamClient:
        _t, c = await loop.create_connection(
            lambda: StreamClient(tg[name].request(events), events, out[name], wake, send_on_connect=False),
            "127.0.0.1", tg[name].port)
        return c

    for name in names:
        clients[name] = await connect(name)
    end = time.perf_counter() + seconds
    done = 0
    while time.perf_counter() < end or done < rounds:
        for name in names:
            if clients[name].transport is None:  # closed by the server: reconnect
                clients[name] = await connect(name)
            fut = loop.create_future()
            waiter[:] = [fut]
            clients[name].send()
            try:
                await asyncio.wait_for(asyncio.shield(fut), 10)
            except TimeoutError:
                out[name].errors += 1
                clients[name].close()
                clients[name] = await connect(name)
        done += 1
    for c in clients.values():
        c.close()
    return out


# ---------------------------------------------------------------------------------------------
# Processes and CPU





def role(argv: list[bytes]) -> str:
    """A gateway process's name from its command line: envoy, worker<i> (`--worker-index`),
    ratelimit, supervisor (`run`), or the CLI's subcommand (pool-scraper, ...); `other` else."""
    if argv and argv[0].endswith(b"envoy"):
        return "envoy"
    if b"extproc.cmd.cli" not in argv:
        return "other"
    words = [a.decode(errors="replace") for a in argv[argv.index(b"extproc.cmd.cli") + 1:] if a]
    while words and words[0].startswith("-"):  # global options: --log-level LEVEL
        words = words[2:] if "=" not in words[0] else words[1:]
    command = words[0] if words else "other"
    if command == "extproc":
        index = words[words.index("--worker-index") + 1] if "--worker-index" in words else ""
        return f"worker{index}"
    return {"run": "supervisor"}.get(command, command)


def gateway_processes(root: int) -> dict[str, int]:
    """Name → pid of every process of an Interlock instance (`role`)."""
    out: dict[str, int] = {}
    for pid in descendants(root):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        name = role(argv)
        out[name if name not in out else f"{name}-{pid}"] = pid
    return out


class CpuWindow:
    """CPU seconds of named processes between mark(True) and mark(False); also this process's own
    (the load generator) and the mock's, which are not the gateway's."""

    def __init__(self, pids: dict[str, int], mock: int = 0) -> None:
        self.pids, self.mock_pid = pids, mock
        self.used: dict[str, float] = {}
        self._t0: dict[str, float] = {}
        self._self0 = self._mock0 = 0.0
        self.loadgen = self.mock = 0.0

    @staticmethod
    def _own() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def mark(self, start: bool) -> None:
        if start:
            self._t0 = {name: proc_cpu(pid) for name, pid in self.pids.items()}
            self._self0, self._mock0 = self._own(), proc_cpu(self.mock_pid) if self.mock_pid else 0.0
        else:
            self.used = {name: proc_cpu(pid) - self._t0[name] for name, pid in self.pids.items()}
            self.loadgen = self._own() - self._self0
            self.mock = (proc_cpu(self.mock_pid) if self.mock_pid else 0.0) - self._mock0


# ---------------------------------------------------------------------------------------------
# Setup

def plain_envoy_config(port: int, admin: int, upstream: int) -> dict[str, Any]:
    cluster = {"name": "upstream", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
        "cluster_name": "upstream", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": "127.0.0.1", "port_value": upstream}}}}]}]},
        "circuit_breakers": {"thresholds": [{"max_connections": 100000, "max_pending_requests": 100000,
                                             "max_requests": 100000}]}}
    hcm = {"@type": HCM, "stat_prefix": "plain", "http_filters": [ROUTER], "route_config": {"virtual_hosts": [{
        "name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
                                                     "route": {"cluster": "upstream", "timeout": "0s"}}]}]}}
    listener = {"name": "plain", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}]}
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
            "static_resources": {"listeners": [listener], "clusters": [cluster]}}


def gateway_config(port: int, admin: int, extproc: int, workers: int, upstream: int) -> dict[str, Any]:
    """Interlock for the stream paths: both providers on the mock; tenant `bench` with limits it
    never reaches, tenant `norl` without limits, tenant `tight` (5 requests/s, the soak's 429s)."""
    from tests.support.ports import free_port

    endpoint = f"http://127.0.0.1:{upstream}"
    return {
        "listen": {"address": "127.0.0.1", "port": port}, "admin": {"port": admin},
        "extproc": {"port": extproc, "workers": workers},
        "providers": [{"name": "openai", "type": "openai", "endpoint": endpoint, "api_key_env": "BENCH_STREAM_KEY"},
                      {"name": "anthropic", "type": "anthropic", "endpoint": endpoint,
                       "api_key_env": "BENCH_STREAM_KEY"}],
        "models": [{"name": "stream-gpt", "provider": "openai", "upstream_model": "mock-gpt"},
                   {"name": "stream-claude", "provider": "anthropic", "upstream_model": "mock-claude",
                    "max_output_tokens": 8192},
                   {"name": "slow-gpt", "provider": "openai", "upstream_model": "mock-gpt-slow"},
                   {"name": "slow-claude", "provider": "anthropic", "upstream_model": "mock-claude-slow",
                    "max_output_tokens": 8192},
                   {"name": "fail-gpt", "provider": "openai", "upstream_model": "mock-gpt-fail"},
                   {"name": "fail-claude", "provider": "anthropic", "upstream_model": "mock-claude-fail",
                    "max_output_tokens": 8192}],
        "rate_limit": {"port": free_port()}, "metrics": {"port": free_port()},
        "tenants": [{"name": "bench", "api_key_sha256": [hashlib.sha256(KEY_RL.encode()).hexdigest()],
                     "limits": [{"unit": "requests", "per": "second", "amount": 1_000_000},
                                {"unit": "tokens", "per": "minute", "amount": 10**11},
                                {"unit": "usd", "per": "day", "amount": 10**6}]},
                    {"name": "norl", "api_key_sha256": [hashlib.sha256(KEY_NORL.encode()).hexdigest()]},
                    {"name": "tight", "api_key_sha256": [hashlib.sha256(KEY_TIGHT.encode()).hexdigest()],
                     "limits": [{"unit": "requests", "per": "second", "amount": 5}]}],
    }






@dataclass
class Setup:
    """The mock, plain Envoy and Interlock of the stream scenarios, started and stopped together."""

    work: Path
    workers: int = 0
    plain: bool = True  # start plain Envoy too
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    mock_port: int = 0
    envoy_port: int = 0
    gw_port: int = 0
    gateway: subprocess.Popen[bytes] | None = None
    envoy: subprocess.Popen[bytes] | None = None
    mock: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Setup:
        import yaml

        from extproc.cmd.run import envoy_binary
        from extproc.cmd.supervisor import port_open, wait_until
        from tests.support.ports import free_port, free_port_run

        try:
            self.workers = self.workers or os.cpu_count() or 1
            self.mock_port, self.envoy_port, envoy_admin, self.gw_port, gw_admin = (free_port() for _ in range(5))
            self.mock = start([sys.executable, str(Path(__file__).resolve()), "mock", "--port", str(self.mock_port)],
                              self.work / "stream-mock.log")
            self.procs.append(self.mock)
            if self.plain:
                (self.work / "stream-plain.yaml").write_text(yaml.safe_dump(
                    plain_envoy_config(self.envoy_port, envoy_admin, self.mock_port)))
                self.envoy = start([envoy_binary(), "-c", str(self.work / "stream-plain.yaml"),
                                    "--disable-hot-restart", "--log-level", "error"], self.work / "stream-plain.log")
                self.procs.append(self.envoy)
            cfg = gateway_config(self.gw_port, gw_admin, free_port_run(self.workers), self.workers, self.mock_port)
            (self.work / "stream-gateway.yaml").write_text(yaml.safe_dump(cfg))
            log = self.work / "stream-gateway.log"
            self.gateway = start([sys.executable, "-m", "extproc.cmd.cli", "--log-level", "warning", "run", "-c",
                                  str(self.work / "stream-gateway.yaml"), "--workdir",
                                  str(self.work / "stream-rendered")], log,
                                 env={**os.environ, "BENCH_STREAM_KEY": PROVIDER_KEY, "PYTHONPATH": str(ROOT)})
            self.procs.append(self.gateway)
            ports = (self.mock_port, self.gw_port) + ((self.envoy_port,) if self.plain else ())
            ready = wait_until(lambda: all(port_open("127.0.0.1", p) for p in ports)
                               and "ready:" in log.read_text(), 90, 0.2)
            if not ready or self.gateway.poll() is not None:
                print(log.read_text()[-3000:], file=sys.stderr)
                raise SystemExit("bench-stream: processes did not become ready within 90 s")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for p in reversed(self.procs):
            stop(p, signal.SIGINT if p is self.gateway else signal.SIGTERM)

    def cpu_pids(self, path: str) -> dict[str, int]:
        assert self.envoy and self.gateway
        if path == "envoy":
            return {"envoy": self.envoy.pid}
        return gateway_processes(self.gateway.pid)


# ---------------------------------------------------------------------------------------------
# Scenarios

def ms(x: float) -> float:
    return x * 1000


@dataclass
class Result:
    figures: dict[str, float] = field(default_factory=dict)
    errors: int = 0
    lines: list[str] = field(default_factory=list)

    def say(self, line: str = "") -> None:
        self.lines.append(line)
        print(line, flush=True)


async def check_paths(tg: dict[str, Target], names: list[str]) -> None:
    """Every path answers a whole stream of text events before anything is timed."""
    res = await run_unloaded(tg, names, 0.0, events=3, rounds=1)
    for name in names:
        st = res[name]
        if st.errors or st.short or st.texts < 3:
            raise SystemExit(f"bench-stream: path {name} did not stream 3 text events "
                             f"(errors {st.errors}, texts {st.texts})")


def scenario_unloaded(tg: dict[str, Target], seconds: float, out: Result, paths: Iterable[str] = PATHS) -> None:
    names = ["envoy", *(p for p in PATHS if p in paths and p != "envoy")]
    res = asyncio.run(run_unloaded(tg, names, seconds))
    base = percentile(res["envoy"].ttfe, 0.5)
    out.say(f"\nunloaded: one 10-event stream at a time, paths alternated, {seconds:.0f} s")
    out.say(f"{'path':<16}{'n':>6}{'TTFE p50 ms':>13}{'p99 ms':>9}{'added p50 ms':>14}{'errors':>8}")
    worst = 0.0
    for name in names:
        st = res[name]
        p50 = percentile(st.ttfe, 0.5)
        added = p50 - base
        if name != "envoy":
            worst = max(worst, added)
            out.figures[f"ttfe_added_ms_{name}"] = ms(added)
        out.errors += st.errors + st.short
        out.say(f"{name:<16}{len(st.ttfe):>6}{ms(p50):>13.2f}{ms(percentile(st.ttfe, 0.99)):>9.2f}"
                f"{ms(added) if name != 'envoy' else 0.0:>14.2f}{st.errors + st.short:>8}")
    if set(PATHS) <= {*names}:
        out.figures["ttfe_added_ms"] = ms(worst)


def _loaded(setup: Setup, tg: dict[str, Target], name: str, concurrency: int, warmup: float, duration: float
            ) -> tuple[Stats, float, CpuWindow]:
    cpu = CpuWindow(setup.cpu_pids(name), setup.mock.pid if setup.mock else 0)
    stats, window = asyncio.run(run_streams(tg[name], concurrency, EVENTS, warmup, duration, cpu.mark))
    return stats, window, cpu


def scenario_cpu64(setup: Setup, tg: dict[str, Target], warmup: float, duration: float, out: Result,
                   paths: Iterable[str] = PATHS) -> None:
    names = ["envoy", *(p for p in ("passthrough", "translated", "translated_rl", "anthropic") if p in paths)]
    if paths == PATHS:
        names.remove("anthropic")  # make bench: the paths the figures name
    out.say(f"\ncpu64: 64 concurrent {EVENTS}-event streams (pace {PACE_MS:.0f} ms), {duration:.0f} s after "
            f"{warmup:.0f} s warm-up; CPU µs per text event by process")
    per: dict[str, float] = {}
    for name in names:
        stats, window, cpu = _loaded(setup, tg, name, 64, warmup, duration)
        total = sum(cpu.used.values())
        per[name] = total / max(1, stats.texts) * 1e6
        parts = " ".join(f"{k}={v / max(1, stats.texts) * 1e6:.0f}" for k, v in sorted(cpu.used.items()))
        out.errors += stats.errors + stats.short
        out.say(f"{name:<14} {stats.texts / window:>8.0f} events/s  gateway {per[name]:>5.0f} µs/event ({parts}); "
                f"TTFE p50/p99 {ms(percentile(stats.ttfe, 0.5)):.1f}/{ms(percentile(stats.ttfe, 0.99)):.1f} ms; "
                f"gap p99 {ms(percentile(stats.gaps, 0.99)):.1f} ms; errors {stats.errors + stats.short}; "
                f"CPU of the load generator {cpu.loadgen / window:.0%}, of the mock {cpu.mock / window:.0%}")
        out.figures[f"cpu_us_per_event_{name}"] = per[name]
    if "translated" in per:
        out.figures["translate_cpu_us_per_event"] = per["translated"]
    if "passthrough" in per:
        out.figures["passthrough_cpu_ratio"] = per["passthrough"] / per["envoy"]


def scenario_stream128(setup: Setup, tg: dict[str, Target], warmup: float, duration: float, out: Result,
                       paths: Iterable[str] = ("envoy", "translated")) -> None:
    out.say(f"\nstream128: 128 concurrent {EVENTS}-event streams (offered "
            f"{128 * 1000 / PACE_MS:.0f} events/s), {duration:.0f} s after {warmup:.0f} s warm-up")
    for name in ["envoy", *(p for p in PATHS if p in paths and p != "envoy")]:
        stats, window, cpu = _loaded(setup, tg, name, 128, warmup, duration)
        total = sum(cpu.used.values())
        out.errors += stats.errors + stats.short
        out.say(f"{name:<14} {stats.texts / window:>8.0f} events/s  TTFE p50/p99 "
                f"{ms(percentile(stats.ttfe, 0.5)):.1f}/{ms(percentile(stats.ttfe, 0.99)):.1f} ms; gap p50/p99 "
                f"{ms(percentile(stats.gaps, 0.5)):.1f}/{ms(percentile(stats.gaps, 0.99)):.1f} ms; "
                f"gateway {total / max(1, stats.texts) * 1e6:.0f} µs/event; streams {stats.streams}; "
                f"errors {stats.errors + stats.short}; CPU of the load generator {cpu.loadgen / window:.0%}, "
                f"of the mock {cpu.mock / window:.0%}")
        if name == "translated":
            out.figures["stream128_ttfe_p99_ms"] = ms(percentile(stats.ttfe, 0.99))
            out.figures["stream128_gap_p99_ms"] = ms(percentile(stats.gaps, 0.99))


SCENARIOS = ("unloaded", "cpu64", "stream128")


def run(work: Path, scenarios: Iterable[str] = SCENARIOS, duration: float = 10, warmup: float = 2,
        unloaded: float = 20, workers: int = 0, paths: Iterable[str] | None = None) -> Result:
    """Start the processes, run the scenarios, stop everything; the figures by name. `paths`
    (default: each scenario's own) narrows every scenario to those paths (plain Envoy always runs)."""
    _uvloop()
    out = Result()
    with Setup(work, workers) as setup:
        tg = targets(setup.envoy_port, setup.gw_port)
        asyncio.run(check_paths(tg, list(PATHS)))
        out.say(f"bench-stream: every path streams (mock, plain Envoy, Interlock with {setup.workers} workers; "
                f"logs in {work})")
        for s in scenarios:
            if s == "unloaded":
                scenario_unloaded(tg, unloaded, out, *([paths] if paths else []))
            elif s == "cpu64":
                scenario_cpu64(setup, tg, warmup, duration, out, *([paths] if paths else []))
            elif s == "stream128":
                scenario_stream128(setup, tg, warmup, duration, out, *([paths] if paths else []))
    return out


def summary(figures: dict[str, float]) -> str:
    keys = (("ttfe_added_ms", "{:.2f}"), ("stream128_ttfe_p99_ms", "{:.1f}"), ("stream128_gap_p99_ms", "{:.1f}"),
            ("translate_cpu_us_per_event", "{:.0f}"), ("passthrough_cpu_ratio", "{:.2f}"))
    return " ".join(f"{k}={fmt.format(figures[k])}" for k, fmt in keys if k in figures)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    mock = sub.add_parser("mock", help="run the paced streaming mock upstream only")
    mock.add_argument("--port", type=int, required=True)
    mock.add_argument("--pace-ms", type=float, default=PACE_MS)
    ap.add_argument("--scenario", action="append", choices=SCENARIOS,
                    help="run only this scenario (repeatable; default: all)")
    ap.add_argument("--path", action="append", choices=PATHS,
                    help="run only this path (repeatable; plain Envoy always runs as the baseline)")
    ap.add_argument("--duration", type=float, default=10, help="timed seconds per loaded run (default 10)")
    ap.add_argument("--warmup", type=float, default=2, help="warm-up seconds per loaded run (default 2)")
    ap.add_argument("--unloaded", type=float, default=20, help="seconds of the unloaded scenario (default 20)")
    ap.add_argument("--workers", type=int, default=0, help="ext_proc workers (default: one per core)")
    args = ap.parse_args(argv)
    if args.cmd == "mock":
        run_mock(args.port, args.pace_ms)
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    out = run(work, args.scenario or SCENARIOS, args.duration, args.warmup, args.unloaded, args.workers,
              tuple(args.path) if args.path else None)
    print(f"bench-stream: {summary(out.figures)} errors={out.errors}")
    return 1 if out.errors else 0


if __name__ == "__main__":
    sys.exit(main())
