"""`extproc.cmd.run` and `extproc.cmd.supervisor`: the start-up port check, what `ready` waits for
(this instance's own processes answering), the drain (one admin call, then in-flight requests up
to the timeout), a stdout nobody reads, the stop flag, the simulator's credentials, crash loops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc.cmd import run
from extproc.cmd.run import (
    DEMO_AWS_ENV,
    DRAIN_CALLS,
    SIM_KEY,
    SIM_KEY_ENV,
    Port,
    PortsBusy,
    StopFlag,
    Stopped,
)
from extproc.cmd.supervisor import Child, Supervisor, port_owned_by, port_problem, wait_until
from extproc.config import load_text
from tests.conftest import free_port, free_port_run

CONFIG = """
listen: {address: 127.0.0.1, port: 12000}
admin: {address: 127.0.0.1, port: 12001}
metrics: {address: 127.0.0.1, port: 12002}
rate_limit: {address: 127.0.0.1, port: 12003, metrics_port: 12004}
extproc: {address: 127.0.0.1, port: 12010, workers: 2}
providers: [{name: openai, type: openai, api_key_env: OPENAI_API_KEY}]
models: [{name: gpt-4o-mini, provider: openai}]
tenants: [{name: t, api_key_sha256: ["%s"]}]
""" % ("0" * 64)


def listener(reuse_port: bool = False) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


# -- the start-up check -------------------------------------------------------------------------------

def test_every_port_of_the_pod_is_named() -> None:
    cfg = load_text(CONFIG)
    assert [(p.name, p.port) for p in run.pod_ports(cfg, envoy=True, simulator=True)] == [
        ("listen.port", 12000), ("admin.port", 12001), ("metrics.port", 12002), ("extproc.port", 12010),
        ("extproc.port + 1 (worker 1)", 12011), ("rate_limit.port", 12003), ("rate_limit.metrics_port", 12004),
        ("simulator (run --simulate, and the demo)", 18000)]
    # `interlock extproc`: no Envoy, no simulator.
    assert [p.name for p in run.pod_ports(cfg, envoy=False, simulator=False)] == [
        "metrics.port", "extproc.port", "extproc.port + 1 (worker 1)", "rate_limit.port", "rate_limit.metrics_port"]


def test_busy_ports_are_all_reported_and_free_ones_not() -> None:
    with listener() as taken:
        busy = taken.getsockname()[1]
        with pytest.raises(PortsBusy) as info:
            run.check_ports([Port("listen.port", "127.0.0.1", busy), Port("admin.port", "127.0.0.1", 0),
                             Port("metrics.port", "127.0.0.1", busy)])
    assert info.value.problems == [f"{name}: cannot listen on 127.0.0.1:{busy}: in use (another gateway, or another "
                                   "program, listens there)" for name in ("listen.port", "metrics.port")]


def test_port_problem() -> None:
    with listener() as taken:
        busy = taken.getsockname()[1]
        assert port_problem("127.0.0.1", busy) is not None
        assert port_problem("0.0.0.0", busy) is not None  # the wildcard overlaps it
    assert port_problem("127.0.0.1", busy) is None  # closed: free again (TIME_WAIT does not count)
    assert port_problem("192.0.2.1", 12000) == "Cannot assign requested address"


def test_a_run_on_a_busy_port_starts_nothing(tmp_path: Path) -> None:
    with listener() as taken:
        cfg = yaml.safe_load(CONFIG)
        for section in ("listen", "metrics", "rate_limit"):
            cfg[section]["port"] = free_port()
        cfg["rate_limit"]["metrics_port"] = free_port()
        cfg["extproc"]["port"] = free_port_run(2)
        cfg["admin"]["port"] = taken.getsockname()[1]
        (tmp_path / "gw.yaml").write_text(yaml.safe_dump(cfg))
        started: list[Any] = []
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Supervisor, "add", lambda self, child: started.append(child))
            with pytest.raises(PortsBusy) as info:
                run.run_gateway(str(tmp_path / "gw.yaml"), simulate=False, workers=None, workdir=str(tmp_path / "w"),
                                drain_timeout=1, log_level="info", envoy_log_level="warning")
    assert [p.split(":")[0] for p in info.value.problems] == ["admin.port"] and started == []


# -- `ready` means ready: this instance's processes answer ---------------------------------------------

@pytest.fixture
def child_listening() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Another process listening (SO_REUSEPORT) on a port it prints."""
    code = ("import socket, sys, time\n"
            "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)\n"
            "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); print(s.getsockname()[1], flush=True)\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, "0"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    yield proc, port
    proc.kill()
    proc.wait()


def test_a_port_is_owned_only_when_every_listener_there_is_the_processs(
        child_listening: tuple[subprocess.Popen[bytes], int]) -> None:
    proc, port = child_listening
    assert port_owned_by(proc.pid, "127.0.0.1", port)
    assert not port_owned_by(os.getpid(), "127.0.0.1", port)  # it answers there, not us
    # A second process sharing the port (SO_REUSEPORT, as a second Envoy would) takes part of the
    # connections: neither owns it.
    with socket.socket() as mine:
        mine.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        mine.bind(("127.0.0.1", port))
        mine.listen()
        assert not port_owned_by(proc.pid, "127.0.0.1", port)
        assert not port_owned_by(os.getpid(), "127.0.0.1", port)
    with listener() as mine:
        assert port_owned_by(os.getpid(), "127.0.0.1", mine.getsockname()[1])
        assert not port_owned_by(os.getpid(), "127.0.0.1", mine.getsockname()[1] + 1 if mine.getsockname()[1] < 65535
                                 else 1)


def test_await_start_fails_at_once_naming_a_child_that_exited() -> None:
    sup = Supervisor()
    dead = sup.add(Child("extproc-worker-0", [sys.executable, "-c", "raise SystemExit(3)"]))
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"extproc-worker-0 exited with status 3 while starting"):
        run.await_start("workers", lambda: False, [dead], StopFlag())
    assert time.monotonic() - started < 5 and dead.restarts == 0


