"""Child-process supervision for `interlock run` and `interlock extproc`.

Children run in their own process group (so a terminal's Ctrl-C reaches only the supervisor,
which then drains and stops them in order) and get SIGTERM if the supervisor dies
(PR_SET_PDEATHSIG), so no child outlives it. A child marked `restart` that exits is started
again: at once when it had run `stable_after` seconds, else after `backoff` seconds, doubling with
each failure in a row up to `max_backoff`; after `give_up_after` such failures in a row the
supervisor gives up on it (`check` returns it) instead of restarting it forever.

Ports. `port_problem` says whether this process could listen on an address and port now (the
start-up check of every port a gateway needs, before any child starts); `port_owned_by` whether
every socket listening there belongs to one process (so `ready` is printed only when this
gateway's own children answer, not another instance's on the same ports). Both read Linux's
view (`bind`, /proc/net/tcp{,6}, /proc/PID/fd).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("interlock.supervisor")
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec: SIGTERM when the parent dies (Linux's PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    restart: bool = True
    backoff: float = 1.0
    max_backoff: float = 30.0
    stable_after: float = 10.0
    give_up_after: int = 5
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    fast_failures: int = 0  # exits in a row, each within `stable_after` of its start
    exited_at: float | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, start_new_session=True,
                                     preexec_fn=die_with_parent)
        self.started_at = time.monotonic()
        self.exited_at = None
        log.info("started %s pid=%d", self.name, self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def restart_delay(self) -> float:
        """Seconds between noticing this child's exit and starting it again."""
        if not self.fast_failures:
            return 0.0
        return min(self.max_backoff, self.backoff * 2 ** (self.fast_failures - 1))


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
        """Restart dead restartable children (see the module docstring for when); return a dead
        child that is not restarted (not restartable, or failing at start-up `give_up_after` times
        in a row), if any."""
        now = time.monotonic()
        for c in self.children:
            if c.alive() or self.stopping or c.proc is None:
                continue
            code = c.proc.returncode
            if not c.restart:
                log.error("%s exited with status %s", c.name, code)
                return c
            if c.exited_at is None:  # first noticed now
                c.exited_at = now
                c.fast_failures = c.fast_failures + 1 if now - c.started_at < c.stable_after else 0
                if c.fast_failures >= c.give_up_after:
                    log.error("%s exited with status %s, %d times in a row within %.0f s of starting; giving up",
                              c.name, code, c.fast_failures, c.stable_after)
                    return c
            if now - c.exited_at < c.restart_delay():
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


# -- ports -------------------------------------------------------------------------------------------


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def port_problem(address: str, port: int) -> str | None:
    """Why this process could not listen on `address:port` now, None when it could. Binds the way
    the gateway's servers do (SO_REUSEADDR: a port in TIME_WAIT is free, one with a listener is not)."""
    try:
        with socket.socket(_family(address), socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return "in use (another gateway, or another program, listens there)"
        return e.strerror or str(e)
    return None


def _proc_address(hex_address: str) -> str:
    """An address as /proc/net/tcp{,6} writes it (32-bit words in host order) in text form."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def listening_inodes(address: str, port: int) -> set[int] | None:
    """Inodes of the sockets listening on `port` that answer connections to `address` (the same
    address, a wildcard, or any address when `address` is a wildcard); None when /proc cannot say."""
    try:
        wanted = ipaddress.ip_address(address)
    except ValueError:
        return None
    found: set[int] = set()
    readable = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A":  # 0A: LISTEN
                continue
            local, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) != port:
                continue
            addr = ipaddress.ip_address(_proc_address(local))
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            if addr.is_unspecified or wanted.is_unspecified or addr == wanted:
                found.add(int(fields[9]))
    return found if readable else None


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process `pid` holds open (empty when it cannot be read)."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return set()
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def port_owned_by(pid: int, address: str, port: int) -> bool:
    """True when something listens on `address:port` and every such socket is process `pid`'s:
    connections there reach that process and no other (another process sharing the port with
    SO_REUSEPORT fails this). Where /proc cannot say, a listener being there has to do."""
    inodes = listening_inodes(address, port)
    if inodes is None:
        return port_open(address, port)
    return bool(inodes) and inodes <= socket_inodes(pid)
