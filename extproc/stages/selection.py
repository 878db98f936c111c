"""Which deployments a request tries, in order: the routing decision, then admission.

`route_request` turns a `ClientRequest` into the routing core's `RouteRequest`; `choose` runs the
decision for a route: its best-ranked deployment first, then one deployment per provider in the
route's static order (`Chain`: the order of an aggregate cluster the renderer wrote, which Envoy's
fallback walks);
`refusal` says why a deployment cannot serve a request — the model's `capabilities` against what
the request uses, for every (client API, provider) pair, passthrough included: `resolve` applies
it to the model it resolves and `choose` to every deployment of a chain, so no provider is sent
what it would refuse;
`candidates` describes the chain to the admission gate from the same statistics snapshot the
decision read; `admitted_first` puts the admitted deployment first, its provider's order behind
it. Raises the client's error when nothing can serve. No I/O; `choose` records an exploring
decision's probe in the `RoutingState` it is given (see `RoutingState.decide`); `admit` waits on
the admission `Gate`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import routing
from extproc import errors, metadata
from extproc.admission import Candidate, Gate, Ticket
from extproc.config.model import Tenant
from extproc.runtime import Deployment, RouteRuntime, Runtime
from extproc.stages import explain
from extproc.stages.feedback import RoutingState
from extproc.stages.request import (
    ANTHROPIC_COUNT_TOKENS,
    ANTHROPIC_MESSAGES,
    OPENAI_COMPLETIONS,
    OPENAI_EMBEDDINGS,
    ClientRequest,
)
from extproc.translate.responses_chat import openai_only
from extproc.translate.responses_openai import account_tag, stored_by

log = logging.getLogger("interlock.router")

# Admission's service-time estimate takes the client's limit, or this many tokens without one.
DEFAULT_SERVICE_TOKENS = 256


def resolve(rt: Runtime, state: RoutingState, req: ClientRequest, tenant: Tenant, request_id: str = "",
            explain_it: bool = False, priority: str = "default") -> tuple[RouteRuntime | None, list[Deployment], routing.Snapshot | None]:
    """The route (None for a model served by one deployment), the deployments to try and the
    snapshot the decision read. 404 for a model that does not exist or the tenant may not use.
    `explain_it`: the decision's explanation is wanted (`Chain.why`) even when INFO logs are off."""
    route, deployments = rt.routes.get(req.model), rt.deployments.get(req.model)
    if (route is None and not deployments) or not tenant.allows(req.model):
        raise errors.NotFound(f"The model `{req.model}` does not exist or you do not have access to it.",
                              code="model_not_found", param="model")
    home = stored_on(req, route.deployments if route is not None else deployments or ())
    if home is not None:  # a stored response's follow-up: its account, whatever routing would say
        return route, [home], None
    if route is None:
        assert deployments
        refused = refusal(req, deployments[0])
        if refused is not None:
            raise refused
        return None, [deployments[0]], None
    chain, snapshot = choose(state, route, req, tenant, request_id, explain_it, priority)
    return route, chain, snapshot


def stored_on(req: ClientRequest, deployments: Sequence[Deployment]) -> Deployment | None:
    """For a Responses request whose `previous_response_id` names the provider account that stored
    it (`responses_openai.stored_by`): that account's deployment of the model — routing and
    fallback do not move the request off it. None for any other request; 400 when no deployment
    of the model is on that account (or it cannot serve the request)."""
    if req.api != "openai-responses" or "previous_response_id" not in req.body:
        return None
    tag = stored_by(req.body.get("previous_response_id"))
    if tag is None:
        return None
    for d in deployments:
        if account_tag(d.provider) == tag:
            refused = refusal(req, d)
            if refused is not None:
                raise refused
            return d
    raise errors.BadRequest(f"`previous_response_id` names a response stored by a provider account that does not "
                            f"serve `{req.model}`: continue it with the model that made it.",
                            param="previous_response_id")


# The parameter a 400 names for a capability the request uses, per client API.
_JSON_PARAM = {ANTHROPIC_MESSAGES: "output_config.format", "openai-responses": "text.format"}


