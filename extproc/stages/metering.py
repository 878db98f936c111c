"""What a request is charged against its tenant's rate limits, as Envoy's rate-limit filter reads it.

At admission the router stage writes a reservation into the `interlock` dynamic-metadata
namespace (`reserve_tokens`, `reserve_usd`, with `tenant`, `model`, `priority` for the
descriptors; see `extproc.limits.scheme`): the prompt estimate plus the most output the request
may produce on the deployment it is sent to (the client's `max_tokens`, else the model's output
cap), in tokens and in micro-dollars at that deployment's prices — never more than the whole
window of any limit it matches — and the part known at admission (`reserve_min_tokens`,
`reserve_min_usd`: the prompt and its price), below which the rate-limit service never shrinks
a reservation to fit what a window has left. A request whose known part alone is more than a
limit's whole window can never be admitted: `first_admissible` answers it with a 400 naming the limit
instead of a 429 that no wait would cure. Every response message then keeps `usage_tokens` /
`usage_usd` current, so a stream cut short is trued up with what it produced: the provider's
usage once known, else the prompt estimate plus one token per event seen. Those two keys never
reach Envoy: the worker keeps the last of them and sends the true-up itself when the request
ends (`extproc.server`, `extproc.limits.trueup`). Prices come from
`routing.pricing.micro_usd` (integer micro-dollars, rounded up). Pure functions; the caller keeps
the per-stream count of events.
"""

from __future__ import annotations

from collections.abc import Sequence

import routing
from extproc import errors
from extproc.config.model import Tenant
from extproc.limits.model import Limit, Unit, amount_text
from extproc.runtime import Deployment
from extproc.stages.request import ANTHROPIC_COUNT_TOKENS, OPENAI_EMBEDDINGS, ClientRequest
from extproc.translate.base import Usage

MAX_RESERVE_MICRO_USD = 10**9  # $1,000: a reservation never blocks more than this of a USD budget
# The client's output limit, by the names the client APIs give it (the one a 400 names).
_OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
_PROMPT_FIELDS = ("messages", "input", "prompt")


def output_tokens(req: ClientRequest, d: Deployment) -> int:
    """The most output `req` may produce on `d`: the client's limit, else `d`'s cap (0 for embeddings,
    and for token counting, which spends no tokens at all: its prompt estimate is 0 too)."""
    if req.api in (OPENAI_EMBEDDINGS, ANTHROPIC_COUNT_TOKENS):
        return 0
    return min(req.max_output_tokens, d.max_output_tokens) if req.max_output_tokens else d.max_output_tokens


def _known(unit: Unit, req: ClientRequest, d: Deployment) -> int:
    """Ticks of `unit` the request spends whatever it produces: itself, its prompt, its prompt's price."""
    if unit is Unit.REQUESTS:
        return 1
    if unit is Unit.TOKENS:
        return req.est_input_tokens
    return routing.micro_usd(req.est_input_tokens, 0, d.input_per_mtok, 0)


def _matching(tenant: Tenant, req: ClientRequest, priority: str) -> tuple[Limit, ...]:
    descriptor = {"tenant": tenant.name, "model": req.model, "priority": priority}
    return tuple(lim for lim in tenant.limits if lim.matches(descriptor))


def _too_small(limits: Sequence[Limit], req: ClientRequest, d: Deployment) -> Limit | None:
    """The first limit whose whole window is less than the request's known part on `d`."""
    return next((lim for lim in limits if _known(lim.unit, req, d) > lim.capacity), None)


def first_admissible(chain: Sequence[Deployment], req: ClientRequest, tenant: Tenant, priority: str) -> int:
    """The index of the first deployment of `chain` on which the request's known part fits the
    whole window of every limit it matches (0 when the tenant has none that applies); a 400 naming
    the limit when there is none — no wait could admit it. Only USD limits tell deployments apart
    (their prices differ); the caller puts that deployment first (`selection.admitted_first`)."""
    limits = _matching(tenant, req, priority)
    if limits:
        for i, d in enumerate(chain):
            if _too_small(limits, req, d) is None:
                return i
        lim = _too_small(limits, req, chain[0])
        assert lim is not None
        raise window_too_small(lim, req, chain[0])
    return 0


