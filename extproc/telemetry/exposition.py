"""One Prometheus scrape per pod: each process's text, gathered and merged by the supervisor.

Theory of operation. Every ext_proc worker and the rate-limit process serve their own Prometheus
text on a Unix socket of the abstract namespace (`socket_name`: no file, no port, private to the
pod's network namespace, named after the gateway's work directory so two gateways on one host
never meet). The supervisor's `/metrics` (`extproc.cmd.run.serve_metrics`) connects to each at
scrape time (`fetch`, bounded by a timeout), and `merge` joins the texts: one `# HELP`/`# TYPE`
per family, each sample labelled with the process it came from (`process="worker-0"`, …). A
process that does not answer is left out and counted in `interlock_scrape_source_up`. Envoy's
own stats (`envoy_*`, from its admin `/stats/prometheus`) join the same text.

Why not `prometheus_client`'s multiprocess mode: it needs a shared directory of mmapped files
that every worker writes on each observation; here nothing is written on the request path, and
a restarted worker's counters start again from 0, which Prometheus reads as a counter reset
(the `process` label keeps each worker's series apart, so `rate()`/`increase()` stay right).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

log = logging.getLogger("interlock.telemetry")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?( .*)$")


def socket_name(workdir: str | Path, process: str) -> str:
    """The abstract Unix socket name of `process` (worker-0, …, ratelimit) of the gateway whose
    work directory (where its active config lives) is `workdir`."""
    digest = hashlib.sha256(str(Path(workdir).resolve()).encode()).hexdigest()[:16]
    return f"\0interlock-{digest}-{process}"


async def serve_text(name: str, render: Callable[[], str]) -> asyncio.AbstractServer:
    """Answer every connection to the Unix socket `name` with `render()` (run in a thread, so a
    collect never holds the event loop), then close it."""
    loop = asyncio.get_running_loop()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            text = await loop.run_in_executor(None, render)
            writer.write(text.encode())
            await writer.drain()
        except Exception:  # noqa: BLE001 (the scrape sees a missing source; the process goes on)
            pass
        finally:
            writer.close()

    return await asyncio.start_unix_server(answer, path=name)


async def serve_or_log(name: str, render: Callable[[], str]) -> asyncio.AbstractServer | None:
    """`serve_text`, or None (logged) when the socket cannot be bound: the process serves anyway."""
    try:
        return await serve_text(name, render)
    except OSError as e:
        log.error("metrics: cannot serve this process's text for the pod's scrape (%s)", e)
        return None


def fetch(name: str, timeout: float = 2.0) -> str | None:
    """The text served on the Unix socket `name`; None when nothing answers within `timeout`."""
    deadline = time.monotonic() + timeout
    chunks = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(name)
            while True:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
    except OSError:
        return None
    return b"".join(chunks).decode("utf-8", "replace")


def fetch_url(url: str, timeout: float = 2.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def merge(sources: Iterable[tuple[str, str | None]], label: str = "process") -> str:
    """Join Prometheus texts (format 0.0.4) into one: families keep their first `# HELP` and
    `# TYPE`, each sample of source `name` gets `label="name"` (an empty name adds none), and the
    samples of one family stay together. Pure."""
    help_: dict[str, str] = {}
    type_: dict[str, str] = {}
    samples: dict[str, list[str]] = {}
    for name, text in sources:
        if not text:
            continue
        extra = f'{label}="{_label(name)}"' if name else ""
        family = ""
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    target = help_ if parts[1] == "HELP" else type_
                    target.setdefault(family, line)
                    samples.setdefault(family, [])
                continue
            m = _SAMPLE.match(line)
            if m is None:
                continue
            metric, labels, rest = m.group(1), m.group(2), m.group(3)
            if not family or not metric.startswith(family):
                family = metric
                samples.setdefault(family, [])
            if extra:
                labels = "{" + extra + ("," + labels[1:] if labels and labels != "{}" else "}")
            samples[family].append(f"{metric}{labels or ''}{rest}")
    out = []
    for family, lines in samples.items():
        if family in help_:
            out.append(help_[family])
        if family in type_:
            out.append(type_[family])
        out += lines
    return "\n".join(out) + "\n"


# Envoy's stats on the pod's scrape: cluster health (membership, breakers, ejections, retries,
# responses, timings), the listener's requests and the ext_proc and rate-limit filters.
ENVOY_FILTER = (r"^(cluster\.[^.]+\.(upstream_rq_(total|completed|xx|[1-5]xx|retry.*|timeout|per_try_timeout|"
                r"pending_overflow|active|time)|upstream_cx_(active|connect_fail)|outlier_detection\..*|"
                r"circuit_breakers\..*|membership_(healthy|total|degraded))|"
                r"http\.interlock\.(downstream_rq_(total|[1-5]xx|active|time)|ext_proc\..*|ratelimit\..*)|"
                r"server\.(live|uptime|memory_allocated))$")


def envoy_url(admin: str) -> str:
    return f"{admin}/stats/prometheus?filter={urllib.parse.quote(ENVOY_FILTER)}"


def pod_text(own: str, processes: Sequence[tuple[str, str]], envoy_admin: str | None,
             get: Callable[[str], str | None] = fetch, get_url: Callable[[str], str | None] = fetch_url) -> str:
    """The pod's scrape: the supervisor's `own` text, every process's (`processes`: (label,
    socket name)), Envoy's, and `interlock_scrape_source_up{source}` saying which answered."""
    texts = [(label, get(sock)) for label, sock in processes]
    envoy = get_url(envoy_url(envoy_admin)) if envoy_admin else None
    up = ["# HELP interlock_scrape_source_up 1 when the process answered this scrape, else 0.",
          "# TYPE interlock_scrape_source_up gauge"]
    up += [f'interlock_scrape_source_up{{source="{_label(label)}"}} {int(text is not None)}' for label, text in texts]
    if envoy_admin:
        up.append(f'interlock_scrape_source_up{{source="envoy"}} {int(envoy is not None)}')
    return merge([("", own), ("", "\n".join(up)), *texts, ("", envoy)])


def scrape_sources(workdir: str | Path, workers: int) -> list[tuple[str, str]]:
    """(label, socket name) of the pod's processes that serve their own text."""
    names = [f"worker-{i}" for i in range(workers)] + ["ratelimit"]
    return [(name, socket_name(workdir, name)) for name in names]


async def close(server: asyncio.AbstractServer | None) -> None:
    if server is not None:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
