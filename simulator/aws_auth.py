"""AWS pieces of the simulator: SigV4 verification for known credentials, event-stream frames.

`AwsCredentials.verify(...)` recomputes the signature of a request as received (method, raw
path, query, the headers named in ``SignedHeaders``, body) with botocore's `SigV4Auth` for the
region of the credential scope, and returns the refusal Bedrock would answer, if any, as
``(status, error type, message)``: no ``Authorization`` → MissingAuthenticationTokenException,
a malformed one → IncompleteSignatureException, an unknown key id →
UnrecognizedClientException, a scope whose service is not ``bedrock``, a date more than 5 minutes
off or a different signature → InvalidSignatureException (the message then shows the canonical
request and string to sign the simulator expected, as AWS does). ``x-amz-security-token`` is
accepted as signed, whatever its value.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

DEMO_ACCESS_KEY_ID = "AKIAINTERLOCKSIMDEMO"
DEMO_SECRET_ACCESS_KEY = "interlock/simulator/demo/secret/access/key"
SERVICE = "bedrock"
MAX_SKEW_S = 300
_AUTH = re.compile(r"^AWS4-HMAC-SHA256\s+Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]+)$")
MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your AWS "
            "Secret Access Key and signing method. Consult the service documentation for details.")

Refusal = tuple[int, str, str]


class _Verifier(SigV4Auth):
    """SigV4Auth over exactly the headers the client signed."""

    def __init__(self, credentials: Credentials, region: str, signed: list[str]) -> None:
        super().__init__(credentials, SERVICE, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        headers = HTTPHeaders()
        for name in self._signed:
            for value in request.headers.get_all(name) or []:
                headers[name] = value
        return headers

    def payload(self, request: AWSRequest) -> str:
        return hashlib.sha256(request.body or b"").hexdigest()


@dataclass
class AwsCredentials:
    """Known access key ids and their secrets."""

    secrets: dict[str, str] = field(default_factory=lambda: {DEMO_ACCESS_KEY_ID: DEMO_SECRET_ACCESS_KEY})

    def add(self, access_key_id: str, secret_access_key: str) -> None:
        self.secrets[access_key_id] = secret_access_key

    def verify(self, method: str, raw_path: str, headers: list[tuple[str, str]], body: bytes,
               now: float) -> Refusal | None:
        """Why Bedrock would refuse this request's signature (None = valid); see the module docstring."""
        lowered = [(k.lower(), v) for k, v in headers]
        auth = next((v for k, v in lowered if k == "authorization"), None)
        if auth is None:
            return 403, "MissingAuthenticationTokenException", "Missing Authentication Token"
        match = _AUTH.match(auth.strip())
        if match is None:
            return (403, "IncompleteSignatureException",
                    f"Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters "
                    f"with the AWS4-HMAC-SHA256 algorithm. Authorization={auth}")
        credential, signed_text, signature = match.groups()
        scope = credential.split("/")
        if len(scope) != 5 or scope[4] != "aws4_request":
            return 403, "IncompleteSignatureException", f"Credential is malformed: {credential}"
        key_id, day, region, service = scope[:4]
        secret = self.secrets.get(key_id)
        if secret is None:
            return 403, "UnrecognizedClientException", "The security token included in the request is invalid."
        if service != SERVICE:
            return 403, "InvalidSignatureException", f"Credential should be scoped to correct service: '{SERVICE}'. "
        amz_date = next((v for k, v in lowered if k == "x-amz-date"), "")
        stale = _stale(amz_date, now)
        if stale:
            return 403, "InvalidSignatureException", stale
        if amz_date[:8] != day:
            return (403, "InvalidSignatureException", f"Date in Credential scope does not match YYYYMMDD from "
                    f"ISO-8601 version of date from HTTP: '{day}' != '{amz_date[:8]}', from 'x-amz-date'.")
        signed = signed_text.split(";")
        token = next((v for k, v in lowered if k == "x-amz-security-token"), None)
        verifier = _Verifier(Credentials(key_id, secret, token), region, signed)
        chosen = HTTPHeaders()
        for name, value in lowered:
            if name in signed:
                chosen[name] = value
        request = AWSRequest(method=method, url="http://simulator" + raw_path, data=body, headers=chosen)
        request.context["timestamp"] = amz_date
        canonical = verifier.canonical_request(request)
        string_to_sign = verifier.string_to_sign(request, canonical)
        if verifier.signature(string_to_sign, request) != signature:
            return (403, "InvalidSignatureException", f"{MISMATCH}\n\nThe Canonical String for this request should "
                    f"have been\n'{canonical}'\n\nThe String-to-Sign should have been\n'{string_to_sign}'\n")
        return None


def _stale(amz_date: str, now: float) -> str | None:
    try:
        when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
    current = dt.datetime.fromtimestamp(now, dt.UTC)
    fmt = "%Y%m%dT%H%M%SZ"
    if (current - when).total_seconds() > MAX_SKEW_S:
        earliest = (current - dt.timedelta(seconds=MAX_SKEW_S)).strftime(fmt)
        return f"Signature expired: {amz_date} is now earlier than {earliest} ({current.strftime(fmt)} - 5 min.)"
    if (when - current).total_seconds() > MAX_SKEW_S:
        latest = (current + dt.timedelta(seconds=MAX_SKEW_S)).strftime(fmt)
        return f"Signature not yet current: {amz_date} is still later than {latest} ({current.strftime(fmt)} + 5 min.)"
    return None



def as_headers(items: Any) -> list[tuple[str, str]]:
    return [(str(k), str(v)) for k, v in items]
