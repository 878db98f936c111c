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

Admission (`extproc.admission`) happens in BODY, after the routing decision: the request takes a
slot of its deployment's concurrency budget for its priority class (spilling to the next
candidate, waiting briefly, or shed with 429 / 504 on its deadline) and holds it until the
response ends or the stream closes (`close`). For a tenant with rate limits, BODY also writes
what Envoy's rate-limit filter reserves (`reserve_tokens`, `reserve_usd` in the `interlock`
dynamic-metadata namespace, see `extproc.limits.scheme`), and every response message keeps
`usage_tokens` / `usage_usd` current — so a stream cut short is trued up with what it produced.

Every `GatewayError` becomes an immediate response in the client's API format; any other
exception becomes a 500 with the request id, its text logged, never sent. State lives on the
instance for one stream only; nothing is shared across streams.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import orjson

import routing
from extproc import envoy_msgs as msgs
from extproc import errors, metadata
from extproc.admission import Candidate, Gate, Ticket
from extproc.config.model import PRIORITIES, Tenant
from extproc.errors import GatewayError
from extproc.metadata import aggregate_name
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
_RATELIMIT_PREFIX = "x-ratelimit-"
_UPSTREAM_STRIP = ("authorization", "x-api-key", "api-key", "accept-encoding", "cookie", "content-length")


