"""How the gateway authenticates to each provider type, resolved once per config load.

`credential_for(provider)` returns an object whose `headers(...)` gives the headers to add to
one upstream request after translation (the final method, host, path and body): a static key
header, SigV4 over the final body (Bedrock), or an OAuth bearer from a service account (Vertex,
cached and refreshed by `extproc.auth.gcp.TokenSource`). Secrets never appear in errors or logs.

A key from `api_key_file` (a mounted Kubernetes Secret) is re-read when the file changes, so a
rotated Secret takes effect without a restart (`ApiKeyFile`). A provider with `credentials:`
uses the pod's workload identity through the cloud's library (`extproc.auth.cloud`; for Bedrock,
botocore's IRSA / EKS Pod Identity providers in `extproc.auth.aws`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
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


KEY_FILE_RECHECK_S = 5.0


@dataclass
class ApiKeyFile:
    """A key read from a file and re-read when that file changes.

    The kubelet updates a Secret volume by swapping its `..data` symlink, so the path then names
    another file: its identity (device, inode, mtime, size) changes. `headers` stats the path at
    most once per `KEY_FILE_RECHECK_S` seconds (one stat, no read, between changes) and re-reads
    it when the identity differs. A file that cannot be read or is empty keeps the last key
    (logged once per change, without the key). Not shared across event loops; no await inside."""

    header: str
    prefix: str
    provider: str
    path: str
    key: str
    identity: tuple[int, ...]
    clock: Callable[[], float] = time.monotonic
    checked_at: float = 0.0

    @classmethod
    def load(cls, header: str, prefix: str, provider: str, path: str,
             clock: Callable[[], float] = time.monotonic) -> ApiKeyFile | None:
        """None when the file gives no key now."""
        read = _read_file(path)
        if read is None:
            return None
        key, identity = read
        return cls(header, prefix, provider, path, key, identity, clock, clock())

    async def headers(self, method: str, host: str, path: str, headers: Mapping[str, str],
                      body: bytes) -> list[tuple[str, str]]:
        now = self.clock()
        if now - self.checked_at >= KEY_FILE_RECHECK_S:
            self.checked_at = now
            self._refresh()
        return [(self.header, self.prefix + self.key)]

    def _refresh(self) -> None:
        try:
            identity = _identity(os.stat(self.path))
        except OSError as e:
            identity = (-1, e.errno or 0)
        if identity == self.identity:
            return
        self.identity = identity
        read = _read_file(self.path)
        if read is None:
            log.error("provider %s: the key file %s gives no key now; keeping the previous key",
                      self.provider, self.path)
            return
        self.key, self.identity = read
        log.info("provider %s: the key file %s changed; using the new key", self.provider, self.path)


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _read_file(path: str) -> tuple[str, tuple[int, ...]] | None:
    try:
        with open(path, encoding="utf-8") as f:
            identity = _identity(os.fstat(f.fileno()))
            key = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return (key, identity) if key else None


@dataclass(frozen=True)
class NoCredential:
    """A pool of self-hosted servers that takes no key (`type: pool` without a key setting)."""

    async def headers(self, method: str, host: str, path: str, headers: Mapping[str, str],
                      body: bytes) -> list[tuple[str, str]]:
        return []


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
    "pool": ("authorization", "Bearer "),  # vLLM's and SGLang's --api-key
    "anthropic": ("authorization", "Bearer "),  # the anthropic 2.13 SDK's scheme
    "azure-openai": ("api-key", ""),
    "gemini": ("x-goog-api-key", ""),
    "mistral": ("authorization", "Bearer "),
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
    if p.credentials:
        return _cloud(p)
    if p.type == "pool" and not (p.api_key_env or p.api_key_file):
        return NoCredential()
    if p.type in _KEY_HEADERS and p.api_key_file and not p.api_key_env:
        header, prefix = _KEY_HEADERS[p.type]
        from_file = ApiKeyFile.load(header, prefix, p.name, p.api_key_file)
        return from_file if from_file is not None else _missing(p, f"file {p.api_key_file} gives no key")
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


def _cloud(p: Provider) -> Credential:
    """Workload identity through the cloud's library (extproc.auth.cloud)."""
    from extproc.auth import cloud

    try:
        if p.type == "bedrock":
            from extproc.auth import aws

            region = p.region or "us-east-1"
            return aws.RefreshingAwsCredentials(p.name, aws.workload_identity(region), region)
        if p.type == "vertex":
            return cloud.RefreshingToken(p.name, cloud.gcp_application_default())
        return cloud.RefreshingToken(p.name, cloud.azure_workload_identity())
    except ImportError as e:
        return _missing(p, f"credentials: {p.credentials} needs {e.name} (pip install 'interlock[cloud]')")


def _missing(p: Provider, reason: str) -> Missing:
    log.error("provider %s: %s; its requests will fail with 502", p.name, reason)
    return Missing(p.name, reason)
