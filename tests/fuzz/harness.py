"""A raw HTTP/1.x client and the invariants every answer of the gateway must meet.

The client is a socket, not httpx or http.client: the fuzz suite sends bytes no well-behaved
client library would (odd header names, bad framing, pipelines), and must see exactly what came
back, including nothing at all. Every exchange has one deadline (`TIMEOUT` seconds): past it the
answer counts as a hang.

`problems(reply, api)` lists every broken invariant of one answer:
- a status line always arrives (no empty reply, no truncated reply, no hang);
- never a 5xx (the fuzz gateway's providers always succeed, so a 5xx is the gateway's own fault);
- a non-2xx answer is `application/json` in the client API's error format
  (OpenAI `{"error": {"message", "type", "param", "code"}}`, Anthropic
  `{"type": "error", "error": {"type", "message"}}`);
- no provider key, no stack trace anywhere in the answer, and no header echoing input unbounded.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.fuzz import profiles
from tests.integration.conftest import AWS_SECRET, PROVIDER_KEY

TIMEOUT = 5.0
"""Seconds one exchange may take, from the first byte sent to the last byte of the answer."""

OPENAI = "openai"
ANTHROPIC = "anthropic"

SECRETS = (PROVIDER_KEY, AWS_SECRET)
TRACE_MARKERS = ("Traceback (most recent call last)", 'File "/', "site-packages/", ".py\", line ")
MAX_HEADER_VALUE = 4096
"""No answer header is longer than this: nothing from the request is echoed unbounded."""


class ExchangeError(Exception):
    """The answer broke the protocol: no status line, a cut body, or no answer in time."""

    def __init__(self, kind: str, detail: str, received: bytes) -> None:
        super().__init__(f"{kind}: {detail}; received {len(received)} bytes: {received[:300]!r}")
        self.kind = kind
        self.received = received


# One exception type per class of failure: Hypothesis reports distinct failures of one test
# separately (by type and origin) instead of stopping at the first one.
class GatewayInvariant(AssertionError):
    """An answer broke one of the suite's invariants."""


class EmptyReply(GatewayInvariant):
    pass


class TruncatedReply(GatewayInvariant):
    pass


class Hang(GatewayInvariant):
    pass


class ServerError(GatewayInvariant):
    pass


class WrongErrorFormat(GatewayInvariant):
    pass


class Leak(GatewayInvariant):
    pass


class EchoedHeader(GatewayInvariant):
    pass


class Unhealthy(GatewayInvariant):
    """After a case, the gateway no longer serves a normal request."""


EXCHANGE_CLASSES: dict[str, type[GatewayInvariant]] = {
    "empty reply": EmptyReply, "truncated reply": TruncatedReply, "hang": Hang, "bad status line": EmptyReply}


def _class_of(found: list[str]) -> type[GatewayInvariant]:
    first = found[0]
    if first.startswith("5xx"):
        return ServerError
    if "credential" in first or "stack trace" in first:
        return Leak
    if first.startswith("answer header"):
        return EchoedHeader
    return WrongErrorFormat


@dataclass
class Reply:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes = b""
    elapsed: float = 0.0
    informational: list[int] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def json(self) -> Any:
        return json.loads(self.body)

    def short(self) -> str:
        return f"{self.status} {self.reason} ct={self.header('content-type')!r} body={self.body[:300]!r}"


