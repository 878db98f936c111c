"""Config reload without a restart: watch the file, validate, update Envoy, then the workers.

Theory of operation (one `Reloader` in the supervising process, polled a few times a second):

    file changed? ──no──▶ (maybe drop clusters of removed providers after `grace`)
        │yes
    validate ──invalid──▶ keep serving the last good config; log every problem; count a failure
        │ok
    Envoy attached? ──yes──▶ write cds.yaml/rds.yaml for old ∪ new providers (atomic rename)
        │                    and wait until Envoy reports that version for both
        ▼
    write the active config copy; SIGHUP the workers (each swaps its runtime atomically)

Clusters are added before any worker routes to them (so no request sees `cluster_not_found`)
and removed only `grace` seconds after the workers stopped routing to them. Settings that need
a restart (`RESTART_ONLY`) are refused as a failed reload.

Generations. The supervisor counts config generations (1 at start, +1 per successful reload) and
writes the current one next to the active config copy (`generation_file`) before it tells the
workers; a worker (or the rate-limit process) reads it when it starts and on each SIGHUP
(`read_generation`), so every process of the pod names the same generation, restarted ones too.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from extproc.config import ConfigError, GatewayConfig, load_text
from extproc.config.model import Provider
from extproc.envoyconf.orders import provider_orders
from extproc.envoyconf.render import dynamic_resources, to_yaml, write_files

log = logging.getLogger("interlock.reload")


RESTART_ONLY = ("listen", "admin", "metrics", "extproc", "rate_limit", "admission.success_rate_threshold",
                "admission.max_heap_bytes")
"""Settings a running gateway cannot take: ports bound once, the rate-limit process's store (fixed
for its life) and what is rendered into Envoy's static config (the rate-limit filter's timeout and
failure mode, admission control, the overload manager). The other admission settings apply live."""


def _setting(cfg: GatewayConfig, dotted: str) -> object:
    value: object = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def generation_file(active: Path | str) -> Path:
    """Where the generation of the active config copy `active` is written."""
    active = Path(active)
    return active.with_name(active.name + ".generation")


def read_generation(active: Path | str, default: int = 1) -> int:
    """The generation of the config in `active` (`default` when the supervisor wrote none)."""
    try:
        return int(generation_file(active).read_text().strip())
    except (OSError, ValueError):
        return default


@dataclass
class ReloadStats:
    successes: int = 0
    failures: int = 0
    generation: int = 1


class Reloader:
    """Not thread-safe: call `poll` from one thread."""

    def __init__(self, source: Path, active: Path, current: GatewayConfig, notify_workers: Callable[[], None],
                 envoy_dir: Path | None = None, admin_url: str | None = None, grace: float = 60.0,
                 ack_timeout: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.source, self.active, self.current = source, active, current
        self.notify_workers = notify_workers
        self.envoy_dir, self.admin_url = envoy_dir, admin_url
        self.grace, self.ack_timeout, self.clock = grace, ack_timeout, clock
        self.stats = ReloadStats()
        # A work directory used before may hold an older run's generation: this run starts at 1.
        write_files(self.active.parent, {generation_file(self.active).name: f"{self.stats.generation}\n"})
        self._fingerprint = self._read_fingerprint()
        self._cleanup_at: float | None = None
        self._retired: dict[str, Provider] = {}
        # Fallback orders no longer in the config: kept like retired providers, because a worker
        # still on the old config may name one until it has switched (else a 404 from Envoy).
        self._retired_orders: set[tuple[str, ...]] = set()

    def _read_fingerprint(self) -> str | None:
        try:
            return hashlib.sha256(self.source.read_bytes()).hexdigest()
        except OSError:
            return None

    def poll(self) -> None:
        fingerprint = self._read_fingerprint()
        if fingerprint is not None and fingerprint != self._fingerprint:
            self._fingerprint = fingerprint
            self._reload()
        if self._cleanup_at is not None and self.clock() >= self._cleanup_at:
            self._cleanup_at = None
            self._retired, self._retired_orders = {}, set()
            if self.envoy_dir is not None:
                self._write_envoy(self.current.providers, provider_orders(self.current))
                log.info("removed the clusters of providers and fallback orders no longer configured")

    def _reload(self) -> None:
        try:
            text = self.source.read_text()
            cfg = load_text(text, str(self.source))
        except (ConfigError, OSError) as e:
            problems = e.problems if isinstance(e, ConfigError) else [f"{self.source}: {e}"]
            self._fail(problems)
            return
        restart_only = [name for name in RESTART_ONLY if _setting(cfg, name) != _setting(self.current, name)]
        if restart_only:
            self._fail([f"{name}: changing it needs a restart" for name in restart_only])
            return
        new_names = {p.name for p in cfg.providers}
        for p in self.current.providers:
            if p.name not in new_names:
                self._retired[p.name] = p
        for name in new_names:
            self._retired.pop(name, None)
        orders = set(provider_orders(cfg))
        self._retired_orders = (self._retired_orders | set(provider_orders(self.current))) - orders
        if self.envoy_dir is not None:
            version = self._write_envoy([*cfg.providers, *self._retired.values()],
                                        sorted(orders | self._retired_orders))
            if not self._wait_acked(version):
                self._fail([f"Envoy did not load provider resources version {version} within "
                            f"{self.ack_timeout:.0f} s"])
                return
        write_files(self.active.parent, {self.active.name: text})
        self.current = cfg
        self.stats.successes += 1
        self.stats.generation += 1
        write_files(self.active.parent, {generation_file(self.active).name: f"{self.stats.generation}\n"})
        self.notify_workers()
        if self._retired or self._retired_orders:
            self._cleanup_at = self.clock() + self.grace
        log.info("config reloaded (generation %d): %s", self.stats.generation, cfg.summary())

    def _fail(self, problems: list[str]) -> None:
        self.stats.failures += 1
        for problem in problems:
            log.error("config reload refused, keeping the last good config: %s", problem)

    def _write_envoy(self, providers: list[Provider] | tuple[Provider, ...], orders: list[tuple[str, ...]]) -> str:
        assert self.envoy_dir is not None
        version = f"{self.stats.generation + 1}-{int(time.time() * 1000)}"
        files = dynamic_resources(providers, orders, self.current.limits, version)
        write_files(self.envoy_dir, {name: to_yaml(doc) for name, doc in files.items()})
        return version

    def _wait_acked(self, version: str) -> bool:
        """True once Envoy reports `version` for both the clusters and the routes."""
        deadline = self.clock() + self.ack_timeout
        while self.clock() < deadline:
            if self.admin_url is None or envoy_versions(self.admin_url) == {version}:
                return True
            time.sleep(0.02)
        return False


_VERSION = re.compile(r'^(cluster_manager\.cds|http\.\w+\.rds\.\w+)\.version_text: "(.*)"$', re.M)


def envoy_versions(admin_url: str) -> set[str]:
    """The versions Envoy reports for its file-based CDS and RDS (empty on error)."""
    try:
        with urllib.request.urlopen(f"{admin_url}/stats?filter=version_text", timeout=1) as r:
            text = r.read().decode()
    except OSError:
        return set()
    found = _VERSION.findall(text)
    return {v for _, v in found} if len(found) >= 2 else set()


def metrics_text(stats: ReloadStats, worker_restarts: int) -> str:
    """Prometheus text exposition of the supervisor's counters."""
    return (
        "# HELP interlock_config_reloads_total Config reloads by result.\n"
        "# TYPE interlock_config_reloads_total counter\n"
        f'interlock_config_reloads_total{{result="success"}} {stats.successes}\n'
        f'interlock_config_reloads_total{{result="failure"}} {stats.failures}\n'
        "# HELP interlock_config_generation Generation of the config being served.\n"
        "# TYPE interlock_config_generation gauge\n"
        f"interlock_config_generation {stats.generation}\n"
        "# HELP interlock_worker_restarts_total ext_proc worker processes restarted after dying.\n"
        "# TYPE interlock_worker_restarts_total counter\n"
        f"interlock_worker_restarts_total {worker_restarts}\n"
    )
