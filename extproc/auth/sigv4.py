"""AWS Signature Version 4 request signing, as a pure function of request, credentials and clock.

`sign` returns the headers to add to a request (`x-amz-date`, `x-amz-security-token` when the
credentials carry a session token, `authorization`); it reads no environment, no clock and no
network, so the caller decides when "now" is and which credentials apply.

What is signed follows botocore's `SigV4Auth` (the reference, checked against botocore 1.44):
  - the canonical URI is the request path as it goes on the wire (already percent-encoded),
    with dot segments and empty segments removed, percent-encoded once more (everything except
    unreserved characters and `/`): a model id sent as `a%3Ab` is signed as `a%253Ab`;
  - the canonical query string is the wire query split at `&` and `=`, sorted, not re-encoded;
  - the signed headers are `host` plus every header passed in (lowercased, values trimmed and
    inner whitespace collapsed) except hop-by-hop and tracing headers (`_UNSIGNED`), plus
    `x-amz-date` and `x-amz-security-token`; a `host`, `authorization`, `x-amz-date` or
    `x-amz-security-token` among the headers passed in (say, from an earlier attempt) is
    ignored, since the returned values replace it;
  - the payload hash is SHA-256 of the body (signed payload, no `x-amz-content-sha256` header).

`host` must be the `Host` (`:authority`) value the request is sent with: the hostname, plus
`:port` when the port is not the scheme's default (`authority` builds it from a URL's parts).
For Bedrock the host is `bedrock-runtime.{region}.amazonaws.com` (or an endpoint override)
while the credential scope's service is `bedrock`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

_ALGORITHM = "AWS4-HMAC-SHA256"
_UNSIGNED = frozenset({
    "baggage", "connection", "expect", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "traceparent", "tracestate", "trailer", "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id",
})
_REPLACED = frozenset({"host", "authorization", "x-amz-date", "x-amz-security-token"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class AwsCredentials:
    """An access key pair, with the session token of temporary credentials (None otherwise)."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        return f"AwsCredentials(access_key_id={self.access_key_id!r}, secret_access_key=***, session_token=***)"


def authority(scheme: str, hostname: str, port: int | None) -> str:
    """The `Host` value botocore signs for a URL: lowercased hostname (IPv6 in brackets), with
    `:port` unless the port is absent or the scheme's default."""
    host = hostname.lower()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS.get(scheme.lower()):
        host = f"{host}:{port}"
    return host


def sign(method: str, host: str, path: str, headers: Mapping[str, str], body: bytes, creds: AwsCredentials,
         region: str, service: str, now: datetime) -> list[tuple[str, str]]:
    """The SigV4 headers for this request, as (lowercase name, value) pairs to add to it.

    `path` is the wire path, possibly with `?query`; `headers` are the request's other headers
    (at least `content-type`); `now` is a UTC time (naive values are taken as UTC). Pure and
    deterministic: the same inputs always give the same headers.
    """
    moment = now.astimezone(UTC) if now.tzinfo is not None else now
    timestamp = moment.strftime("%Y%m%dT%H%M%SZ")
    date = timestamp[:8]
    added = [("x-amz-date", timestamp)]
    if creds.session_token:
        added.append(("x-amz-security-token", creds.session_token))

    signed: dict[str, list[str]] = {}
    for name, value in headers.items():
        lname = name.lower().strip()
        if lname not in _UNSIGNED and lname not in _REPLACED:
            signed.setdefault(lname, []).append(" ".join(value.split()))
    for name, value in added:
        signed[name] = [value]
    signed["host"] = [host]
    names = sorted(signed)
    canonical_headers = "".join(f"{n}:{','.join(signed[n])}\n" for n in names)
    signed_headers = ";".join(names)

    raw_path, _, query = path.partition("?")
    canonical_request = "\n".join([
        method.upper(), _canonical_uri(raw_path), _canonical_query(query), canonical_headers, signed_headers,
        hashlib.sha256(body).hexdigest(),
    ])
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join([
        _ALGORITHM, timestamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest(),
    ])
    key = _hmac(f"AWS4{creds.secret_access_key}".encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    added.append(("authorization", f"{_ALGORITHM} Credential={creds.access_key_id}/{scope}, "
                                   f"SignedHeaders={signed_headers}, Signature={signature}"))
    return added


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _canonical_uri(path: str) -> str:
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    normalized = "/" + "/".join(segments)
    if path.endswith("/") and segments:
        normalized += "/"
    return quote(normalized, safe="/~")


def _canonical_query(query: str) -> str:
    if not query:
        return ""
    pairs = []
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        pairs.append((key, value))
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))
