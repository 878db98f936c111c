"""Stream-done true-ups from the ext_proc workers to the pod's rate-limit process, off the request path.

The admission stays Envoy's rate-limit filter's call to our service (`scheme`). The true-up does
not go back through Envoy: the service names what it reserved in a response header the router
stage reads and removes (`RESERVATION_HEADER`, `tokens=<marker>;usd=<marker>`, the markers of
`scheme`), and when the router stage's call ends — answered, failed, or the client gone — its
worker sends what the request spent (the usage it last reported, `extproc.server`) to the
rate-limit process in a UDP datagram on loopback, to the rate-limit port's number (UDP and TCP
ports are apart). The rate-limit process applies it as it applied Envoy's stream-done call.

Measured (wrk, 32 connections, 2 KB OpenAI → Anthropic requests, a tenant with limits against one
without on the same gateway, 3 × 4 s runs alternating with the code before; the shared 2-core
machine's load moved during the run): the rate-limit process gets half the gRPC calls (16,447
against 29,351 for about the same requests); the CPU the limits add per request went from
335–609 µs to 291–537 (each run pair 45–70 µs less: Envoy's share −29 to −43 µs, the rate-limit
process's −6 to −48; the worker's +2 to +15, reading the header and sending the line). The
admission call itself is most of what remains.

Wire: one or more lines per datagram (at most `MAX_DATAGRAM` bytes), each
`<tenant>\\t<model>\\t<priority>\\t<unit>\\t<marker>\\t<actual ticks>\\n` in UTF-8 (an empty model
or priority: absent). A line that does not parse is counted and skipped. A datagram lost (the
process down, its socket buffer full) leaves the reservation standing: the tenant is charged its
reservation, never less than it spent.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping

from extproc.limits.limiter import Reservation, Settlement
from extproc.limits.model import KEY_FIELDS, Unit

log = logging.getLogger("interlock.limits")

RESERVATION_HEADER = "x-interlock-ratelimit-reservation"
MAX_DATAGRAM = 8192
# Lines wait for the end of the event loop's turn only, to share a datagram with the turn's others.
# A loopback `sendto` costs the worker tens of µs (the receiver's side of UDP runs in the sender's
# system call; ~30 µs per request at ~750 requests/s per worker, ~13 µs when flushed every 10 ms),
# but a later flush lets a client's next request be admitted before its last one was trued up:
# with 50 ms, a tenant whose reservations take a whole window was refused its second request in a
# row (tests/integration/test_admission.py).
TRUED_UP = (Unit.TOKENS, Unit.USD)


def header_value(markers: Mapping[Unit, str]) -> str:
    """The reservation header's value: `unit=marker` for each unit trued up, `;`-separated."""
    return ";".join(f"{u.value}={markers[u]}" for u in TRUED_UP if u in markers)


def parse_header(value: str) -> dict[str, str]:
    """{unit: marker} from the reservation header (parts that do not parse are left out)."""
    out = {}
    for part in value.split(";"):
        unit, sep, marker = part.partition("=")
        if sep and unit in ("tokens", "usd") and marker:
            out[unit] = marker
    return out


def line(fields: Mapping[str, str], unit: str, marker: str, actual: str) -> bytes:
    """One true-up line (`fields`: tenant, model, priority; tabs and newlines cannot occur in them:
    config names and header-safe values)."""
    return "\t".join((fields.get("tenant", ""), fields.get("model", ""), fields.get("priority", ""), unit, marker,
                      actual)).encode() + b"\n"


def decode(datagram: bytes) -> tuple[list[Settlement], int]:
    """The settlements of a datagram, and how many of its lines did not parse."""
    settlements, bad = [], 0
    for raw in datagram.split(b"\n"):
        if not raw:
            continue
        try:
            parts = raw.decode().split("\t")
            if len(parts) != 6 or not parts[0] or not parts[5].isdigit():
                raise ValueError(raw)
            tenant, model, priority, unit, marker, actual = parts
            fields = {k: v for k, v in zip(KEY_FIELDS, (tenant, model, priority), strict=True) if v}
            settlements.append(Settlement(fields, Unit(unit), Reservation.parse(marker), int(actual)))
        except (ValueError, UnicodeDecodeError):
            bad += 1
    return settlements, bad


class Sender:
    """A worker's sender: lines queued during one turn of the event loop go in as few datagrams as
    fit, after the turn (`flush`). Never raises; `sent` / `dropped` count lines."""

    def __init__(self, address: str, port: int) -> None:
        self.to = ("127.0.0.1" if address in ("0.0.0.0", "") else address, port)
        self._sock: socket.socket | None = None
        self._lines: list[bytes] = []
        self._scheduled = False
        self.sent = 0
        self.dropped = 0
        self._warned = False

    def send(self, lines: list[bytes]) -> None:
        self._lines.extend(lines)
        if self._scheduled:
            return
        try:
            asyncio.get_running_loop().call_soon(self.flush)
            self._scheduled = True
        except RuntimeError:  # no loop (a test, a shutdown): now
            self.flush()

    def flush(self) -> None:
        self._scheduled = False
        lines, self._lines = self._lines, []
        while lines:
            size, n = 0, 0
            while n < len(lines) and (n == 0 or size + len(lines[n]) <= MAX_DATAGRAM):
                size += len(lines[n])
                n += 1
            batch, lines = lines[:n], lines[n:]
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_INET6 if ":" in self.to[0] else socket.AF_INET,
                                               socket.SOCK_DGRAM)
                    self._sock.setblocking(False)
                self._sock.sendto(b"".join(batch), self.to)
                self.sent += len(batch)
            except OSError as e:
                self.dropped += len(batch)
                if not self._warned:
                    self._warned = True
                    log.warning("rate-limit true-ups to %s:%d not sent (%s); reservations stand until they are "
                                "(logged once)", *self.to, e)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Receiver(asyncio.DatagramProtocol):
    """The rate-limit process's side: each datagram's settlements go to `settle` (the service's)."""

    def __init__(self, settle: object) -> None:
        self._settle = settle

    def datagram_received(self, data: bytes, addr: object) -> None:
        self._settle(data)  # type: ignore[operator]