# Client APIs only some provider types serve (the pairs of `extproc.translate.registry`), and the
# provider types that serve only one client API.
SERVED_BY = {
    OPENAI_COMPLETIONS: frozenset({"openai", "azure-openai", "mistral"}),
    ANTHROPIC_COUNT_TOKENS: frozenset({"anthropic", "vertex-anthropic", "gemini", "vertex-gemini", "bedrock", "openai"}),
}
ONLY_API = {"mistral": OPENAI_COMPLETIONS}
_WHAT = {OPENAI_COMPLETIONS: "/v1/completions", ANTHROPIC_COUNT_TOKENS: "token counting (/v1/messages/count_tokens)"}


def api_refusal(api: str, d: Deployment) -> errors.BadRequest | None:
    """Why `d`'s provider type cannot serve client API `api` at all (None when it can)."""
    ptype = d.target.provider_type
    only = ONLY_API.get(ptype)
    if only is not None and api != only:
        return errors.BadRequest(f"The model `{d.model}` is served by a {ptype} provider, which serves "
                                 f"{_WHAT[only]} only.", param="model")
    served = SERVED_BY.get(api)
    if served is not None and ptype not in served:
        what = _WHAT[api]
        if api == ANTHROPIC_COUNT_TOKENS:
            return errors.BadRequest(f"The model `{d.model}` cannot count tokens: its provider type ({ptype}) has "
                                     "no token-counting API. Count with a model on an anthropic, vertex, gemini, "
                                     "bedrock or openai provider.", param="model")
        return errors.BadRequest(f"The model `{d.model}` does not serve {what}: its provider type ({ptype}) has "
                                 "no completions API. Use /v1/chat/completions.", param="model")
    return None


def refusal(req: ClientRequest, d: Deployment) -> errors.BadRequest | None:
    """Why deployment `d` cannot serve `req` (None when it can), whatever the translator does:
    a client API its provider type does not serve (`api_refusal`), a completions `suffix` to a model
    without the capability `fim`,
    chat to an embeddings model (capability `embeddings`), embeddings to a model without it, and
    tools, images or a JSON response format to a model whose `capabilities` lack them. A 400
    naming the parameter, as the provider itself would refuse it."""
    embeddings_model = "embeddings" in d.capabilities
    refused = api_refusal(req.api, d)
    if refused is not None:
        return refused
    if req.api == "openai-responses" and d.target.provider_type not in ("openai", "azure-openai"):
        refused = openai_only(req.body)  # stored state, built-in tools, background: OpenAI-type only
        if refused is not None:
            return refused
    if req.api == OPENAI_COMPLETIONS and req.body.get("suffix") is not None and "fim" not in d.target.capabilities:
        return errors.BadRequest(f"The model `{d.model}` does not support fill-in-the-middle (`suffix`): send the "
                                 "request without `suffix`, or to a model with the capability `fim`.", param="suffix")
    if req.api == OPENAI_EMBEDDINGS:
        if embeddings_model:
            return None
        return errors.BadRequest(f"The model `{d.model}` does not serve embeddings.", param="model")
    if embeddings_model:
        return errors.BadRequest(f"The model `{d.model}` is an embeddings model: it serves /v1/embeddings only.",
                                 param="model")
    missing = req.needs - d.capabilities
    if "tools" in missing:
        return errors.BadRequest(f"Model {d.model} does not support tools.", param="tools")
    if "images" in missing:
        return errors.BadRequest(f"Model {d.model} does not support images.", param=_first_image(req.body))
    if "json" in missing:
        return errors.BadRequest(f"Model {d.model} does not support structured output.",
                                 param=_JSON_PARAM.get(req.api, "response_format"))
    return None


def _first_image(body: dict[str, object]) -> str:
    """Where the first image part of a chat body is (`messages[i].content[j]`)."""
    messages = body.get("messages")
    for i, m in enumerate(messages if isinstance(messages, list) else ()):
        content = m.get("content") if isinstance(m, dict) else None
        for j, part in enumerate(content if isinstance(content, list) else ()):
            if isinstance(part, dict) and part.get("type") in ("image_url", "image"):
                return f"messages[{i}].content[{j}]"
    return "messages"


