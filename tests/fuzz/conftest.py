"""The fuzz suite's gateway and Hypothesis profiles.

One simulator and one gateway (the real Envoy, its ext_proc workers and rate-limit process, as
`interlock run` starts them) serve the whole fuzz session, built with the integration helpers.
Every model is served by the simulator with its default behaviour (every request answered at
once, no scripted errors), so any 5xx an answer carries is the gateway's own fault.

The Hypothesis profiles are in `tests/fuzz/profiles.py` (loaded here, before any test module).
"""

from __future__ import annotations

import contextlib
import resource
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fuzz import profiles  # registers and loads the Hypothesis profile
from tests.integration.conftest import (
    AWS_KEY_ID,
    AWS_SECRET,
    PROVIDER_KEY,
    TENANT_KEY,
    Gateway,
    Simulator,
    every_provider_config,
    start_gateway,
    start_process,
    wait_for_line,
)
from tests.support.ports import free_port

SIMULATOR_DATA_LIMIT = 512 << 20
GATEWAY_DATA_LIMIT = 3 << 30
"""Memory caps (RLIMIT_DATA) on the fuzzed processes: a request that makes one allocate without
bound (today `"dimensions": 2**63` reaches the simulator, which builds the vector) fails that
request instead of taking the machine down."""


def limit_memory(pids: list[int], limit: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            resource.prlimit(pid, resource.RLIMIT_DATA, (limit, limit))


class FuzzGateway:
    """The session's gateway. Not a dataclass: Hypothesis prints the arguments of every failing
    example, and this stays one short line."""

    def __init__(self, gateway: Gateway, simulator: Simulator, port: int, key: str = TENANT_KEY) -> None:
        self.gateway = gateway
        self.simulator = simulator
        self.port = port
        self.key = key

    def __repr__(self) -> str:
        return f"FuzzGateway(port={self.port})"


def fuzz_config(sim: Simulator) -> dict[str, Any]:
    """Every provider type on the simulator, its embedding models, and one route over several
    providers (the route code path); no rate limits (no limit to hit by volume).

    Outlier detection never ejects a provider here: an input that makes one answer 5xx (a
    failure the suite reports) must not turn the rest of the session into 503s."""
    cfg: dict[str, Any] = dict(every_provider_config(sim))
    for provider in cfg["providers"]:
        provider["cluster"] = {"outlier_detection": {"max_ejection_percent": 0}}
    cfg["routes"] = [{"name": "auto", "candidates": ["gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash",
                                                     "bedrock-claude-sonnet"],
                      "policy": {"kind": "round_robin"}}]
    return cfg


@pytest.fixture(scope="session")
def fuzz_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    from simulator.gcp import make_service_account

    work = tmp_path_factory.mktemp("fuzz-sim")
    port = free_port()
    key_file = work / "service-account.json"
    make_service_account(str(key_file), f"http://127.0.0.1:{port}/token")
    p = start_process(["simulate", "--port", str(port), "--api-key", PROVIDER_KEY, "--gcp-service-account",
                       str(key_file), "--aws-access-key-id", AWS_KEY_ID, "--aws-secret-access-key", AWS_SECRET],
                      work / "sim.log")
    try:
        wait_for_line(p, "listening", 30)
        limit_memory([p.proc.pid], SIMULATOR_DATA_LIMIT)
        yield Simulator(f"http://127.0.0.1:{port}", port, p, key_file)
    finally:
        p.stop(signal.SIGTERM)


@pytest.fixture(scope="session")
def fuzz_gateway(fuzz_simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzGateway]:
    work: Path = tmp_path_factory.mktemp("fuzz-gw")
    gw = start_gateway(fuzz_simulator, work, workers=2, config=fuzz_config(fuzz_simulator))
    # Envoy, the supervisor, its workers (and any it restarts: limits are inherited), the RLS.
    limit_memory([gw.process.proc.pid, *gw.process.descendants()], GATEWAY_DATA_LIMIT)
    try:
        yield FuzzGateway(gw, fuzz_simulator, int(gw.url.rsplit(":", 1)[1]))
    finally:
        gw.process.stop()



def _share(item: pytest.Item) -> float:
    inner = getattr(getattr(getattr(item, "function", None), "hypothesis", None), "inner_test", None)
    return float(getattr(inner, "_fuzz_share", 0.0))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Sum the shares of the selected fuzz tests: a campaign splits its time by them."""
    profiles.TOTAL_SHARE[0] = sum(_share(item) for item in session.items)
