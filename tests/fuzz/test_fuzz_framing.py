"""Fuzz HTTP/1.x framing through the real Envoy on raw sockets: versions, methods, request
targets, header syntax and limits, content-length and chunked bodies that disagree with the data,
pipelines, slow senders and connections closed mid-request.

Every request the client finished sending gets an answer with a status line, never a 5xx, a
non-2xx in the client's error format (by the path of the target: `/v1/messages` Anthropic's, any
other OpenAI's) with `application/json`. A request the client abandons (closed before its body
was complete) may get no answer. After each case the gateway still serves a normal request.
"""

from __future__ import annotations

import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import profiles
from tests.fuzz import strategies as fs
from tests.fuzz.conftest import FuzzGateway
from tests.fuzz.harness import (
    EXCHANGE_CLASSES,
    TIMEOUT,
    ExchangeError,
    GatewayInvariant,
    Reader,
    Reply,
    Unhealthy,
    api_of,
    assert_good,
    check_exchange,
    connect,
    describe,
    dry_reply,
    exchange,
    request_bytes,
)
from tests.fuzz.profiles import fuzz
from tests.integration.conftest import TENANT_KEY

CHAT = "/v1/chat/completions"
BODY = fs.encode(fs.VALID[CHAT])


AUTH = f"authorization: Bearer {TENANT_KEY}\r\ncontent-type: application/json\r\n".encode()


def post(head: bytes = b"", *, path: bytes = CHAT.encode(), version: bytes = b"HTTP/1.1",
         method: bytes = b"POST", host: bytes | None = b"127.0.0.1", body: bytes = BODY,
         framing: bytes | None = None) -> bytes:
    """A request with `head` as extra header lines (each ending in CRLF) and the body framed by
    `framing` (default: its content-length)."""
    host_line = b"host: " + host + b"\r\n" if host is not None else b""
    if framing is None:
        framing = b"content-length: %d\r\n" % len(body)
    return method + b" " + path + b" " + version + b"\r\n" + host_line + AUTH + head + framing + b"\r\n" + body


def chunked(body: bytes, size: bytes | None = None, last: bytes = b"0\r\n\r\n") -> bytes:
    return (size if size is not None else b"%x" % len(body)) + b"\r\n" + body + b"\r\n" + last


def api_of_target(target: bytes) -> str:
    text = target.decode("latin-1")
    if "://" in text:
        text = "/" + text.split("://", 1)[1].partition("/")[2]
    return api_of(text)


def assert_healthy(port: int) -> None:
    """The gateway still answers a normal request on a new connection."""
    req = request_bytes("GET", "/v1/models", [("authorization", f"Bearer {TENANT_KEY}")])
    reply = check_exchange(port, req, "openai")
    if reply.status != 200:
        raise Unhealthy(f"after the case, GET /v1/models answered {reply.short()}")


# ---------------------------------------------------------------------------------------------
# Named cases: each a class of malformed or unusual framing


@dataclass(frozen=True)
class Case:
    request: bytes
    target: bytes = CHAT.encode()
    head: bool = False  # a HEAD request: the answer has no body
    half_close: bool = False  # the body is left unfinished and the client half-closes: no answer owed


