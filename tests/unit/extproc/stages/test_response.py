"""`extproc.stages.response`: what the router stage does with an answer — the body mode per stream,
a 2xx that is not what was asked for, a stream cut before its end, the gateway-side failures
(deadline, unreachable provider, its own rate limit), the headers the client must not see, who
answered, a mid-stream error event, and the access log line."""

from __future__ import annotations

import dataclasses
import logging

import orjson
import pytest

from extproc import envoy_msgs as msgs
from extproc import errors, metadata
from extproc.runtime import Deployment
from extproc.stages import response
from extproc.stages.response import Reply
from extproc.translate.base import Usage
from tests.unit.extproc.stages.support import dep

# (passthrough, stream) → (reply, body mode): every 2xx body reaches the ext_proc; a passthrough
# one is read, never rewritten.
PLANS = {
    (False, False): (Reply.TRANSLATE, msgs.BODY_BUFFERED),
    (False, True): (Reply.TRANSLATE, msgs.BODY_FULL_DUPLEX),
    (True, False): (Reply.READ, msgs.BODY_BUFFERED),
    (True, True): (Reply.READ, msgs.BODY_FULL_DUPLEX),
}


@pytest.mark.parametrize(("passthrough", "stream"), list(PLANS),
                         ids=["translated-whole", "translated-stream", "passthrough-whole", "passthrough-stream"])
def test_plan(passthrough: bool, stream: bool) -> None:
    assert response.plan(passthrough, stream) == PLANS[(passthrough, stream)]


@pytest.mark.parametrize(("stream", "content_type", "bad"), [
    (False, "application/json", False),
    (False, "application/json; charset=utf-8", False),
    (False, "Application/JSON", False),
    (False, "application/problem+json", False),
    (False, "", False),  # no content-type: the body decides
    (False, "text/html; charset=utf-8", True),
    (False, "text/plain", True),
    (False, "text/event-stream", True),
    (True, "text/event-stream", False),
    (True, "text/event-stream; charset=utf-8", False),
    (True, "application/vnd.amazon.eventstream", False),  # Bedrock's ConverseStream
    (True, "", False),
    (True, "application/json", True),
    (True, "text/html", True),
])
def test_not_delivered(stream: bool, content_type: str, bad: bool) -> None:
    headers = {"content-type": content_type} if content_type else {}
    err = response.not_delivered(stream, headers, "openai")
    assert (err is not None) is bad
    if err is not None:
        assert (err.status, err.type, err.code) == (502, "api_error", "provider_invalid_response")
        assert "openai" in err.message and content_type.split(";")[0].lower() in err.message


def test_not_delivered_never_echoes_a_huge_content_type() -> None:
    err = response.not_delivered(False, {"content-type": "text/" + "x" * 10_000 + "\r\nset-cookie: a"}, "p")
    assert err is not None and len(err.message) < 200 and "\r" not in err.message


class _Reader:
    def __init__(self, complete: bool, pending: bool = False) -> None:
        self.complete, self.pending = complete, pending


@pytest.mark.parametrize(("api", "pending", "start"), [
    (errors.OPENAI, False, b"data: "), (errors.OPENAI, True, b"\n\ndata: "),
    (errors.ANTHROPIC, False, b"event: error\ndata: "), (errors.ANTHROPIC, True, b"\n\nevent: error\ndata: "),
])
def test_a_cut_stream_ends_with_an_error_event_in_the_clients_format(api: str, pending: bool, start: bytes) -> None:
    reader = _Reader(False, pending)
    assert not response.reached_its_end(reader)
    tail = response.cut_stream_tail(reader, api)
    assert tail.startswith(start) and tail.endswith(b"\n\n")
    body = orjson.loads(tail.split(b"data: ", 1)[1])
    assert body["error"]["type"] == "api_error" and "ended before" in body["error"]["message"]
    assert body.get("type") == ("error" if api == errors.ANTHROPIC else None)


def test_a_stream_reader_without_an_end_to_track_counts_as_complete() -> None:
    assert response.reached_its_end(object()) and response.reached_its_end(_Reader(True))


