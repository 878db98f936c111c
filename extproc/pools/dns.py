"""A pool's DNS name → its endpoints (`ip:port`, sorted), re-resolved by the scraper.

With `dns_server` the scraper asks that server itself (one A query over UDP, `query`/`answer`
below, sans-IO, RFC 1035 §4); without it the system resolver (`getaddrinfo`, /etc/resolv.conf and
the search list, as Envoy's cares resolver does). Envoy's own cluster resolves the same name
through the same server (`extproc.envoyconf.pools`), so both see the same addresses.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct


class DnsError(OSError):
    """The name could not be resolved (no answer, an error code, a timeout)."""


def query(name: str, qid: int) -> bytes:
    """An A query for `name`, recursion desired."""
    labels = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.rstrip(".").split(".") if p)
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack(">HH", 1, 1)


def _skip_name(data: bytes, i: int) -> int:
    while True:
        n = data[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += n + 1


def answer(data: bytes, qid: int) -> list[str]:
    """The IPv4 addresses of the A records in a reply to query `qid`. DnsError on an error code;
    an NXDOMAIN or an empty answer is no addresses."""
    if len(data) < 12:
        raise DnsError("short DNS reply")
    rid, flags, qd, an, _, _ = struct.unpack_from(">HHHHHH", data, 0)
    if rid != qid:
        raise DnsError("DNS reply to another query")
    rcode = flags & 0xF
    if rcode == 3:
        return []
    if rcode:
        raise DnsError(f"DNS error code {rcode}")
    i = 12
    for _ in range(qd):
        i = _skip_name(data, i) + 4
    out = []
    for _ in range(an):
        i = _skip_name(data, i)
        rtype, _, _, length = struct.unpack_from(">HHIH", data, i)
        i += 10
        if rtype == 1 and length == 4:
            out.append(socket.inet_ntoa(data[i:i + 4]))
        i += length
    return out


class _Once(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def resolve(name: str, port: int, server: tuple[str, int] | None = None, timeout: float = 2.0) -> list[str]:
    """The endpoints `ip:port` of `name`, sorted. DnsError (an OSError) when it cannot be resolved."""
    if server is None:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(name, port, family=socket.AF_INET,
                                                            type=socket.SOCK_STREAM), timeout)
        except (TimeoutError, OSError) as e:
            raise DnsError(f"cannot resolve {name}: {e}") from None
        addresses = {str(info[4][0]) for info in infos}
    else:
        qid = int.from_bytes(os.urandom(2), "big")
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(_Once, remote_addr=server)
        try:
            transport.sendto(query(name, qid))
            try:
                data = await asyncio.wait_for(proto.reply, timeout)
            except TimeoutError:
                raise DnsError(f"no answer from {server[0]}:{server[1]} for {name}") from None
        finally:
            transport.close()
        addresses = set(answer(data, qid))
    return sorted(f"{a}:{port}" for a in addresses)
