"""Simulated Google OAuth 2.0 for service accounts, and the bearer tokens Vertex AI accepts.

`POST /token` takes ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` and an RS256
``assertion`` (form-encoded). The JWT must be signed by a known service account (`iss` =
its `client_email`, checked with its registered public key), carry a `scope`, have `aud` equal to
the URL the request was sent to or to one of Google's token URLs (google-auth always signs for
``https://oauth2.googleapis.com/token`` whatever its `token_uri`), and be short-lived: `iat` not in
the future (60 s leeway), `exp` after now and at most an hour after `iat`. The answer is
``{"access_token", "expires_in", "token_type": "Bearer"}``; errors are Google's OAuth errors
``{"error": "invalid_grant", "error_description": ...}`` with status 400 (401 for an unknown
account).

`make_service_account(path, token_uri)` writes a key file as Google issues them, for tests and demos.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_URLS = ("https://oauth2.googleapis.com/token", "https://www.googleapis.com/oauth2/v4/token",
                     "https://accounts.google.com/o/oauth2/token")
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_EXPIRES_IN = 3600
MAX_LIFETIME_S = 3600
LEEWAY_S = 60
_NO_CACHE = {"cache-control": "no-cache, no-store, max-age=0, must-revalidate", "pragma": "no-cache"}
SHORT_LIVED = ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check "
               "your iat and exp values in the JWT claim.")


class OAuthError(Exception):
    """A token request Google would refuse: `error` code, description, HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass
class ServiceAccount:
    """A service account the simulator knows: its email, public key and (optional) project."""

    client_email: str
    public_key: rsa.RSAPublicKey
    project_id: str | None = None


@dataclass
class IssuedToken:
    client_email: str
    scopes: tuple[str, ...]
    expires_at: float
    project_id: str | None = None