@pytest.mark.parametrize(("status", "headers", "answered_by", "refused"), [
    (429, {"x-envoy-ratelimited": "true"}, None, True),  # over the tenant's limit
    (429, {}, None, True),  # the rate-limit service down, failure_mode closed
    (429, {"x-envoy-upstream-service-time": "3"}, "openai", False),  # the provider's own 429
    (429, {"x-envoy-upstream-service-time": "3"}, None, False),
    (503, {}, None, False),  # Envoy's 503: a provider unreachable, not a refusal
    (200, {}, None, False),
])
def test_refused_by_gateway(status: int, headers: dict[str, str], answered_by: str | None, refused: bool) -> None:
    assert response.refused_by_gateway(status, headers, answered_by) is refused


def test_limiter_down_is_a_429_with_retry_after_only_without_envoys_over_limit_mark() -> None:
    assert response.limiter_down({"x-envoy-ratelimited": "true"}) is None
    err = response.limiter_down({})
    assert err is not None and (err.status, err.type, err.code) == (429, "rate_limit_error", "rate_limit_exceeded")
    assert int(err.headers["retry-after"]) >= 1 and "failure_mode" in err.message


EXCEEDED = "x-interlock-ratelimit-exceeded"


@pytest.mark.parametrize(("exceeded", "model", "priority", "retry", "message"), [
    ("unit=tokens;per=minute;amount=40000;remaining=1200;needed=5000;model=0;priority=0", "gpt", "default", "13",
     "Rate limit exceeded: this API key may use 40000 tokens per minute; 1200 are left in this window and this "
     "request needs at least 5000 tokens (its prompt, estimated). Retry after 13 s (Retry-After), when the window "
     "resets."),
    ("unit=usd;per=day;amount=10000;remaining=20;needed=75;model=1;priority=1", "gpt", "batch", "4222",
     "Rate limit exceeded: this API key may use $0.01 per day on model gpt for batch requests; $0.00002 is left in "
     "this window and this request needs at least $0.000075 (its prompt at the model's input price). Retry after "
     "4222 s (Retry-After), when the window resets."),
    ("unit=requests;per=hour;amount=2;remaining=0;needed=1;model=0;priority=1", "m", "batch", "60",
     "Rate limit exceeded: this API key may make 2 requests per hour for batch requests, and none are left in "
     "this window. Retry after 60 s (Retry-After), when the window resets."),
    # A model name is made header- and text-safe; without the service's word, the generic text.
    ("unit=tokens;per=hour;amount=1;remaining=0;needed=1;model=1;priority=0", "a\r\nb", None, "5",
     "Rate limit exceeded: this API key may use 1 token per hour on model a%0D%0Ab; 0 are left in this window and "
     "this request needs at least 1 token (its prompt, estimated). Retry after 5 s (Retry-After), when the "
     "window resets."),
    (None, "m", "default", "7", "Rate limit exceeded for this API key; retry after 7 s (Retry-After)."),
    ("unit=bytes;per=hour", "m", "default", "x", "Rate limit exceeded for this API key; retry after 1 s (Retry-After)."),
])
def test_over_limit_names_the_limit_that_was_hit(exceeded: str | None, model: str, priority: str | None, retry: str,
                                                 message: str) -> None:
    headers = {"x-envoy-ratelimited": "true", "retry-after": retry, **({EXCEEDED: exceeded} if exceeded else {})}
    err = response.over_limit(headers, model, priority)
    assert (err.status, err.type, err.code, err.message) == (429, "rate_limit_error", "rate_limit_exceeded", message)
    assert err.headers["retry-after"] == (retry if retry.isdigit() else "1")
    assert EXCEEDED in response.REFUSAL_HEADERS  # the service's word is never shown as is


UPSTREAM = {"x-envoy-upstream-service-time": "120"}
DEADLINE_AT = 100.0


@pytest.mark.parametrize(("status", "headers", "deadline_at", "now", "passed"), [
    (504, {}, DEADLINE_AT, DEADLINE_AT, True),
    (504, {}, DEADLINE_AT, DEADLINE_AT - 0.04, True),  # within the slack of Envoy's timer
    (504, {}, DEADLINE_AT, DEADLINE_AT + 5, True),
    (504, {}, DEADLINE_AT, DEADLINE_AT - 0.5, False),  # too early: Envoy timed out for another reason
    (504, {}, None, DEADLINE_AT, False),  # no deadline
    (504, UPSTREAM, DEADLINE_AT, DEADLINE_AT, False),  # the provider's own 504
    (503, {}, DEADLINE_AT, DEADLINE_AT, False),
    (200, {}, DEADLINE_AT, DEADLINE_AT, False),
])
def test_deadline_passed(status: int, headers: dict[str, str], deadline_at: float | None, now: float,
                         passed: bool) -> None:
    assert response.deadline_passed(status, headers, deadline_at, now) is passed