class Reader:
    """Reads one or more HTTP/1.x answers from a socket under one absolute deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buf = b""
        self.seen = b""
        self.eof = False
        self.reply_start = 0  # offset in `seen` where the answer being read began

    def _fill(self) -> bool:
        if self.eof:
            return False
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ExchangeError("hang", f"no complete answer within {TIMEOUT}s", self.seen)
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise ExchangeError("hang", f"no complete answer within {TIMEOUT}s", self.seen) from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        self.seen += chunk
        return True

    def _until(self, marker: bytes, what: str) -> bytes:
        while marker not in self.buf:
            if not self._fill():
                kind = "empty reply" if len(self.seen) == self.reply_start else "truncated reply"
                raise ExchangeError(kind, f"connection closed before {what}", self.seen)
        head, self.buf = self.buf.split(marker, 1)
        return head

    def _exactly(self, n: int, what: str) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ExchangeError("truncated reply", f"connection closed in {what} ({len(self.buf)}/{n} bytes)",
                                    self.seen)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def reply(self, head_request: bool = False) -> Reply:
        start = time.monotonic()
        self.reply_start = len(self.seen) - len(self.buf)
        informational: list[int] = []
        while True:
            raw_head = self._until(b"\r\n\r\n", "the end of the answer's headers")
            lines = raw_head.split(b"\r\n")
            parts = lines[0].decode("latin-1").split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise ExchangeError("bad status line", repr(lines[0]), self.seen)
            status = int(parts[1])
            headers = []
            for line in lines[1:]:
                k, _, v = line.decode("latin-1").partition(":")
                headers.append((k.strip(), v.strip()))
            if 100 <= status < 200 and status != 101:
                informational.append(status)
                continue
            break
        reply = Reply(status, parts[2] if len(parts) > 2 else "", parts[0], headers, b"", raw_head,
                      informational=informational)
        te = (reply.header("transfer-encoding") or "").lower()
        cl = reply.header("content-length")
        if head_request or status in (204, 304) or status == 101:
            body = b""
        elif "chunked" in te:
            body = b""
            while True:
                size_line = self._until(b"\r\n", "a chunk size")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self._until(b"\r\n", "the last chunk")  # (no trailers are expected)
                    break
                body += self._exactly(size, "a chunk")
                self._exactly(2, "a chunk's CRLF")
        elif cl is not None:
            body = self._exactly(int(cl), "the body")
        else:
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        reply.body = body
        reply.elapsed = time.monotonic() - start
        return reply


def connect(port: int, timeout: float = TIMEOUT) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def dry_reply() -> Reply:
    """What the harness answers itself while a campaign example runs dry (see `profiles`)."""
    return Reply(200, "OK", "HTTP/1.1", [("content-type", "application/json")], b"{}")


def exchange(port: int, data: bytes | Iterable[tuple[bytes, float]], replies: int = 1,
             head_request: bool = False, timeout: float = TIMEOUT) -> list[Reply]:
    """Send `data` (bytes, or (bytes, pause before) pieces) on a new connection and read `replies`
    answers. Raises ExchangeError for an empty, cut or late answer."""
    if profiles.DRY[0]:
        return [dry_reply() for _ in range(replies)]
    deadline = time.monotonic() + timeout
    with connect(port, timeout) as sock:
        try:
            if isinstance(data, bytes):
                sock.sendall(data)
            else:
                for piece, pause in data:
                    if pause:
                        time.sleep(pause)
                    sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway may answer (and close) before reading all of it: read what it said
        reader = Reader(sock, deadline)
        return [reader.reply(head_request) for _ in range(replies)]


def request_bytes(method: str, path: str, headers: Iterable[tuple[str | bytes, str | bytes]], body: bytes = b"",
                  version: str = "HTTP/1.1", content_length: bool = True, host: bytes | None = b"127.0.0.1") -> bytes:
    """An HTTP/1.x request as bytes: `host` first (None: no Host header), then `headers` as
    given, then a content-length of the body unless told not to."""
    def b(x: str | bytes) -> bytes:
        return x if isinstance(x, bytes) else x.encode("latin-1")

    lines = [f"{method} {path} {version}".encode("latin-1")]
    if host is not None:
        lines.append(b"host: " + host)
    lines += [b(k) + b": " + b(v) for k, v in headers]
    if content_length:
        lines.append(b"content-length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def api_of(path: str) -> str:
    return ANTHROPIC if path.split("?")[0].startswith("/v1/messages") else OPENAI


# Envoy's HTTP codec refuses some requests before their headers are whole, so before any filter
# knows the client's API: those replies come in OpenAI's format on every path (README, Errors).
CODEC_REFUSALS = {(400, "invalid_header"), (400, "invalid_request"), (431, "request_headers_too_large"),
                  (426, "http_version_not_supported")}


def _codec_refusal(body: Any, status: int) -> bool:
    err = body.get("error") if isinstance(body, dict) else None
    return isinstance(err, dict) and (status, err.get("code")) in CODEC_REFUSALS


def error_format_problems(body: Any, api: str, status: int = 0) -> list[str]:
    if api == ANTHROPIC and _codec_refusal(body, status):
        api = OPENAI
    if api == ANTHROPIC:
        if not isinstance(body, dict) or body.get("type") != "error" or not isinstance(body.get("error"), dict):
            return ["not Anthropic's error format {type: error, error: {type, message}}"]
        err = body["error"]
        out = []
        if not isinstance(err.get("type"), str) or not err["type"]:
            out.append("Anthropic error.type missing or not a string")
        if not isinstance(err.get("message"), str) or not err["message"]:
            out.append("Anthropic error.message missing or not a string")
        return out
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return ["not OpenAI's error format {error: {message, type, param, code}}"]
    err = body["error"]
    out = []
    if not isinstance(err.get("message"), str) or not err["message"]:
        out.append("OpenAI error.message missing or not a string")
    if not isinstance(err.get("type"), str) or not err["type"]:
        out.append("OpenAI error.type missing or not a string")
    for k in ("param", "code"):
        if k not in err:
            out.append(f"OpenAI error.{k} missing")
        elif err[k] is not None and not isinstance(err[k], str):
            out.append(f"OpenAI error.{k} neither a string nor null")
    return out


def problems(reply: Reply, api: str, head_request: bool = False) -> list[str]:
    """Every invariant the answer breaks (empty: it is a good answer). The answer to a HEAD
    request has no body to check."""
    out: list[str] = []
    if reply.status >= 500:
        out.append(f"5xx: {reply.status}")
    text = reply.raw_head + reply.body
    for secret in SECRETS:
        if secret.encode() in text:
            out.append("a provider credential in the answer")
    for marker in TRACE_MARKERS:
        if marker.encode() in text:
            out.append(f"a stack trace in the answer ({marker!r})")
    for k, v in reply.headers:
        if len(v) > MAX_HEADER_VALUE:
            out.append(f"answer header {k} is {len(v)} bytes (echoed input)")
    if not (200 <= reply.status < 300):
        ctype = (reply.header("content-type") or "").lower()
        if not ctype.startswith("application/json"):
            out.append(f"non-2xx with content-type {reply.header('content-type')!r}")
        if head_request:
            return out
        try:
            body = reply.json()
        except ValueError:
            out.append("non-2xx body is not JSON")
        else:
            out += error_format_problems(body, api, reply.status)
    return out


def describe(request: bytes, reply: Reply | None, found: list[str]) -> str:
    shown = request if len(request) <= 600 else request[:500] + b"...(%d bytes)..." % len(request) + request[-80:]
    answer = reply.short() if reply else "-"
    return f"{'; '.join(found)}\n  request: {shown!r}\n  answer:  {answer}"


def check_exchange(port: int, request: bytes, api: str, *, head_request: bool = False) -> Reply:
    """One request on a fresh connection; fail the example with every broken invariant."""
    try:
        reply = exchange(port, request, head_request=head_request)[0]
    except ExchangeError as e:
        raise EXCHANGE_CLASSES[e.kind](describe(request, None, [str(e)])) from None
    assert_good(request, reply, api, head_request)
    return reply


def assert_good(request: bytes, reply: Reply, api: str, head_request: bool = False) -> None:
    found = problems(reply, api, head_request)
    if found:
        raise _class_of(found)(describe(request, reply, found))