def window_too_small(lim: Limit, req: ClientRequest, d: Deployment) -> errors.BadRequest:
    """The 400 for a request whose known part alone exceeds `lim`'s whole window."""
    limit = f"this API key's limit of {lim.describe()}"
    sent = next(((f, req.body[f]) for f in _OUTPUT_FIELDS if req.body.get(f) is not None), None)
    extra = f", before the `{sent[0]}` of {sent[1]} it asks for" if sent else ""
    param = next((f for f in _PROMPT_FIELDS if f in req.body), None)
    if lim.unit is Unit.REQUESTS:
        return errors.BadRequest(f"The request can never be admitted: {limit} admits none.",
                                 code="rate_limit_window_too_small")
    prompt = f"about {req.est_input_tokens} tokens, estimated"
    if lim.unit is Unit.USD:
        prompt += f", ${amount_text(_known(Unit.USD, req, d), Unit.USD)} at {d.model}'s input price"
    return errors.BadRequest(
        f"The request can never be admitted: its prompt alone ({prompt}) is more than {limit}{extra}. "
        "Shorten the prompt, or ask for a higher limit.", param=param, code="rate_limit_window_too_small")


def reservation(req: ClientRequest, chain: Sequence[Deployment], tenant: Tenant, priority: str) -> dict[str, str]:
    """The admission charge for `req` on the ordered `chain` (the deployment it is sent to first):
    `reserve_<unit>` at most the smallest whole window of the limits of that unit it matches (the
    output part is cut; the true-up charges what is really used), `reserve_min_<unit>` its known part."""
    d = chain[0]
    est = req.est_input_tokens
    out = output_tokens(req, d)
    tokens, min_tokens = est + out, est
    usd = min(routing.micro_usd(est, out, d.input_per_mtok, d.output_per_mtok), MAX_RESERVE_MICRO_USD)
    min_usd = routing.micro_usd(est, 0, d.input_per_mtok, 0)
    for lim in _matching(tenant, req, priority):
        if lim.unit is Unit.TOKENS:
            tokens = min(tokens, lim.capacity)
        elif lim.unit is Unit.USD:
            usd = min(usd, lim.capacity)
    return {"tenant": tenant.name, "model": req.model, "priority": priority,
            "reserve_tokens": str(tokens), "reserve_usd": str(usd),
            "reserve_min_tokens": str(min(min_tokens, tokens)), "reserve_min_usd": str(min(min_usd, usd)),
            # Until the answer says otherwise, the prompt is what was spent.
            **usage_fields(d, est, 0)}


def usage_fields(d: Deployment, prompt_tokens: int, completion_tokens: int) -> dict[str, str]:
    """The spend so far on the deployment `d`, as the true-up reads it."""
    usd = routing.micro_usd(prompt_tokens, completion_tokens, d.input_per_mtok, d.output_per_mtok)
    return {"usage_tokens": str(prompt_tokens + completion_tokens), "usage_usd": str(usd)}


def events_in(chunk: bytes) -> int:
    """Events in a piece of a streamed answer (SSE `data:` lines or AWS event-stream messages)."""
    return chunk.count(b"data:") or chunk.count(b":event-type")


def spent(d: Deployment, usage: Usage | None, est_input_tokens: int, events_seen: int) -> dict[str, str]:
    """The spend so far: the provider's usage when it reported any, else the prompt estimate
    and one token per event seen."""
    if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
        return usage_fields(d, usage.prompt_tokens, usage.completion_tokens)
    return usage_fields(d, est_input_tokens, events_seen)
