"""How the gateway authenticates to each provider type, resolved once per config load.

`credential_for(provider)` returns an object whose `headers(...)` gives the headers to add to
one upstream request after translation (the final method, host, path and body): a static key
header, SigV4 over the final body (Bedrock), or an OAuth bearer from a service account (Vertex,
cached and refreshed by `extproc.auth.gcp.TokenSource`). Secrets never appear in errors or logs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from extproc.config.model import Provider
from extproc.errors import GatewayError

log = logging.getLogger("interlock.auth")
Environ = Mapping[str, str]


class Credential(Protocol):
    async def headers(self, method: str, host: str, path: str, headers: Mapping[str, str],
                      body: bytes) -> list[tuple[str, str]]: ...


@dataclass(frozen=True)
class ApiKey:
    header: str
    prefix: str
    key: str

    async def headers(self, method: str, host: str, path: str, headers: Mapping[str, str],
                      body: bytes) -> list[tuple[str, str]]:
        return [(self.header, self.prefix + self.key)]


@dataclass(frozen=True)
class Missing:
    """The provider's credentials could not be loaded; its requests fail with 502."""

    provider: str
    reason: str

    async def headers(self, method: str, host: str, path: str, headers: Mapping[str, str],
                      body: bytes) -> list[tuple[str, str]]:
        raise GatewayError(f"The provider {self.provider} has no credentials configured.", 502, "api_error",
                           "provider_credentials_missing")


@dataclass(frozen=True)
class AwsSigV4:
    creds: Any  # extproc.auth.sigv4.AwsCredentials
    region: str
    service: str = "bedrock"

    async def headers(self, method: str, host: str, path: str, headers: Mapping[str, str],
                      body: bytes) -> list[tuple[str, str]]:
        from extproc.auth import sigv4

        return list(sigv4.sign(method, host, path, headers, body, self.creds, self.region, self.service,
                               datetime.now(UTC)))


@dataclass
class GcpBearer:
    source: Any  # extproc.auth.gcp.TokenSource

    async def headers(self, method: str, host: str, path: str, headers: Mapping[str, str],
                      body: bytes) -> list[tuple[str, str]]:
        try:
            token = await self.source.token()
        except Exception as e:
            log.error("vertex token refresh failed: %s", e)
            raise GatewayError("The gateway could not obtain credentials for the provider.", 502, "api_error",
                               "provider_credentials_unavailable") from None
        return [("authorization", f"Bearer {token}")]


_KEY_HEADERS = {
    "openai": ("authorization", "Bearer "),
    "anthropic": ("authorization", "Bearer "),  # the anthropic 2.13 SDK's scheme
    "azure-openai": ("api-key", ""),
    "gemini": ("x-goog-api-key", ""),
}


def _read_key(p: Provider, environ: Environ) -> tuple[str | None, str]:
    if p.api_key_env:
        return (environ.get(p.api_key_env, "").strip() or None), f"environment variable {p.api_key_env}"
    if p.api_key_file:
        try:
            with open(p.api_key_file, encoding="utf-8") as f:
                return (f.read().strip() or None), f"file {p.api_key_file}"
        except OSError:
            return None, f"file {p.api_key_file}"
    return None, "no key setting"


def credential_for(p: Provider, environ: Environ = os.environ) -> Credential:
    """The provider's credential, or `Missing` (logged) when its secret is not available."""
    if p.type in _KEY_HEADERS:
        key, source = _read_key(p, environ)
        if key is None:
            return _missing(p, f"{source} gives no key")
        header, prefix = _KEY_HEADERS[p.type]
        return ApiKey(header, prefix, key)
    if p.type == "bedrock":
        from extproc.auth.sigv4 import AwsCredentials

        key_id = environ.get(p.aws_access_key_id_env or "", "").strip()
        secret = environ.get(p.aws_secret_access_key_env or "", "").strip()
        token = environ.get(p.aws_session_token_env or "", "").strip() if p.aws_session_token_env else ""
        if not key_id or not secret:
            return _missing(p, f"environment variables {p.aws_access_key_id_env} and "
                               f"{p.aws_secret_access_key_env} must both be set")
        return AwsSigV4(AwsCredentials(key_id, secret, token or None), p.region or "us-east-1")
    if p.type == "vertex":
        from extproc.auth import gcp

        try:
            account = gcp.ServiceAccount.from_file(p.credentials_file or "")
        except (OSError, ValueError, KeyError) as e:
            return _missing(p, f"cannot load credentials_file {p.credentials_file}: {type(e).__name__}")
        return GcpBearer(gcp.TokenSource(account, token_uri=p.token_uri))
    return _missing(p, f"unknown provider type {p.type}")


def _missing(p: Provider, reason: str) -> Missing:
    log.error("provider %s: %s; its requests will fail with 502", p.name, reason)
    return Missing(p.name, reason)
