"""Shared test helpers: repository paths and free loopback ports."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc.supervisor import free_port, free_port_run  # noqa: F401 (re-exported for tests)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture
def root() -> Path:
    return ROOT
