"""Integration fixtures: the real Envoy binary, ext_proc workers and the provider simulator, all
started as processes on free loopback ports by `interlock run` / `interlock simulate`.

Nothing here skips: a missing binary or package fails the test run.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc.cmd.supervisor import port_open, wait_until
from tests.conftest import ROOT, free_port, free_port_run
from tests.support.procs import descendants

TENANT_KEY = "sk-it-tenant"
LIMITED_KEY = "sk-it-limited"
PROVIDER_KEY = "sk-it-provider-secret"
AWS_KEY_ID = "AKIAINTEGRATIONTEST1"
AWS_SECRET = "integration/test/secret/key"
PROVIDER_ENV = {"IT_PROVIDER_KEY": PROVIDER_KEY, "IT_AWS_KEY_ID": AWS_KEY_ID, "IT_AWS_SECRET": AWS_SECRET}


@dataclass
class Proc:
    """A started process, its log file, and every PID it spawned (for the leak checks)."""

    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def descendants(self) -> list[int]:
        return descendants(self.proc.pid)[1:]

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode




def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    proc = subprocess.Popen([sys.executable, "-m", "extproc.cmd.cli", *args], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    return Proc(proc, log)


def wait_for_line(p: Proc, needle: str, timeout: float = 60) -> None:
    if not wait_until(lambda: needle in p.text() or p.proc.poll() is not None, timeout, 0.1) or needle not in p.text():
        raise AssertionError(f"{needle!r} not printed within {timeout}s; log:\n{p.text()[-4000:]}")


@dataclass
class Simulator:
    url: str
    port: int
    process: Proc
    gcp_key_file: Path

    def control(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def behave(self, model: str, **behaviour: Any) -> None:
        self.control("PUT", f"/_sim/models/{model}", behaviour)

    def requests(self) -> list[dict[str, Any]]:
        return list(self.control("GET", "/_sim/requests"))

    def reset(self) -> None:
        self.control("POST", "/_sim/reset")


@dataclass
class Gateway:
    url: str
    admin: str
    config_path: Path
    process: Proc
    extproc_ports: list[int] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def gateway_config(sim_port: int, port: int, admin: int, extproc: int, workers: int = 2,
                   max_request_bytes: int = 1048576) -> dict[str, Any]:
    sim = f"http://127.0.0.1:{sim_port}"
    return {
        "listen": {"address": "127.0.0.1", "port": port},
        "admin": {"address": "127.0.0.1", "port": admin},
        "metrics": {"address": "127.0.0.1", "port": free_port()},
        "rate_limit": {"address": "127.0.0.1", "port": free_port()},
        "extproc": {"address": "127.0.0.1", "port": extproc, "workers": workers},
        "limits": {"max_request_bytes": max_request_bytes},
        "providers": [
            {"name": "openai", "type": "openai", "endpoint": sim, "api_key_env": "IT_PROVIDER_KEY"},
            {"name": "anthropic", "type": "anthropic", "endpoint": sim, "api_key_env": "IT_PROVIDER_KEY"},
            {"name": "nowhere", "type": "openai", "endpoint": f"http://127.0.0.1:{free_port()}",
             "api_key_env": "IT_PROVIDER_KEY", "cluster": {"connect_timeout": "1s"}},
        ],
        "models": [
            {"name": "gpt-4o-mini", "provider": "openai", "upstream_model": "gpt-4o-mini-2024-07-18",
             "capabilities": ["tools", "images", "json"]},
            {"name": "claude-haiku-4-5", "provider": "anthropic", "upstream_model": "claude-haiku-4-5-20251001",
             "max_output_tokens": 8192, "capabilities": ["tools", "images", "json"]},
            {"name": "claude-no-tools", "provider": "anthropic", "upstream_model": "claude-haiku-4-5-20251001",
             "max_output_tokens": 1024},
            {"name": "unreachable-model", "provider": "nowhere"},
        ],
        "tenants": [
            {"name": "it", "api_key_sha256": [sha(TENANT_KEY)], "models": ["*"]},
            {"name": "limited", "api_key_sha256": [sha(LIMITED_KEY)], "models": ["gpt-4o-mini"]},
        ],
    }


@pytest.fixture(scope="session")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """One simulator for the session: accepts PROVIDER_KEY, the AWS pair below, and JWTs of a
    service account it was started with (its key file is `Simulator.gcp_key_file`)."""
    from simulator.gcp import make_service_account

    work = tmp_path_factory.mktemp("sim")
    port = free_port()
    key_file = work / "service-account.json"
    make_service_account(str(key_file), f"http://127.0.0.1:{port}/token")
    p = start_process(["simulate", "--port", str(port), "--api-key", PROVIDER_KEY, "--gcp-service-account",
                       str(key_file), "--aws-access-key-id", AWS_KEY_ID, "--aws-secret-access-key", AWS_SECRET],
                      work / "sim.log")
    try:
        wait_for_line(p, "listening", 30)
        yield Simulator(f"http://127.0.0.1:{port}", port, p, key_file)
    finally:
        p.stop(signal.SIGTERM)


def every_provider_config(sim: Simulator) -> dict[str, Any]:
    """Providers of every type, all on the simulator, and models on each."""
    url = sim.url
    key = {"api_key_env": "IT_PROVIDER_KEY"}
    return {
        "providers": [
            {"name": "openai", "type": "openai", "endpoint": url, **key},
            {"name": "azure", "type": "azure-openai", "endpoint": url, "api_version": "2024-10-21", **key},
            {"name": "anthropic", "type": "anthropic", "endpoint": url, **key},
            {"name": "gemini", "type": "gemini", "endpoint": url, **key},
            {"name": "vertex", "type": "vertex", "endpoint": url, "project": "interlock-sim", "location": "us-east5",
             "credentials_file": str(sim.gcp_key_file), "token_uri": f"{url}/token"},
            {"name": "bedrock", "type": "bedrock", "endpoint": url, "region": "us-east-1",
             "aws_access_key_id_env": "IT_AWS_KEY_ID", "aws_secret_access_key_env": "IT_AWS_SECRET"},
        ],
        "models": [
            {"name": name, "provider": provider, "upstream_model": upstream, "max_output_tokens": 1024,
             "capabilities": ["tools", "images", "json"]}
            for name, (provider, upstream) in {
                "gpt-4o-mini": ("openai", "gpt-4o-mini-2024-07-18"),
                "azure-gpt-4o": ("azure", "gpt4o-deployment"),
                "claude-haiku-4-5": ("anthropic", "claude-haiku-4-5-20251001"),
                "gemini-2.5-flash": ("gemini", "gemini-2.5-flash"),
                "vertex-gemini-pro": ("vertex", "gemini-2.5-pro"),
                "vertex-claude": ("vertex", "claude-sonnet-4-5@20250929"),
                "bedrock-claude-sonnet": ("bedrock", "anthropic.claude-sonnet-4-5-20250929-v1:0"),
            }.items()
        ] + [
            {"name": "text-embedding-3-small", "provider": "openai", "capabilities": ["embeddings"]},
            {"name": "azure-embedding", "provider": "azure", "upstream_model": "embed-deployment",
             "capabilities": ["embeddings"]},
            {"name": "gemini-embedding", "provider": "gemini", "upstream_model": "gemini-embedding-001",
             "capabilities": ["embeddings"]},
        ],
        "tenants": [{"name": "it", "api_key_sha256": [sha(TENANT_KEY)], "models": ["*"]}],
    }


# A fault test's provider is never ejected: each case's fault would take it out for the next.
NO_EJECTION = {"consecutive_5xx": 100000, "consecutive_gateway_failure": 100000}


def fault_providers(sim: Simulator, providers: dict[str, str], idle_s: float) -> list[dict[str, Any]]:
    """The simulator as each provider (name → type) of a fault test: `idle_s` is its cluster's
    idle timeout (how long a stall or hang lasts), never ejected (`NO_EJECTION`)."""
    return [{"name": name, "type": kind, "endpoint": sim.url, "api_key_env": "IT_PROVIDER_KEY",
             "cluster": {"idle_timeout": f"{idle_s:g}s", "outlier_detection": NO_EJECTION},
             **({"api_version": "2024-10-21"} if kind == "azure-openai" else {})}
            for name, kind in providers.items()]


def start_gateway(sim: Simulator, work: Path, workers: int = 2, config: dict[str, Any] | None = None) -> Gateway:
    port, admin = free_port(), free_port()
    extproc = free_port_run(workers)
    cfg = gateway_config(sim.port, port, admin, extproc, workers)
    if config is not None:
        cfg.update(config)
    path = work / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    p = start_process(["--log-level", os.environ.get("IT_LOG_LEVEL", "info"), "run", "-c", str(path),
                       "--workdir", str(work / "rendered"), "--drain-timeout", "3"],
                      work / "gateway.log", env=PROVIDER_ENV)
    wait_for_line(p, "ready: ", 90)
    return Gateway(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", path, p,
                   [extproc + i for i in range(workers)])


@contextmanager
def running_gateway(sim: Simulator, work: Path, config: dict[str, Any] | None = None,
                    workers: int = 2) -> Iterator[Gateway]:
    """`start_gateway`, stopped when the block ends (the body of a gateway fixture)."""
    gw = start_gateway(sim, work, workers, config)
    try:
        yield gw
    finally:
        gw.process.stop()


@pytest.fixture(scope="session")
def gateway(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(simulator, tmp_path_factory.mktemp("gw")) as gw:
        yield gw


@pytest.fixture(scope="session")
def providers_gateway(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(simulator, tmp_path_factory.mktemp("gw-providers"), every_provider_config(simulator)) as gw:
        yield gw


@pytest.fixture
def sim(simulator: Simulator) -> Iterator[Simulator]:
    simulator.reset()
    yield simulator
    simulator.reset()


def wait_port_closed(port: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not port_open("127.0.0.1", port):
            return True
        time.sleep(0.05)
    return False


HELLO_BODY: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}
