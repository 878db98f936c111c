"""What the router stage does with an answer, decided from its response headers.

`plan` chooses how the body is handled per stream (`Reply` and Envoy's body mode): every 2xx
body goes through the ext_proc, a passthrough one read and never changed, so that a provider's
200 that is not what was asked for ends in an error the client's SDK raises (`not_delivered`: a
page or anything but JSON where JSON was asked for, anything but an event stream where a stream
was; `stream_cut`: a passthrough stream that ended without its final event). `failure` names the
gateway-side reasons a non-2xx answer is not the provider's own error (the client's deadline
passed; the provider was never reached); the provider's own error body is translated when it
arrives. `refused_by_gateway` / `limiter_down` recognise the refusals of Envoy's rate-limit filter,
which are the gateway's, not a provider's; `over_limit` words a refusal by one of the tenant's
limits, naming the limit the rate-limit service says was hit. Pure functions.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping

from extproc import envoy_msgs as msgs
from extproc import errors, metadata
from extproc.limits.model import ANY, Per, Unit, amount_text, describe
from extproc.limits.scheme import EXCEEDED_HEADER
from extproc.runtime import Deployment
from extproc.stages import metering
from extproc.stages.feedback import RATELIMIT_PREFIX
from extproc.stages.request import header_value
from extproc.translate.base import Usage

log = logging.getLogger("interlock.router")

UPSTREAM_TIME = "x-envoy-upstream-service-time"  # Envoy sets it on answers an upstream sent
DEADLINE_SLACK_S = 0.05


class Reply(enum.Enum):
    """What the response body phase does with the body."""

    NONE = "none"  # not sent to the ext_proc (the gateway's or Envoy's own answer)
    READ = "read"  # passthrough, read (never changed): checked, and for usage and the end of the stream
    TRANSLATE = "translate"  # a 2xx answer in the provider's API
    ERROR = "error"  # a provider's (or Envoy's) failure, buffered, rendered in the client's format


def plan(passthrough: bool, stream: bool) -> tuple[Reply, int]:
    """(what to do with a 2xx body, Envoy's body mode). A passthrough body is read, never changed:
    whole to check it is JSON (and for its usage), streamed to see its final event (and for usage
    and the time per output token); the only bytes ever added are an error event at the end of a
    stream that was cut (`stream_cut`) or stalled (`stalled`). Streams go FULL_DUPLEX_STREAMED:
    the ext_proc may then send a message on its own (`stall.StallTimer`), which STREAMED forbids."""
    return (Reply.READ if passthrough else Reply.TRANSLATE), msgs.BODY_FULL_DUPLEX if stream else msgs.BODY_BUFFERED


# Media types a 2xx may have: a whole answer is JSON; a stream is server-sent events or AWS event
# stream (Bedrock). A 2xx without a content-type is read and judged by its body.
_STREAM_TYPES = ("text/event-stream", "application/vnd.amazon.eventstream")


def not_delivered(stream: bool, headers: Mapping[str, str], provider: str) -> errors.ProviderError | None:
    """The 502 a 2xx becomes when its content-type says it is not what was asked for (an HTML page,
    a JSON body where a stream was asked for, ...): decided before any byte reaches the client."""
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not media or (media in _STREAM_TYPES if stream else "json" in media):
        return None
    wanted = "an event stream" if stream else "JSON"
    return errors.ProviderError(f"The provider {provider} answered with {header_value(media, 64)} instead of "
                                f"{wanted}.", 502, "api_error", "provider_invalid_response")


def stream_cut() -> errors.ProviderError:
    """The error event ending a passthrough stream that stopped before its final event (`[DONE]`,
    `message_stop`): the translated streams end theirs with the same words."""
    return errors.ProviderError("The provider's stream ended before the response was complete.", 502, "api_error")


def reached_its_end(reader: object) -> bool:
    """A read stream saw its final event (a passthrough reader's `complete`; a reader that does not
    track it counts as complete)."""
    return bool(getattr(reader, "complete", True))


def stalled(provider: str, bound: float) -> errors.ProviderError:
    """The error event ending a stream its provider stopped sending (the router stage's idle timer,
    just before Envoy's idle timeout would reset the client's stream)."""
    return errors.ProviderError(f"The provider {provider} sent nothing for {bound:g} s; the stream was ended before "
                                "the response was complete.", 504, "timeout_error", "provider_timeout")


def cut_stream_tail(reader: object, api: str, err: errors.GatewayError | None = None) -> bytes:
    """The bytes that end a stream cut before its final event: the error event (`stream_cut`
    unless `err`) in the client's format, after a blank line when the reader holds the start of an
    unfinished event it passed on (so the error is an event of its own; the client may still choke
    on the cut one)."""
    _, body, _ = errors.render(err or stream_cut(), api)
    return (b"\n\n" if getattr(reader, "pending", False) else b"") + error_event(api, body)


def refused_by_gateway(status: int, headers: Mapping[str, str], answered_by: str | None) -> bool:
    """A 429 no provider sent (no answering host, no upstream service time): Envoy's rate-limit
    filter refused the request, over the tenant's limit or with the rate-limit service down."""
    return status == 429 and answered_by is None and UPSTREAM_TIME not in headers


def limiter_down(headers: Mapping[str, str]) -> errors.RateLimited | None:
    """The gateway's refusal when its rate-limit service did not answer and `rate_limit.failure_mode`
    is closed (Envoy marks only over-limit refusals with `x-envoy-ratelimited`; None for those,
    which Envoy's local reply already shaped)."""
    if "x-envoy-ratelimited" in headers:
        return None
    return errors.RateLimited("The gateway could not check this API key's rate limits and refuses requests it cannot "
                              "count (rate_limit.failure_mode: closed); retry shortly.", 1)


# Envoy's mark on its rate-limit filter's refusals, and the rate-limit service's word on which limit
# refused (`extproc.limits.scheme`): read here, never shown to the client.
REFUSAL_HEADERS = ["x-envoy-ratelimited", EXCEEDED_HEADER]


def over_limit(headers: Mapping[str, str], model: str | None, priority: str | None) -> errors.RateLimited:
    """The 429 for a request over one of its tenant's limits, naming the limit (unit, window, the
    tenant's amount, what is left and what the request needed), with the service's `retry-after`."""
    raw = headers.get("retry-after", "")
    retry = int(raw) if raw.isascii() and raw.isdigit() else 1
    words = _exceeded_words(headers.get(EXCEEDED_HEADER, ""), model, priority)
    if words is None:
        return errors.RateLimited(f"Rate limit exceeded for this API key; retry after {retry} s (Retry-After).", retry)
    return errors.RateLimited(f"Rate limit exceeded: {words}. Retry after {retry} s (Retry-After), when the "
                              "window resets.", retry)


def _exceeded_words(value: str, model: str | None, priority: str | None) -> str | None:
    fields = dict(part.partition("=")[::2] for part in value.split(";") if part)
    try:
        unit, per = Unit(fields["unit"]), Per(fields["per"])
        amount, left, needed = int(fields["amount"]), int(fields["remaining"]), int(fields["needed"])
    except (KeyError, ValueError):
        return None
    text = describe(unit, amount, per, header_value(model) if model and fields.get("model") == "1" else ANY,
                    priority if priority and fields.get("priority") == "1" else ANY)
    if unit is Unit.REQUESTS:
        return f"this API key may make {text}, and none are left in this window"
    what = f"${amount_text(needed, unit)}" if unit is Unit.USD else f"{needed} token{'' if needed == 1 else 's'}"
    rest = f"${amount_text(left, unit)}" if unit is Unit.USD else f"{left}"
    why = "its prompt at the model's input price" if unit is Unit.USD else "its prompt, estimated"
    return (f"this API key may use {text}; {rest} {'is' if unit is Unit.USD else 'are'} left in this window "
            f"and this request needs at least {what} ({why})")


def deadline_passed(status: int, headers: Mapping[str, str], deadline_at: float | None, now: float) -> bool:
    """Envoy's route timeout, set from the client's deadline, ran out: the client's choice, not the
    provider's failure (nothing is learned from it)."""
    return (status == 504 and deadline_at is not None and UPSTREAM_TIME not in headers
            and now >= deadline_at - DEADLINE_SLACK_S)


def failure(status: int, headers: Mapping[str, str], deadline_hit: bool, provider: str) -> errors.GatewayError | None:
    """The error a non-2xx answer becomes when it is not the provider's own (None: translate the
    provider's error body). `status` is the client status (`client_status_for`)."""
    if deadline_hit:
        return errors.DeadlineExceeded("The request did not complete within its deadline "
                                       "(x-interlock-deadline-ms or the tenant's default).")
    if status >= 500 and UPSTREAM_TIME not in headers:
        # A 5xx without Envoy's upstream mark is Envoy's own reply. A 504 is its timeout: the
        # provider took the request and sent no answer in time (its idle timeout). Any other
        # (connection refused, reset, overflow): the provider was never reached.
        if status == 504:
            return errors.ProviderError(f"The provider {provider} did not answer in time.", 504, "timeout_error",
                                        "provider_timeout")
        return errors.ProviderError(f"The provider {provider} could not be reached.", status, "api_error",
                                    "provider_unreachable")
    return None


# Header prefixes of an answer the client never sees: provider protocol and SDK headers (ids,
# organisation, internal timings), Envoy's own and the gateway's internal ones.
HIDDEN_PREFIXES = ("anthropic-", "openai-", "x-stainless-", "x-goog-", "x-amz-", "x-amzn-", "x-envoy-", "x-interlock-")


def headers_to_remove(headers: Iterable[str], shown: set[str]) -> list[str]:
    """Headers of an answer the client must not see: the provider's protocol and SDK headers,
    request ids, cookies, its rate-limit headers (about the gateway's account) except the `shown`
    ones; Envoy's (`x-envoy-upstream-service-time`, `x-envoy-attempt-count`: read before, by the
    router stage) and the gateway's internal ones (`x-interlock-*`; the router stage sets its own
    in the same mutation)."""
    return [k for k in headers if k.startswith(HIDDEN_PREFIXES) or k in ("request-id", "set-cookie")
            or (k.startswith(RATELIMIT_PREFIX) and k not in shown)]


def identity_headers(d: Deployment | None, route: str | None, requested: str | None) -> list[tuple[str, str]]:
    """Who answered: `x-interlock-provider` / `x-interlock-model` (and the route when one chose);
    `interlock` and the requested model (or `-`) when the gateway or Envoy answered itself. Every
    value is bounded and made header-safe (`request.header_value`): the requested model is the
    client's text, read before the body is checked."""
    if d is None:
        return [(metadata.PROVIDER_HEADER, metadata.GATEWAY_PROVIDER),
                (metadata.MODEL_HEADER, header_value(requested) if requested else "-")]
    out = [(metadata.PROVIDER_HEADER, header_value(d.provider)), (metadata.MODEL_HEADER, header_value(d.model))]
    return [*out, (metadata.ROUTE_HEADER, header_value(route))] if route else out


def error_body(err: errors.GatewayError, api: str, charged: Deployment | None) -> tuple[int, msgs.ProcessingResponse]:
    """`err` as the whole answer, in place of a buffered body: the headers are still held, so its
    status replaces the provisional one. `charged`: the deployment whose rate-limit usage is set to
    nothing spent (a tenant with limits), or None."""
    status, body, extra = errors.render(err, api)
    md = {metadata.NAMESPACE: metering.usage_fields(charged, 0, 0)} if charged else None
    return status, msgs.response_body(body, [(":status", str(status)), ("content-length", str(len(body))),
                                             *extra.items()], dynamic_metadata=md)


def error_headers(err: errors.GatewayError, api: str, headers: list[tuple[str, str]], remove: list[str]
                  ) -> tuple[int, msgs.ProcessingResponse]:
    """`err` as the whole answer when the provider's error headers end the stream (an empty body:
    no body message will follow, so the body goes with the headers)."""
    status, body, extra = errors.render(err, api)
    return status, msgs.response_headers([*headers, (":status", str(status)), ("content-type", "application/json"),
                                          ("content-length", str(len(body))), *extra.items()], remove, body=body)


def error_event(api: str, body: bytes) -> bytes:
    """An error rendered as the last event of a stream whose first bytes reached the client."""
    return (b"event: error\n" if api.startswith(errors.ANTHROPIC) else b"") + b"data: " + body + b"\n\n"


def access_log(request_id: str, tenant: str, d: Deployment | None, status: int, upstream_status: int | None,
               usage: Usage | None, ms: float, requested: str | None = None, error: str | None = None) -> None:
    """The one line per answered request. `d` None: the gateway (or Envoy) answered itself —
    `provider=interlock` and the `requested` model; `upstream_status` None: no provider answered;
    `error`: the message the client got, when the answer is an error the gateway rendered."""
    if log.isEnabledFor(logging.INFO):
        model = d.model if d else header_value(requested) if requested else "-"
        log.info("request_id=%s tenant=%s model=%s provider=%s status=%d upstream_status=%s prompt_tokens=%s "
                 "completion_tokens=%s ms=%.1f%s", request_id, tenant, model,
                 d.provider if d else metadata.GATEWAY_PROVIDER, status,
                 "-" if upstream_status is None else upstream_status, usage.prompt_tokens if usage else "-",
                 usage.completion_tokens if usage else "-", ms, "" if error is None else f" error={error!r}")
