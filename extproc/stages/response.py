"""What the router stage does with an answer, decided from its response headers.

`plan` chooses how the body is handled per stream (`Reply` and Envoy's body mode): a stream
that needs no translation and no reading bypasses the ext_proc entirely (mode NONE, which costs
nothing per event). `failure` names the gateway-side reasons a non-2xx answer is not the
provider's own error (the client's deadline passed; the provider was never reached); the
provider's own error body is translated when it arrives. Pure functions.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable, Mapping

from extproc import envoy_msgs as msgs
from extproc import errors, metadata
from extproc.runtime import Deployment
from extproc.stages.feedback import RATELIMIT_PREFIX
from extproc.stages.outbound import CLIENT_STRIP_PREFIXES
from extproc.translate.base import Usage

log = logging.getLogger("interlock.router")

UPSTREAM_TIME = "x-envoy-upstream-service-time"  # Envoy sets it on answers an upstream sent
DEADLINE_SLACK_S = 0.05


class Reply(enum.Enum):
    """What the response body phase does with the body."""

    NONE = "none"  # not sent to the ext_proc
    READ = "read"  # passthrough, read (never changed) for usage and the end of the stream
    TRANSLATE = "translate"  # a 2xx answer in the provider's API
    ERROR = "error"  # a provider's (or Envoy's) failure, buffered, rendered in the client's format


def plan(passthrough: bool, stream: bool, watch: bool, sample: Callable[[], bool]) -> tuple[Reply, int]:
    """(what to do with a 2xx body, Envoy's body mode). `watch`: the end of the answer matters
    (usage for rate limits, the end for a budget slot); `sample` is called only for passthrough
    streams nobody watches — a sampled one is read so its time per output token is learned."""
    if not passthrough:
        return Reply.TRANSLATE, msgs.BODY_STREAMED if stream else msgs.BODY_BUFFERED
    if stream and (watch or sample()):
        return Reply.READ, msgs.BODY_STREAMED
    if watch and not stream:
        return Reply.READ, msgs.BODY_BUFFERED
    return Reply.NONE, msgs.BODY_NONE


def deadline_passed(status: int, headers: Mapping[str, str], deadline_at: float | None, now: float) -> bool:
    """Envoy's route timeout, set from the client's deadline, ran out: the client's choice, not the
    provider's failure (nothing is learned from it)."""
    return (status == 504 and deadline_at is not None and UPSTREAM_TIME not in headers
            and now >= deadline_at - DEADLINE_SLACK_S)


def failure(status: int, headers: Mapping[str, str], deadline_hit: bool, provider: str) -> errors.GatewayError | None:
    """The error a non-2xx answer becomes when it is not the provider's own (None: translate the
    provider's error body). `status` is the client status (`client_status_for`)."""
    if deadline_hit:
        return errors.DeadlineExceeded("The request did not complete within its deadline "
                                       "(x-interlock-deadline-ms or the tenant's default).")
    if status >= 500 and UPSTREAM_TIME not in headers:
        # A 5xx without Envoy's upstream mark is Envoy's own reply (connection refused, reset,
        # overflow): the provider was never reached.
        return errors.ProviderError(f"The provider {provider} could not be reached.", status, "api_error",
                                    "provider_unreachable")
    return None


def headers_to_remove(headers: Iterable[str], shown: set[str]) -> list[str]:
    """Provider headers the client must not see: protocol and SDK headers, request ids, cookies,
    and the provider's rate-limit headers (about the gateway's account) except the `shown` ones."""
    return [k for k in headers if k.startswith(CLIENT_STRIP_PREFIXES) or k in ("request-id", "set-cookie")
            or (k.startswith(RATELIMIT_PREFIX) and k not in shown)]


def identity_headers(d: Deployment | None, route: str | None, requested: str | None) -> list[tuple[str, str]]:
    """Who answered: `x-interlock-provider` / `x-interlock-model` (and the route when one chose);
    `interlock` and the requested model (or `-`) when the gateway or Envoy answered itself."""
    if d is None:
        return [(metadata.PROVIDER_HEADER, metadata.GATEWAY_PROVIDER), (metadata.MODEL_HEADER, requested or "-")]
    out = [(metadata.PROVIDER_HEADER, d.provider), (metadata.MODEL_HEADER, d.model)]
    return [*out, (metadata.ROUTE_HEADER, route)] if route else out


def error_event(api: str, body: bytes) -> bytes:
    """An error rendered as the last event of a stream whose first bytes reached the client."""
    return (b"event: error\n" if api == errors.ANTHROPIC else b"") + b"data: " + body + b"\n\n"


def access_log(request_id: str, tenant: str, d: Deployment | None, status: int, upstream_status: int,
               usage: Usage | None, ms: float) -> None:
    """The one line per answered request."""
    if log.isEnabledFor(logging.INFO):
        log.info("request_id=%s tenant=%s model=%s provider=%s status=%d upstream_status=%d prompt_tokens=%s "
                 "completion_tokens=%s ms=%.1f", request_id, tenant, d.model if d else "-", d.provider if d else "-",
                 status, upstream_status, usage.prompt_tokens if usage else "-",
                 usage.completion_tokens if usage else "-", ms)
