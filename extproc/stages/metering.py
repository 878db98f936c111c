"""What a request is charged against its tenant's rate limits, as Envoy's rate-limit filter reads it.

At admission the router stage writes a reservation into the `interlock` dynamic-metadata
namespace (`reserve_tokens`, `reserve_usd`, with `tenant`, `model`, `priority` for the
descriptors; see `extproc.limits.scheme`): the prompt estimate plus the most output the request
may produce, in tokens and in micro-dollars at the dearest candidate's prices. Every response
message then keeps `usage_tokens` / `usage_usd` current, so a stream cut short is trued up with
what it produced: the provider's usage once known, else the prompt estimate plus one token per
event seen. Prices come from `routing.pricing.micro_usd` (integer micro-dollars, rounded up).
Pure functions; the caller keeps the per-stream count of events.
"""

from __future__ import annotations

from collections.abc import Sequence

import routing
from extproc.runtime import Deployment
from extproc.stages.request import OPENAI_EMBEDDINGS, ClientRequest
from extproc.translate.base import Usage

MAX_RESERVE_MICRO_USD = 10**9  # $1,000: a reservation never blocks more than this of a USD budget


def reservation(req: ClientRequest, chain: Sequence[Deployment], tenant: str, priority: str) -> dict[str, str]:
    """The admission charge for `req` on the ordered `chain` (primary first)."""
    out = 0 if req.api == OPENAI_EMBEDDINGS else (req.max_output_tokens or max(d.max_output_tokens for d in chain))
    pin = max(d.input_per_mtok for d in chain)
    pout = max(d.output_per_mtok for d in chain)
    usd = routing.micro_usd(req.est_input_tokens, out, pin, pout)
    return {"tenant": tenant, "model": req.model, "priority": priority,
            "reserve_tokens": str(req.est_input_tokens + out),
            "reserve_usd": str(min(usd, MAX_RESERVE_MICRO_USD)),
            # Until the answer says otherwise, the prompt is what was spent.
            **usage_fields(chain[0], req.est_input_tokens, 0)}


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
