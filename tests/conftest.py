"""Shared test helpers: repository paths, free loopback ports, rate-limit requests as Envoy sends them."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.service.ratelimit.v3 import rls_pb2

from tests.support.ports import free_port, free_port_run  # noqa: F401 (re-exported for tests)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture
def root() -> Path:
    return ROOT


def rls_request(*descriptors: tuple[dict[str, str], int | None], hits_addend: int = 0) -> rls_pb2.RateLimitRequest:
    """A `ShouldRateLimit` request of domain `interlock`: each descriptor's entries and its own
    `hits_addend` (None: unset)."""
    req = rls_pb2.RateLimitRequest(domain="interlock", hits_addend=hits_addend)
    for entries, addend in descriptors:
        d = req.descriptors.add()
        for k, v in entries.items():
            d.entries.add(key=k, value=v)
        if addend is not None:
            d.hits_addend.value = addend
    return req