def cases() -> dict[str, Case]:
    b = BODY
    return {
        "http/1.0": Case(post(version=b"HTTP/1.0")),
        "http/1.0 GET /v1/models": Case(b"GET /v1/models HTTP/1.0\r\n" + AUTH + b"\r\n", b"/v1/models"),
        "http/1.0 keep-alive": Case(post(b"connection: keep-alive\r\n", version=b"HTTP/1.0")),
        "http/0.9 request line": Case(b"GET /v1/models\r\n\r\n", b"/v1/models"),
        "HTTP/2.0 as text": Case(post(version=b"HTTP/2.0")),
        "HTTP/1.2": Case(post(version=b"HTTP/1.2")),
        "lowercase version": Case(post(version=b"http/1.1")),
        "method FOO": Case(post(method=b"FOO")),
        "method PROPFIND": Case(post(method=b"PROPFIND")),
        "method with a bad char": Case(post(method=b"P(ST")),
        "method lowercase": Case(post(method=b"post")),
        "method DELETE": Case(post(method=b"DELETE")),
        "method GET on chat": Case(post(method=b"GET", body=b"", framing=b"")),
        "method HEAD on chat": Case(post(method=b"HEAD", body=b"", framing=b""), head=True),
        "method OPTIONS on chat": Case(post(method=b"OPTIONS", body=b"", framing=b"")),
        "method TRACE": Case(post(method=b"TRACE", body=b"", framing=b"")),
        "method CONNECT": Case(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nhost: 127.0.0.1:1\r\n" + AUTH + b"\r\n", b"/"),
        "target *": Case(post(path=b"*"), b"*"),
        "OPTIONS *": Case(b"OPTIONS * HTTP/1.1\r\nhost: 127.0.0.1\r\n" + AUTH + b"\r\n", b"*"),
        "absolute-form target": Case(post(path=b"http://127.0.0.1/v1/chat/completions"),
                                     b"http://127.0.0.1/v1/chat/completions"),
        "absolute-form other host": Case(post(path=b"http://evil.example:8080/v1/messages"),
                                         b"http://evil.example:8080/v1/messages"),
        "absolute-form https": Case(post(path=b"https://127.0.0.1/v1/chat/completions"),
                                    b"https://127.0.0.1/v1/chat/completions"),
        "empty target": Case(post(path=b""), b"/"),
        "target without slash": Case(post(path=b"v1/chat/completions")),
        "target with dot segments": Case(post(path=b"/v1/../v1/chat/completions")),
        "target with %2F": Case(post(path=b"/v1/chat%2Fcompletions")),
        "target with %00": Case(post(path=b"/v1/chat/completions%00")),
        "target with fragment": Case(post(path=b"/v1/chat/completions#x")),
        "target with a raw non-ASCII byte": Case(post(path=b"/v1/chat/completions\xff")),
        "target of 70 KiB": Case(post(path=b"/v1/chat/completions?" + b"a" * 70_000)),
        "no host": Case(post(host=None)),
        "two hosts": Case(post(b"host: other\r\n")),
        "empty host": Case(post(host=b"")),
        "host with a bad char": Case(post(host=b"a b")),
        "underscore in a header name": Case(post(b"x_custom: 1\r\n")),
        "underscore in a header name (messages)": Case(
            post(b"x_custom: 1\r\n", path=b"/v1/messages", body=fs.encode(fs.VALID["/v1/messages"])),
            b"/v1/messages"),
        "101 headers": Case(post(b"".join(b"x-h%d: v\r\n" % i for i in range(101)))),
        "150 headers (messages)": Case(
            post(b"".join(b"x-h%d: v\r\n" % i for i in range(150)), path=b"/v1/messages",
                 body=fs.encode(fs.VALID["/v1/messages"])), b"/v1/messages"),
        "a 64 KiB header": Case(post(b"x-big: " + b"a" * 65_536 + b"\r\n")),
        "headers of 100 KiB in all": Case(post(b"".join(b"x-h%d: %s\r\n" % (i, b"a" * 2000) for i in range(50)))),
        "header without a colon": Case(post(b"broken\r\n")),
        "space before the colon": Case(post(b"x-a : 1\r\n")),
        "empty header name": Case(post(b": 1\r\n")),
        "obs-fold continuation line": Case(post(b"x-a: 1\r\n 2\r\n")),
        "NUL in a header value": Case(post(b"x-a: a\x00b\r\n")),
        "bare CR in a header value": Case(post(b"x-a: a\rb\r\n")),
        "bare LF line endings": Case(post().replace(b"\r\n", b"\n")),
        "non-ASCII header name": Case(post(b"x-\xe9: 1\r\n")),
        "duplicate content-length, differing": Case(post(framing=b"content-length: %d\r\ncontent-length: %d\r\n"
                                                            % (len(b), len(b) + 1))),
        "duplicate content-length, equal": Case(post(framing=b"content-length: %d\r\ncontent-length: %d\r\n"
                                                         % (len(b), len(b)))),
        "content-length list": Case(post(framing=b"content-length: %d, %d\r\n" % (len(b), len(b)))),
        "content-length negative": Case(post(framing=b"content-length: -1\r\n")),
        "content-length not a number": Case(post(framing=b"content-length: 1x\r\n")),
        "content-length over 2**64": Case(post(framing=b"content-length: 99999999999999999999\r\n")),
        "content-length with a plus sign": Case(post(framing=b"content-length: +%d\r\n" % len(b))),
        "content-length short (rest is garbage)": Case(post(framing=b"content-length: 10\r\n")),
        "content-length 0 with a body": Case(post(framing=b"content-length: 0\r\n")),
        "body over the body limit": Case(post(body=fs.encode({**fs.VALID[CHAT], "user": "x" * 1_100_000}))),
        "content-length over the limit, body not sent": Case(post(framing=b"content-length: 5000000\r\n", body=b""),
                                                             half_close=True),
        "content-length and chunked": Case(post(framing=b"content-length: 5\r\ntransfer-encoding: chunked\r\n",
                                                body=chunked(b))),
        "chunked": Case(post(framing=b"transfer-encoding: chunked\r\n", body=chunked(b))),
        "chunked, size not hex": Case(post(framing=b"transfer-encoding: chunked\r\n", body=chunked(b, b"zz"))),
        "chunked, size over 2**64": Case(post(framing=b"transfer-encoding: chunked\r\n",
                                              body=chunked(b, b"f" * 20))),
        "chunked, size negative": Case(post(framing=b"transfer-encoding: chunked\r\n", body=chunked(b, b"-5"))),
        "chunked, size smaller than data": Case(post(framing=b"transfer-encoding: chunked\r\n",
                                                     body=chunked(b, b"3"))),
        "chunked, extension junk": Case(post(framing=b"transfer-encoding: chunked\r\n",
                                             body=chunked(b, b"%x;\x01=\xff" % len(b)))),
        "chunked, trailers": Case(post(framing=b"transfer-encoding: chunked\r\n",
                                       body=chunked(b, last=b"0\r\nx-trailer: 1\r\n\r\n"))),
        "chunked, missing CRLF after data": Case(post(framing=b"transfer-encoding: chunked\r\n",
                                                      body=b"%x\r\n" % len(b) + b + b"0\r\n\r\n")),
        "transfer-encoding gzip, chunked": Case(post(framing=b"transfer-encoding: gzip, chunked\r\n",
                                                     body=chunked(b))),
        "transfer-encoding xchunked": Case(post(framing=b"transfer-encoding: xchunked\r\n", body=chunked(b))),
        "transfer-encoding identity": Case(post(framing=b"transfer-encoding: identity\r\ncontent-length: %d\r\n"
                                                % len(b))),
        "transfer-encoding twice": Case(post(framing=b"transfer-encoding: chunked\r\ntransfer-encoding: chunked"
                                                         b"\r\n", body=chunked(b))),
        "chunked on HTTP/1.0": Case(post(framing=b"transfer-encoding: chunked\r\n", body=chunked(b),
                                         version=b"HTTP/1.0")),
        "expect 100-continue": Case(post(b"expect: 100-continue\r\n")),
        "expect junk": Case(post(b"expect: junk\r\n")),
        "upgrade websocket": Case(post(b"connection: upgrade\r\nupgrade: websocket\r\n")),
        "upgrade h2c": Case(post(b"connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n"
                                     b"http2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n")),
        "not HTTP (TLS ClientHello)": Case(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64),
        "only CRLFs then a request": Case(b"\r\n\r\n" + post()),
    }


CASES = cases()


def run_case(port: int, case: Case) -> GatewayInvariant | None:
    """One named case and a health check after it: the first broken invariant, or None."""
    try:
        reply = send_and_read(port, case.request, half_close=case.half_close, head=case.head)
        if reply is not None:
            assert_good(case.request, reply, api_of_target(case.target), case.head)
        assert_healthy(port)
    except GatewayInvariant as e:
        return e
    return None


@pytest.fixture(scope="module")
def case_outcomes(fuzz_gateway: FuzzGateway) -> dict[str, GatewayInvariant | None]:
    """Every named case, run concurrently once: a case the gateway answers by closing the
    connection costs Envoy's delayed-close time (1 s), so in sequence the cases that fail today
    would take a minute."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = {name: pool.submit(run_case, fuzz_gateway.port, case) for name, case in CASES.items()}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_framing_case(fuzz_gateway: FuzzGateway, case_outcomes: dict[str, GatewayInvariant | None],
                      name: str) -> None:
    error = case_outcomes[name]
    if error is not None:
        raise error


# ---------------------------------------------------------------------------------------------
# Generated framing


METHODS = [b"POST", b"POST", b"POST", b"GET", b"PUT", b"PATCH", b"FOO", b"HEAD", b"OPTIONS", b"post", b"M-SEARCH"]
TARGETS = [CHAT.encode(), b"/v1/messages", b"/v1/embeddings", b"/v1/models", b"*", b"http://127.0.0.1/v1/messages",
           b"/v1/chat/completions?x=1", b"//v1/chat/completions", b"/V1/CHAT/COMPLETIONS", b"/v1/messages/",
           b"/v1/%6dessages", b"/"]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2", b"HTTP/1.10"]
FRAMINGS = ["length", "length", "chunked", "chunked-split", "none", "short", "double-length", "length+chunked",
            "chunked-bad-size", "long", "chunked-truncated"]
INCOMPLETE = {"long", "chunked-truncated"}
"""Framings that leave the body unfinished: the client half-closes, and no answer is owed."""

odd_header_lines = st.one_of(
    st.tuples(fs.header_names.map(lambda s: s.encode()), fs.header_values).map(lambda kv: kv[0] + b": " + kv[1]),
    st.sampled_from([b"x_under: 1", b"x-a : 1", b"broken", b": v", b" folded", b"x-a: \x00", b"x-\xff: 1",
                     b"host: second", b"connection: close", b"connection: keep-alive, upgrade", b"te: trailers",
                     b"expect: 100-continue", b"transfer-encoding: identity", b"content-length: 1",
                     b"x-interlock-client-api: anthropic", b"x-interlock-client-api: openai",
                     b"x-envoy-upstream-rq-timeout-ms: 1"]),
)


@st.composite
def framed_requests(draw: st.DrawFn, key: str = TENANT_KEY) -> tuple[bytes, bytes, bool, bool]:
    """(request bytes, target, is HEAD, body left incomplete)."""
    method = draw(st.sampled_from(METHODS))
    target = draw(st.sampled_from(TARGETS))
    version = draw(st.sampled_from(VERSIONS))
    path = api_of_target(target)
    body = fs.serialise(fs.VALID["/v1/messages" if path == "anthropic" else CHAT])
    lines = [method + b" " + target + b" " + version]
    if draw(st.integers(0, 9)):
        lines.append(b"host: 127.0.0.1")
    lines.append(draw(st.sampled_from([b"authorization: Bearer " + key.encode(), b"x-api-key: " + key.encode(),
                                       b"authorization: Bearer wrong", b""])))
    lines.append(b"content-type: application/json")
    lines += draw(st.lists(odd_header_lines, max_size=4))
    if draw(st.integers(0, 7)) == 0:
        lines += [b"x-many-%d: v" % i for i in range(draw(st.sampled_from([60, 99, 101, 200])))]
    framing = draw(st.sampled_from(FRAMINGS))
    if framing == "length":
        lines.append(b"content-length: %d" % len(body))
    elif framing == "chunked":
        lines.append(b"transfer-encoding: chunked")
        body = chunked(body)
    elif framing == "chunked-split":
        lines.append(b"transfer-encoding: chunked")
        cut = draw(st.integers(1, len(body) - 1))
        body = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (cut, body[:cut], len(body) - cut, body[cut:])
    elif framing == "none":
        pass
    elif framing == "short":
        lines.append(b"content-length: %d" % draw(st.integers(0, len(body) - 1)))
    elif framing == "double-length":
        lines += [b"content-length: %d" % len(body), b"content-length: %d" % draw(st.integers(0, len(body) * 2))]
    elif framing == "length+chunked":
        lines += [b"content-length: %d" % len(body), b"transfer-encoding: chunked"]
        body = chunked(body)
    elif framing == "chunked-bad-size":
        lines.append(b"transfer-encoding: chunked")
        body = chunked(body, draw(st.sampled_from([b"zz", b"-1", b"f" * 20, b"", b" 5", b"0x10", b"%x" % (len(body) + 7)])))
    elif framing == "long":
        lines.append(b"content-length: %d" % (len(body) + draw(st.integers(1, 1000))))
    elif framing == "chunked-truncated":
        lines.append(b"transfer-encoding: chunked")
        body = b"%x\r\n" % (len(body) + 100) + body
    eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"]))
    data = eol.join(line for line in lines if line) + eol + eol + body
    return data, target, method == b"HEAD", framing in INCOMPLETE


def send_and_read(port: int, data: bytes, *, half_close: bool, head: bool) -> Reply | None:
    """Send, half-close when asked, read one answer (None: the gateway closed without one)."""
    if profiles.DRY[0]:
        return dry_reply()
    deadline = time.monotonic() + TIMEOUT
    with connect(port) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            return Reader(sock, deadline).reply(head)
        except ExchangeError as e:
            if e.kind == "empty reply" and half_close:
                return None
            raise EXCHANGE_CLASSES[e.kind](describe(data, None, [str(e)])) from None


@given(req=st.data())
@fuzz(1.5)
def test_generated_framing(fuzz_gateway: FuzzGateway, req: st.DataObject) -> None:
    data, target, head, incomplete = req.draw(framed_requests(), label="request")
    reply = send_and_read(fuzz_gateway.port, data, half_close=incomplete, head=head)
    if reply is not None:
        assert_good(data, reply, api_of_target(target), head)
    assert_healthy(fuzz_gateway.port)


# ---------------------------------------------------------------------------------------------
# Pipelines, slow senders, abandoned requests


PIPELINE_PARTS = {
    "valid": post(),
    "valid messages": post(path=b"/v1/messages", body=fs.encode(fs.VALID["/v1/messages"])),
    "models": b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\n" + AUTH + b"\r\n",
    "bad json": post(body=b'{"model":'),
    "unknown model": post(body=b'{"model":"nope","messages":[{"role":"user","content":"x"}]}'),
    "no key": post().replace(AUTH, b"content-type: application/json\r\n"),
    "wrong method": post(method=b"PUT"),
    "stream": post(body=fs.encode({**fs.VALID[CHAT], "stream": True})),
    "unknown path": post(path=b"/v1/nothing"),
}


@given(data=st.data())
@fuzz(0.5)
def test_pipelining(fuzz_gateway: FuzzGateway, data: st.DataObject) -> None:
    """Well-framed requests sent back to back on one connection: answered in order, each a good
    answer, until the gateway closes the connection (then the last answer says `connection: close`)."""
    parts = data.draw(st.lists(st.sampled_from(sorted(PIPELINE_PARTS)), min_size=2, max_size=5), label="pipeline")
    if profiles.DRY[0]:
        return
    sent = b"".join(PIPELINE_PARTS[p] for p in parts)
    deadline = time.monotonic() + TIMEOUT * 2
    with connect(fuzz_gateway.port) as sock:
        sock.sendall(sent)
        reader = Reader(sock, deadline)
        got: list[Reply] = []
        for i, part in enumerate(parts):
            try:
                reply = reader.reply()
            except ExchangeError as e:
                closed = got and (got[-1].header("connection") or "").lower() == "close"
                if e.kind == "empty reply" and not reader.buf and closed:
                    break
                raise EXCHANGE_CLASSES[e.kind](f"pipeline {parts}: answer {i} ({part}): {e}") from None
            got.append(reply)
            path = CHAT if "messages" not in part else "/v1/messages"
            assert_good(PIPELINE_PARTS[part], reply, api_of(path))
    assert got, f"pipeline {parts}: no answer"
    assert_healthy(fuzz_gateway.port)


@given(data=st.data())
@fuzz(0.04)
def test_slow_sender(fuzz_gateway: FuzzGateway, data: st.DataObject) -> None:
    """A request dripped in pieces with pauses (at most ~1.5 s in all) is answered normally."""
    pieces = data.draw(st.integers(2, 25), label="pieces")
    pause_ms = data.draw(st.integers(0, 60), label="pause_ms")
    messages = data.draw(st.booleans(), label="messages")
    path = "/v1/messages" if messages else CHAT
    request = post(path=path.encode(), body=fs.encode(fs.VALID[path]))
    step = max(1, -(-len(request) // pieces))
    chunks = [(request[i:i + step], pause_ms / 1000) for i in range(0, len(request), step)]
    try:
        reply = exchange(fuzz_gateway.port, chunks, timeout=TIMEOUT + pieces * pause_ms / 1000)[0]
    except ExchangeError as e:
        raise EXCHANGE_CLASSES[e.kind](f"slow sender ({pieces} pieces, {pause_ms} ms apart): {e}") from None
    assert_good(request, reply, api_of(path))


@pytest.mark.parametrize("cut", ["in the request line", "in the headers", "after the headers", "mid-body",
                                 "mid-chunk", "before the last chunk"])
@pytest.mark.parametrize("how", ["close", "reset", "half-close"])
def test_abandoned_request(fuzz_gateway: FuzzGateway, cut: str, how: str) -> None:
    """A client that goes away mid-request: no answer is owed (if one comes, it is a good one),
    and the gateway serves the next request."""
    if cut in ("mid-chunk", "before the last chunk"):
        data = post(framing=b"transfer-encoding: chunked\r\n", body=chunked(BODY))
        at = {"mid-chunk": data.index(BODY) + 10, "before the last chunk": len(data) - 5}[cut]
    else:
        data = post()
        at = {"in the request line": 10, "in the headers": data.index(b"\r\n") + 12,
              "after the headers": data.index(b"\r\n\r\n") + 4, "mid-body": len(data) - 10}[cut]
    sock = connect(fuzz_gateway.port)
    try:
        sock.sendall(data[:at])
        time.sleep(0.05)
        if how == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif how == "half-close":
            sock.shutdown(socket.SHUT_WR)
            try:
                reply = Reader(sock, time.monotonic() + TIMEOUT).reply()
            except ExchangeError as e:
                if e.kind != "empty reply":
                    raise EXCHANGE_CLASSES[e.kind](describe(data[:at], None, [str(e)])) from None
            else:
                assert_good(data[:at], reply, "openai")
    finally:
        sock.close()
    assert_healthy(fuzz_gateway.port)
