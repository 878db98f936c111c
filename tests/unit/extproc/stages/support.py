"""A small gateway config compiled the way the product compiles it, and builders of the typed
values the stage modules take (`ClientRequest`, tenants), for the stage modules' unit tables."""

from __future__ import annotations

import dataclasses
import hashlib
from functools import cache
from typing import Any

import orjson
import yaml

from extproc.config import Tenant, load_text
from extproc.runtime import Deployment, Runtime, compile_runtime
from extproc.stages import request
from extproc.stages.request import ClientRequest
from extproc.translate.registry import default_registry

KEY = "sk-stage-main"
NARROW_KEY = "sk-stage-narrow"
LIMITED_KEY = "sk-stage-limited"
OPENAI_SECRET = "sk-openai-STAGE-0001"
ANTHROPIC_SECRET = "sk-ant-STAGE-0002"
GEMINI_SECRET = "AIza-STAGE-0003"
PROXY_SECRET = "sk-proxy-STAGE-0004"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


CONFIG: dict[str, Any] = {
    "providers": [
        {"name": "openai", "type": "openai", "endpoint": "https://api.openai.com", "api_key_env": "S_OPENAI"},
        {"name": "anthropic", "type": "anthropic", "endpoint": "https://api.anthropic.com",
         "api_key_env": "S_ANTHROPIC"},
        {"name": "gemini", "type": "gemini", "api_key_env": "S_GEMINI"},
        # An OpenAI-compatible endpoint under a base path, with a static extra header.
        {"name": "proxy", "type": "openai", "endpoint": "https://proxy.example:8443/base", "api_key_env": "S_PROXY",
         "headers": {"OpenAI-Project": "proj-stage"}},
        {"name": "nokey", "type": "openai", "endpoint": "https://nokey.example", "api_key_env": "S_UNSET"},
    ],
    "models": [
        {"name": "gpt", "provider": "openai", "upstream_model": "gpt-4o-mini-2024-07-18",
         "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}, "quality": 0.5,
         "capabilities": ["tools", "json"], "max_concurrency": 2},
        {"name": "claude", "provider": "anthropic", "upstream_model": "claude-haiku-4-5-20251001",
         "max_output_tokens": 2048, "price": {"input_per_mtok": 1.0, "output_per_mtok": 5.0}, "quality": 0.9,
         "capabilities": ["tools", "json", "images"], "max_concurrency": 3},
        {"name": "flash", "provider": "gemini", "upstream_model": "gemini-2.5-flash",
         "price": {"input_per_mtok": 0.3, "output_per_mtok": 2.5}, "quality": 0.7},
        {"name": "proxied", "provider": "proxy", "upstream_model": "llama-3-70b"},
        {"name": "keyless", "provider": "nokey", "upstream_model": "m"},
        # One public name on two providers: a route of its own.
        {"name": "dual", "provider": "openai", "upstream_model": "gpt-4o-2024-08-06",
         "price": {"input_per_mtok": 2.5, "output_per_mtok": 10.0}},
        {"name": "dual", "provider": "anthropic", "upstream_model": "claude-sonnet-4-5",
         "price": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}},
        # Two deployments on one provider, cheaper than anything else.
        {"name": "twin", "provider": "openai", "upstream_model": "twin-a",
         "price": {"input_per_mtok": 0.01, "output_per_mtok": 0.01}},
        {"name": "twin", "provider": "openai", "upstream_model": "twin-b",
         "price": {"input_per_mtok": 0.02, "output_per_mtok": 0.02}},
    ],
    "routes": [
        {"name": "cheap", "candidates": ["gpt", "claude", "flash"], "policy": {"kind": "cheapest"}},
        {"name": "smart", "candidates": ["gpt", "claude"], "policy": {"kind": "best_quality"}},
        {"name": "pair", "candidates": ["twin", "claude"], "policy": {"kind": "cheapest"}},
    ],
    "tenants": [
        {"name": "main", "api_key_sha256": [sha(KEY)]},
        {"name": "narrow", "api_key_sha256": [sha(NARROW_KEY)], "models": ["gpt", "smart"]},
        {"name": "limited", "api_key_sha256": [sha(LIMITED_KEY)], "priority": "batch", "deadline": "2500ms",
         "limits": [{"unit": "tokens", "amount": 100000, "per": "minute"}]},
    ],
}
ENVIRON = {"S_OPENAI": OPENAI_SECRET, "S_ANTHROPIC": ANTHROPIC_SECRET, "S_GEMINI": GEMINI_SECRET,
           "S_PROXY": PROXY_SECRET}


@cache
def runtime() -> Runtime:
    """The compiled config (immutable; shared by every test)."""
    return compile_runtime(load_text(yaml.safe_dump(CONFIG)), default_registry(), environ=ENVIRON)


def dep(model: str, provider: str | None = None) -> Deployment:
    """The deployment of public `model` (on `provider` when the model has several)."""
    deps = runtime().deployments[model]
    return next(d for d in deps if provider is None or d.provider == provider)


def priced(d: Deployment, input_per_mtok: float, output_per_mtok: float, max_output_tokens: int = 4096,
           **kw: Any) -> Deployment:
    """`d` with other prices and output cap (a fresh, validated object)."""
    return dataclasses.replace(d, input_per_mtok=input_per_mtok, output_per_mtok=output_per_mtok,
                               max_output_tokens=max_output_tokens, **kw)


def tenant(name: str = "main") -> Tenant:
    return next(t for t in runtime().config.tenants if t.name == name)


def client(api: str = request.OPENAI_CHAT, raw: bytes | None = None, **body: Any) -> ClientRequest:
    """A parsed client request, as the router stage builds it from the body's bytes."""
    if raw is None:
        raw = orjson.dumps(body)
    return request.client_request(api, request.parse_json(raw), raw)


def chat(model: str = "gpt", **fields: Any) -> ClientRequest:
    return client(model=model, **{"messages": [{"role": "user", "content": "Say hello."}], **fields})
