"""Provider credentials from the cluster's workload identity, through the clouds' own libraries.

    vertex        credentials: application-default   google-auth's application-default credentials:
                                                     GKE Workload Identity (the metadata server),
                                                     GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC
    azure-openai  credentials: workload-identity     azure-identity's WorkloadIdentityCredential:
                                                     AKS workload identity (AZURE_CLIENT_ID,
                                                     AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE)
    bedrock       credentials: workload-identity     botocore's credential providers: IRSA, EKS
                                                     Pod Identity (extproc.auth.aws; the value is
                                                     temporary credentials, signed per request)

Theory of operation of `RefreshingToken`: a daemon thread (started by the first request, in the
worker process that serves it) owns the library's credential object and calls its blocking
refresh ahead of expiry: `REFRESH_MARGIN_S` before it, or halfway through a shorter life; a failed
refresh is logged and retried after `RETRY_S`, and the last token is served while it is valid.
The request path (`headers`) only reads the cached token: no I/O. The first request waits for the
first token, up to `FIRST_TOKEN_WAIT_S`; with no valid token a request fails with 502
`provider_credentials_unavailable`. Log lines name the provider and the error, never a token.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from extproc.errors import GatewayError

log = logging.getLogger("interlock.auth")
Fetch = Callable[[], tuple[Any, float]]  # () -> (token, expiry in epoch seconds); blocking
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
AZURE_OPENAI_SCOPE = "https://cognitiveservices.azure.com/.default"
REFRESH_MARGIN_S = 300.0
RETRY_S = 10.0
FIRST_TOKEN_WAIT_S = 10.0


class RefreshingToken:
    """A bearer token kept fresh by a background thread (see the module docstring)."""

    def __init__(self, provider: str, fetch: Fetch, *, header: str = "authorization", prefix: str = "Bearer ",
                 clock: Callable[[], float] = time.time) -> None:
        self.provider, self._fetch, self.header, self.prefix, self._clock = provider, fetch, header, prefix, clock
        self._token: tuple[Any, float] | None = None
        self._first = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.refreshes = 0

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"token-{self.provider}", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                token, expires_at = self._fetch()
                self._token = (token, expires_at)
                self.refreshes += 1
                self._first.set()
                life = expires_at - self._clock()
                wait = life - REFRESH_MARGIN_S if life > 2 * REFRESH_MARGIN_S else max(life / 2, 1.0)
            except Exception as e:  # the library's errors: logged, retried
                log.error("provider %s: token refresh failed (%s: %s); retrying in %.0f s", self.provider,
                          type(e).__name__, str(e)[:300], RETRY_S)
                wait = RETRY_S
            self._stop.wait(wait)

    def _valid(self) -> Any:
        token = self._token
        return token[0] if token is not None and token[1] > self._clock() else None

    async def current(self) -> Any:
        """The cached value while it is valid; else waits for the first fetch (502 without one)."""
        token = self._valid()
        if token is None:
            self.start()
            await asyncio.to_thread(self._first.wait, FIRST_TOKEN_WAIT_S)
            token = self._valid()
        if token is None:
            raise GatewayError("The gateway could not obtain credentials for the provider.", 502, "api_error",
                               "provider_credentials_unavailable")
        return token

    async def headers(self, method: str, host: str, path: str, headers: Mapping[str, str],
                      body: bytes) -> list[tuple[str, str]]:
        return [(self.header, self.prefix + await self.current())]


def _epoch(expiry: datetime.datetime | None) -> float:
    if expiry is None:
        return time.time() + 3600
    if expiry.tzinfo is None:  # google-auth: naive UTC
        expiry = expiry.replace(tzinfo=datetime.UTC)
    return expiry.timestamp()


def gcp_application_default(scope: str = CLOUD_PLATFORM_SCOPE) -> Fetch:
    """google-auth's application-default credentials (found and refreshed in the token thread)."""
    import google.auth  # noqa: F401 (ImportError here: the `cloud` extra is missing)
    import google.auth.transport.requests

    state: dict[str, object] = {}

    def fetch() -> tuple[str, float]:
        if "creds" not in state:
            state["creds"], _ = google.auth.default(scopes=[scope])
            state["request"] = google.auth.transport.requests.Request()
        creds = state["creds"]
        creds.refresh(state["request"])  # type: ignore[attr-defined]
        return str(creds.token), _epoch(creds.expiry)  # type: ignore[attr-defined]

    return fetch


def azure_workload_identity(scope: str = AZURE_OPENAI_SCOPE) -> Fetch:
    """azure-identity's WorkloadIdentityCredential (AKS workload identity's environment)."""
    from azure.identity import WorkloadIdentityCredential

    state: dict[str, WorkloadIdentityCredential] = {}

    def fetch() -> tuple[str, float]:
        if "creds" not in state:
            state["creds"] = WorkloadIdentityCredential()
        token = state["creds"].get_token(scope)
        return token.token, float(token.expires_on)

    return fetch