class RouterStream:
    """The router stage for one request. Not thread-safe; owned by one gRPC stream task."""

    def __init__(self, runtime: Runtime, state: RoutingState | None = None,
                 clock: Callable[[], float] = time.time, gate: Gate | None = None) -> None:
        self.rt = runtime
        self.state = state or RoutingState()
        self.gate = gate
        self.ticket: Ticket | None = None
        self.priority = "default"
        self.deadline_at: float | None = None  # on the routing state's clock
        self.limited = False  # the tenant has rate limits: usage is reported to Envoy
        self.est_input_tokens = 0
        self.events_seen = 0
        self.deadline_hit = False
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
        self._admission_headers(h, tenant)
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

    def _admission_headers(self, h: dict[str, str], tenant: Tenant) -> None:
        raw = h.get(metadata.PRIORITY_HEADER)
        if raw is None:
            self.priority = tenant.priority
        elif raw.strip().lower() in PRIORITIES:
            self.priority = raw.strip().lower()
        else:
            raise errors.BadRequest(f"Invalid {metadata.PRIORITY_HEADER} {raw[:40]!r}: expected one of "
                                    f"{', '.join(PRIORITIES)}.")
        raw = h.get(metadata.DEADLINE_HEADER)
        if raw is None:
            ms = tenant.deadline * 1000
        elif raw.strip().isdigit() and 0 < int(raw) <= 86_400_000:
            ms = int(raw)
        else:
            raise errors.BadRequest(f"Invalid {metadata.DEADLINE_HEADER} {raw[:40]!r}: expected a whole number "
                                    "of milliseconds between 1 and 86400000.")
        if ms:
            self.deadline_at = self.state.clock() + ms / 1000

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
        self.chain = await self._admit(self.chain, body)
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
        meta: dict[str, str] = {}
        if len(self.chain) > 1:
            cluster = aggregate_name(tuple(x.provider.name for x in self.chain))
            # What the upstream stage needs to translate the original request afresh for
            # whichever provider a retry lands on.
            meta.update({"request": m.body.decode("utf-8", "replace"), "api": self.api, "route": self.route or "",
                         "chain": ",".join(deployment_id(x) for x in self.chain)})
        if tenant.limits:
            meta.update(self._reservation(body, len(m.body), model))
        set_headers = [
            (":path", path),
            ("content-length", str(len(up.body))),
            (metadata.CLUSTER_HEADER, cluster),
            (metadata.TRANSLATED_FOR_HEADER, p.name),
            (metadata.CLIENT_API_HEADER, errors.ANTHROPIC if self.api == errors.ANTHROPIC else errors.OPENAI),
            *protocol,
            *credentials,
        ]
        if self.deadline_at is not None:
            left_ms = max(1, math.ceil((self.deadline_at - self.state.clock()) * 1000))
            set_headers.append((metadata.ENVOY_TIMEOUT_HEADER, str(left_ms)))
        replaced = {k for k, _ in set_headers}
        keep = getattr(self.translator, "forward_client_headers", ())
        remove = [k for k in self.request_headers if not k.startswith(":") and k not in replaced and k not in keep
                  and (k in _UPSTREAM_STRIP or k.startswith(_UPSTREAM_STRIP_PREFIXES))]
        self.sent_at = self.state.clock()
        return msgs.request_body(up.body, set_headers, remove, clear_route_cache=True,
                                 dynamic_metadata={metadata.NAMESPACE: meta} if meta else None)

    async def _admit(self, chain: list[Deployment], body: dict[str, Any]) -> list[Deployment]:
        """Take a budget slot (see `extproc.admission`); the admitted deployment goes first."""
        if self.gate is None or (self.deadline_at is None and not any(d.model.max_concurrency for d in chain)):
            return chain
        snapshot = self.state.stats.snapshot(self.state.clock())  # the one the decision read
        max_out = _max_tokens(body)
        self.ticket = await self.gate.admit([self._candidate(d, snapshot, max_out) for d in chain], self.priority,
                                            self.deadline_at)
        i = self.ticket.index
        if self.ticket.waited_s:
            log.info("request_id=%s waited %.0f ms for a slot of %s", self.request_id, self.ticket.waited_s * 1000,
                     self.ticket.deployment_id)
        return [chain[i], *chain[:i], *chain[i + 1:]] if i else chain

    @staticmethod
    def _candidate(d: Deployment, snapshot: routing.Snapshot, max_out: int | None) -> Candidate:
        dep = deployment_id(d)
        est = snapshot.estimate(dep)
        if est.weight < 1.0:  # not observed yet: nothing to judge a deadline by
            return Candidate(dep, d.model.max_concurrency, 0.0, 1.0)
        out = min(max_out or 256, d.model.max_output_tokens)
        return Candidate(dep, d.model.max_concurrency, est.ttft_p50_s, est.ttft_p50_s + est.tpot_p50_s * out)

    def _reservation(self, body: dict[str, Any], nbytes: int, model: str) -> dict[str, str]:
        """What the rate-limit filter charges at admission: the prompt estimate + the output the
        request may produce, in tokens and in micro-dollars at the dearest candidate's prices."""
        self.limited = True
        self.est_input_tokens = max(1, nbytes // 4)
        out = 0 if self.api == "openai-embeddings" else (_max_tokens(body) or max(
            x.model.max_output_tokens for x in self.chain))
        pin = max(x.model.price.input_per_mtok for x in self.chain)
        pout = max(x.model.price.output_per_mtok for x in self.chain)
        tokens = self.est_input_tokens + out
        # One micro-dollar per token at $1 per million tokens: price_per_mtok is µ$ per token.
        usd = math.ceil(self.est_input_tokens * pin + out * pout)
        return {"tenant": self.tenant, "model": model, "priority": self.priority,
                "reserve_tokens": str(tokens), "reserve_usd": str(min(usd, 10**9)),
                # Until the answer says otherwise, the prompt is what was spent.
                **self._usage_fields(self.est_input_tokens, 0)}

    def _usage_fields(self, prompt: int, completion: int) -> dict[str, str]:
        d = self.deployment or (self.chain[0] if self.chain else None)
        price = d.model.price if d else None
        usd = math.ceil(prompt * price.input_per_mtok + completion * price.output_per_mtok) if price else 0
        return {"usage_tokens": str(prompt + completion), "usage_usd": str(usd)}

    def _usage_metadata(self, chunk: bytes, usage: Usage | None, *, failed: bool = False
                        ) -> dict[str, dict[str, str]] | None:
        """The actual spend so far, for the rate-limit filter's true-up at the end of the stream:
        the provider's usage when known, else the prompt estimate + one token per event seen."""
        if not self.limited:
            return None
        if failed:
            return {metadata.NAMESPACE: self._usage_fields(0, 0)}
        if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
            return {metadata.NAMESPACE: self._usage_fields(usage.prompt_tokens, usage.completion_tokens)}
        self.events_seen += chunk.count(b"data:") or chunk.count(b":event-type")
        return {metadata.NAMESPACE: self._usage_fields(self.est_input_tokens, self.events_seen)}

    def close(self) -> None:
        """The stream is over (answered, failed or abandoned): give the budget slot back."""
        if self.ticket is not None and self.gate is not None:
            self.gate.release(self.ticket)

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
        if answered_by is None and "x-envoy-ratelimited" in h:
            # The gateway's own rate limit refused it (already shaped by local_reply_config):
            # nothing reached a provider, so there is nothing to learn or translate.
            self.status = status
            self.close()
            self._log_done()
            return msgs.response_headers([(metadata.PROVIDER_HEADER, metadata.GATEWAY_PROVIDER),
                                          (metadata.MODEL_HEADER, self.requested_model or "-")],
                                         ["x-envoy-ratelimited"], body_mode=msgs.BODY_NONE)
        attempts = h.get(metadata.ENVOY_ATTEMPT_COUNT, "1")
        limit_headers, provider_limits = self._split_limit_headers(h)
        # Envoy's route timeout, set from the client's deadline, ran out: the client's choice,
        # not the provider's failure.
        self.deadline_hit = (status == 504 and self.deadline_at is not None and "x-envoy-upstream-service-time" not in h
                             and self.state.clock() >= self.deadline_at - 0.05)
        if not self.deadline_hit:
            upstream = {k: v for k, v in h.items() if not k.startswith(_RATELIMIT_PREFIX)}
            self._learn(answered_by, status, int(attempts) if attempts.isdigit() else 1, h.get("retry-after"),
                        {**upstream, **provider_limits})
        d = self.deployment
        out = self._routing_headers() + limit_headers
        if d is not None:
            out.append((metadata.ATTEMPTS_HEADER, attempts))
        if d is None or self.translator is None:
            # Envoy's own reply (no route, overflow, ...): pass it through untouched.
            self.status = status
            self._log_done()
            return msgs.response_headers(out, body_mode=msgs.BODY_NONE)
        if self.dropped:
            out.append((metadata.DROPPED_PARAMS_HEADER, ",".join(self.dropped)))
        remove = [k for k in h if k.startswith(_UPSTREAM_STRIP_PREFIXES) or k in ("request-id", "set-cookie")
                  or (k.startswith(_RATELIMIT_PREFIX) and k not in dict(limit_headers))]
        if 200 <= status < 300:
            self.status = status
            if self.translator.passthrough:
                # Read (never changed) when the end of the answer matters: its usage for rate
                # limits, its end for the budget slot — and a sample of the rest, so the time per
                # output token of deployments that need no translation is learned too.
                watch = self.limited or (self.ticket is not None and self.ticket.counted)
                if self.stream and self.chain and (watch or self.state.sample_passthrough()):
                    ctx = ResponseContext(self.request_id, int(self.clock()), self.include_usage)
                    self.meter = self.translator.stream_translator(d.target, ctx)
                    return msgs.response_headers(out, remove, body_mode=msgs.BODY_STREAMED)
                if watch and not self.stream:
                    self.response_buffer_mode = True
                    return msgs.response_headers(out, remove, body_mode=msgs.BODY_BUFFERED)
                if self.stream:
                    self._observe(None)
                self.close()
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
            usage = self.meter.usage  # None when the client did not ask for usage: TTFT only
            if m.end_of_stream:
                self._observe(usage.completion_tokens if usage else None)
                self.close()
                self._log_done()
            return msgs.response_body(None, dynamic_metadata=self._usage_metadata(m.body, usage))
        if self.stream_translator is not None:
            out = self.stream_translator.feed(m.body)
            if m.end_of_stream:
                out += self.stream_translator.finish()
            usage = self.stream_translator.usage
            if m.end_of_stream:
                self._observe(usage.completion_tokens if usage else None)
                self.close()
                self._log_done()
            return msgs.response_body(out, dynamic_metadata=self._usage_metadata(m.body, usage))
        self.close()
        if 200 <= self.upstream_status < 300:
            ctx = ResponseContext(self.request_id, int(self.clock()), False, self.encoding_format)
            body, self.usage = tr.translate_response(m.body, d.target, ctx)
            if tr.passthrough:
                # Read for its usage only (rate limits, the budget's end): the body goes on as is.
                self._log_done()
                return msgs.response_body(None, dynamic_metadata=self._usage_metadata(b"", self.usage))
        else:
            if self.deadline_hit:
                err = errors.DeadlineExceeded("The request did not complete within its deadline "
                                              f"({metadata.DEADLINE_HEADER} or the tenant's default).")
            elif self.unreachable:
                err = GatewayError(f"The provider {d.provider.name} could not be reached.", self.status,
                                   "api_error", "provider_unreachable")
            else:
                err = tr.translate_error(self.upstream_status, m.body, self.upstream_headers)
            self.status, body, extra = errors.render(err, self.api)
            self._log_done()
            # Buffered: the headers are still held, so the translator's status can replace the
            # provisional one set at response-headers time.
            return msgs.response_body(body, [(":status", str(self.status)), ("content-length", str(len(body))),
                                             *extra.items()], dynamic_metadata=self._usage_metadata(b"", None, failed=True))
        self._log_done()
        return msgs.response_body(body, [("content-length", str(len(body)))],
                                  dynamic_metadata=self._usage_metadata(b"", self.usage))

    def _split_limit_headers(self, h: dict[str, str]) -> tuple[list[tuple[str, str]], dict[str, str]]:
        """`x-ratelimit-*` may come twice: first from the provider (about the gateway's account,
        shared by every tenant: read for steering, never shown), then from the gateway's rate
        limit (about this tenant: shown). Returns (the tenant's, to set; the provider's)."""
        ours: list[tuple[str, str]] = []
        provider: dict[str, str] = {}
        units = {lim.unit.value for lim in self.tenant_config.limits} if self.limited and self.tenant_config else set()
        for k, v in h.items():
            if not k.startswith(_RATELIMIT_PREFIX):
                continue
            values = v.split(",")
            mine = k.rsplit("-", 1)[-1] in units
            if mine:
                ours.append((k, values[-1].strip()))
            if len(values) > 1 or not mine:
                provider[k] = values[0].strip()
        return ours, provider

    def _learn(self, answered_by: str | None, status: int, attempts: int, retry_after: str | None,
               headers: dict[str, str] | None = None) -> None:
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
        if answered and headers:
            # The provider's own rate-limit headers: steer away before it starts refusing.
            pressure = routing.pressure_from_headers(headers, self.clock())
            if pressure is not None and stats.record_pressure(deployment_id(d), pressure, now) is not None:
                log.info("request_id=%s deployment %s under rate-limit pressure: %.0f%% left (%s), %.1f s",
                         self.request_id, deployment_id(d), pressure.remaining_fraction * 100, pressure.source,
                         pressure.reset_after_s)
        if not answered or status == 429 or status >= 500:
            wait = routing.retry_after_s(headers or {"retry-after": retry_after or ""}, self.clock())
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


def _max_tokens(body: dict[str, Any]) -> int | None:
    n = body.get("max_completion_tokens") or body.get("max_tokens")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def _client_key(h: dict[str, str]) -> str:
    auth = h.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return h.get("x-api-key", "").strip()
