"""Requests Envoy's HTTP codec refuses, and Envoy's own replies after the router stage: through the
real Envoy, raw sockets for what no HTTP client sends.

- Malformed HTTP (issue 11, point 2): each gets its status (400/426/431/404), never an empty reply,
  as an error in the client's format where the request said which API it spoke.
- Envoy's own errors after the router stage rewrote the path for another provider (point 7) come
  in the client's API's format, with the gateway's message, never Envoy's.
- `limits.max_response_bytes` (point 10): an answer the gateway holds whole (to translate it) over
  the limit is a 502 in the client's format, over HTTP/1.1 and HTTP/2 alike; one under it passes.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import TENANT_KEY, Gateway, Simulator, sha, start_gateway

BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}).encode()
ENVOY_WORDS = ("envoy", "upstream", "reset reason", "protocol error", "internal server error")


def raw_exchange(gw: Gateway, data: bytes, timeout: float = 10) -> bytes:
    """Send `data` as is; read one whole answer (headers and `content-length` bytes of body), or
    what came before the gateway closed the connection."""
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    out = b""
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        while chunk := s.recv(65536):
            out += chunk
            head, sep, body = out.partition(b"\r\n\r\n")
            length = [ln.split(b":", 1)[1] for ln in head.lower().split(b"\r\n") if ln.startswith(b"content-length:")]
            if sep and length and len(body) >= int(length[0]):
                break
    return out


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    assert raw, "empty reply"
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return status, headers, body


def request(path: str = "/v1/chat/completions", *, head: str | None = None, extra: bytes = b"",
            body: bytes = BODY, method: str = "POST", version: str = "HTTP/1.1", host: bool = True) -> bytes:
    start = head if head is not None else f"{method} {path} {version}"
    lines = [start.encode()] + ([b"host: gateway"] if host else []) + [
        f"authorization: Bearer {TENANT_KEY}".encode(), b"content-type: application/json",
        b"content-length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n" + extra + b"connection: close\r\n\r\n" + body


def assert_error(raw: bytes, status: int, *, anthropic: bool = False) -> dict[str, Any]:
    code, headers, body = parse(raw)
    assert code == status, raw[:600]
    assert headers["content-type"] == "application/json"
    assert headers["x-interlock-provider"] == "interlock" and headers["x-request-id"]
    doc = json.loads(body)
    if anthropic:
        assert doc["type"] == "error" and set(doc["error"]) == {"type", "message"}, doc
    else:
        assert set(doc["error"]) == {"message", "type", "param", "code"}, doc
    err = doc["error"]
    assert err["message"] and not any(w in err["message"].lower() for w in ENVOY_WORDS), err
    return dict(err)


CHUNKED = b"transfer-encoding: chunked\r\n"

# (case, request bytes, status). The first ones are the examples; the rest, the same class.
MALFORMED: list[tuple[str, bytes, int]] = [
    ("underscore-header", request(extra=b"x_custom: 1\r\n"), 400),
    ("101-headers", request(extra=b"".join(b"x-h%d: 1\r\n" % i for i in range(101))), 431),
    ("header-over-60k", request(extra=b"x-big: " + b"a" * 61 * 1024 + b"\r\n"), 431),
    ("http-1.0", request(version="HTTP/1.0"), 426),
    ("method-FOO", request(method="FOO"), 400),
    ("target-star", request(path="*"), 400),
    ("options-star", request(path="*", method="OPTIONS"), 404),
    ("duplicate-content-length", request(extra=b"content-length: 3\r\n"), 400),
    ("content-length-and-chunked", request(extra=CHUNKED), 400),
    ("bad-chunk-size", request(extra=CHUNKED).replace(b"content-length: %d\r\n" % len(BODY), b"").replace(
        BODY, b"zz\r\n{}\r\n0\r\n\r\n"), 400),
    ("control-char-in-header", request(extra=b"x-a: a\x01b\r\n"), 400),
    ("no-request-line", b"\x00\x01garbage\r\n\r\n", 400),
    ("http-2.5", request(version="HTTP/2.5"), 426),
    ("relative-target", request(path="v1/chat/completions"), 400),
    ("missing-host", request(host=False), 400),
    ("unknown-transfer-coding", request(extra=b"transfer-encoding: gzip, chunked\r\n").replace(
        b"content-length: %d\r\n" % len(BODY), b"").replace(BODY, b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n"),
     400),
]


@pytest.mark.parametrize("data,status", [(d, s) for _, d, s in MALFORMED], ids=[c for c, _, _ in MALFORMED])
def test_malformed_http_gets_its_status_as_an_error(gateway: Gateway, data: bytes, status: int) -> None:
    assert_error(raw_exchange(gateway, data), status)


@pytest.mark.parametrize("data", [
    request("/v1/messages", host=False),  # refused after the request line and headers were read
    request("/v1/messages", extra=CHUNKED).replace(b"content-length: %d\r\n" % len(BODY), b"").replace(
        BODY, b"zz\r\n"),  # refused mid-body, after the first filters saw the request
], ids=["missing-host", "bad-chunk-size"])
def test_malformed_request_to_messages_gets_an_anthropic_error(gateway: Gateway, data: bytes) -> None:
    assert_error(raw_exchange(gateway, data), 400, anthropic=True)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_headers_just_under_the_limit_are_never_a_5xx(gateway: Gateway, path: str) -> None:
    """100 headers are the limit; the router stage adds a few of its own, which Envoy refused
    with a 503 once the client's left no room. An answer, or a 431 in the client's format."""
    raw = raw_exchange(gateway, request(path, extra=b"".join(b"x-h%d: 1\r\n" % i for i in range(94))))
    if parse(raw)[0] != 200:
        assert_error(raw, 431, anthropic=path == "/v1/messages")


def test_well_formed_request_on_the_same_path_still_works(gateway: Gateway, sim: Simulator) -> None:
    code, headers, body = parse(raw_exchange(gateway, request()))
    assert code == 200 and headers["x-interlock-provider"] == "openai", body[:300]
    assert json.loads(body)["choices"][0]["message"]["content"]


# -- Envoy's own replies after the router stage: the answer-size limit ---------------------------

LIMIT = 1024 * 1024


class _Provider(BaseHTTPRequestHandler):
    """A provider that answers `<n>` characters of text for model `size-<n>`, in OpenAI's format on
    /v1/chat/completions and Anthropic's on /v1/messages."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
        if str(body["model"]).startswith("empty-"):  # an error status with an empty body
            self.send_response(int(str(body["model"]).removeprefix("empty-")))
            self.send_header("content-length", "0")
            self.end_headers()
            return
        text = "x" * int(str(body["model"]).removeprefix("size-"))
        usage_o = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        if self.path.endswith("/messages"):
            doc: dict[str, Any] = {
                "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 1}}
        else:
            doc = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop"}], "usage": usage_o}
        data = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def limited_gateway(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with `limits.max_response_bytes` 1 MiB and models of each provider type on a
    provider that answers as much as the model name says."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Provider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    key = {"api_key_env": "IT_PROVIDER_KEY"}
    config = {
        "limits": {"max_request_bytes": LIMIT, "max_response_bytes": LIMIT},
        "providers": [{"name": "big-openai", "type": "openai", "endpoint": url, **key},
                      {"name": "big-anthropic", "type": "anthropic", "endpoint": url, **key}],
        "models": [{"name": f"{kind}-{size}", "provider": f"big-{kind}", "upstream_model": f"size-{n}",
                    "max_output_tokens": 1024}
                   for kind in ("openai", "anthropic") for size, n in (("3mb", 3_000_000), ("900kb", 900_000))]
        + [{"name": f"{kind}-empty-{status}", "provider": f"big-{kind}", "upstream_model": f"empty-{status}",
            "max_output_tokens": 1024} for kind in ("openai", "anthropic") for status in (429, 500, 503)],
        "tenants": [{"name": "it", "api_key_sha256": [sha(TENANT_KEY)], "models": ["*"]}],
    }
    gw = start_gateway(simulator, Path(tmp_path_factory.mktemp("gw-limited")), workers=1, config=config)
    try:
        yield gw
    finally:
        gw.process.stop()
        server.shutdown()


def chat(gw: Gateway, model: str, *, anthropic: bool, http2: bool = False) -> httpx.Response:
    if anthropic:
        path, headers = "/v1/messages", {"x-api-key": TENANT_KEY}
        body: dict[str, Any] = {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
    else:
        path, headers = "/v1/chat/completions", {"authorization": f"Bearer {TENANT_KEY}"}
        body = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
    with httpx.Client(http1=not http2, http2=http2, timeout=30) as c:
        return c.post(gw.url + path, json=body, headers=headers)


def assert_too_large(r: httpx.Response, *, anthropic: bool) -> None:
    assert r.status_code == 502, (r.status_code, r.text[:300])
    doc = r.json()
    if anthropic:
        assert doc == {"type": "error", "error": {"type": "api_error", "message": doc["error"]["message"]}}
    else:
        assert doc["error"]["type"] == "api_error" and doc["error"]["code"] == "response_too_large", doc
    message = doc["error"]["message"]
    assert str(LIMIT) in message and "max_response_bytes" in message
    assert not any(w in message.lower() for w in ENVOY_WORDS)
    assert r.headers["x-request-id"] and r.headers["x-interlock-provider"] == "interlock"


@pytest.mark.parametrize("anthropic_client", [False, True], ids=["openai-client", "anthropic-client"])
def test_translated_answer_over_the_limit_is_a_502_in_the_clients_format(limited_gateway: Gateway,
                                                                        anthropic_client: bool) -> None:
    """The router stage rewrote the path for the other provider's API; Envoy's own reply (the
    answer overflowed the buffer) still follows the client's API."""
    model = "openai-3mb" if anthropic_client else "anthropic-3mb"
    assert_too_large(chat(limited_gateway, model, anthropic=anthropic_client), anthropic=anthropic_client)


def test_the_limit_holds_for_http2_clients(limited_gateway: Gateway) -> None:
    r = chat(limited_gateway, "anthropic-3mb", anthropic=False, http2=True)
    assert r.http_version == "HTTP/2"
    assert_too_large(r, anthropic=False)


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_translated_answer_under_the_limit_passes(limited_gateway: Gateway, http2: bool) -> None:
    r = chat(limited_gateway, "anthropic-900kb", anthropic=False, http2=http2)
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["choices"][0]["message"]["content"]) == 900_000


@pytest.mark.parametrize("anthropic", [False, True], ids=["openai-client", "anthropic-client"])
@pytest.mark.parametrize(("kind", "status", "expected"), [
    ("openai", 429, 429), ("openai", 500, 502), ("openai", 503, 503), ("anthropic", 503, 503)])
def test_a_provider_error_with_an_empty_body_still_gets_an_error_body(
        limited_gateway: Gateway, kind: str, status: int, expected: int, anthropic: bool) -> None:
    """A provider's error whose headers end the stream sent no body message to the ext_proc: the
    client got the status and an empty body (the SDKs then report no error message)."""
    r = chat(limited_gateway, f"{kind}-empty-{status}", anthropic=anthropic)
    assert r.status_code == expected, (r.status_code, r.text[:300])
    doc = r.json()
    if anthropic:
        assert doc["type"] == "error" and doc["error"]["message"], doc
    else:
        assert doc["error"]["message"] and doc["error"]["type"], doc
    assert r.headers["x-interlock-provider"] == f"big-{kind}"
    if expected == 429:
        assert r.headers["retry-after"]
