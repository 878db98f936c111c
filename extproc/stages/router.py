"""Router stage: one `RouterStream` per ext_proc gRPC stream (= one client request).

Theory of operation. Envoy sends, in this order and each at most once unless noted:
request headers → request body (BUFFERED; absent when the request has none) → response
headers → response body (BUFFERED: once; STREAMED: one message per upstream read).

    HEADERS  authenticate; route by path; answer GET /v1/models and every error immediately
    BODY     parse once, resolve the model, translate for the deployment, set path, cluster,
             credentials and protocol headers; clear the route cache so Envoy routes on them
    RESP_HDR map the status; choose the response body mode per stream: NONE when the provider
             already speaks the client's API and succeeded, STREAMED for SSE, BUFFERED otherwise
    RESP_BODY translate back (whole, or chunk by chunk through the stream translator)

Every `GatewayError` becomes an immediate response in the client's API format; any other
exception becomes a 500 with the request id, its text logged, never sent. State lives on the
instance for one stream only; nothing is shared across streams.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from extproc import envoy_msgs as msgs
from extproc import errors, metadata
from extproc.config.model import Tenant
from extproc.errors import GatewayError
from extproc.fallback import aggregate_name
from extproc.runtime import Deployment, RouteRuntime, Runtime, deployment_id
from extproc.stages.decide import RoutingState, route_request
from extproc.stages.models import models_body
from extproc.translate.base import ResponseContext, StreamTranslator, Translator, Usage, client_status_for

log = logging.getLogger("interlock.router")

# Path → client API (the registry's first key). Errors render in OpenAI's format except for
# Anthropic clients.
_CLIENT_APIS = {"/v1/chat/completions": "openai", "/v1/embeddings": "openai-embeddings",
                "/v1/messages": errors.ANTHROPIC}
_UPSTREAM_STRIP_PREFIXES = ("anthropic-", "openai-", "x-stainless-", "x-interlock-", "x-goog-", "x-amz-")
_UPSTREAM_STRIP = ("authorization", "x-api-key", "api-key", "accept-encoding", "cookie", "content-length")


class RouterStream:
    """The router stage for one request. Not thread-safe; owned by one gRPC stream task."""

    def __init__(self, runtime: Runtime, state: RoutingState | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.rt = runtime
        self.state = state or RoutingState()
        self.clock = clock
        self.chain: list[Deployment] = []  # the deployments to try, primary first (distinct providers)
        self.route: str | None = None
        self.requested_model: str | None = None
        self.sent_at = 0.0  # monotonic, when the request went upstream
        self.headers_at = 0.0  # monotonic, when the response headers came back
        self.started = clock()
        self.api = errors.OPENAI
        self.request_id = ""
        self.tenant = ""
        self.tenant_config: Tenant | None = None
        self.request_headers: dict[str, str] = {}
        self.deployment: Deployment | None = None
        self.translator: Translator | None = None
        self.stream = False
        self.include_usage = False
        self.encoding_format = "float"
        self.upstream_status = 0
        self.upstream_headers: dict[str, str] = {}
        self.stream_translator: StreamTranslator | None = None
        self.meter: StreamTranslator | None = None  # a sampled passthrough stream, read only
        self.response_buffer_mode = False
        self.unreachable = False
        self.status = 0
        self.dropped: tuple[str, ...] = ()
        self.usage: Usage | None = None

    # -- dispatch ---------------------------------------------------------------------------

    async def handle(self, req: msgs.ProcessingRequest) -> msgs.ProcessingResponse:
        phase = req.WhichOneof("request")
        try:
            if phase == "request_headers":
                return self.on_request_headers(req.request_headers)
            if phase == "request_body":
                return await self.on_request_body(req.request_body)
            if phase == "response_headers":
                return self.on_response_headers(req.response_headers, msgs.answering_provider(req))
            if phase == "response_body":
                return self.on_response_body(req.response_body)
            raise RuntimeError(f"unexpected ext_proc phase {phase}")
        except GatewayError as e:
            return self._error(e, phase)
        except Exception:
            log.exception("internal error request_id=%s phase=%s", self.request_id, phase)
            return self._error(GatewayError(f"Internal gateway error (request id {self.request_id}).", 500), phase)

    def _error(self, err: GatewayError, phase: str | None) -> msgs.ProcessingResponse:
        status, body, headers = errors.render(err, self.api)
        self.status = status
        if phase == "response_body" and not self.response_buffer_mode:
            # Bytes already reached the client: end the stream with an error event instead.
            event = b"event: error\n" if self.api == errors.ANTHROPIC else b""
            return msgs.response_body(event + b"data: " + body + b"\n\n")
        log.info("request_id=%s tenant=%s status=%d error=%r", self.request_id, self.tenant or "-", status,
                 err.message)
        extra = [(metadata.REQUEST_ID_HEADER, self.request_id)] if self.request_id else []
        routing = self._routing_headers() or [(metadata.PROVIDER_HEADER, metadata.GATEWAY_PROVIDER),
                                              (metadata.MODEL_HEADER, self.requested_model or "-")]
        return msgs.immediate(status, body, [*headers.items(), *routing, *extra])

    def _routing_headers(self) -> list[tuple[str, str]]:
        d = self.deployment
        if d is None:
            return []
        out = [(metadata.PROVIDER_HEADER, d.provider.name), (metadata.MODEL_HEADER, d.model.name)]
        if self.route:
            out.append((metadata.ROUTE_HEADER, self.route))
        return out

    # -- request ----------------------------------------------------------------------------

    def on_request_headers(self, m: msgs.pb.HttpHeaders) -> msgs.ProcessingResponse:
        h = msgs.header_map(m)
        self.request_headers = h
        self.request_id = h.get(metadata.REQUEST_ID_HEADER, "")
        path = h.get(":path", "/").split("?", 1)[0].rstrip("/") or "/"
        method = h.get(":method", "GET")
        if path.startswith("/v1/messages"):
            self.api = errors.ANTHROPIC
        tenant_key = _client_key(h)
        if not tenant_key:
            raise errors.Unauthorized("Missing API key: send `Authorization: Bearer <key>` or `x-api-key`.")
        tenant = self.rt.tenants_by_key_hash.get(hashlib.sha256(tenant_key.encode("utf-8")).hexdigest())
        if tenant is None:
            raise errors.Unauthorized("Invalid API key.")
        self.tenant = tenant.name
        self.tenant_config = tenant
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if method != "GET":
                raise GatewayError(f"Method {method} is not allowed on {path}.", 405, "invalid_request_error")
            anthropic = "anthropic-version" in h
            if anthropic:
                self.api = errors.ANTHROPIC
            return self._models_list(tenant, anthropic, path[len("/v1/models/"):] or None)
        api = _CLIENT_APIS.get(path)
        if api is None:
            raise errors.NotFound(f"Unknown path {path}.", code="unknown_url")
        self.api = api
        if method != "POST":
            raise GatewayError(f"Method {method} is not allowed on {path}.", 405, "invalid_request_error")
        if m.end_of_stream:
            raise errors.BadRequest("The request needs a JSON body.")
        limit = self.rt.config.limits.max_request_bytes
        length = h.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise errors.PayloadTooLarge(f"Request body too large: {length} bytes, the limit is {limit}.")
        return msgs.request_headers()

    def _models_list(self, tenant: Tenant, anthropic: bool, one: str | None) -> msgs.ProcessingResponse:
        body = models_body(self.rt.models_for(tenant), anthropic, one)
        return msgs.immediate(200, body, [("content-type", "application/json"),
                                          (metadata.REQUEST_ID_HEADER, self.request_id)])

    async def on_request_body(self, m: msgs.pb.HttpBody) -> msgs.ProcessingResponse:
        try:
            body = orjson.loads(m.body)
        except orjson.JSONDecodeError as e:
            raise errors.BadRequest(f"The request body is not valid JSON: {e.msg} (position {e.pos}).") from None
        if not isinstance(body, dict):
            raise errors.BadRequest("The request body must be a JSON object.")
        model = body.get("model")
        self.requested_model = model if isinstance(model, str) else None
        if not isinstance(model, str) or not model:
            raise errors.BadRequest("Missing required parameter: 'model'.", param="model")
        tenant = self.tenant_config
        route = self.rt.routes.get(model)
        deployments = self.rt.deployments.get(model)
        if (route is None and not deployments) or tenant is None or not tenant.allows(model):
            raise errors.NotFound(f"The model `{model}` does not exist or you do not have access to it.",
                                  code="model_not_found", param="model")
        if route is not None:
            self.chain = self._decide(route, body, len(m.body), tenant)
        else:
            assert deployments is not None
            self.chain = [deployments[0]]
        d = self.deployment = self.chain[0]
        if self.api == "openai-embeddings" and "embeddings" not in d.model.capabilities:
            raise errors.BadRequest(f"The model `{model}` does not serve embeddings.", param="model")
        self.translator = self.rt.registry.get(self.api, d.target.provider_type)
        up = self.translator.translate_request(body, d.target)
        self.stream = up.stream
        opts = body.get("stream_options")
        self.include_usage = bool(up.stream and isinstance(opts, dict) and opts.get("include_usage"))
        if body.get("encoding_format") == "base64":
            self.encoding_format = "base64"
        self.dropped = up.dropped_params
        if up.dropped_params:
            log.info("request_id=%s dropped params for %s: %s", self.request_id, d.provider.name,
                     ",".join(up.dropped_params))
        p = d.provider.config
        path = p.endpoint.base_path + up.path
        protocol = [("content-type", "application/json"), *p.headers, *up.headers]
        credentials = await d.provider.credential.headers("POST", p.endpoint.authority, path, dict(protocol),
                                                          up.body)
        cluster = p.cluster_name
        fallback = None
        if len(self.chain) > 1:
            cluster = aggregate_name(tuple(x.provider.name for x in self.chain))
            # What the upstream stage needs to translate the original request afresh for
            # whichever provider a retry lands on.
            fallback = {metadata.NAMESPACE: {
                "request": m.body.decode("utf-8", "replace"), "api": self.api, "route": self.route or "",
                "chain": ",".join(deployment_id(x) for x in self.chain)}}
        set_headers = [
            (":path", path),
            ("content-length", str(len(up.body))),
            (metadata.CLUSTER_HEADER, cluster),
            (metadata.TRANSLATED_FOR_HEADER, p.name),
            *protocol,
            *credentials,
        ]
        replaced = {k for k, _ in set_headers}
        keep = getattr(self.translator, "forward_client_headers", ())
        remove = [k for k in self.request_headers if not k.startswith(":") and k not in replaced and k not in keep
                  and (k in _UPSTREAM_STRIP or k.startswith(_UPSTREAM_STRIP_PREFIXES))]
        self.sent_at = self.state.clock()
        return msgs.request_body(up.body, set_headers, remove, clear_route_cache=True, dynamic_metadata=fallback)

    def _decide(self, route: RouteRuntime, body: dict[str, Any], nbytes: int, tenant: Tenant) -> list[Deployment]:
        """The routing decision: deployments to try in order, one per provider."""
        self.route = route.name
        decision = self.state.decide(route, route_request(body, nbytes, route, tenant, self.state.clock()))
        ex = decision.explanation
        if not decision.deployments:
            reasons = "; ".join(f"{route.by_id[dep].model.name}: {drop.reason}" for dep, drop in ex.dropped.items())
            if all(drop.filter == "health" for drop in ex.dropped.values()):
                raise errors.RateLimited(f"Every deployment behind `{route.name}` is cooling down.", 1)
            raise errors.BadRequest(f"No model behind `{route.name}` can serve this request ({reasons}).",
                                    param="model")
        chain: list[Deployment] = []
        for dep_id in decision.deployments:
            d = route.by_id[dep_id]
            if all(x.provider.name != d.provider.name for x in chain):
                chain.append(d)
        if log.isEnabledFor(logging.INFO):
            log.info("request_id=%s route=%s chain=%s by=%s dropped=%s", self.request_id, route.name,
                     ",".join(deployment_id(x) for x in chain), ex.chosen_by,
                     ",".join(f"{k}({v.filter})" for k, v in ex.dropped.items()) or "-")
            log.debug("request_id=%s scores %s", self.request_id, " ".join(
                f"{k}:total={v.total:.3f},ttft={v.ttft_s:.3f},latency={v.latency_s:.3f}"
                for k, v in ex.scores.items()))
        return chain

    # -- response ---------------------------------------------------------------------------

    def on_response_headers(self, m: msgs.pb.HttpHeaders, answered_by: str | None) -> msgs.ProcessingResponse:
        h = msgs.header_map(m)
        status = int(h.get(":status", "0") or 0)
        self.upstream_status = status
        attempts = h.get(metadata.ENVOY_ATTEMPT_COUNT, "1")
        self._learn(answered_by, status, int(attempts) if attempts.isdigit() else 1, h.get("retry-after"))
        d = self.deployment
        out = self._routing_headers()
        if d is not None:
            out.append((metadata.ATTEMPTS_HEADER, attempts))
        if d is None or self.translator is None:
            # Envoy's own reply (no route, overflow, ...): pass it through untouched.
            self.status = status
            self._log_done()
            return msgs.response_headers(out, body_mode=msgs.BODY_NONE)
        if self.dropped:
            out.append((metadata.DROPPED_PARAMS_HEADER, ",".join(self.dropped)))
        remove = [k for k in h if k.startswith(_UPSTREAM_STRIP_PREFIXES) or k in ("request-id", "set-cookie")]
        if 200 <= status < 300:
            self.status = status
            if self.translator.passthrough:
                if self.stream and self.chain and self.state.sample_passthrough():
                    # A sampled passthrough stream is read, never changed, so the time per output
                    # token of deployments that need no translation is learned too.
                    ctx = ResponseContext(self.request_id, int(self.clock()), self.include_usage)
                    self.meter = self.translator.stream_translator(d.target, ctx)
                    return msgs.response_headers(out, remove, body_mode=msgs.BODY_STREAMED)
                if self.stream:
                    self._observe(None)
                self._log_done()
                return msgs.response_headers(out, remove, body_mode=msgs.BODY_NONE)
            if self.stream:
                ctx = ResponseContext(self.request_id, int(self.clock()), self.include_usage)
                self.stream_translator = self.translator.stream_translator(d.target, ctx)
                out += [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")]
                return msgs.response_headers(out, [*remove, "content-length"], body_mode=msgs.BODY_STREAMED)
            self.response_buffer_mode = True
            return msgs.response_headers(out, remove, body_mode=msgs.BODY_BUFFERED)
        self.upstream_headers = h
        # Envoy marks what an upstream answered; a 5xx without the mark is Envoy's own reply
        # (connection refused, reset, overflow): the provider was never reached.
        self.unreachable = status >= 500 and "x-envoy-upstream-service-time" not in h
        self.status = client_status_for(status)
        self.response_buffer_mode = True
        out += [(":status", str(self.status)), ("content-type", "application/json")]
        return msgs.response_headers(out, remove, body_mode=msgs.BODY_BUFFERED)

    def on_response_body(self, m: msgs.pb.HttpBody) -> msgs.ProcessingResponse:
        d, tr = self.deployment, self.translator
        assert d is not None and tr is not None
        if self.meter is not None:
            self.meter.feed(m.body)
            if m.end_of_stream:
                usage = self.meter.usage  # None when the client did not ask for usage: TTFT only
                self._observe(usage.completion_tokens if usage else None)
                self._log_done()
            return msgs.response_body(None)
        if self.stream_translator is not None:
            out = self.stream_translator.feed(m.body)
            if m.end_of_stream:
                out += self.stream_translator.finish()
                usage = self.stream_translator.usage
                self._observe(usage.completion_tokens if usage else None)
                self._log_done()
            return msgs.response_body(out)
        if 200 <= self.upstream_status < 300:
            ctx = ResponseContext(self.request_id, int(self.clock()), False, self.encoding_format)
            body, self.usage = tr.translate_response(m.body, d.target, ctx)
        else:
            if self.unreachable:
                err = GatewayError(f"The provider {d.provider.name} could not be reached.", self.status,
                                   "api_error", "provider_unreachable")
            else:
                err = tr.translate_error(self.upstream_status, m.body, self.upstream_headers)
            self.status, body, extra = errors.render(err, self.api)
            self._log_done()
            # Buffered: the headers are still held, so the translator's status can replace the
            # provisional one set at response-headers time.
            return msgs.response_body(body, [(":status", str(self.status)), ("content-length", str(len(body))),
                                             *extra.items()])
        self._log_done()
        return msgs.response_body(body, [("content-length", str(len(body)))])

    def _learn(self, answered_by: str | None, status: int, attempts: int, retry_after: str | None) -> None:
        """Feed the worker's health statistics: earlier attempts failed; the answering one
        succeeded or failed by its status. Switches to the deployment that actually answered."""
        if not self.chain:
            return
        now = self.state.clock()
        self.headers_at = now
        stats = self.state.stats
        index = next((i for i, x in enumerate(self.chain) if x.provider.name == answered_by), None)
        if index is None:
            index = min(attempts, len(self.chain)) - 1
            answered = False
        else:
            answered = True
        # Envoy made `attempts` attempts, the answering one last, in chain order — but it skips a
        # provider whose hosts it ejected without an attempt, so only the attempts it made just
        # before the answering one are blamed.
        for failed in self.chain[max(0, index - (attempts - 1)):index]:
            stats.record_failure(deployment_id(failed), now)
        d = self.chain[index]
        if d is not self.deployment:
            self.deployment = d
            self.translator = self.rt.registry.get(self.api, d.target.provider_type)
            self.dropped = ()
        if not answered or status == 429 or status >= 500:
            wait = float(retry_after) if retry_after and retry_after.isdigit() else None
            stats.record_failure(deployment_id(d), now, wait)
            log.info("request_id=%s deployment %s failed (status %d, answered=%s)", self.request_id,
                     deployment_id(d), status, answered)
        elif 200 <= status < 300:
            stats.record_success(deployment_id(d), now)

    def _observe(self, completion_tokens: int | None) -> None:
        """Latency is learned from streamed answers: time to the response headers is the time
        to first token; the rest of the stream over its tokens is the time per output token."""
        d = self.deployment
        if d is None or not self.sent_at or not self.headers_at:
            return
        ttft = self.headers_at - self.sent_at
        tpot = None
        if completion_tokens and completion_tokens > 1:
            tpot = (self.state.clock() - self.headers_at) / (completion_tokens - 1)
        self.state.stats.observe(deployment_id(d), ttft, tpot, self.state.clock())
        log.debug("request_id=%s observed %s ttft=%.4f tpot=%s", self.request_id, deployment_id(d), ttft, tpot)

    def _log_done(self) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        d = self.deployment
        usage = self.stream_translator.usage if self.stream_translator else self.usage
        log.info("request_id=%s tenant=%s model=%s provider=%s status=%d upstream_status=%d "
                 "prompt_tokens=%s completion_tokens=%s ms=%.1f", self.request_id, self.tenant,
                 d.model.name if d else "-", d.provider.name if d else "-", self.status, self.upstream_status,
                 usage.prompt_tokens if usage else "-", usage.completion_tokens if usage else "-",
                 (self.clock() - self.started) * 1000)


def _client_key(h: dict[str, str]) -> str:
    auth = h.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return h.get("x-api-key", "").strip()