@dataclass
class GcpAuth:
    """Known service accounts, issued access tokens and the token endpoint's counters."""

    accounts: dict[str, ServiceAccount] = field(default_factory=dict)
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    expires_in: int = DEFAULT_EXPIRES_IN
    tokens_issued: int = 0
    token_requests: int = 0

    def register(self, client_email: str, public_key_pem: str, project_id: str | None = None) -> ServiceAccount:
        """Know `client_email` by its PEM public key (SubjectPublicKeyInfo or a certificate); ValueError if bad."""
        data = public_key_pem.encode()
        if b"BEGIN CERTIFICATE" in data:
            from cryptography import x509

            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("public key: not an RSA key")
        account = ServiceAccount(client_email, key, project_id)
        self.accounts[client_email] = account
        return account

    def load_file(self, path: str | Path) -> ServiceAccount:
        """Know the account of a service-account JSON key file (its private key gives the public key)."""
        info = json.loads(Path(path).read_text())
        return self.register(info["client_email"], public_key_pem(info), info.get("project_id"))

    def reset_counters(self) -> None:
        self.tokens_issued = 0
        self.token_requests = 0
        self.expires_in = DEFAULT_EXPIRES_IN

    def grant(self, form: dict[str, str], token_url: str, now: float) -> dict[str, Any]:
        """The token answer for a token request's form fields; raises OAuthError."""
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "Missing required parameter: grant_type")
        if grant_type != JWT_GRANT:
            raise OAuthError("unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        assertion = form.get("assertion")
        if not assertion:
            raise OAuthError("invalid_request", "Missing required parameter: assertion")
        claims = self._verified_claims(assertion, token_url, now)
        scopes = tuple(str(claims.get("scope") or "").split())
        if not scopes:
            raise OAuthError("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        token = "ya29.c.sim-" + secrets.token_urlsafe(48)
        account = self.accounts[claims["iss"]]
        self.tokens[token] = IssuedToken(account.client_email, scopes, now + self.expires_in, account.project_id)
        self.tokens_issued += 1
        return {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}

    def _verified_claims(self, assertion: str, token_url: str, now: float) -> dict[str, Any]:
        pieces = assertion.split(".")
        if len(pieces) != 3:
            raise OAuthError("invalid_grant", "Invalid JWT: the assertion is not a JWS in compact serialization.")
        try:
            header = json.loads(_b64url(pieces[0]))
            claims = json.loads(_b64url(pieces[1]))
            signature = _b64url(pieces[2])
        except (ValueError, binascii.Error) as exc:
            raise OAuthError("invalid_grant", "Invalid JWT: the assertion is not valid base64url JSON.") from exc
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise OAuthError("invalid_grant", "Invalid JWT: header and claims must be JSON objects.")
        if header.get("alg") != "RS256":
            raise OAuthError("invalid_grant", f"Invalid JWT: unsupported algorithm {header.get('alg')!r}.")
        account = self.accounts.get(str(claims.get("iss")))
        if account is None:
            raise OAuthError("invalid_grant", "Invalid grant: account not found", 400)
        try:
            account.public_key.verify(signature, f"{pieces[0]}.{pieces[1]}".encode(), padding.PKCS1v15(),
                                      hashes.SHA256())
        except InvalidSignature as exc:
            raise OAuthError("invalid_grant", "Invalid JWT Signature.") from exc
        audience = claims.get("aud")
        if audience != token_url and audience not in GOOGLE_TOKEN_URLS:
            raise OAuthError("invalid_grant", f"Invalid JWT: audience {audience!r} is not the token endpoint "
                                              f"{token_url!r}.")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, (int, float)) or not isinstance(exp, (int, float)) or isinstance(iat, bool):
            raise OAuthError("invalid_grant", SHORT_LIVED)
        if iat > now + LEEWAY_S or exp <= now - LEEWAY_S or exp - iat > MAX_LIFETIME_S or exp <= iat:
            raise OAuthError("invalid_grant", SHORT_LIVED)
        return claims

    def check_bearer(self, token: str | None, now: float) -> tuple[IssuedToken | None, str | None]:
        """The token's grant, or why it is refused: ``CREDENTIALS_MISSING``, ``ACCESS_TOKEN_EXPIRED``,
        ``ACCESS_TOKEN_TYPE_UNSUPPORTED`` (not issued here) or ``ACCESS_TOKEN_SCOPE_INSUFFICIENT``."""
        if not token:
            return None, "CREDENTIALS_MISSING"
        issued = self.tokens.get(token)
        if issued is None:
            return None, "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        if issued.expires_at <= now:
            return None, "ACCESS_TOKEN_EXPIRED"
        if CLOUD_PLATFORM not in issued.scopes:
            return issued, "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
        return issued, None


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def token_endpoint(auth: GcpAuth, request: web.Request, now: float) -> web.Response:
    """`POST /token`: Google's OAuth 2.0 token endpoint for the JWT-bearer grant."""
    auth.token_requests += 1
    raw = (await request.read()).decode("utf-8", "replace")
    form = {k: v[0] for k, v in parse_qs(raw).items()}
    token_url = f"{request.scheme}://{request.host}{request.path}"
    try:
        if request.content_type != "application/x-www-form-urlencoded":
            raise OAuthError("invalid_request", "Invalid Content-Type; expected application/x-www-form-urlencoded")
        answer = auth.grant(form, token_url, now)
    except OAuthError as exc:
        return web.json_response({"error": exc.error, "error_description": exc.description}, status=exc.status,
                                 headers=_NO_CACHE)
    return web.json_response(answer, headers=_NO_CACHE)


def make_service_account(path: str | Path, token_uri: str, *, project_id: str = "interlock-sim",
                         client_email: str | None = None) -> dict[str, Any]:
    """Generate an RSA key and write a service-account JSON key file at `path`; returns its content.

    Register it with a simulator by `GcpAuth.load_file(path)`, ``--gcp-service-account PATH`` or
    ``POST /_sim/gcp/service-accounts {"client_email", "public_key_pem", "project_id"}`` (the
    public key is `public_key_pem(info)`).
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    email = client_email or f"interlock-sim@{project_id}.iam.gserviceaccount.com"
    info = {
        "type": "service_account", "project_id": project_id, "private_key_id": secrets.token_hex(20),
        "private_key": pem, "client_email": email, "client_id": str(100000000000000000000 + secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "universe_domain": "googleapis.com",
    }
    Path(path).write_text(json.dumps(info, indent=2))
    return info


def public_key_pem(info: dict[str, Any]) -> str:
    """The PEM public key of a service-account key file's content."""
    private = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError("private_key is not an RSA key")
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo).decode()
