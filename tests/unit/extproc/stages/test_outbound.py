"""`extproc.stages.outbound`: the request one deployment gets — its body and path, the headers set
(protocol, credentials, routing) and removed (the client's credentials and SDK headers, another
provider's), and the decision record handed to the upstream stage."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import orjson
import pytest

from extproc import errors, metadata
from extproc.pb import decision as decision_record
from extproc.runtime import Deployment
from extproc.stages import outbound
from extproc.stages.outbound import Outbound
from extproc.stages.request import ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_EMBEDDINGS
from tests.unit.extproc.stages.support import (
    ANTHROPIC_SECRET,
    GEMINI_SECRET,
    KEY,
    OPENAI_SECRET,
    PROXY_SECRET,
    dep,
    runtime,
)

HELLO = [{"role": "user", "content": "Say hello."}]
CHAT = {"model": "x", "messages": HELLO, "temperature": 0.2}
MESSAGES = {"model": "x", "max_tokens": 64, "messages": HELLO}


def _prepare(api: str, d: Deployment, body: dict[str, Any]) -> Outbound:
    translator = runtime().registry.get(api, d.target.provider_type)
    return asyncio.run(outbound.prepare(translator, body, d))


# (client API, client body, model) → (:path, translated-for, the other headers set)
PREPARE_CASES: dict[str, tuple[str, dict[str, Any], str, str, str, dict[str, str]]] = {
    "openai-passthrough": (OPENAI_CHAT, CHAT, "gpt", "/v1/chat/completions", "openai",
                           {"authorization": f"Bearer {OPENAI_SECRET}"}),
    "under-a-base-path": (OPENAI_CHAT, CHAT, "proxied", "/base/v1/chat/completions", "proxy",
                          {"openai-project": "proj-stage", "authorization": f"Bearer {PROXY_SECRET}"}),
    "openai-to-anthropic": (OPENAI_CHAT, CHAT, "claude", "/v1/messages", "anthropic",
                            {"anthropic-version": "2026-10-21", "authorization": f"Bearer {ANTHROPIC_SECRET}"}),
    "anthropic-passthrough": (ANTHROPIC_MESSAGES, MESSAGES, "claude", "/v1/messages", "anthropic",
                              {"anthropic-version": "2026-10-21", "authorization": f"Bearer {ANTHROPIC_SECRET}"}),
    "anthropic-to-openai": (ANTHROPIC_MESSAGES, MESSAGES, "proxied", "/base/v1/chat/completions", "proxy",
                            {"openai-project": "proj-stage", "authorization": f"Bearer {PROXY_SECRET}"}),
    "openai-to-gemini": (OPENAI_CHAT, CHAT, "flash", "/v1beta/models/gemini-2.5-flash:generateContent", "gemini",
                         {"x-goog-api-key": GEMINI_SECRET}),
    "embeddings": (OPENAI_EMBEDDINGS, {"model": "x", "input": "hello"}, "gpt", "/v1/embeddings", "openai",
                   {"authorization": f"Bearer {OPENAI_SECRET}"}),
}


@pytest.mark.parametrize("case", list(PREPARE_CASES))
def test_prepare(case: str) -> None:
    api, body, model, path, provider, extra = PREPARE_CASES[case]
    original = copy.deepcopy(body)
    d = dep(model)
    out = _prepare(api, d, body)
    authority = d.account.config.endpoint.authority
    assert out.headers[:4] == [(":path", path), (":authority", authority), ("content-length", str(len(out.body))),
                               (metadata.TRANSLATED_FOR_HEADER, provider)]
    assert dict(out.headers) == {":path": path, ":authority": authority, "content-length": str(len(out.body)),
                                 metadata.TRANSLATED_FOR_HEADER: provider, "content-type": "application/json",
                                 **extra}
    assert out.names() == set(dict(out.headers))
    sent = orjson.loads(out.body)
    assert sent.get("model", d.target.upstream_model) == d.target.upstream_model
    assert KEY not in repr(out)
    assert body == original  # a retry translates the client's body again


@pytest.mark.parametrize(("fields", "stream", "dropped"), [
    ({}, False, ()),
    ({"stream": True}, True, ()),
    ({"seed": 7}, False, ("seed",)),
])
def test_prepare_says_whether_the_answer_streams_and_what_was_dropped(fields: dict[str, Any], stream: bool,
                                                                     dropped: tuple[str, ...]) -> None:
    out = _prepare(OPENAI_CHAT, dep("claude"), {"model": "x", "messages": HELLO, **fields})
    assert (out.stream, out.dropped_params) == (stream, dropped)


def test_what_a_deployment_cannot_serve_is_the_translators_400() -> None:
    with pytest.raises(errors.BadRequest) as info:
        _prepare(OPENAI_CHAT, dep("claude"), {**CHAT, "n": 2})
    assert info.value.status == 400


def test_a_provider_without_credentials_is_502() -> None:
    with pytest.raises(errors.GatewayError) as info:
        _prepare(OPENAI_CHAT, dep("keyless"), CHAT)
    err = info.value
    assert (err.status, err.code, err.message) == (502, "provider_credentials_missing",
                                                   "The provider nokey has no credentials configured.")


# -- headers to strip ------------------------------------------------------------------------------

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
# What a client may send: credentials (its own and a proxy's), SDK, protocol and beta headers,
# forwarding and Envoy control headers, the gateway's own headers, custom and oversized ones.
CLIENT_HEADERS = {
    ":authority": "gw:8080", ":path": "/v1/x", ":method": "POST", ":scheme": "http",
    "authorization": f"Bearer {KEY}", "x-api-key": KEY, "api-key": KEY, "proxy-authorization": f"Basic {KEY}",
    "cookie": "a=b", "accept-encoding": "gzip", "content-length": "99", "content-type": "application/json",
    "anthropic-version": "2023-06-01", "anthropic-beta": "prompt-caching", "openai-beta": "assistants=v2",
    "openai-organization": "org-client", "x-stainless-os": "Linux", "x-interlock-priority": "batch",
    "x-interlock-cluster": "provider_nowhere", "x-goog-api-client": "genai", "x-amz-date": "20250101T000000Z",
    "user-agent": "SDK/1.0", "accept": "application/json", "te": "trailers", "x-forwarded-proto": "https",
    "x-forwarded-for": "198.51.100.7", "forwarded": "for=198.51.100.7", "via": "1.1 corp-proxy",
    "x-real-ip": "198.51.100.7", "x-envoy-original-host": "gw:8080", "x-envoy-upstream-rq-timeout-ms": "1",
    "x-envoy-max-retries": "9", "x-envoy-retry-on": "5xx", "x-custom": "c", "x-big": "x" * 16384,
    "traceparent": TRACEPARENT, "tracestate": "vendor=opaque", "x-request-id": "rid",
}
# What a provider gets of them, whatever its type: the pseudo-headers (`:path` and `:authority` the
# provider's), the trace context, and what Envoy needs and its upstream filters remove
# (`x-forwarded-proto`) or keep (the request id, Envoy's own).
KEPT = {":authority", ":path", ":method", ":scheme", "x-request-id", "x-forwarded-proto", "traceparent", "tracestate"}


def _upstream(api: str, model: str, client: dict[str, str]) -> tuple[dict[str, str], list[str], set[str]]:
    """(the headers a provider gets, the client's removed, the names the gateway sets)."""
    d = dep(model)
    translator = runtime().registry.get(api, d.target.provider_type)
    set_headers = [*_prepare(api, d, MESSAGES if api == ANTHROPIC_MESSAGES else CHAT).headers,
                   *outbound.routing_headers([d], api, None)]
    removed = outbound.client_headers_to_strip(client, {k for k, _ in set_headers}, translator)
    return {k: v for k, v in client.items() if k not in removed} | dict(set_headers), removed, {k for k, _ in set_headers}


@pytest.mark.parametrize(("api", "model", "forwarded"), [
    # The Anthropic passthrough forwards the client's beta header; its version header is the gateway's.
    (ANTHROPIC_MESSAGES, "claude", {"anthropic-beta"}),
    (OPENAI_CHAT, "claude", set()),
    # The OpenAI passthrough forwards OpenAI's beta header.
    (OPENAI_CHAT, "gpt", {"openai-beta"}),
    (OPENAI_CHAT, "proxied", {"openai-beta"}),
    (OPENAI_CHAT, "flash", set()),
    (ANTHROPIC_MESSAGES, "proxied", set()),
    (ANTHROPIC_MESSAGES, "flash", set()),
], ids=["anthropic-passthrough", "openai-to-anthropic", "openai-passthrough", "openai-under-a-base-path",
        "openai-to-gemini", "anthropic-to-openai", "anthropic-to-gemini"])
def test_only_the_allow_list_of_client_headers_reaches_a_provider(api: str, model: str, forwarded: set[str]) -> None:
    upstream, removed, gateway = _upstream(api, model, CLIENT_HEADERS)
    assert set(upstream) == KEPT | forwarded | set(gateway)
    as_sent = (KEPT | forwarded) - set(gateway)
    assert {k: upstream[k] for k in as_sent} == {k: CLIENT_HEADERS[k] for k in as_sent}
    assert upstream[":authority"] == dep(model).account.config.endpoint.authority  # never the gateway's
    assert KEY not in repr(upstream)
    assert not any(k.startswith(":") or k in gateway for k in removed)  # set anyway, or Envoy's to keep


@pytest.mark.parametrize("name", ["traceparent", "tracestate", "anthropic-beta"])
def test_an_oversized_allowed_header_is_removed_not_forwarded(name: str) -> None:
    at_limit = {**CLIENT_HEADERS, name: "a" * outbound.MAX_FORWARDED_LENGTH}
    assert name in _upstream(ANTHROPIC_MESSAGES, "claude", at_limit)[0]
    over = {**CLIENT_HEADERS, name: "a" * (outbound.MAX_FORWARDED_LENGTH + 1)}
    assert name not in _upstream(ANTHROPIC_MESSAGES, "claude", over)[0]


class _ForwardsOpenAIBeta:
    passthrough = True
    forward_client_headers = ("openai-beta",)


def test_a_translator_adds_to_the_allow_list() -> None:
    removed = outbound.client_headers_to_strip(CLIENT_HEADERS, set(), _ForwardsOpenAIBeta())  # type: ignore[arg-type]
    assert {"openai-beta", "traceparent", "tracestate", "x-request-id"}.isdisjoint(removed)
    assert {"anthropic-beta", "anthropic-version", "authorization"} <= set(removed)


@pytest.mark.parametrize(("api", "provider_type", "forwarded"), [
    (ANTHROPIC_MESSAGES, "anthropic", ("anthropic-beta",)), (OPENAI_CHAT, "anthropic", ()),
    (OPENAI_CHAT, "openai", ("openai-beta",)), (OPENAI_CHAT, "azure-openai", ("openai-beta",)),
    (ANTHROPIC_MESSAGES, "openai", ()),
])
def test_which_translators_forward_client_headers(api: str, provider_type: str, forwarded: tuple[str, ...]) -> None:
    assert outbound.forwarded_headers(runtime().registry.get(api, provider_type)) == forwarded


AWS = ["x-amz-content-sha256", "x-amz-date", "x-amz-security-token"]


@pytest.mark.parametrize(("model", "api", "expected"), [
    ("claude", OPENAI_CHAT, ["anthropic-beta", "api-key", "openai-beta", "openai-project", *AWS, "x-api-key",
                             "x-goog-api-key"]),
    ("gpt", OPENAI_CHAT, ["anthropic-beta", "anthropic-version", "api-key", "openai-beta", "openai-project", *AWS,
                          "x-api-key", "x-goog-api-key"]),
    ("proxied", OPENAI_CHAT, ["anthropic-beta", "anthropic-version", "api-key", "openai-beta", *AWS, "x-api-key",
                              "x-goog-api-key"]),
    ("flash", OPENAI_CHAT, ["anthropic-beta", "anthropic-version", "api-key", "authorization", "openai-beta",
                            "openai-project", *AWS, "x-api-key"]),
])
def test_a_retry_removes_every_other_providers_headers(model: str, api: str, expected: list[str]) -> None:
    provider_headers = {p.name: p.headers for p in runtime().config.providers}
    out = _prepare(api, dep(model), CHAT)
    assert outbound.other_provider_headers(provider_headers, out.names()) == expected


# -- routing headers and the decision record -------------------------------------------------------

@pytest.mark.parametrize(("chain", "api", "left_s", "expected"), [
    (["gpt"], OPENAI_CHAT, None, [(metadata.CLUSTER_HEADER, "provider_openai"), (metadata.CLIENT_API_HEADER, "openai")]),
    (["claude"], ANTHROPIC_MESSAGES, None, [(metadata.CLUSTER_HEADER, "provider_anthropic"),
                                            (metadata.CLIENT_API_HEADER, "anthropic")]),
    (["gpt"], OPENAI_EMBEDDINGS, None, [(metadata.CLUSTER_HEADER, "provider_openai"),
                                        (metadata.CLIENT_API_HEADER, "openai")]),
    (["gpt", "claude"], OPENAI_CHAT, None, [(metadata.CLUSTER_HEADER, "fallback~openai~anthropic"),
                                            (metadata.CLIENT_API_HEADER, "openai")]),
    (["claude", "flash", "gpt"], ANTHROPIC_MESSAGES, None, [
        (metadata.CLUSTER_HEADER, "fallback~anthropic~gemini~openai"), (metadata.CLIENT_API_HEADER, "anthropic")]),
    (["gpt"], OPENAI_CHAT, 30.0, [(metadata.CLUSTER_HEADER, "provider_openai"), (metadata.CLIENT_API_HEADER, "openai"),
                                  (metadata.ENVOY_TIMEOUT_HEADER, "30000")]),
])
def test_routing_headers(chain: list[str], api: str, left_s: float | None, expected: list[tuple[str, str]]) -> None:
    assert outbound.routing_headers([dep(m) for m in chain], api, left_s) == expected


@pytest.mark.parametrize(("left_s", "timeout_ms"), [(2.0, "2000"), (1.2341, "1235"), (0.0001, "1"), (0.0, "1"),
                                                    (-0.5, "1"), (86_400.0, "86400000")])
def test_the_route_timeout_rounds_up_to_at_least_one_millisecond(left_s: float, timeout_ms: str) -> None:
    headers = dict(outbound.routing_headers([dep("gpt")], OPENAI_CHAT, left_s))
    assert headers[metadata.ENVOY_TIMEOUT_HEADER] == timeout_ms


RAW = orjson.dumps({"model": "cheap", "messages": [{"role": "user", "content": "Grüße ✓"}]})


@pytest.mark.parametrize(("api", "route", "chain", "expected"), [
    (OPENAI_CHAT, None, ["gpt"], {}),
    (OPENAI_CHAT, "cheap", ["gpt"], {}),
    (OPENAI_CHAT, "cheap", ["gpt", "flash", "claude"], {"decision": {
        "client_api": "openai", "route": "cheap", "request": RAW.decode(),
        "deployments": ["gpt@openai:gpt-4o-mini-2024-07-18", "flash@gemini:gemini-2.5-flash",
                        "claude@anthropic:claude-haiku-4-5-20251001"]}}),
    (ANTHROPIC_MESSAGES, None, ["claude", "gpt"], {"decision": {
        "client_api": "anthropic", "request": RAW.decode(),
        "deployments": ["claude@anthropic:claude-haiku-4-5-20251001", "gpt@openai:gpt-4o-mini-2024-07-18"]}}),
], ids=["one-deployment", "route-chose-one", "route-chose-three", "no-route-name"])
def test_decision_metadata(api: str, route: str | None, chain: list[str], expected: dict[str, Any]) -> None:
    got = outbound.decision_metadata(api, route, [dep(m) for m in chain], RAW)
    assert got == expected
    assert set(got) <= {decision_record.KEY}
