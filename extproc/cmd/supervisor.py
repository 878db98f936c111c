"""Child-process supervision for `interlock run` and `interlock extproc`.

Children run in their own process group (so a terminal's Ctrl-C reaches only the supervisor,
which then drains and stops them in order) and get SIGTERM if the supervisor dies
(PR_SET_PDEATHSIG), so no child outlives it. A child marked `restart` that exits is started
again, at most once per `backoff` seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("interlock.supervisor")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    restart: bool = True
    backoff: float = 1.0
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        self.started_at = time.monotonic()
        log.info("started %s pid=%d", self.name, self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Supervisor:
    children: list[Child] = field(default_factory=list)
    stopping: bool = False

    @property
    def restarts(self) -> int:
        return sum(c.restarts for c in self.children)

    def add(self, child: Child) -> Child:
        self.children.append(child)
        child.start()
        return child

    def check(self) -> Child | None:
        """Restart dead restartable children; return a dead non-restartable one, if any."""
        for c in self.children:
            if c.alive() or self.stopping or c.proc is None:
                continue
            code = c.proc.returncode
            if not c.restart:
                log.error("%s exited with status %s", c.name, code)
                return c
            if time.monotonic() - c.started_at < c.backoff:
                continue
            c.restarts += 1
            log.warning("%s exited with status %s; restarting (restart #%d)", c.name, code, c.restarts)
            c.start()
        return None

    def stop(self, children: list[Child] | None = None, timeout: float = 5.0) -> None:
        """SIGTERM the children (all by default), wait up to `timeout`, then SIGKILL."""
        self.stopping = True
        targets = [c for c in (children if children is not None else self.children) if c.alive()]
        for c in targets:
            with contextlib.suppress(ProcessLookupError):
                assert c.proc is not None
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for c in targets:
            assert c.proc is not None
            try:
                c.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", c.name, timeout)
                c.proc.kill()
                c.proc.wait()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str, method: str = "GET") -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=1) as r:
            return 200 <= r.status < 300
    except OSError:
        return False


