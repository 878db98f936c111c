"""Compiled, immutable runtime view of a `GatewayConfig`, read by every request.

Built once per config load (credentials resolved then), swapped atomically as a whole; a
request holds one `Runtime` for its lifetime, so a reload never mixes two configs in one
request.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from extproc.config.model import GatewayConfig, Model, Provider, Tenant
from extproc.translate.base import Registry, Target

log = logging.getLogger("interlock.runtime")


@dataclass(frozen=True)
class ProviderRuntime:
    config: Provider
    api_key: str | None  # None: not configured (requests to it fail with 502)

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True)
class Deployment:
    model: Model
    provider: ProviderRuntime
    target: Target


@dataclass(frozen=True)
class Runtime:
    config: GatewayConfig
    registry: Registry
    tenants_by_key_hash: dict[str, Tenant]
    deployments: dict[str, tuple[Deployment, ...]]  # public model name → deployments, config order
    providers: dict[str, ProviderRuntime] = field(default_factory=dict)

    def models_for(self, tenant: Tenant) -> list[Deployment]:
        """First deployment of every public model the tenant may use, in config order."""
        return [deps[0] for name, deps in self.deployments.items() if tenant.allows(name)]


def read_api_key(p: Provider, environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    if p.api_key_env:
        value = environ.get(p.api_key_env, "").strip()
        if not value:
            log.error("provider %s: environment variable %s is not set; its requests will fail",
                      p.name, p.api_key_env)
        return value or None
    if p.api_key_file:
        try:
            with open(p.api_key_file, encoding="utf-8") as f:
                return f.read().strip() or None
        except OSError as e:
            log.error("provider %s: cannot read api_key_file %s: %s", p.name, p.api_key_file, e.strerror)
    return None


def compile_runtime(cfg: GatewayConfig, registry: Registry,
                    environ: dict[str, str] | os._Environ[str] = os.environ) -> Runtime:
    providers = {p.name: ProviderRuntime(p, read_api_key(p, environ)) for p in cfg.providers}
    deployments: dict[str, list[Deployment]] = {}
    for m in cfg.models:
        target = Target(m.name, m.upstream_model, cfg.provider(m.provider).type, m.max_output_tokens,
                        m.capabilities)
        deployments.setdefault(m.name, []).append(Deployment(m, providers[m.provider], target))
    tenants = {h: t for t in cfg.tenants for h in t.api_key_sha256}
    return Runtime(cfg, registry, tenants, {k: tuple(v) for k, v in deployments.items()}, providers)