@pytest.mark.parametrize(("status", "headers", "deadline_hit", "expected"), [
    (504, {}, True, (504, "timeout_error", "deadline_exceeded",
                     "The request did not complete within its deadline (x-interlock-deadline-ms or the tenant's "
                     "default).")),
    # The deadline is the reason even when Envoy never reached the provider.
    (503, {}, True, (504, "timeout_error", "deadline_exceeded",
                     "The request did not complete within its deadline (x-interlock-deadline-ms or the tenant's "
                     "default).")),
    (503, {}, False, (503, "api_error", "provider_unreachable", "The provider anthropic could not be reached.")),
    (502, {}, False, (502, "api_error", "provider_unreachable", "The provider anthropic could not be reached.")),
    # Envoy's own 504 is its timeout: the provider took the request and never answered.
    (504, {}, False, (504, "timeout_error", "provider_timeout", "The provider anthropic did not answer in time.")),
    # Answers a provider sent: its own error body is translated.
    (503, UPSTREAM, False, None),
    (502, UPSTREAM, False, None),
    (429, {}, False, None),
    (400, UPSTREAM, False, None),
], ids=["deadline", "deadline-unreached", "unreachable-503", "unreachable-502", "unreachable-504",
        "provider-503", "provider-502", "429", "provider-400"])
def test_failure(status: int, headers: dict[str, str], deadline_hit: bool,
                 expected: tuple[int, str, str, str] | None) -> None:
    err = response.failure(status, headers, deadline_hit, "anthropic")
    assert (None if err is None else (err.status, err.type, err.code, err.message)) == expected
    if err is not None:
        _, body, _ = errors.render(err, errors.ANTHROPIC)
        assert orjson.loads(body)["error"]["type"] == errors.anthropic_error_type(expected[0])  # type: ignore[index]


PROVIDER_HEADERS = [
    ":status", "content-type", "content-length", "date", "x-request-id", "request-id", "set-cookie",
    "anthropic-organization-id", "anthropic-ratelimit-tokens-remaining", "openai-organization", "openai-processing-ms",
    "x-stainless-x", "x-interlock-internal", "x-goog-trace", "x-amz-request-id", "x-ratelimit-remaining-tokens",
    "x-ratelimit-limit-tokens", "x-ratelimit-remaining-requests", "retry-after", "cache-control",
    "x-envoy-upstream-service-time",
]
PROVIDER_ONLY = ["request-id", "set-cookie", "anthropic-organization-id", "anthropic-ratelimit-tokens-remaining",
                 "openai-organization", "openai-processing-ms", "x-stainless-x", "x-interlock-internal", "x-goog-trace",
                 "x-amz-request-id"]


# Envoy's own headers were read by the router stage before; the client never sees them.
ENVOY_ONLY = ["x-envoy-upstream-service-time"]


@pytest.mark.parametrize(("shown", "expected"), [
    (set(), [*PROVIDER_ONLY, "x-ratelimit-remaining-tokens", "x-ratelimit-limit-tokens",
             "x-ratelimit-remaining-requests", *ENVOY_ONLY]),
    ({"x-ratelimit-remaining-tokens", "x-ratelimit-limit-tokens"},
     [*PROVIDER_ONLY, "x-ratelimit-remaining-requests", *ENVOY_ONLY]),
])
def test_headers_to_remove(shown: set[str], expected: list[str]) -> None:
    assert response.headers_to_remove(PROVIDER_HEADERS, shown) == expected


GPT = dep("gpt")


@pytest.mark.parametrize(("d", "route", "requested", "expected"), [
    (GPT, None, "gpt", [(metadata.PROVIDER_HEADER, "openai"), (metadata.MODEL_HEADER, "gpt")]),
    (GPT, "cheap", "cheap", [(metadata.PROVIDER_HEADER, "openai"), (metadata.MODEL_HEADER, "gpt"),
                             (metadata.ROUTE_HEADER, "cheap")]),
    (None, None, "gpt-5-imaginary", [(metadata.PROVIDER_HEADER, "interlock"),
                                     (metadata.MODEL_HEADER, "gpt-5-imaginary")]),
    (None, "cheap", None, [(metadata.PROVIDER_HEADER, "interlock"), (metadata.MODEL_HEADER, "-")]),
])
def test_identity_headers(d: Deployment | None, route: str | None, requested: str | None,
                          expected: list[tuple[str, str]]) -> None:
    assert response.identity_headers(d, route, requested) == expected


