"""Which deployments a request tries, in order: the routing decision, then admission.

`route_request` turns a `ClientRequest` into the routing core's `RouteRequest`; `choose` runs the
decision for a route and keeps one deployment per provider (Envoy's fallback walks providers);
`refusal` says why a deployment cannot serve a request — the model's `capabilities` against what
the request uses, for every (client API, provider) pair, passthrough included: `resolve` applies
it to the model it resolves and `choose` to every deployment of a chain, so no provider is sent
what it would refuse;
`candidates` describes the chain to the admission gate from the same statistics snapshot the
decision read; `admitted_first` puts the admitted deployment first. Raises the client's error
when nothing can serve. No I/O; `choose` records an exploring decision's probe in the
`RoutingState` it is given (see `RoutingState.decide`); `admit` waits on the admission `Gate`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import routing
from extproc import errors
from extproc.admission import Candidate, Gate, Ticket
from extproc.config.model import Tenant
from extproc.runtime import Deployment, RouteRuntime, Runtime
from extproc.stages.feedback import RoutingState
from extproc.stages.request import ANTHROPIC_MESSAGES, OPENAI_EMBEDDINGS, ClientRequest

log = logging.getLogger("interlock.router")

# Admission's service-time estimate takes the client's limit, or this many tokens without one.
DEFAULT_SERVICE_TOKENS = 256


def resolve(rt: Runtime, state: RoutingState, req: ClientRequest, tenant: Tenant, request_id: str = ""
            ) -> tuple[RouteRuntime | None, list[Deployment], routing.Snapshot | None]:
    """The route (None for a model served by one deployment), the deployments to try and the
    snapshot the decision read. 404 for a model that does not exist or the tenant may not use."""
    route, deployments = rt.routes.get(req.model), rt.deployments.get(req.model)
    if (route is None and not deployments) or not tenant.allows(req.model):
        raise errors.NotFound(f"The model `{req.model}` does not exist or you do not have access to it.",
                              code="model_not_found", param="model")
    if route is None:
        assert deployments
        refused = refusal(req, deployments[0])
        if refused is not None:
            raise refused
        return None, [deployments[0]], None
    chain, snapshot = choose(state, route, req, tenant, request_id)
    return route, chain, snapshot


# The parameter a 400 names for a capability the request uses, per client API.
_JSON_PARAM = {ANTHROPIC_MESSAGES: "output_config.format"}


def refusal(req: ClientRequest, d: Deployment) -> errors.BadRequest | None:
    """Why deployment `d` cannot serve `req` (None when it can), whatever the translator does:
    chat to an embeddings model (capability `embeddings`), embeddings to a model without it, and
    tools, images or a JSON response format to a model whose `capabilities` lack them. A 400
    naming the parameter, as the provider itself would refuse it."""
    embeddings_model = "embeddings" in d.capabilities
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
                                affinity_key=req.affinity_key)


def choose(state: RoutingState, route: RouteRuntime, req: ClientRequest, tenant: Tenant,
           request_id: str = "") -> tuple[list[Deployment], routing.Snapshot]:
    """The deployments to try in order, one per provider (the best one that can serve the request,
    see `refusal`), and the snapshot the decision read. 429 when every candidate is cooling down;
    400 when none can serve the request."""
    decision, snapshot = state.decide(route.name, route.deployments, route.policy,
                                      route_request(req, route, tenant, state.clock()))
    ex = decision.explanation
    if not decision.deployments:
        if all(drop.filter == "health" for drop in ex.dropped.values()):
            raise errors.RateLimited(f"Every deployment behind `{route.name}` is cooling down.", 1)
        reasons = "; ".join(f"{route.by_id[dep].model}: {drop.reason}" for dep, drop in ex.dropped.items())
        raise errors.BadRequest(f"No model behind `{route.name}` can serve this request ({reasons}).", param="model")
    chain: list[Deployment] = []
    for dep_id in decision.deployments:
        d = route.by_id[dep_id]
        if refusal(req, d) is None and all(x.provider != d.provider for x in chain):
            chain.append(d)
    if not chain:  # every ranked deployment is of the wrong kind (chat / embeddings)
        raise refusal(req, route.by_id[decision.deployments[0]]) or AssertionError("refused without a refusal")
    if log.isEnabledFor(logging.INFO):
        log.info("request_id=%s route=%s chain=%s by=%s dropped=%s", request_id, route.name,
                 ",".join(x.id for x in chain), ex.chosen_by,
                 ",".join(f"{k}({v.filter})" for k, v in ex.dropped.items()) or "-")
        log.debug("request_id=%s scores %s", request_id, " ".join(
            f"{k}:total={v.total:.3f},ttft={v.ttft_s:.3f},latency={v.latency_s:.3f}" for k, v in ex.scores.items()))
    return chain, snapshot


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
    return [chain[index], *chain[:index], *chain[index + 1:]] if index else chain


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
