"""A pool's DNS name → its endpoints (`ip:port`, sorted), re-resolved by the scraper.

With `dns_server` the scraper asks that server itself (an A query through dnspython's asyncio
resolver, no search list); without it the system resolver (`getaddrinfo`: /etc/resolv.conf and
the search list, as Envoy's c-ares resolver does). Envoy's own cluster resolves the same name
through the same server (`extproc.envoyconf.pools`), so both see the same addresses.
"""

from __future__ import annotations

import asyncio
import socket

import dns.asyncresolver
import dns.exception
import dns.resolver


class DnsError(OSError):
    """The name could not be resolved (no answer from the server, an error code, a timeout)."""


async def resolve(name: str, port: int, server: tuple[str, int] | None = None, timeout: float = 2.0) -> list[str]:
    """The endpoints `ip:port` of `name`, sorted: none for a name that does not exist or has no A
    record. DnsError (an OSError) when it cannot be resolved."""
    if server is None:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(name, port, family=socket.AF_INET,
                                                            type=socket.SOCK_STREAM), timeout)
        except (TimeoutError, OSError) as e:
            raise DnsError(f"cannot resolve {name}: {e}") from None
        addresses = {str(info[4][0]) for info in infos}
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [server[0]]
        resolver.port = server[1]
        resolver.lifetime = timeout
        try:
            answer = await resolver.resolve(name.rstrip(".") + ".", "A", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as e:
            raise DnsError(f"no answer from {server[0]}:{server[1]} for {name}: {e}") from None
        addresses = {rr.address for rr in answer}
    return sorted(f"{a}:{port}" for a in addresses)
