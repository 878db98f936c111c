"""Bedrock's SigV4 credentials from the pod's AWS identity, through botocore's credential providers.

    bedrock  credentials: workload-identity
      IRSA               AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE (the EKS pod identity webhook
                         sets both): botocore's AssumeRoleWithWebIdentityProvider trades the
                         projected token for temporary credentials at STS (AssumeRoleWithWebIdentity;
                         `AWS_ENDPOINT_URL_STS` / `AWS_STS_REGIONAL_ENDPOINTS` as botocore reads them)
      EKS Pod Identity   AWS_CONTAINER_CREDENTIALS_FULL_URI + AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE
                         (the Pod Identity agent's endpoint, set by EKS): botocore's ContainerProvider

Tried in that order, as botocore's own default chain does; the first whose environment is present
is used for the life of the worker. Refreshing is `extproc.auth.cloud.RefreshingToken`'s: a daemon
thread asks botocore's refreshable credentials for a frozen copy ahead of expiry (botocore then
calls STS or the agent, blocking that thread only), and the request path signs with the cached
copy (`extproc.auth.sigv4`, a pure function): no I/O per request.

botocore is imported here only, lazily (pyproject.toml's import contract allows this module alone).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from extproc.auth import sigv4
from extproc.auth.cloud import RefreshingToken

WEB_IDENTITY_ENV = ("AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")
POD_IDENTITY_ENV = ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
_UNKNOWN_EXPIRY_S = 900.0  # botocore refreshes within 15 min of expiry; re-ask at least that often


class NoAwsIdentity(RuntimeError):
    """Neither IRSA's nor EKS Pod Identity's environment is present."""


class RefreshingAwsCredentials(RefreshingToken):
    """Temporary AWS credentials kept fresh off the request path; `headers` signs with SigV4."""

    def __init__(self, provider: str, fetch: Callable[[], tuple[Any, float]], region: str,
                 service: str = "bedrock", *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(provider, fetch, clock=clock)
        self.region, self.service = region, service

    async def headers(self, method: str, host: str, path: str, headers: Mapping[str, str],
                      body: bytes) -> list[tuple[str, str]]:
        creds: sigv4.AwsCredentials = await self.current()
        return list(sigv4.sign(method, host, path, headers, body, creds, self.region, self.service,
                               datetime.now(UTC)))


def workload_identity(region: str) -> Callable[[], tuple[sigv4.AwsCredentials, float]]:
    """A blocking fetch of (credentials, expiry in epoch seconds) through botocore's providers
    (IRSA first, then EKS Pod Identity); raises `NoAwsIdentity` when neither is configured."""
    import botocore.credentials
    import botocore.session

    state: dict[str, Any] = {}

    def resolve() -> Any:
        session = botocore.session.Session()

        def client_creator(service: str, **kwargs: Any) -> Any:
            return session.create_client(service, region_name=region, **kwargs)

        resolver = botocore.credentials.CredentialResolver([
            botocore.credentials.AssumeRoleWithWebIdentityProvider(
                load_config=lambda: session.full_config, client_creator=client_creator,
                profile_name=session.get_config_variable("profile") or "default", cache={}),
            botocore.credentials.ContainerProvider(),
        ])
        creds = resolver.load_credentials()
        if creds is None:
            raise NoAwsIdentity(f"no AWS workload identity in the environment: set {' and '.join(WEB_IDENTITY_ENV)} "
                                f"(IRSA) or {' and '.join(POD_IDENTITY_ENV)} (EKS Pod Identity)")
        return creds

    def fetch() -> tuple[sigv4.AwsCredentials, float]:
        if "creds" not in state:
            state["creds"] = resolve()
        creds = state["creds"]
        frozen = creds.get_frozen_credentials()  # botocore refreshes here when near expiry
        # botocore keeps the expiry private to its RefreshableCredentials; without it, re-ask soon.
        expiry = getattr(creds, "_expiry_time", None)
        expires_at = expiry.timestamp() if isinstance(expiry, datetime) else time.time() + _UNKNOWN_EXPIRY_S
        return sigv4.AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token), expires_at

    return fetch
