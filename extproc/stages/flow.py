"""The router stage's state for one request (`Flow`), filled in phase by phase by
`extproc.stages.router.RouterStream`. Plain data: no methods, no I/O; one per stream."""

from __future__ import annotations

from dataclasses import dataclass, field

from extproc import errors
from extproc.admission import Ticket
from extproc.runtime import Deployment
from extproc.stages.request import ClientRequest, RequestHead
from extproc.stages.response import Reply
from extproc.stages.stall import StallTimer
from extproc.translate.base import StreamTranslator, Translator, Usage


@dataclass(slots=True)
class Flow:
    """One request's state, filled in phase by phase. `model`: what the client asked for (a
    model or a route); `chain`: the deployments to try, primary first, distinct providers;
    `deployment`: translated for, and after the response headers who answered; `limited`: the
    tenant has rate limits, so usage goes to Envoy with every response message; `failure`: decided
    at the response headers, rendered with the body; `timer`: set while a stream is streaming. Times are on the routing state's clock."""

    api: str = errors.OPENAI
    request_id: str = ""
    head: RequestHead | None = None
    req: ClientRequest | None = None
    model: str | None = None
    route: str | None = None
    chain: list[Deployment] = field(default_factory=list)
    deployment: Deployment | None = None
    translator: Translator | None = None
    dropped: tuple[str, ...] = ()
    ticket: Ticket | None = None
    deadline_at: float | None = None
    limited: bool = False
    sent_at: float = 0.0
    headers_at: float = 0.0
    waiting_on: str | None = None  # the deployment a streamed request waits on for its first token
    why: str = ""  # the decision's explanation, for a tenant that asked (`explain`)
    upstream_status: int = 0
    status: int = 0
    reply: Reply = Reply.NONE
    reader: StreamTranslator | None = None
    failure: errors.GatewayError | None = None
    upstream_headers: dict[str, str] = field(default_factory=dict)
    events: int = 0
    usage: Usage | None = None
    timer: StallTimer | None = None  # a streamed answer's idle timer (when the transport can push)
    metadata_sent: dict[str, dict[str, str]] = field(default_factory=dict)  # streamed so far (`streaming.news`)
    metadata_key: tuple[int, int, int] | None = None  # what it was computed from
    ended: bool = False  # the router stage is done with the stream (answered, failed, stalled, gone)
