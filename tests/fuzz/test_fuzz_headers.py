"""Fuzz the request headers of every client API through the real Envoy: auth forms, content
types, odd header names and values, long values, many headers, the gateway's own `x-interlock-*`
headers and Envoy's `x-envoy-*` with junk. The body is a valid request of the API.

Every answer: a status line, never a 5xx, a non-2xx in the client's error format with
`application/json`, no provider key or stack trace (see `harness.problems`).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import strategies as fs
from tests.fuzz.conftest import FuzzGateway
from tests.fuzz.harness import api_of, check_exchange, request_bytes
from tests.fuzz.profiles import fuzz

PATHS = list(fs.SKELETONS)


@pytest.mark.parametrize("path", PATHS)
@given(data=st.data())
@fuzz(1.0)
def test_headers(fuzz_gateway: FuzzGateway, path: str, data: st.DataObject) -> None:
    body = fs.encode(data.draw(fs.SKELETONS[path], label="body"))
    headers = data.draw(fs.header_sets(fuzz_gateway.key), label="headers")
    check_exchange(fuzz_gateway.port, request_bytes("POST", path, headers, body), api_of(path))


@pytest.mark.parametrize("path", PATHS)
@given(data=st.data())
@fuzz(0.5)
def test_gateway_headers_from_clients(fuzz_gateway: FuzzGateway, path: str, data: st.DataObject) -> None:
    """The gateway's own headers (which its stages and Envoy's config read) sent by a client with
    any value, once or repeated, on an otherwise valid request."""
    name = data.draw(st.sampled_from(fs.INTERLOCK_HEADERS), label="header")
    values = data.draw(st.lists(fs.header_values, min_size=1, max_size=3), label="values")
    body = fs.encode(fs.VALID[path])
    headers: list[tuple[str | bytes, str | bytes]] = [("authorization", f"Bearer {fuzz_gateway.key}"),
                                                      ("content-type", "application/json")]
    headers += [(name, v) for v in values]
    check_exchange(fuzz_gateway.port, request_bytes("POST", path, headers, body), api_of(path))
