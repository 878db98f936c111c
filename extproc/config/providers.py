"""The `providers[]` section of the config: one provider account each, a typed union on `type`
(each type takes its own settings, `TYPE_SETTINGS`), its endpoint and its Envoy cluster knobs."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from extproc.config.cluster_override import parse_override
from extproc.config.model import ClusterSettings, Endpoint, OutlierDetection, Provider
from extproc.config.reader import _join, _Reader
from extproc.pools.settings import POOL_SETTINGS, parse_pool

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # provider names (they name Envoy clusters)
PROVIDER_TYPES = ("openai", "azure-openai", "anthropic", "gemini", "vertex", "bedrock", "mistral", "pool")
_KEYED = ("api_key_env", "api_key_file")
# Settings each provider type takes besides name, type, endpoint and cluster.
TYPE_SETTINGS: dict[str, tuple[str, ...]] = {
    "openai": (*_KEYED, "path_prefix", "headers"),
    "azure-openai": (*_KEYED, "api_version", "headers", "credentials"),
    "anthropic": _KEYED,
    "gemini": (*_KEYED, "api_version"),
    "vertex": ("project", "location", "credentials_file", "token_uri", "credentials"),
    "bedrock": ("region", "aws_access_key_id_env", "aws_secret_access_key_env", "aws_session_token_env",
                "credentials"),
    "mistral": _KEYED,  # the native fill-in-the-middle type: Codestral's POST /v1/fim/completions
    # Self-hosted OpenAI-compatible servers (vLLM, SGLang); a key only if they take one (extproc.pools)
    "pool": (*_KEYED, "path_prefix", "headers", *POOL_SETTINGS),
}
# `credentials:` a type may take instead of its key settings: the cluster's workload identity
# through the cloud's library (extproc.auth.cloud).
CLOUD_IDENTITY = {"vertex": "application-default", "azure-openai": "workload-identity",
                  "bedrock": "workload-identity"}  # IRSA / EKS Pod Identity (extproc.auth.aws)
_IDENTITY_REPLACES = ("credentials_file", "aws_access_key_id_env", "aws_secret_access_key_env")
_ALL_SETTINGS = tuple(dict.fromkeys(k for keys in TYPE_SETTINGS.values() for k in keys))
# Gemini: v1beta, not the SDK's v1 default: v1 has no systemInstruction, tools, toolConfig,
# response schemas or function-call parts, which translation needs.
DEFAULT_API_VERSIONS = {"azure-openai": "2024-10-21", "gemini": "v1beta"}

def _cluster(r: _Reader, raw: Any, path: str) -> ClusterSettings:
    base = ClusterSettings()
    d = r.mapping(raw, path, ("connect_timeout", "max_requests", "max_pending_requests", "max_connections",
                              "max_retries", "per_try_timeout", "idle_timeout", "outlier_detection",
                              "envoy")) or {}
    od_path = _join(path, "outlier_detection")
    od = r.mapping(d.get("outlier_detection"), od_path, ("consecutive_5xx", "consecutive_gateway_failure",
                                                         "interval", "base_ejection_time",
                                                         "max_ejection_percent")) or {}
    odd = OutlierDetection()
    return ClusterSettings(
        connect_timeout=r.duration(d, "connect_timeout", path, base.connect_timeout, allow_zero=False),
        max_requests=r.number(d, "max_requests", path, base.max_requests, integer=True, minimum=1),
        max_pending_requests=r.number(d, "max_pending_requests", path, base.max_pending_requests,
                                      integer=True, minimum=1),
        max_connections=r.number(d, "max_connections", path, base.max_connections, integer=True, minimum=1),
        max_retries=r.number(d, "max_retries", path, base.max_retries, integer=True, minimum=0),
        per_try_timeout=r.duration(d, "per_try_timeout", path, base.per_try_timeout),
        idle_timeout=r.duration(d, "idle_timeout", path, base.idle_timeout, allow_zero=False),
        outlier_detection=OutlierDetection(
            consecutive_5xx=r.number(od, "consecutive_5xx", od_path, odd.consecutive_5xx, integer=True, minimum=1),
            consecutive_gateway_failure=r.number(od, "consecutive_gateway_failure", od_path,
                                                 odd.consecutive_gateway_failure, integer=True, minimum=1),
            interval=r.duration(od, "interval", od_path, odd.interval, allow_zero=False),
            base_ejection_time=r.duration(od, "base_ejection_time", od_path, odd.base_ejection_time,
                                          allow_zero=False),
            max_ejection_percent=r.number(od, "max_ejection_percent", od_path, odd.max_ejection_percent,
                                          integer=True, minimum=0, maximum=100),
        ),
        envoy=parse_override(r, d.get("envoy"), _join(path, "envoy")),
    )


def _endpoint(r: _Reader, url: str, path: str) -> Endpoint | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        r.fail(path, "must be an http:// or https:// URL with a host")
        return None
    if parts.query or parts.fragment or parts.username:
        r.fail(path, "must not carry a query, fragment or credentials")
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        r.fail(path, "has an invalid port")
        return None
    return Endpoint(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


def _default_endpoint(ptype: str, d: dict[str, Any]) -> str | None:
    if ptype == "openai":
        return "https://api.openai.com"
    if ptype == "anthropic":
        return "https://api.anthropic.com"
    if ptype == "gemini":
        return "https://generativelanguage.googleapis.com"
    if ptype == "mistral":
        return "https://api.mistral.ai"
    if ptype == "vertex" and isinstance(d.get("location"), str):
        loc = d["location"]
        return "https://aiplatform.googleapis.com" if loc == "global" else f"https://{loc}-aiplatform.googleapis.com"
    if ptype == "bedrock" and isinstance(d.get("region"), str):
        return f"https://bedrock-runtime.{d['region']}.amazonaws.com"
    return None


def _headers(r: _Reader, raw: Any, path: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        r.fail(path, "must be a mapping of header name to value")
        return ()
    out = []
    for k, v in raw.items():
        if not isinstance(k, str) or not re.match(r"^[A-Za-z0-9-]+$", k) or k.lower() in _RESERVED_HEADERS:
            r.fail(f"{path}.{k}", "must be a plain header name, not a credential or routing header")
        elif not isinstance(v, str):
            r.fail(f"{path}.{k}", "must be a string")
        else:
            out.append((k.lower(), v))
    return tuple(out)


_RESERVED_HEADERS = ("authorization", "api-key", "x-api-key", "x-goog-api-key", "host", "content-length",
                     "content-type", "x-interlock-cluster")


def _provider(r: _Reader, raw: Any, path: str) -> Provider | None:
    d = r.mapping(raw, path, ("name", "type", "endpoint", "cluster", *_ALL_SETTINGS))
    if d is None:
        return None
    name = r.string(d, "name", path, required=True)
    if name and not NAME.match(name):
        r.fail(_join(path, "name"), "must start with a letter or digit and use only letters, digits, '.', '_', '-'")
    ptype = r.string(d, "type", path, required=True, choices=PROVIDER_TYPES)
    allowed = TYPE_SETTINGS.get(ptype or "", _ALL_SETTINGS)
    for key in d:
        if key in _ALL_SETTINGS and key not in allowed:
            r.fail(_join(path, key), f"not a setting of type {ptype} (its settings: {', '.join(allowed)})")
    s = {k: r.string(d, k, path) for k in _ALL_SETTINGS if k not in ("headers", *POOL_SETTINGS) and k in allowed}
    identity = CLOUD_IDENTITY.get(ptype or "")
    if identity and s.get("credentials") not in (None, identity):
        r.fail(_join(path, "credentials"), f"must be {identity} (or absent: the type's key settings)")
    identity = identity if s.get("credentials") == identity else None
    if ptype in ("openai", "azure-openai", "anthropic", "gemini", "mistral") and not identity:
        if s.get("api_key_env") and s.get("api_key_file"):
            r.fail(path, "api_key_env and api_key_file are exclusive: give one")
        if not s.get("api_key_env") and not s.get("api_key_file"):
            r.fail(path, "needs api_key_env or api_key_file")
    required = {"vertex": ("project", "location", "credentials_file"),
                "bedrock": ("region", "aws_access_key_id_env", "aws_secret_access_key_env")}.get(ptype or "", ())
    for key in required:
        if not s.get(key) and not (identity and key in _IDENTITY_REPLACES):
            r.fail(_join(path, key), f"required for type {ptype}")
    if identity and ptype == "bedrock":
        for key in ("aws_access_key_id_env", "aws_secret_access_key_env", "aws_session_token_env"):
            if s.get(key):
                r.fail(_join(path, key), "not with credentials: workload-identity (the keys come from the pod's "
                                         "AWS identity)")
    if ptype == "azure-openai" and d.get("endpoint") is None:
        r.fail(_join(path, "endpoint"), "required for type azure-openai (https://<resource>.openai.azure.com)")
    if ptype == "pool" and s.get("api_key_env") and s.get("api_key_file"):
        r.fail(path, "api_key_env and api_key_file are exclusive: give one")
    pool = parse_pool(r, d, path) if ptype == "pool" else None
    if pool is not None and "endpoint" in d:
        r.fail(_join(path, "endpoint"), "not a setting of type pool: its servers are endpoints (ip:port) or dns "
                                        "(name:port)")
    prefix = s.get("path_prefix") or "/v1"
    if not prefix.startswith("/") or prefix.endswith("/") and prefix != "/":
        r.fail(_join(path, "path_prefix"), "must start with '/' and not end with '/'")
    url = r.string(d, "endpoint", path, default=_default_endpoint(ptype or "", d))
    endpoint = _endpoint(r, url, _join(path, "endpoint")) if url and pool is None else None
    if pool is not None:  # the Envoy cluster's own address is the first endpoint (or the DNS name)
        host, _, port = (pool.endpoints[0] if pool.endpoints else pool.dns or "0.0.0.0:1").rpartition(":")
        endpoint = Endpoint("http", host.strip("[]"), int(port), "")
    cluster = _cluster(r, d.get("cluster"), _join(path, "cluster"))
    headers = _headers(r, d.get("headers"), _join(path, "headers")) if "headers" in allowed else ()
    if not (name and ptype and endpoint):
        return None
    return Provider(
        name, ptype, endpoint, s.get("api_key_env"), s.get("api_key_file"), cluster,
        path_prefix="" if prefix == "/" else prefix, headers=headers,
        api_version=s.get("api_version") or DEFAULT_API_VERSIONS.get(ptype),
        project=s.get("project"), location=s.get("location"), credentials_file=s.get("credentials_file"),
        token_uri=s.get("token_uri"), region=s.get("region"),
        aws_access_key_id_env=s.get("aws_access_key_id_env"),
        aws_secret_access_key_env=s.get("aws_secret_access_key_env"),
        aws_session_token_env=s.get("aws_session_token_env"), credentials=identity, pool=pool,
    )
