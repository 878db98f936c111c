"""Upstream stage: one `UpstreamStream` per retry attempt that Envoy sends to a provider other
than the one the request body was translated for.

Envoy runs this stage in the router's upstream filter chain (see `extproc.envoyconf.fallback`):
request headers (with the `xds.upstream_host_metadata` attribute naming the provider of the
host picked for this attempt, and the router stage's `DecisionRecord` in the `interlock`
dynamic-metadata namespace: the original request, the client API, the route and the ordered
deployments) → request body (buffered: the previous attempt's translation, discarded). It
answers the body with the original request translated afresh for this attempt's deployment
(`outbound.prepare`, as the router stage does for the first attempt), and rebuilds every
provider-specific header, removing those a previous attempt set (Envoy keeps header mutations
across attempts, but not body mutations). No response phases. Nothing is kept between streams;
errors reach the boundary in `extproc.server`, which renders them with `fail`.
"""

from __future__ import annotations

import logging

from extproc import envoy_msgs as msgs
from extproc import errors, metadata
from extproc.pb import decision as decision_record
from extproc.runtime import Deployment, Runtime
from extproc.stages import outbound
from extproc.stages.request import parse_json

log = logging.getLogger("interlock.upstream")


class UpstreamStream:
    """Not thread-safe; owned by one gRPC stream task."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.api = errors.OPENAI
        self.deployment: Deployment | None = None
        self.record: decision_record.DecisionRecord | None = None
        self.request_id = ""

    async def handle(self, req: msgs.ProcessingRequest) -> msgs.ProcessingResponse:
        phase = req.WhichOneof("request")
        if phase == "request_headers":
            return self.on_headers(req)
        if phase == "request_body":
            return await self.on_body()
        raise RuntimeError(f"unexpected upstream-stage phase {phase}")

    def fail(self, err: errors.GatewayError, phase: str | None) -> msgs.ProcessingResponse:
        status, body, headers = errors.render(err, errors.ANTHROPIC if self.api == errors.ANTHROPIC else errors.OPENAI)
        extra = [(metadata.REQUEST_ID_HEADER, self.request_id)] if self.request_id else []
        return msgs.immediate(status, body, [*headers.items(), *extra])

    def on_headers(self, req: msgs.ProcessingRequest) -> msgs.ProcessingResponse:
        h = msgs.header_map(req.request_headers)
        self.request_id = h.get(metadata.REQUEST_ID_HEADER, "")
        ns = req.metadata_context.filter_metadata.get(metadata.NAMESPACE)
        try:
            record = decision_record.from_metadata(ns) if ns is not None else None
        except ValueError as e:
            log.error("upstream stage: unreadable decision record request_id=%s: %s", self.request_id, e)
            record = None
        if record is not None:
            self.api = record.client_api or errors.OPENAI
        provider = msgs.answering_provider(req)
        route = self.rt.routes.get(record.route) if record is not None else None
        if route is not None and provider is not None and record is not None:
            self.deployment = next((route.by_id[i] for i in record.deployments
                                    if i in route.by_id and route.by_id[i].provider == provider), None)
        if self.deployment is None or record is None:
            log.error("upstream stage: no deployment for provider %s (route %s) request_id=%s", provider,
                      record.route if record else None, self.request_id)
            raise errors.ProviderError("The gateway could not prepare the retry for another provider.", 502)
        self.record = record
        log.info("request_id=%s retry on provider=%s model=%s", self.request_id, provider, self.deployment.model)
        return msgs.request_headers()

    async def on_body(self) -> msgs.ProcessingResponse:
        d, record = self.deployment, self.record
        assert d is not None and record is not None, "request headers come first"
        translator = self.rt.registry.get(self.api, d.target.provider_type)
        out = await outbound.prepare(translator, parse_json(record.request.encode("utf-8")), d)
        remove = outbound.other_provider_headers({n: p.config.headers for n, p in self.rt.providers.items()},
                                                 out.names())
        return msgs.request_body(out.body, out.headers, remove)