def route_request(req: ClientRequest, route: RouteRuntime, tenant: Tenant, now: float) -> routing.RouteRequest:
    allowed = None if tenant.models == ("*",) else frozenset(
        d.model for d in route.deployments if tenant.allows(d.model))
    return routing.RouteRequest(est_input_tokens=req.est_input_tokens, now=now, needs=req.needs,
                                max_output_tokens=req.max_output_tokens, allowed_models=allowed,
                                affinity_key=req.affinity_key, observes_latency=req.stream)


def choose(state: RoutingState, route: RouteRuntime, req: ClientRequest, tenant: Tenant,
           request_id: str = "", explain_it: bool = False, priority: str = "default") -> tuple[list[Deployment], routing.Snapshot]:
    """The deployments to try in order, and the snapshot the decision read. 429 when every
    candidate is cooling down; 400 when none can serve the request.

    The first is the decision's best-ranked deployment that can serve the request (see
    `refusal`). The fallbacks follow the route's static order, one deployment per provider: the
    primary's provider, then the route's other providers in `routing.fallback_providers` order,
    `max_attempts` long (`metadata.fallback_order`, the order the renderer wrote an aggregate
    cluster for), each with its best deployment for this request (`Chain`). The list ends before
    a provider with none (the tenant's allow-list, capabilities, context window, budget); a
    provider only cooling down keeps its place (Envoy skips it only while it has ejected its hosts)."""
    decision, snapshot = state.decide(route.name, route.deployments, route.policy,
                                      route_request(req, route, tenant, state.clock()), priority)
    ex = decision.explanation
    if not decision.deployments:
        if all(drop.filter == "health" for drop in ex.dropped.values()):
            raise errors.RateLimited(f"Every deployment behind `{route.name}` is cooling down.", 1)
        reasons = "; ".join(f"{route.by_id[dep].model}: {drop.reason}" for dep, drop in ex.dropped.items())
        raise errors.BadRequest(f"No model behind `{route.name}` can serve this request ({reasons}).", param="model")
    primary = next((route.by_id[i] for i in decision.deployments if refusal(req, route.by_id[i]) is None), None)
    if primary is None:  # every ranked deployment is of the wrong kind (chat / embeddings)
        raise refusal(req, route.by_id[decision.deployments[0]]) or AssertionError("refused without a refusal")
    chain = Chain.of(primary, route, _usable(route, decision, req))
    chain.explanation = ex
    if explain_it or log.isEnabledFor(logging.INFO):
        chain.why = explain.text(route.name, route.policy, decision, snapshot, chain, state.clock())
        log.info("request_id=%s %s", request_id, chain.why)
    return chain, snapshot


class Chain(list[Deployment]):
    """A routed request's deployments in attempt order, and what reordering it takes: the routed
    name's providers in canonical order (`RouteRuntime.fallback_providers`), the
    best deployment on each that can serve this request (`usable`) and the attempt limit.

    Always `metadata.fallback_order(providers, chain[0].provider, max_attempts)`, cut before the
    first provider without a usable deployment — an order, or a prefix of one, that the renderer
    wrote an aggregate cluster for. Immutable by contract (a list so that stages take it as one)."""

    providers: tuple[str, ...]
    usable: Mapping[str, Deployment]
    max_attempts: int
    explanation: routing.Explanation | None = None  # the routing decision's (None: not routed)
    why: str = ""  # the decision's explanation as text (`extproc.stages.explain`), when asked for or logged

    @classmethod
    def of(cls, first: Deployment, route: RouteRuntime, usable: Mapping[str, Deployment]) -> Chain:
        return cls._build(first, route.fallback_providers, usable, route.policy.max_attempts)

    @classmethod
    def _build(cls, first: Deployment, providers: tuple[str, ...], usable: Mapping[str, Deployment],
               max_attempts: int) -> Chain:
        out = [first]
        for p in metadata.fallback_order(providers, first.provider, max_attempts)[1:]:
            d = usable.get(p)
            if d is None:
                break
            out.append(d)
        chain = cls(out)
        chain.providers, chain.usable, chain.max_attempts = providers, usable, max_attempts
        return chain

    def starting_with(self, index: int) -> Chain:
        """The chain for a request whose first attempt goes to `self[index]` instead."""
        chain = Chain._build(self[index], self.providers, self.usable, self.max_attempts)
        chain.explanation = self.explanation
        if self.why:
            chain.why = f"{self.why} admitted={self[index].id}"
        return chain


