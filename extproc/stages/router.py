"""Router stage: one `RouterStream` per ext_proc gRPC stream (= one client request).

Theory of operation. Envoy sends, in this order and each at most once unless noted:
request headers → request body (BUFFERED; absent when the request has none) → response
headers → response body (BUFFERED: once; FULL_DUPLEX_STREAMED: one message per upstream read).

    HEADERS  authenticate, read priority and deadline (`request`); answer GET /v1/models; send
             /v1/responses/{id}[/input_items|/cancel] to the account that stored it (`stored_responses`)
    BODY     parse once (`request.ClientRequest`); choose and admit the deployments
             (`selection`); translate and sign for the first (`outbound`); reserve the rate
             limit (`metering`); hand the upstream stage the decision record; clear the route
             cache so Envoy routes on the cluster header
    RESP_HDR a refusal of the gateway's own rate limit ends here; else learn who answered and how
             (`feedback`) and choose the body mode (`Reply`): READ (passthrough: checked, never
             changed), TRANSLATE, ERROR (a failure, or a 2xx that is not what was asked: buffered)
    RESP_BODY translate back (or check; a cut stream gets an error event), keep the usage current,
             end: learn the answer's length and time per token, free the slot (`streaming`); or
             end a stalled one unasked (`stall`). A streamed request's wait for its first token is
             evidence for routing from the moment it is sent until its response headers (`feedback`)

Per-stream state lives in one `Flow` dataclass (`flow.py`); every step that decides something
is a function of another module, so this file is only the order of the steps. Errors raised here
reach the one boundary in `extproc.server`, which calls `fail` to render them in the client's
format (named as the gateway's before a provider was reached). Not thread-safe; one asyncio task
owns a stream. Nothing is shared across streams but the `Runtime`, `RoutingState` and `Gate`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from extproc import envoy_msgs as msgs
from extproc import errors, metadata, telemetry
from extproc.admission import Gate
from extproc.pools import picker as pools
from extproc.runtime import Deployment, Runtime
from extproc.stages import (
    explain,
    feedback,
    metering,
    models_list,
    outbound,
    request,
    response,
    selection,
    stored_responses,
    streaming,
)
from extproc.stages.flow import Flow
from extproc.stages.response import Reply
from extproc.stages.stall import Loop
from extproc.translate.base import ResponseContext, client_status_for
from extproc.translate.responses_response import echoing

log = logging.getLogger("interlock.router")


class RouterStream:
    """The router stage for one request. `clock` is wall time (response timestamps, logs)."""

    def __init__(self, runtime: Runtime, state: feedback.RoutingState, gate: Gate | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.rt = runtime
        self.state = state
        self.gate = gate
        self.clock = clock
        self.started = clock()
        self.f = Flow()
        self.tm = telemetry.NOOP
        self.trace_parent: str | None = None  # the ext_proc call's `traceparent` (Envoy's span), when given
        self.push: Callable[[msgs.ProcessingResponse], bool] | None = None
        self.loop: Loop | None = None
        self.stored: tuple[Deployment, str, str] | None = None  # /v1/responses/{id}[/…]: (to, method, path)
        self.retag = False  # its answer is buffered to tag the response ids (`stored_responses.tagged`)
        self.pool_pick: pools.Picked | None = None  # a pool's endpoint, whose in-flight count holds this request
        self.pool_subset: frozenset[str] | None = None  # the Inference Extension's subset hint, if any

    def attach(self, push: Callable[[msgs.ProcessingResponse], bool], loop: Loop) -> None:
        self.push, self.loop = push, loop  # the transport's unasked send; the idle timer's loop

    @property
    def request_id(self) -> str:
        return self.f.request_id

    async def handle(self, req: msgs.ProcessingRequest) -> msgs.ProcessingResponse:
        phase = req.WhichOneof("request")
        if phase == "request_headers":
            self.pool_subset = pools.subset_hint(req.metadata_context) if req.HasField("metadata_context") else None
            reply = self.on_request_headers(req.request_headers)
            return reply if self.stored is None else await self.on_stored_response(*self.stored)
        if phase == "request_body":
            if self.stored is not None:  # a stored-response call's body (cancel's, if any) goes on as sent
                return msgs.request_body(None)
            return await self.on_request_body(req.request_body)
        if phase == "response_headers":
            if self.pool_pick is not None:
                pools.served(self.pool_pick, pools.served_address(req))
            return self.on_response_headers(req.response_headers, msgs.answering_provider(req))
        if phase == "response_body":
            return self.on_response_body(req.response_body)
        if phase == "response_trailers":
            return msgs.response_trailers()
        raise RuntimeError(f"unexpected ext_proc phase {phase}")

    def fail(self, err: errors.GatewayError, phase: str | None) -> msgs.ProcessingResponse:
        f = self.f
        status, body, headers = errors.render(err, f.api)
        telemetry.failed(self.tm, err)
        if phase == "response_body" and f.reader is not None:  # bytes already reached the client
            self.close()
            return msgs.streamed_body(response.error_event(f.api, body), True)
        if phase not in ("response_headers", "response_body"):  # nothing reached a provider:
            f.deployment = None  # the gateway refused, and says so
        self._finish(status, err.message)
        extra = [(metadata.REQUEST_ID_HEADER, f.request_id)] if f.request_id else []
        who = [*response.identity_headers(f.deployment, f.route, f.model), *request.priority_headers(f.head),
               *self._explained()]
        return msgs.immediate(status, body, [*headers.items(), *who, *extra])

    # -- request ----------------------------------------------------------------------------

    def on_request_headers(self, m: msgs.pb.HttpHeaders) -> msgs.ProcessingResponse:
        f = self.f
        h = msgs.header_map(m)
        self.tm = telemetry.begin(h, self.state.clock(), self.trace_parent)
        f.request_id = h.get(metadata.REQUEST_ID_HEADER, "")
        path = request.normalized_path(h)
        f.api = request.error_api(path)
        f.head = head = request.read_head(h, self.rt.tenants_by_key_hash)
        if head.deadline_ms:
            f.deadline_at = self.state.clock() + head.deadline_ms / 1000
        if models_list.is_models_path(path):
            anthropic = "anthropic-version" in h
            f.api = errors.ANTHROPIC if anthropic else f.api
            body, headers = models_list.answer(self.rt.models_for(head.tenant), head.method, path, anthropic,
                                               apis=models_list.apis_by_model(self.rt))
            return msgs.immediate(200, body, [*headers, (metadata.REQUEST_ID_HEADER, f.request_id)])
        if stored_responses.is_stored_path(path):
            d = stored_responses.home(self.rt, head.tenant, head.method, path)
            f.chain, f.deployment, self.stored = [d], d, (d, head.method, path)
            return msgs.request_headers()
        f.api = request.client_api(head, not m.end_of_stream, self.rt.config.limits.max_request_bytes)
        return msgs.request_headers()

    async def on_stored_response(self, d: Deployment, method: str, path: str) -> msgs.ProcessingResponse:
        """Send a stored-response call (`stored_responses`) to the account that stored it, as one
        request against the tenant's request limits; the answer goes back unchanged but for the
        response ids it carries (`on_response_headers`)."""
        head = self.f.head
        assert head is not None, "request headers come first"
        query = head.headers.get(":path", "").partition("?")[2]
        headers = await stored_responses.prepare(self.rt, d, method, path, query)
        translator = self.rt.registry.get("openai-responses", d.target.provider_type)
        remove = outbound.client_headers_to_strip(head.headers, {k for k, _ in headers}, translator)
        self.f.sent_at = self.state.clock()
        reply = msgs.request_headers(headers, remove)
        reply.request_headers.response.clear_route_cache = True
        if head.tenant.limits:
            self.f.limited = True
            reply.dynamic_metadata.update({metadata.NAMESPACE: stored_responses.reservation(head.tenant,
                                                                                            head.priority)})
        return reply

    async def on_request_body(self, m: msgs.pb.HttpBody) -> msgs.ProcessingResponse:
        f, head = self.f, self.f.head
        assert head is not None, "request headers come first"
        body = request.parse_json(m.body)
        f.model = request.requested_model(body)
        f.req = req = request.client_request(f.api, body, m.body)
        asked = head.tenant.explain and explain.asked(head.headers)
        route, chain, snapshot = selection.resolve(self.rt, self.state, req, head.tenant, f.request_id, asked, head.priority)
        f.route = route.name if route else None
        if head.tenant.limits:  # a 400 when no wait could admit it; else first where its prompt fits
            chain = selection.admitted_first(chain, metering.first_admissible(chain, req, head.tenant, head.priority))
        f.chain, f.ticket = await selection.admit(self.gate, self.state, chain, snapshot, req, head.priority,
                                                  f.deadline_at, f.request_id)
        d = f.deployment = f.chain[0]
        pool_headers, pool_meta, self.pool_pick = pools.route(
            [x.account.config for x in f.chain], req.body,
            req.est_input_tokens + (req.max_output_tokens or pools.DEFAULT_OUTPUT_TOKENS), self.pool_subset)
        f.why = getattr(f.chain, "why", "") if asked else ""
        telemetry.decided(self.tm, f, getattr(f.chain, "explanation", None))
        f.translator = self.rt.registry.get(req.api, d.target.provider_type)
        out = await outbound.prepare(f.translator, req.body, d)
        f.dropped = out.dropped_params
        if out.dropped_params:
            log.info("request_id=%s dropped params for %s: %s", f.request_id, d.provider, ",".join(out.dropped_params))
        meta = outbound.decision_metadata(req.api, f.route, f.chain, m.body)
        if head.tenant.limits:
            f.limited = True
            meta.update(metering.reservation(req, f.chain, head.tenant, head.priority))
        meta.update(telemetry.access_fields(self.tm, f) or {})
        left = None if f.deadline_at is None else f.deadline_at - self.state.clock()
        set_headers = [*out.headers, *outbound.routing_headers(f.chain, f.api, left), *pool_headers]
        remove = outbound.client_headers_to_strip(head.headers, {k for k, _ in set_headers}, f.translator)
        f.sent_at = self.state.clock()
        if req.stream:
            f.waiting_on = d.id
            feedback.waiting(self.state, d, self, f.sent_at)
        return msgs.request_body(out.body, set_headers, remove, clear_route_cache=True,
                                 dynamic_metadata={**({metadata.NAMESPACE: meta} if meta else {}), **pool_meta} or None)

    # -- response ---------------------------------------------------------------------------

    def on_response_headers(self, m: msgs.pb.HttpHeaders, answered_by: str | None) -> msgs.ProcessingResponse:
        f = self.f
        h = msgs.header_map(m)
        status = f.upstream_status = int(h.get(":status", "0") or 0)
        if response.refused_by_gateway(status, h, answered_by):  # nothing reached a provider: nothing to learn
            f.deployment, f.reply = None, Reply.ERROR  # worded here, in the client's format, naming the limit
            f.failure = response.limiter_down(h) or response.over_limit(h, f.model, f.head.priority if f.head else None)
            who = [*response.identity_headers(None, None, f.model), *request.priority_headers(f.head)]
            return msgs.response_headers([*who, ("content-type", "application/json")], response.REFUSAL_HEADERS,
                                         body_mode=msgs.BODY_BUFFERED)
        units = frozenset(lim.unit.value for lim in f.head.tenant.limits) if f.limited and f.head else frozenset()
        deadline_hit = response.deadline_passed(status, h, f.deadline_at, self.state.clock())
        f.headers_at = self.state.clock()
        self._waited()
        limit_headers, i = feedback.from_answer(self.state, f.chain, h, answered_by, status, units, deadline_hit,
                                                f.request_id)
        if i is not None and f.chain[i] is not f.deployment:  # a retry on another provider answered:
            f.deployment = f.chain[i]  # what it dropped (the upstream stage made the same translation)
            f.translator = self.rt.registry.get(f.api, f.deployment.target.provider_type)
            f.dropped = f.translator.translate_request(f.req.body, f.deployment.target).dropped_params if f.req else ()
        d, tr, req = f.deployment, f.translator, f.req
        out = [*(response.identity_headers(d, f.route, f.model) if d else []), *limit_headers,
               *request.priority_headers(f.head), *self._explained()]
        if self.stored is not None and d is not None:
            return self._stored_answer(status, h, out, limit_headers, deadline_hit, m.end_of_stream)
        if d is None or tr is None or req is None:  # Envoy's own reply (no route, overflow, ...)
            self._finish(status)
            return msgs.response_headers(out, body_mode=msgs.BODY_NONE)
        out.append((metadata.ATTEMPTS_HEADER, h.get(metadata.ENVOY_ATTEMPT_COUNT, "1")))
        if f.dropped:
            out.append((metadata.DROPPED_PARAMS_HEADER, ",".join(f.dropped)))
        remove = response.headers_to_remove(h, {k for k, _ in limit_headers})
        ok = 200 <= status < 300
        f.failure = response.not_delivered(req.stream, h, d.provider) if ok else None  # an HTML page, ...
        if not ok or f.failure is not None:
            if f.failure is not None:
                feedback.broken(self.state, d, f.failure.message, f.request_id)
            f.upstream_headers, f.reply = h, Reply.ERROR
            f.status = f.failure.status if f.failure else client_status_for(status)
            f.failure = f.failure or response.failure(f.status, h, deadline_hit, d.provider)
            if m.end_of_stream:  # an empty error answer: no body message follows
                code, reply = response.error_headers(f.failure or tr.translate_error(status, b"", h), f.api, out, remove)
                self._finish(code)
                return reply
            out += [(":status", str(f.status)), ("content-type", "application/json")]
            return msgs.response_headers(out, remove, body_mode=msgs.BODY_BUFFERED)
        f.status = status
        f.reply, mode = response.plan(tr.passthrough, req.stream)
        if req.stream:  # bytes may be added: a translation, or an error event ending a cut stream
            feedback.first_token(self.state, d, f.sent_at, f.headers_at)
            f.reader = tr.stream_translator(outbound.account_target(d), echoing(
                req.api, req.body, ResponseContext(f.request_id, int(self.clock()), req.include_usage)))
            remove.append("content-length")
            streaming.watch(f, self.loop if self.push else None, self._stalled)
        if f.reply is Reply.TRANSLATE and req.stream:
            out += [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")]
        return msgs.response_headers(out, remove, body_mode=mode)

    def _stored_answer(self, status: int, h: dict[str, str], out: list[tuple[str, str]],
                       limit_headers: list[tuple[str, str]], deadline_hit: bool, ended: bool
                       ) -> msgs.ProcessingResponse:
        """A stored-response call's answer: a response is buffered to tag its ids; a provider's
        error is rendered as for every call (`Reply.ERROR`); anything else goes on unchanged."""
        f, (d, _, path) = self.f, self.stored or (None, "", "")
        assert d is not None, "a stored-response call has its deployment"
        remove = response.headers_to_remove(h, {k for k, _ in limit_headers})
        f.status = status
        if 200 <= status < 300:
            self.retag = not ended and stored_responses.retags(path, status, h.get("content-type", ""))
            if not self.retag:
                self._finish(status)
            return msgs.response_headers(out, remove, body_mode=msgs.BODY_BUFFERED if self.retag else msgs.BODY_NONE)
        f.translator = self.rt.registry.get("openai-responses", d.target.provider_type)
        f.upstream_headers, f.reply, f.status = h, Reply.ERROR, client_status_for(status)
        f.failure = response.failure(f.status, h, deadline_hit, d.provider)
        if ended:  # an empty error answer: no body message follows
            code, reply = response.error_headers(f.failure or f.translator.translate_error(status, b"", h), f.api,
                                                 out, remove)
            self._finish(code)
            return reply
        out += [(":status", str(f.status)), ("content-type", "application/json")]
        return msgs.response_headers(out, remove, body_mode=msgs.BODY_BUFFERED)

    def on_response_body(self, m: msgs.pb.HttpBody) -> msgs.ProcessingResponse:
        f = self.f
        d, tr, req = f.deployment, f.translator, f.req
        if self.retag and d is not None:  # a stored response: its ids tagged
            body = stored_responses.tagged(m.body, d)
            self._finish(f.status)
            return msgs.response_body(body, [("content-length", str(len(body)))])
        if f.reply is Reply.ERROR:  # a failure, buffered: rendered in the client's format
            if f.failure is None:
                assert tr is not None, "a provider's error follows a routed request"
                f.failure = tr.translate_error(f.upstream_status, m.body, f.upstream_headers)
            return self._error_body(f.failure)
        assert d is not None and tr is not None and req is not None, "response body follows a routed request"
        if f.reader is not None:  # streamed: READ or TRANSLATE
            if f.ended:  # the gateway already ended the client's stream
                return msgs.streamed_body(b"", m.end_of_stream)
            telemetry.chunk(self.tm, self.state.clock())
            out = streaming.passed_on(f, self.state, m.body, m.end_of_stream)
            md = streaming.news(f, self._spent)
            if m.end_of_stream:
                self._observe(f.headers_at)
                self._finish(f.status)
            return msgs.streamed_body(out, m.end_of_stream, md)
        ctx = echoing(req.api, req.body, ResponseContext(f.request_id, int(self.clock()), False, req.encoding_format))
        try:
            body, f.usage = tr.translate_response(m.body, outbound.account_target(d), ctx)
        except errors.ProviderError as err:  # a 2xx that is not the answer asked for (invalid JSON, ...)
            feedback.broken(self.state, d, err.message, f.request_id)
            return self._error_body(err)
        self._observe(None)
        self._finish(f.status)
        if f.reply is Reply.READ:  # read for its usage only: the body goes on as is
            return msgs.response_body(None, dynamic_metadata=self._spent())
        return msgs.response_body(body, [("content-length", str(len(body)))], dynamic_metadata=self._spent())

    def _stalled(self) -> None:
        """The idle timer fired: end the client's stream with an error event, before Envoy resets it."""
        if not self.f.ended and self.push is not None:
            tail, err = streaming.stalled(self.f, self.state)
            self.push(msgs.streamed_body(tail, True, self._spent()))
            self._finish(self.f.status, err.message)

    def _error_body(self, err: errors.GatewayError) -> msgs.ProcessingResponse:
        status, reply = response.error_body(err, self.f.api, self.f.deployment if self.f.limited else None)
        self._finish(status)
        return reply

    def _spent(self) -> dict[str, dict[str, str]] | None:
        f = self.f
        if not f.limited or f.deployment is None or f.req is None:
            return telemetry.access_metadata(self.tm, f)
        return {metadata.NAMESPACE: {**metering.spent(f.deployment, f.usage, f.req.est_input_tokens, f.events),
                                     **(telemetry.access_fields(self.tm, f) or {})}}

    def _observe(self, headers_at: float | None) -> None:
        """A complete answer: its length (and, streamed, its time per token) is learned."""
        f = self.f
        if f.deployment is not None and f.req is not None and f.usage is not None and f.req.api != request.OPENAI_EMBEDDINGS:
            feedback.observe(self.state, f.deployment, headers_at, f.usage.completion_tokens, f.req.max_output_tokens)

    def _explained(self) -> list[tuple[str, str]]:
        """The decision's explanation, when the tenant may ask for it and did."""
        return [(explain.RESPONSE_HEADER, self.f.why)] if self.f.why else []

    def _waited(self) -> None:
        if self.f.waiting_on is not None:
            feedback.waited(self.state, self.f.waiting_on, self)
            self.f.waiting_on = None

    def close(self) -> None:
        """The stream is over (answered, failed or abandoned): stop the idle timer, free the slot. Idempotent."""
        self.f.ended = True
        self._waited()
        pools.done(self.pool_pick)
        if self.f.timer is not None:
            self.f.timer.stop()
        if self.f.ticket is not None and self.gate is not None:
            self.gate.release(self.f.ticket)

    def _finish(self, status: int, error: str | None = None) -> None:
        """The answer is complete: free the slot, write the access log line (no deployment: the
        gateway answered by itself)."""
        f = self.f
        f.status = status
        self.close()
        telemetry.finish(self.tm, f, self.rt, status, self.state.clock())
        response.access_log(f.request_id, f.head.tenant.name if f.head else "-", f.deployment, status,
                            f.upstream_status if f.deployment else None, f.usage,
                            (self.clock() - self.started) * 1000, f.model, error)