def test_await_start_never_reports_ready_for_another_processs_port() -> None:
    """The worker is alive but the port it was to listen on is someone else's: not ready."""
    sup = Supervisor()
    worker = sup.add(Child("extproc-worker-0", [sys.executable, "-c", "import time; time.sleep(30)"]))
    try:
        with listener() as other:
            port = other.getsockname()[1]
            with pytest.raises(RuntimeError, match="did not become ready within 1 s"):
                run.await_start("the workers", lambda: run._owns(worker, "127.0.0.1", port), [worker], StopFlag(),
                                timeout=1)
    finally:
        sup.stop()


def test_a_stop_during_start_ends_the_wait() -> None:
    stop = StopFlag()
    threading.Timer(0.2, stop.requested.set).start()
    with pytest.raises(Stopped):
        run.await_start("Envoy", lambda: False, [], stop, timeout=10)


# -- signals and stdout ---------------------------------------------------------------------------------

def test_signals_only_set_the_stop_flag(caplog: pytest.LogCaptureFixture) -> None:
    stop = StopFlag()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stop.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: nothing is interrupted
        assert wait_until(stop.requested.is_set, 2) and stop.signal_name == "SIGINT"
        os.kill(os.getpid(), signal.SIGTERM)
        assert wait_until(lambda: "SIGTERM received again: already stopping" in caplog.text, 2)
        assert stop.signal_name == "SIGINT"
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def test_say_survives_a_stdout_nobody_reads() -> None:
    """`make run | tee` after Ctrl-C killed tee: printing must not raise, now or at exit."""
    code = ("import sys, time\n"
            "from extproc.cmd.run import say\n"
            "sys.stdin.readline()\n"  # the test closes the pipe's reader first
            "say('stopping: draining'); say('stopped')\n"
            "sys.stderr.write('still here\\n')\n")
    r, w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=w, stderr=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parents[4])
    os.close(w)
    os.close(r)  # nobody reads stdout any more
    _, err = proc.communicate(b"go\n", timeout=30)
    assert proc.returncode == 0 and err.decode() == "still here\n", err.decode()


# -- the drain --------------------------------------------------------------------------------------

