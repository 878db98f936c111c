"""Fuzz every client API's body through the real Envoy: JSON shaped like the API with mutated
fields, JSON that is not an object of the API, and raw bytes that are not (quite) JSON.

Every answer: a status line, never a 5xx, a non-2xx in the client's error format with
`application/json`, no provider key or stack trace (see `harness.problems`).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import strategies as fs
from tests.fuzz.conftest import FuzzGateway
from tests.fuzz.harness import api_of, check_exchange, request_bytes
from tests.fuzz.profiles import fuzz

PATHS = list(fs.SKELETONS)


def post(gw: FuzzGateway, path: str, body: bytes) -> None:
    headers = [("authorization", f"Bearer {gw.key}"), ("content-type", "application/json")]
    if path == "/v1/messages":
        headers.append(("anthropic-version", "2023-06-01"))
    check_exchange(gw.port, request_bytes("POST", path, headers, body), api_of(path))


@pytest.mark.parametrize("path", PATHS)
@given(data=st.data())
@fuzz(1.0)
def test_shaped_bodies(fuzz_gateway: FuzzGateway, path: str, data: st.DataObject) -> None:
    """The API's own shape, with a few fields given wrong types, nulls, huge or odd values, deep
    nesting, unknown fields, or removed."""
    doc: Any = data.draw(fs.mutated(fs.SKELETONS[path]), label="body")
    post(fuzz_gateway, path, fs.encode(doc, ensure_ascii=data.draw(st.booleans(), label="ascii")))


@pytest.mark.parametrize("path", PATHS)
@given(data=st.data())
@fuzz(0.5)
def test_other_apis_bodies(fuzz_gateway: FuzzGateway, path: str, data: st.DataObject) -> None:
    """A body of another client API (mutated or not) on this API's path."""
    other = data.draw(st.sampled_from([p for p in PATHS if p != path]), label="shape of")
    post(fuzz_gateway, path, fs.encode(data.draw(fs.mutated(fs.SKELETONS[other], 1), label="body")))


@pytest.mark.parametrize("path", PATHS)
@given(data=st.data())
@fuzz(0.5)
def test_json_not_a_request(fuzz_gateway: FuzzGateway, path: str, data: st.DataObject) -> None:
    """JSON that is not a request object: scalars, arrays, objects of unknown fields, nesting."""
    post(fuzz_gateway, path, fs.encode(data.draw(fs.top_level_junk(), label="body")))


@pytest.mark.parametrize("path", PATHS)
@given(data=st.data())
@fuzz(1.0)
def test_raw_bytes(fuzz_gateway: FuzzGateway, path: str, data: st.DataObject) -> None:
    """Bytes that are not valid JSON of the API: truncated, BOMs, UTF-16/32, invalid UTF-8,
    duplicate keys, NaN and other non-JSON literals, random bytes."""
    post(fuzz_gateway, path, data.draw(fs.raw_body(fs.SKELETONS[path]), label="body"))
