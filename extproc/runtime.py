"""Compiled, immutable runtime view of a `GatewayConfig`, read by every request.

Built once per config load (credentials resolved then), swapped atomically as a whole; a
request holds one `Runtime` for its lifetime, so a reload never mixes two configs in one
request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from extproc.auth.credentials import Credential, credential_for
from extproc.config.model import GatewayConfig, Model, Provider, Tenant
from extproc.translate.base import Registry, Target


@dataclass(frozen=True)
class ProviderRuntime:
    config: Provider
    credential: Credential

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
    generation: int = 0  # bumped by every successful reload

    def models_for(self, tenant: Tenant) -> list[Deployment]:
        """First deployment of every public model the tenant may use, in config order."""
        return [deps[0] for name, deps in self.deployments.items() if tenant.allows(name)]


def upstream_api(p: Provider, m: Model) -> str:
    """The API a deployment speaks: the provider type, except Vertex, whose publisher follows
    the model (Anthropic's `claude-*` models speak Messages, the rest Gemini)."""
    if p.type == "vertex":
        return "vertex-anthropic" if m.upstream_model.startswith("claude") else "vertex-gemini"
    return p.type


def provider_options(p: Provider) -> tuple[tuple[str, str], ...]:
    opts = {"path_prefix": p.path_prefix, "api_version": p.api_version, "project": p.project,
            "location": p.location, "region": p.region}
    return tuple((k, v) for k, v in opts.items() if v is not None)


def compile_runtime(cfg: GatewayConfig, registry: Registry, environ: Mapping[str, str] = os.environ,
                    generation: int = 0) -> Runtime:
    providers = {p.name: ProviderRuntime(p, credential_for(p, environ)) for p in cfg.providers}
    deployments: dict[str, list[Deployment]] = {}
    for m in cfg.models:
        p = cfg.provider(m.provider)
        target = Target(m.name, m.upstream_model, upstream_api(p, m), m.max_output_tokens, m.capabilities,
                        provider_options(p))
        deployments.setdefault(m.name, []).append(Deployment(m, providers[m.provider], target))
    tenants = {h: t for t in cfg.tenants for h in t.api_key_sha256}
    return Runtime(cfg, registry, tenants, {k: tuple(v) for k, v in deployments.items()}, providers, generation)
