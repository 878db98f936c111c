"""Upstream stage: one `UpstreamStream` per retry attempt that Envoy sends to a provider other
than the one the request body was translated for.

Envoy runs this stage in the router's upstream filter chain (see `extproc.envoyconf.fallback`):
request headers (with the `xds.upstream_host_metadata` attribute naming the provider of the
host picked for this attempt, and the router stage's dynamic metadata: the original request,
the client API and the ordered deployments) → request body (buffered: the previous attempt's
translation, discarded). It answers the body with the original request translated afresh for
this attempt's deployment, and rebuilds every provider-specific header, removing those a
previous attempt set (Envoy keeps header mutations across attempts, but not body mutations).
No response phases. Nothing is kept between streams.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from extproc import envoy_msgs as msgs
from extproc import errors, metadata
from extproc.errors import GatewayError
from extproc.runtime import Deployment, Runtime

log = logging.getLogger("interlock.upstream")

# Headers any provider's translation or credentials may set; each attempt removes the ones it
# does not set itself.
_PROVIDER_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key", "anthropic-version",
                     "anthropic-beta", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256")


class UpstreamStream:
    """Not thread-safe; owned by one gRPC stream task."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.api = errors.OPENAI
        self.deployment: Deployment | None = None
        self.request: dict[str, Any] | None = None
        self.request_id = ""

    async def handle(self, req: msgs.ProcessingRequest) -> msgs.ProcessingResponse:
        phase = req.WhichOneof("request")
        try:
            if phase == "request_headers":
                return self.on_headers(req)
            if phase == "request_body":
                return await self.on_body()
            raise RuntimeError(f"unexpected upstream-stage phase {phase}")
        except GatewayError as e:
            status, body, headers = errors.render(e, self.api)
            return msgs.immediate(status, body, list(headers.items()))
        except Exception:
            log.exception("upstream stage failed request_id=%s", self.request_id)
            status, body, headers = errors.render(GatewayError(
                f"Internal gateway error (request id {self.request_id}).", 500), self.api)
            return msgs.immediate(status, body, list(headers.items()))

    def on_headers(self, req: msgs.ProcessingRequest) -> msgs.ProcessingResponse:
        h = msgs.header_map(req.request_headers)
        self.request_id = h.get(metadata.REQUEST_ID_HEADER, "")
        md = _fallback_metadata(req)
        self.api = md.get("api", errors.OPENAI)
        provider = msgs.answering_provider(req)
        route = self.rt.routes.get(md.get("route", ""))
        chain = md.get("chain", "").split(",")
        if route is not None and provider is not None:
            self.deployment = next((route.by_id[i] for i in chain
                                    if i in route.by_id and route.by_id[i].provider.name == provider), None)
        if self.deployment is None or "request" not in md:
            log.error("upstream stage: no deployment for provider %s (route %s) request_id=%s", provider,
                      md.get("route"), self.request_id)
            raise GatewayError("The gateway could not prepare the retry for another provider.", 502, "api_error")
        self.request = orjson.loads(md["request"])
        log.info("request_id=%s retry on provider=%s model=%s", self.request_id, provider,
                 self.deployment.model.name)
        return msgs.request_headers()

    async def on_body(self) -> msgs.ProcessingResponse:
        d, body = self.deployment, self.request
        assert d is not None and body is not None
        up = self.rt.registry.get(self.api, d.target.provider_type).translate_request(body, d.target)
        p = d.provider.config
        path = p.endpoint.base_path + up.path
        protocol = [("content-type", "application/json"), *p.headers, *up.headers]
        credentials = await d.provider.credential.headers("POST", p.endpoint.authority, path, dict(protocol),
                                                          up.body)
        set_headers = [(":path", path), ("content-length", str(len(up.body))),
                       (metadata.TRANSLATED_FOR_HEADER, p.name), *protocol, *credentials]
        mine = {k for k, _ in set_headers}
        others = {k for q in self.rt.providers.values() for k, _ in q.config.headers}
        remove = sorted((set(_PROVIDER_HEADERS) | others) - mine)
        return msgs.request_body(up.body, set_headers, remove)


def _fallback_metadata(req: msgs.ProcessingRequest) -> dict[str, str]:
    ns = req.metadata_context.filter_metadata.get(metadata.NAMESPACE)
    if ns is None:
        return {}
    return {k: v.string_value for k, v in ns.fields.items()}

