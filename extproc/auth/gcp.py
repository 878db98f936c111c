"""Google service-account credentials: OAuth 2.0 access tokens for Vertex AI.

    ServiceAccount.from_file(path)      the JSON key file Google issues (client_email, private_key,
                                        private_key_id, token_uri)
    build_assertion(sa, now, ...)       pure: the RS256-signed JWT for the jwt-bearer grant
    TokenSource(sa, ...).token()        a cached access token, refreshed before it expires

Theory of operation of `TokenSource`: it holds at most one token and its expiry (clock seconds).

    EMPTY ──refresh ok──▶ FRESH ──clock reaches expiry − 5 min──▶ STALE ──clock reaches expiry──▶ EXPIRED
                            ▲                                        │ refresh fails: keep the token,
                            └──────────────refresh ok────────────────┘ retry after 10 s

`token()` returns a FRESH token at once. Otherwise it refreshes under an asyncio lock, so
concurrent callers share one refresh (those that waited find the new token and return it). A
refresh posts the assertion to the token URI (the provider config's `token_uri` wins over the
file's) through the injected `fetch(url, form) -> (status, json)`. If it fails while the old token
is still valid (STALE), the old token is returned and no new attempt is made for 10 s; with no
valid token (EMPTY, EXPIRED) a failure raises `TokenError`, whose text names the account and what
went wrong but never the key, the assertion or a token.

Lifetime: one `TokenSource` per provider, shared by every request of one event loop. The clock is
injectable (`time.time` by default), so tests never sleep.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME_S = 3600
REFRESH_MARGIN_S = 300.0
RETRY_AFTER_FAILURE_S = 10.0
Fetch = Callable[[str, dict[str, str]], Awaitable[tuple[int, Any]]]


class TokenError(Exception):
    """An access token could not be obtained. The text is safe to log: no key, assertion or token."""


@dataclass(frozen=True)
class ServiceAccount:
    """A service-account key. `private_key` is never shown by repr."""

    client_email: str
    private_key_id: str
    token_uri: str
    private_key: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def from_file(cls, path: str) -> ServiceAccount:
        """Load a key file. Raises OSError (unreadable), ValueError (not JSON, not a service-account
        key, or a key that is not RSA) or KeyError (a required field is missing)."""
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        return cls.from_info(raw)

    @classmethod
    def from_info(cls, raw: Any) -> ServiceAccount:
        """A ServiceAccount from the parsed key file (same errors as `from_file`)."""
        if not isinstance(raw, dict):
            raise ValueError("a service-account key file holds a JSON object")
        if raw.get("type", "service_account") != "service_account":
            raise ValueError(f"credentials of type {raw.get('type')!r} are not a service-account key")
        for name in ("client_email", "private_key", "private_key_id"):
            if not isinstance(raw[name], str) or not raw[name]:
                raise ValueError(f"`{name}` must be a non-empty string")
        try:
            key = serialization.load_pem_private_key(raw["private_key"].encode(), password=None)
        except (ValueError, TypeError):
            raise ValueError("`private_key` is not a readable PEM private key") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("`private_key` must be an RSA key")
        token_uri = raw.get("token_uri")
        return cls(raw["client_email"], raw["private_key_id"],
                   token_uri if isinstance(token_uri, str) and token_uri else DEFAULT_TOKEN_URI, key)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def build_assertion(sa: ServiceAccount, now: float, scope: str = CLOUD_PLATFORM_SCOPE,
                    token_uri: str | None = None) -> str:
    """The signed JWT (RS256, `kid` = private_key_id) that trades for an access token: `iss` the
    account, `scope`, `aud` the token URI it is posted to, `iat` = now, `exp` = now + 1 h. Pure."""
    header = {"alg": "RS256", "typ": "JWT", "kid": sa.private_key_id}
    issued = int(now)
    claims = {"iss": sa.client_email, "scope": scope, "aud": token_uri or sa.token_uri, "iat": issued,
              "exp": issued + ASSERTION_LIFETIME_S}
    signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + _b64url(json.dumps(claims, separators=(",", ":")).encode()))
    signature = sa.private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64url(signature)


async def aiohttp_fetch(url: str, form: dict[str, str]) -> tuple[int, Any]:
    """POST `form` as application/x-www-form-urlencoded; (status, parsed JSON or None)."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.post(url, data=form) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, None


class TokenSource:
    """Cached, early-refreshed access tokens for one service account (see the module docstring)."""

    def __init__(self, account: ServiceAccount, token_uri: str | None = None, *,
                 scope: str = CLOUD_PLATFORM_SCOPE, fetch: Fetch | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.account = account
        self.token_uri = token_uri or account.token_uri
        self._scope = scope
        self._fetch = fetch or aiohttp_fetch
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._retry_at = 0.0

    async def token(self) -> str:
        """A valid access token; raises TokenError when none can be had."""
        token = self._usable(self._clock())
        if token is not None:
            return token
        async with self._lock:
            now = self._clock()
            token = self._usable(now)
            if token is not None:
                return token
            try:
                return await self._refresh(now)
            except TokenError:
                if self._token is not None and now < self._expires_at:
                    self._retry_at = now + RETRY_AFTER_FAILURE_S
                    return self._token
                raise

    def _usable(self, now: float) -> str | None:
        if self._token is None or now >= self._expires_at:
            return None
        if now < self._expires_at - REFRESH_MARGIN_S or now < self._retry_at:
            return self._token
        return None

    async def _refresh(self, now: float) -> str:
        form = {"grant_type": JWT_BEARER_GRANT,
                "assertion": build_assertion(self.account, now, self._scope, self.token_uri)}
        who = f"service account {self.account.client_email}"
        try:
            # A task of its own: the ext_proc runs a message's handling inline, outside any task,
            # until it first suspends, and aiohttp's timeouts need a current task.
            status, answer = await asyncio.ensure_future(self._fetch(self.token_uri, form))
        except Exception as e:
            raise TokenError(f"{who}: token request to {self.token_uri} failed: {type(e).__name__}") from None
        if status != 200:
            raise TokenError(f"{who}: token request to {self.token_uri} answered {status}{_oauth_error(answer)}")
        token = answer.get("access_token") if isinstance(answer, dict) else None
        lifetime = answer.get("expires_in") if isinstance(answer, dict) else None
        if (not isinstance(token, str) or not token or not isinstance(lifetime, (int, float))
                or isinstance(lifetime, bool) or lifetime <= 0):
            raise TokenError(f"{who}: the token answer from {self.token_uri} has no access_token or expires_in")
        self._token, self._expires_at, self._retry_at = token, now + float(lifetime), 0.0
        return token


def _oauth_error(answer: Any) -> str:
    """` (error: description)` from an OAuth error answer, cut short; "" when it has none."""
    if not isinstance(answer, dict) or not isinstance(answer.get("error"), str):
        return ""
    description = answer.get("error_description")
    detail = f": {description[:200]}" if isinstance(description, str) and description else ""
    return f" ({answer['error'][:64]}{detail})"
