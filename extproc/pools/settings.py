"""The settings of a `type: pool` provider (`PoolSettings`), validated with every problem named
by its path, as the rest of `extproc.config` does."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from extproc.config.model import PoolSettings
from extproc.config.reader import _join, _Reader
from routing.pool import PICKERS

# The keys a pool provider takes besides the common ones (`extproc.config.providers.TYPE_SETTINGS`).
POOL_SETTINGS = ("endpoints", "dns", "dns_server", "dns_refresh", "metrics", "scrape_interval_ms", "picker", "epp",
                 "gpu_hour_usd")
METRICS_FLAVORS = ("vllm", "sglang")
_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                   r"[A-Za-z0-9])?)*\.?$")


def scrape_timeout(interval: float) -> float:
    """How long one scrape may take: four intervals, within 0.2–2 s."""
    return min(2.0, max(0.2, 4 * interval))


def stale_after(interval: float) -> float:
    """Data older than this scores as saturated: four intervals, at least 0.2 s."""
    return max(0.2, 4 * interval)


def ip_port(text: Any) -> tuple[str, int] | None:
    """`"10.0.0.7:8000"` → ("10.0.0.7", 8000); an IPv6 address in brackets; None if not that."""
    if not isinstance(text, str):
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return host, int(port)


def name_port(text: Any) -> tuple[str, int] | None:
    """`"vllm.ns.svc.cluster.local:8000"` → (name, 8000); None if not a DNS name and port."""
    if not isinstance(text, str):
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not _NAME.match(host):
        return None
    return host, int(port)


def parse_pool(r: _Reader, d: dict[str, Any], path: str) -> PoolSettings:
    """A pool provider's settings from its mapping `d` (already checked for unknown keys)."""
    base = PoolSettings()
    endpoints: list[str] = []
    for i, e in enumerate(r.seq(d, "endpoints", path)):
        if ip_port(e) is None:
            r.fail(f"{_join(path, 'endpoints')}[{i}]", "must be an IP address and port (10.0.0.7:8000); a name "
                                                        "goes in dns")
        elif e in endpoints:
            r.fail(f"{_join(path, 'endpoints')}[{i}]", f"duplicate endpoint {e}")
        else:
            endpoints.append(e)
    dns = r.string(d, "dns", path)
    if dns is not None and name_port(dns) is None:
        r.fail(_join(path, "dns"), "must be a DNS name and port (vllm.inference.svc.cluster.local:8000)")
        dns = None
    if "endpoints" in d and "dns" in d:
        r.fail(path, "endpoints and dns are exclusive: give one")
    elif "endpoints" not in d and "dns" not in d:
        r.fail(path, "needs endpoints (a list of ip:port) or dns (name:port)")
    elif "endpoints" in d and not d["endpoints"]:
        r.fail(_join(path, "endpoints"), "must list at least one ip:port")
    dns_server = r.string(d, "dns_server", path)
    if dns_server is not None:
        if "dns" not in d:
            r.fail(_join(path, "dns_server"), "only with dns")
        if ip_port(dns_server) is None:
            r.fail(_join(path, "dns_server"), "must be an IP address and port (10.96.0.10:53)")
            dns_server = None
    if "dns_refresh" in d and "dns" not in d:
        r.fail(_join(path, "dns_refresh"), "only with dns")
    dns_refresh = r.duration(d, "dns_refresh", path, base.dns_refresh, allow_zero=False)
    metrics = r.string(d, "metrics", path, default=base.metrics, choices=METRICS_FLAVORS) or base.metrics
    interval_ms = r.number(d, "scrape_interval_ms", path, base.scrape_interval * 1000, integer=True, minimum=10,
                           maximum=60000)
    picker = r.string(d, "picker", path, default=base.picker, choices=PICKERS) or base.picker
    epp = r.string(d, "epp", path)
    if epp is not None and ip_port(epp) is None and name_port(epp) is None:
        r.fail(_join(path, "epp"), "must be host:port of the endpoint picker's gRPC (ext_proc) service")
        epp = None
    if "epp" in d and "picker" in d:
        r.fail(_join(path, "picker"), "not with epp: the external endpoint picker picks")
    gpu = r.number(d, "gpu_hour_usd", path, -1.0, minimum=0)
    return PoolSettings(endpoints=tuple(endpoints), dns=dns, dns_server=dns_server, dns_refresh=float(dns_refresh),
                        metrics=metrics, scrape_interval=interval_ms / 1000, picker=picker, epp=epp,
                        gpu_hour_usd=None if gpu is None or gpu < 0 else float(gpu))
