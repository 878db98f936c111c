"""Free loopback ports for tests and benchmarks (not for the product: the pod's ports come from
its config)."""

from __future__ import annotations

import random
import socket

_handed_out: set[int] = set()
_rng = random.Random()  # its own: drawing ports never shifts a seeded global sequence


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux's default when unreadable)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_run(n: int) -> int:
    """A base port such that base..base+n-1 are free on 127.0.0.1 right now (worker i uses base + i)
    and none was handed out before by this process. Drawn below the ephemeral range when there is
    room (20000 up to it), so no outgoing connection takes one before its server binds; else
    from the kernel's own choice."""
    low, high = 20000, _ephemeral_low() - n
    for _ in range(500):
        if high - low > 1000:
            base = _rng.randint(low, high)
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                base = int(s.getsockname()[1])
        ports = range(base, base + n)
        if base + n > 65536 or any(p in _handed_out for p in ports) or not all(_bindable(p) for p in ports):
            continue
        _handed_out.update(ports)
        return base
    raise RuntimeError("no run of free ports found")


def free_port() -> int:
    """One port as `free_port_run(1)` gives it."""
    return free_port_run(1)
