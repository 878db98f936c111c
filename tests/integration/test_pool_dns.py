"""A pool named by DNS follows its records: a real resolver (Debian's dnsmasq on a loopback port)
serves the name's A records, the gateway's scraper and Envoy's cluster both ask it, and when the
records change (SIGHUP re-reads its hosts file) the requests move to the new servers."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from extproc.pools import dns
from tests.conftest import free_port
from tests.integration.conftest import TENANT_KEY, Gateway, sha, start_gateway
from tests.integration.pool_standin import StandIns
from tests.integration.test_pool import ask, wait_metric

NAME = "vllm.pool.interlock.test"


@pytest.fixture
def resolver(tmp_path: Path) -> Iterator[tuple[int, Path, subprocess.Popen[bytes]]]:
    binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.71 {NAME}\n127.0.0.72 {NAME}\n")
    port = free_port()
    proc = subprocess.Popen([binary, "--no-daemon", "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}", "--local=/interlock.test/",
                             f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces", "--user=root",
                             f"--pid-file={tmp_path / 'dnsmasq.pid'}", "--local-ttl=0", "--log-facility=-"],
                            stdout=(tmp_path / "dnsmasq.log").open("wb"), stderr=subprocess.STDOUT)
    try:
        time.sleep(0.2)
        assert proc.poll() is None, (tmp_path / "dnsmasq.log").read_text()
        yield port, hosts, proc
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_resolver_answers_names_unknown_names_and_a_dead_server(
        resolver: tuple[int, Path, subprocess.Popen[bytes]]) -> None:
    """The scraper's resolver asking dnsmasq itself: the name's records, none for a name it does
    not know, and an error naming the server when nothing answers there."""
    dns_port, _, _ = resolver
    server = ("127.0.0.1", dns_port)
    assert asyncio.run(dns.resolve(NAME, 8000, server)) == ["127.0.0.71:8000", "127.0.0.72:8000"]
    assert asyncio.run(dns.resolve("missing.pool.interlock.test", 8000, server)) == []
    dead = ("127.0.0.1", free_port())
    with pytest.raises(dns.DnsError, match=f"no answer from 127.0.0.1:{dead[1]} for {NAME}"):
        asyncio.run(dns.resolve(NAME, 8000, dead, timeout=0.5))


def test_the_pool_follows_its_dns_records(resolver: tuple[int, Path, subprocess.Popen[bytes]],
                                          tmp_path: Path) -> None:
    dns_port, hosts, dnsmasq = resolver
    servers = StandIns(3, free_port(), first=71)
    port = servers.servers[0].port
    config = {
        "providers": [{"name": "dnspool", "type": "pool", "dns": f"{NAME}:{port}",
                       "dns_server": f"127.0.0.1:{dns_port}", "dns_refresh": "0.3s", "picker": "round-robin"}],
        "models": [{"name": "llama", "provider": "dnspool"}],
        "tenants": [{"name": "it", "api_key_sha256": [sha(TENANT_KEY)], "models": ["*"]}],
    }
    gw: Gateway | None = None
    try:
        (tmp_path / "gw").mkdir()
        gw = start_gateway(SimpleNamespace(port=free_port()), tmp_path / "gw", config=config)  # type: ignore[arg-type]
        wait_metric(gw, 'interlock_pool_endpoints{pool="dnspool",state="ready"}', 2)
        before = Counter(ask(gw, f"before {i}") for i in range(8))
        assert set(before) == {"127.0.0.71:" + str(port), "127.0.0.72:" + str(port)}, before
        hosts.write_text(f"127.0.0.72 {NAME}\n127.0.0.73 {NAME}\n")
        dnsmasq.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        after: Counter[str] = Counter()
        while time.monotonic() < deadline:  # the scraper and Envoy each re-resolve every 0.3 s
            after = Counter(ask(gw, f"after {i}") for i in range(6))
            if set(after) == {"127.0.0.72:" + str(port), "127.0.0.73:" + str(port)}:
                break
            time.sleep(0.3)
        assert set(after) == {"127.0.0.72:" + str(port), "127.0.0.73:" + str(port)}, after
        assert "resolves to 127.0.0.72" in gw.process.text()
    finally:
        if gw is not None:
            gw.process.stop()
        servers.close()
