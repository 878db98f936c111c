"""A client request made ready for one deployment: translated, signed, its headers set and stripped.

Used by both stages: the router stage for the first attempt, the upstream stage for a retry that
Envoy sends to another provider. `prepare` translates the original request (the translators never
mutate it, so every attempt starts from the client's body), prefixes the provider endpoint's base
path, and asks the provider's credential for its headers over the final body (SigV4 signs it; a
GCP credential may refresh its token over the network, so `prepare` is a coroutine). The header
lists say what to set and what to remove; nothing else about the Envoy messages is decided here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from extproc import errors, metadata
from extproc.pb import decision as decision_record
from extproc.runtime import Deployment
from extproc.translate.base import Target, Translator

# What of the client's headers reaches a provider is an allow-list; every other client header is
# removed, whatever its name (credentials, proxy-authorization, cookies, user-agent, forwarding and
# Envoy control headers, SDK and custom headers). Kept as the client sent them: W3C trace context,
# for every provider type, and the beta/version opt-ins a translator forwards where the provider
# speaks the client's API (`ForwardsClientHeaders`: they describe the very body that goes up).
TRACE_CONTEXT = ("traceparent", "tracestate")
# An allowed header longer than this is removed rather than forwarded (W3C asks that at least 512
# characters of tracestate be propagated; a list of beta names stays well under it).
MAX_FORWARDED_LENGTH = 1024
# Client headers Envoy itself still needs after the router stage: the request id (Envoy's log, the
# answer's `x-request-id` and the upstream stage read it from this same header map; it goes up as
# the gateway's correlation id) and `x-forwarded-proto` (Envoy routes nothing without it: the route
# cache, cleared by the router stage, is refilled only when it is present; the upstream filters,
# `envoyconf.fallback.upstream_tail`, are the place to remove it before the provider).
KEPT = (metadata.REQUEST_ID_HEADER, "x-forwarded-proto")
# Headers any provider's translation or credentials may set, and client headers a translator may
# forward; an attempt removes those it does not set itself, since Envoy keeps header mutations
# across attempts.
PROVIDER_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key", "anthropic-version",
                    "anthropic-beta", "openai-beta", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256")


class ForwardsClientHeaders(Protocol):
    """A translator's optional ability: client request headers that go upstream unchanged besides
    the trace context (e.g. `anthropic-beta` for Anthropic passthrough); every other client header
    is stripped.
    Read with `forwarded_headers` (an attribute lookup: `isinstance` against a runtime-checkable
    protocol cost 5.7 µs per request here, the lookup 0.03 µs)."""

    forward_client_headers: tuple[str, ...]


def forwarded_headers(translator: Translator | ForwardsClientHeaders) -> tuple[str, ...]:
    return getattr(translator, "forward_client_headers", ())


@dataclass(frozen=True, slots=True)
class Outbound:
    """The request for one deployment: its body and every header to set (`:path`, `:authority`,
    `content-length`, `x-interlock-translated-for`, protocol headers, credentials)."""

    body: bytes
    headers: list[tuple[str, str]]
    stream: bool
    dropped_params: tuple[str, ...]

    def names(self) -> set[str]:
        return {k for k, _ in self.headers}


async def prepare(translator: Translator, body: dict[str, Any], d: Deployment) -> Outbound:
    """Translate `body` (the client's parsed request) for `d` and sign it. Raises the translator's
    `BadRequest` for what `d` cannot serve, or a `GatewayError` when credentials fail."""
    up = translator.translate_request(body, d.target)
    p = d.account.config
    path = p.endpoint.base_path + up.path
    protocol = [("content-type", "application/json"), *p.headers, *up.headers]
    credentials = await d.account.credential.headers("POST", p.endpoint.authority, path, dict(protocol), up.body)
    # `:authority` is the provider's own, as Envoy's host rewrite would set it (and as SigV4 signs
    # it): that rewrite, when it runs after the upstream filters, keeps the previous value in
    # `x-envoy-original-host`, which then names the provider, never the gateway's own address.
    headers = [(":path", path), (":authority", p.endpoint.authority), ("content-length", str(len(up.body))),
               (metadata.TRANSLATED_FOR_HEADER, p.name), *protocol, *credentials]
    return Outbound(up.body, headers, up.stream, up.dropped_params)


def account_target(d: Deployment) -> Target:
    """`d`'s translation target with its provider account's name as the `account` option: what a
    response translation that names the account needs (Responses ids, `responses_openai`)."""
    return _with_account(d.target, d.provider)


@functools.lru_cache(maxsize=4096)
def _with_account(target: Target, account: str) -> Target:
    return dataclasses.replace(target, options=(*target.options, ("account", account)))


def routing_headers(chain: Sequence[Deployment], client_api: str, deadline_left_s: float | None
                    ) -> list[tuple[str, str]]:
    """What Envoy routes the first attempt by: the provider's cluster, or for several providers the
    aggregate cluster that tries them in `chain` order (`selection.choose` builds only orders the
    renderer wrote one for: `metadata.fallback_order` and its prefixes); the client's error format
    for Envoy's own replies; the route timeout left by the client's deadline."""
    cluster = (metadata.aggregate_name(tuple(d.provider for d in chain)) if len(chain) > 1
               else chain[0].account.config.cluster_name)
    out = [(metadata.CLUSTER_HEADER, cluster),
           (metadata.CLIENT_API_HEADER, errors.ANTHROPIC if client_api.startswith(errors.ANTHROPIC) else errors.OPENAI)]
    if deadline_left_s is not None:
        out.append((metadata.ENVOY_TIMEOUT_HEADER, str(max(1, math.ceil(deadline_left_s * 1000)))))
    return out


def decision_metadata(client_api: str, route: str | None, chain: Sequence[Deployment], raw_request: bytes
                      ) -> dict[str, Any]:
    """The `DecisionRecord` for the upstream stage (dynamic metadata), when Envoy may retry on
    another provider; empty for a single provider."""
    if len(chain) < 2:
        return {}
    record = decision_record.DecisionRecord(client_api=client_api, route=route or "",
                                            deployments=[d.id for d in chain], request=raw_request.decode("utf-8"))
    return {decision_record.KEY: decision_record.to_struct_value(record)}


def client_headers_to_strip(client_headers: Mapping[str, str], replaced: set[str], translator: Translator
                            ) -> list[str]:
    """The client's headers to remove before the first attempt: all but the pseudo-headers, those
    the gateway sets anyway (`replaced`), those Envoy needs (`KEPT`), and the allow-list (trace
    context and what `translator` forwards) when no longer than `MAX_FORWARDED_LENGTH`."""
    allowed = (*TRACE_CONTEXT, *forwarded_headers(translator))
    return [k for k, v in client_headers.items() if not k.startswith(":") and k not in replaced and k not in KEPT
            and (k not in allowed or len(v) > MAX_FORWARDED_LENGTH)]


def other_provider_headers(provider_headers: Mapping[str, Iterable[tuple[str, str]]], mine: set[str]) -> list[str]:
    """For a retry: every header another provider (or an earlier attempt) may have set and this
    attempt does not. `provider_headers`: each provider's configured extra headers, by name."""
    others = {k for headers in provider_headers.values() for k, _ in headers}
    return sorted((set(PROVIDER_HEADERS) | others) - mine)