@pytest.mark.parametrize(("requested", "shown"), [
    ("m" * 5_000_000, "m" * 256),  # the 5 MB model name
    ("gpt\r\nset-cookie: x=1", "gpt%0D%0Aset-cookie:%20x=1"),
    ("modèle", "mod%C3%A8le"),
    ("100%", "100%25"),
    ("é" * 200, "%C3%A9" * 42),  # cut at 256 characters, never inside an escape
    ("\ud800", "%ED%A0%80"),  # a lone surrogate (JSON allows it escaped) still becomes bytes
])
def test_identity_headers_bound_and_escape_what_the_client_sent(requested: str, shown: str) -> None:
    (_, provider), (_, model) = response.identity_headers(None, None, requested)
    assert (provider, model) == ("interlock", shown)
    assert len(model) <= 256 and model.isascii() and model.isprintable() and " " not in model


def test_identity_headers_escape_config_names_too() -> None:
    d = dataclasses.replace(GPT, model="gpt 4", provider="open\nai")
    assert response.identity_headers(d, "r" * 300, None) == [
        (metadata.PROVIDER_HEADER, "open%0Aai"), (metadata.MODEL_HEADER, "gpt%204"), (metadata.ROUTE_HEADER, "r" * 256)]


@pytest.mark.parametrize(("api", "expected"), [
    (errors.OPENAI, b'data: {"error":{}}\n\n'),
    (errors.ANTHROPIC, b'event: error\ndata: {"error":{}}\n\n'),
])
def test_error_event(api: str, expected: bytes) -> None:
    assert response.error_event(api, b'{"error":{}}') == expected


@pytest.mark.parametrize(("d", "upstream", "usage", "requested", "error", "line"), [
    (GPT, 200, Usage(prompt_tokens=12, completion_tokens=9), "gpt", None,
     "request_id=r1 tenant=acme model=gpt provider=openai status=200 upstream_status=200 prompt_tokens=12 "
     "completion_tokens=9 ms=41.5"),
    # The gateway (or Envoy) answered by itself: it says so, and names what the client asked for.
    (None, None, None, "gpt-5-imaginary", "Unknown model.",
     "request_id=r1 tenant=acme model=gpt-5-imaginary provider=interlock status=200 upstream_status=- "
     "prompt_tokens=- completion_tokens=- ms=41.5 error='Unknown model.'"),
    (None, None, None, None, None, "request_id=r1 tenant=acme model=- provider=interlock status=200 upstream_status=- "
                                   "prompt_tokens=- completion_tokens=- ms=41.5"),
    (None, None, None, "m\r\n" + "x" * 1000, None,  # bounded to 256 characters, escaped
     "request_id=r1 tenant=acme model=m%0D%0A" + "x" * 249 + " provider=interlock status=200 upstream_status=- "
     "prompt_tokens=- completion_tokens=- ms=41.5"),
], ids=["provider", "gateway-error", "gateway", "bounded"])
def test_access_log(caplog: pytest.LogCaptureFixture, d: Deployment | None, upstream: int | None, usage: Usage | None,
                    requested: str | None, error: str | None, line: str) -> None:
    with caplog.at_level(logging.INFO, logger="interlock.router"):
        response.access_log("r1", "acme", d, 200, upstream, usage, 41.49, requested, error)
    assert [r.getMessage() for r in caplog.records] == [line]


@pytest.mark.parametrize("charged", [GPT, None], ids=["limited-tenant", "no-limits"])
def test_error_body_replaces_the_held_answer(charged: Deployment | None) -> None:
    status, reply = response.error_body(errors.ProviderError("broken", 502, "api_error"), errors.ANTHROPIC, charged)
    common = reply.response_body.response
    headers = {o.header.key: o.header.raw_value.decode() for o in common.header_mutation.set_headers}
    body = common.body_mutation.body
    assert status == 502 and headers[":status"] == "502" and headers["content-length"] == str(len(body))
    assert orjson.loads(body) == {"type": "error", "error": {"type": "api_error", "message": "broken"}}
    md = dict(reply.dynamic_metadata.fields[metadata.NAMESPACE].struct_value) if charged else {}
    assert (md.get("usage_tokens"), md.get("usage_usd")) == (("0", "0") if charged else (None, None))
