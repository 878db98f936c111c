"""Health endpoints on the listener and the drain on stop, through the real Envoy.

Liveness (`/health/live`) is Envoy answering; readiness (`/health/ready`, `/health`) needs an
ext_proc worker and the rate-limit process passing Envoy's health checks, and fails once a drain
has begun (`/healthcheck/fail` on the admin port). A drain stops the listener accepting while the
requests in flight finish.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from extproc.cmd.run import envoy_binary
from extproc.cmd.supervisor import port_open, wait_until
from extproc.config import load_text
from extproc.envoyconf.render import render_files
from tests.conftest import free_port, free_port_run
from tests.integration.conftest import (
    HELLO_BODY,
    TENANT_KEY,
    Proc,
    Simulator,
    gateway_config,
    start_gateway,
    start_process,
    wait_for_line,
)


def status(url: str) -> int | None:
    """The status of a GET on a new connection; None when the connection is refused."""
    try:
        return httpx.get(url, timeout=5, headers={"connection": "close"}).status_code
    except httpx.ConnectError:
        return None


def test_readiness_follows_the_worker_and_the_rate_limit_process(simulator: Simulator, tmp_path: Path) -> None:
    """Envoy alone is live but not ready; a worker and the rate-limit process make it ready; the
    rate-limit process dying, or a drain beginning, makes it not ready; liveness stays."""
    port, admin = free_port(), free_port()
    raw = gateway_config(simulator.port, port, admin, free_port_run(1), workers=1)
    cfg_path = tmp_path / "gateway.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    (tmp_path / "envoy.yaml").write_text(render_files(load_text(cfg_path.read_text()), str(tmp_path),
                                                      static=True)["envoy.yaml"])
    envoy = subprocess.Popen([envoy_binary(), "-c", str(tmp_path / "envoy.yaml"), "--disable-hot-restart",
                              "--log-level", "error"], start_new_session=True)
    procs: list[Proc] = []
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: port_open("127.0.0.1", port), 30)
        live = httpx.get(base + "/health/live", timeout=5)
        assert live.status_code == 200 and live.headers["x-request-id"]
        for path in ("/health/ready", "/health"):
            assert status(base + path) == 503, path  # no worker, no rate-limit process
        procs.append(start_process(["ratelimit", "-c", str(cfg_path)], tmp_path / "ratelimit.log"))
        procs.append(start_process(["extproc", "-c", str(cfg_path), "--single"], tmp_path / "worker.log",
                                   env={"IT_PROVIDER_KEY": "unused"}))
        wait_for_line(procs[0], "rate limit service on", 30)
        # Envoy's gRPC health checks run every 2 s.
        assert wait_until(lambda: status(base + "/health/ready") == 200, 15, 0.2)
        assert status(base + "/health") == 200
        # The first step of a drain: readiness fails at once, liveness stays.
        httpx.post(f"http://127.0.0.1:{admin}/healthcheck/fail", timeout=5)
        assert status(base + "/health/ready") == 503 and status(base + "/health/live") == 200
        httpx.post(f"http://127.0.0.1:{admin}/healthcheck/ok", timeout=5)
        assert status(base + "/health/ready") == 200
        procs[0].proc.send_signal(signal.SIGKILL)  # the rate-limit process dies
        assert wait_until(lambda: status(base + "/health/ready") == 503, 10, 0.2)
        assert status(base + "/health/live") == 200
    finally:
        for p in procs:
            p.stop(signal.SIGTERM)
        envoy.terminate()
        envoy.wait(10)


def test_ctrl_c_stops_accepting_while_the_stream_in_flight_finishes(simulator: Simulator, tmp_path: Path) -> None:
    """A stream is running when Ctrl-C begins the drain: the listener stops taking new connections
    within Envoy's drain time (1 s) while the stream is still running, and the stream ends
    complete; then everything stops."""
    gw = start_gateway(simulator, tmp_path)
    port = int(gw.url.rsplit(":", 1)[1])
    simulator.behave("gpt-4o-mini-2024-07-18", tokens_per_s=6, output_tokens=14)  # about 2.3 s
    lines: list[str] = []
    finished: list[float] = []

    def stream() -> None:
        body: dict[str, Any] = {**HELLO_BODY, "stream": True}
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=20,
                          headers={"authorization": f"Bearer {TENANT_KEY}"}) as r:
            for line in r.iter_lines():
                if line:
                    lines.append(line)
        finished.append(time.monotonic())

    worker = threading.Thread(target=stream)
    try:
        worker.start()
        assert wait_until(lambda: len(lines) >= 2, 10, 0.02), lines  # the stream is under way
        gw.process.proc.send_signal(signal.SIGINT)
        refused_by = time.monotonic() + 2.5
        assert wait_until(lambda: not port_open("127.0.0.1", port), 2.5, 0.05), "still accepting connections"
        assert time.monotonic() < refused_by and not finished, "the listener closed only once the stream ended"
        worker.join(15)
        assert finished and lines[-1] == "data: [DONE]", lines[-3:]
        assert gw.process.proc.wait(15) == 0
    finally:
        simulator.reset()
        gw.process.stop()
        if worker.is_alive():
            worker.join(5)
