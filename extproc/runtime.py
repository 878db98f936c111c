"""Compiled, immutable runtime view of a `GatewayConfig`, read by every request.

Built once per config load (credentials resolved then), swapped atomically as a whole; a
request holds one `Runtime` for its lifetime, so a reload never mixes two configs in one
request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import routing
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment(routing.Deployment):
    """One model on one provider account: what the routing core ranks (`routing.Deployment`:
    `id`, public `model` name, `provider` name, prices, quality, limits, capabilities) plus what
    the gateway needs to send it a request: the model's config (`spec`), the provider's config
    and credentials (`account`) and the translation target. The decision's ids are these objects'
    `id`s, so the gateway reads the deployments the decision ranked, not a parallel copy."""

    spec: Model = field(compare=False, repr=False)
    account: ProviderRuntime = field(compare=False, repr=False)
    target: Target = field(compare=False, repr=False)


@dataclass(frozen=True)
class RouteRuntime:
    """A public name decided per request: its deployments (the routing core's candidates, config
    order) and its policy."""

    name: str
    deployments: tuple[Deployment, ...]
    policy: routing.Policy
    by_id: dict[str, Deployment]
    # Its providers in the order fallbacks follow (`routing.fallback_providers`; the renderer's
    # `extproc.envoyconf.orders` derives the same from the config).
    fallback_providers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Runtime:
    config: GatewayConfig
    registry: Registry
    tenants_by_key_hash: dict[str, Tenant]
    deployments: dict[str, tuple[Deployment, ...]]  # public model name → deployments, config order
    providers: dict[str, ProviderRuntime] = field(default_factory=dict)
    generation: int = 0  # bumped by every successful reload
    routes: dict[str, RouteRuntime] = field(default_factory=dict)  # routes and multi-deployment models

    def public_names(self) -> list[str]:
        return [*self.deployments, *(r for r in self.routes if r not in self.deployments)]

    def models_for(self, tenant: Tenant) -> list[tuple[str, str]]:
        """(public name, owner) of every model and route the tenant may use, in config order."""
        out = [(name, deps[0].provider) for name, deps in self.deployments.items() if tenant.allows(name)]
        return out + [(name, "interlock") for name in self.routes
                      if name not in self.deployments and tenant.allows(name)]


def upstream_api(p: Provider, m: Model) -> str:
    """The API a deployment speaks: the provider type, except Vertex, whose publisher follows
    the model (Anthropic's `claude-*` models speak Messages, the rest Gemini)."""
    if p.type == "vertex":
        return "vertex-anthropic" if m.upstream_model.startswith("claude") else "vertex-gemini"
    if p.type == "pool":  # self-hosted servers speak OpenAI's API (extproc.pools)
        return "openai"
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
        fim = (("fim_template", m.fim_template),) if m.fim_template else ()
        target = Target(m.name, m.upstream_model, upstream_api(p, m), m.max_output_tokens, m.capabilities,
                        provider_options(p) + fim)
        deployments.setdefault(m.name, []).append(Deployment(
            id=deployment_id(m, p), model=m.name, provider=p.name, input_per_mtok=m.price.input_per_mtok,
            output_per_mtok=m.price.output_per_mtok, quality=m.quality, context_window=m.context_window,
            max_output_tokens=m.max_output_tokens, capabilities=m.capabilities, spec=m,
            account=providers[p.name],
            target=target))
    tenants = {h: t for t in cfg.tenants for h in t.api_key_sha256}
    # Mesh callers known by their certificate's SPIFFE ID (never a hex key hash, so no clash).
    tenants.update({f"spiffe:{s}": t for t in cfg.tenants for s in t.spiffe_ids})
    routes: dict[str, RouteRuntime] = {}
    for name, deps in deployments.items():
        if len(deps) > 1:
            routes[name] = _route(name, deps, cfg.default_policy)
    for r in cfg.routes:
        routes[r.name] = _route(r.name, [d for c in r.candidates for d in deployments[c]], r.policy)
    return Runtime(cfg, registry, tenants, {k: tuple(v) for k, v in deployments.items()}, providers, generation,
                   routes)


def deployment_id(m: Model, p: Provider) -> str:
    """`model@provider:upstream_model`: stable across reloads while the model keeps its provider
    and upstream model, and across processes and replicas (statistics and affinity key on it)."""
    return f"{m.name}@{p.name}:{m.upstream_model}"


def _route(name: str, deps: list[Deployment], policy: routing.Policy) -> RouteRuntime:
    order = routing.fallback_providers(
        [(d.provider, d.input_per_mtok, d.output_per_mtok, d.quality) for d in deps], policy)
    return RouteRuntime(name, tuple(deps), policy, {d.id: d for d in deps}, order)