def _usable(route: RouteRuntime, decision: routing.Decision, req: ClientRequest) -> dict[str, Deployment]:
    """Per provider, the best deployment that can serve `req`: the decision's ranking first, then
    the other eligible ones (those meeting the policy's constraints first, by total score), then
    those the health filter dropped (cooling down: a last resort); never one another filter
    dropped or `refusal` refuses. Ties keep config order."""
    ex = decision.explanation
    ranked = {dep_id: i for i, dep_id in enumerate(decision.deployments)}
    best: dict[str, tuple[tuple[float, ...], Deployment]] = {}
    for n, d in enumerate(route.deployments):
        if d.id in ranked:
            key: tuple[float, ...] = (0, ranked[d.id])
        elif d.id in ex.scores:
            key = (1, bool(ex.constraint_failures.get(d.id)), -ex.scores[d.id].total, n)
        elif d.id in ex.dropped and ex.dropped[d.id].filter == "health":
            key = (2, n)
        else:
            continue
        if (d.provider not in best or key < best[d.provider][0]) and refusal(req, d) is None:
            best[d.provider] = (key, d)
    return {p: d for p, (_, d) in best.items()}


def candidates(chain: Sequence[Deployment], snapshot: routing.Snapshot, max_output_tokens: int | None
               ) -> list[Candidate]:
    """The admission gate's view of `chain`: budgets and expected timings from `snapshot`."""
    out = []
    for d in chain:
        budget = d.spec.max_concurrency
        est = snapshot.estimate(d.id)
        if est.weight < 1.0:  # not observed yet: nothing to judge a deadline by
            out.append(Candidate(d.id, budget, 0.0, 1.0))
            continue
        tokens = min(max_output_tokens or DEFAULT_SERVICE_TOKENS, d.max_output_tokens)
        out.append(Candidate(d.id, budget, est.ttft_p50_s, est.ttft_p50_s + est.tpot_p50_s * tokens))
    return out


def admitted_first(chain: list[Deployment], index: int) -> list[Deployment]:
    """The chain for a request admitted to `chain[index]`: that deployment first, then its own
    fallbacks (`Chain.starting_with`: its provider's order, not the rest of `chain`). A plain list
    (no route behind it) keeps the others in their order."""
    if not index:
        return chain
    if isinstance(chain, Chain):
        return chain.starting_with(index)
    return [chain[index], *chain[:index], *chain[index + 1:]]


async def admit(gate: Gate | None, state: RoutingState, chain: list[Deployment], snapshot: routing.Snapshot | None,
                req: ClientRequest, priority: str, deadline_at: float | None, request_id: str = ""
                ) -> tuple[list[Deployment], Ticket | None]:
    """Take a budget slot (see `extproc.admission`) when a deployment has a budget or the request
    a deadline: the chain with the admitted deployment first, and the ticket to release when the
    answer ends. Raises the gate's 429 / 504 when the request is shed."""
    if gate is None or (deadline_at is None and not any(d.spec.max_concurrency for d in chain)):
        return chain, None
    snap = snapshot if snapshot is not None else state.stats.snapshot(state.clock())
    ticket = await gate.admit(candidates(chain, snap, req.max_output_tokens), priority, deadline_at)
    if ticket.waited_s:
        log.info("request_id=%s waited %.0f ms for a slot of %s", request_id, ticket.waited_s * 1000,
                 ticket.deployment_id)
    return admitted_first(chain, ticket.index), ticket