class FakeAdmin:
    """Envoy's admin as the drain sees it: records calls; `active` requests in flight."""

    def __init__(self, active: list[int]) -> None:
        self.calls: list[tuple[str, str]] = []
        self.active = active
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                fake.calls.append(("POST", self.path))
                self._answer(b"OK\n")

            def do_GET(self) -> None:  # noqa: N802
                fake.calls.append(("GET", self.path))
                value = fake.active.pop(0) if len(fake.active) > 1 else fake.active[0]
                self._answer(f"http.interlock.downstream_rq_active: {value}\n".encode())

            def _answer(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_drain_stops_accepting_then_waits_for_in_flight_requests() -> None:
    admin = FakeAdmin([2, 2, 1, 0])
    try:
        assert run.drain(admin.url, 5) == 0
    finally:
        admin.close()
    # Readiness fails, then the listener drains: each call once, before any wait.
    assert admin.calls[:3] == list(DRAIN_CALLS) == [("POST", "/healthcheck/fail"),
                                                     ("POST", "/drain_listeners?graceful&inboundonly"),
                                                     ("POST", "/drain_listeners?inboundonly")]
    assert [c for c in admin.calls if c[0] == "POST"] == list(DRAIN_CALLS)
    assert len(admin.calls) == 7


def test_drain_gives_up_after_its_timeout(caplog: pytest.LogCaptureFixture) -> None:
    admin = FakeAdmin([3])
    clock = iter(float(t) for t in range(100))
    try:
        assert run.drain(admin.url, 2.5, clock=lambda: next(clock), sleep=lambda s: None) == 3
    finally:
        admin.close()
    assert "drain: 3 requests still in flight after 2 s; stopping anyway" in caplog.text


def test_drain_without_an_admin_returns() -> None:
    with listener() as closed:
        port = closed.getsockname()[1]
    assert run.drain(f"http://127.0.0.1:{port}", 5) == 0


# -- the simulator's credentials ---------------------------------------------------------------------

def test_simulate_gives_a_copied_demo_config_the_simulators_credentials() -> None:
    env: dict[str, str] = {}
    args = run.simulator_args(False, env)
    assert env == {SIM_KEY_ENV: SIM_KEY, **DEMO_AWS_ENV}
    assert args == ["--aws-access-key-id", DEMO_AWS_ENV["INTERLOCK_SIM_AWS_ACCESS_KEY_ID"],
                    "--aws-secret-access-key", DEMO_AWS_ENV["INTERLOCK_SIM_AWS_SECRET_ACCESS_KEY"]]
    # The demo accepts only its own key; values already set are kept and passed on.
    env = {SIM_KEY_ENV: "sk-mine", "INTERLOCK_SIM_AWS_ACCESS_KEY_ID": "AKIAMINE"}
    args = run.simulator_args(True, env)
    assert args[:4] == ["--api-key", "sk-mine", "--aws-access-key-id", "AKIAMINE"]


# -- crash loops --------------------------------------------------------------------------------------

def test_a_child_failing_at_start_is_restarted_with_backoff_then_given_up() -> None:
    sup = Supervisor()
    child = sup.add(Child("ratelimit", [sys.executable, "-c", "raise SystemExit(1)"], backoff=0.05,
                          give_up_after=3))
    starts = [time.monotonic()]
    given_up = None
    deadline = time.monotonic() + 10
    while given_up is None and time.monotonic() < deadline:
        before = child.restarts
        given_up = sup.check()
        if child.restarts != before:
            starts.append(time.monotonic())
        time.sleep(0.01)
    assert given_up is child and child.restarts == 2 and child.fast_failures == 3
    assert child.restart_delay() == pytest.approx(0.2)  # 0.05, 0.1, 0.2: doubling
    sup.stop()


def test_a_child_that_ran_long_is_restarted_at_once() -> None:
    child = Child("extproc-worker-0", [sys.executable, "-c", "pass"], stable_after=0.0)
    sup = Supervisor()
    sup.add(child)
    assert child.proc is not None
    child.proc.wait()
    assert sup.check() is None and child.restarts == 1 and child.fast_failures == 0
    sup.stop()
