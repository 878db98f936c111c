"""`extproc.stages.response`: what the router stage does with an answer — the body mode per stream,
the gateway-side failures (deadline, unreachable provider), the headers the client must not see,
who answered, and a mid-stream error event."""

from __future__ import annotations

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


class Sampler:
    """`sample` for `plan`: answers `sampled` and counts its calls."""

    def __init__(self, sampled: bool) -> None:
        self.sampled = sampled
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.sampled


# (passthrough, stream, watch, sampled) → (reply, body mode, sample called)
PLANS = {
    (False, False, False, False): (Reply.TRANSLATE, msgs.BODY_BUFFERED, False),
    (False, False, False, True): (Reply.TRANSLATE, msgs.BODY_BUFFERED, False),
    (False, False, True, False): (Reply.TRANSLATE, msgs.BODY_BUFFERED, False),
    (False, False, True, True): (Reply.TRANSLATE, msgs.BODY_BUFFERED, False),
    (False, True, False, False): (Reply.TRANSLATE, msgs.BODY_STREAMED, False),
    (False, True, False, True): (Reply.TRANSLATE, msgs.BODY_STREAMED, False),
    (False, True, True, False): (Reply.TRANSLATE, msgs.BODY_STREAMED, False),
    (False, True, True, True): (Reply.TRANSLATE, msgs.BODY_STREAMED, False),
    (True, False, False, False): (Reply.NONE, msgs.BODY_NONE, False),
    (True, False, False, True): (Reply.NONE, msgs.BODY_NONE, False),
    (True, False, True, False): (Reply.READ, msgs.BODY_BUFFERED, False),
    (True, False, True, True): (Reply.READ, msgs.BODY_BUFFERED, False),
    (True, True, False, False): (Reply.NONE, msgs.BODY_NONE, True),
    (True, True, False, True): (Reply.READ, msgs.BODY_STREAMED, True),
    (True, True, True, False): (Reply.READ, msgs.BODY_STREAMED, False),
    (True, True, True, True): (Reply.READ, msgs.BODY_STREAMED, False),
}


@pytest.mark.parametrize(("passthrough", "stream", "watch", "sampled"), list(PLANS),
                         ids=["-".join(n for n, on in zip(("passthrough", "stream", "watch", "sampled"), k,
                                                          strict=True) if on) or "none" for k in PLANS])
def test_plan(passthrough: bool, stream: bool, watch: bool, sampled: bool) -> None:
    sample = Sampler(sampled)
    reply, mode, called = PLANS[(passthrough, stream, watch, sampled)]
    assert response.plan(passthrough, stream, watch, sample) == (reply, mode)
    assert sample.calls == (1 if called else 0)


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
    (504, {}, False, (504, "api_error", "provider_unreachable", "The provider anthropic could not be reached.")),
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


@pytest.mark.parametrize(("shown", "expected"), [
    (set(), [*PROVIDER_ONLY, "x-ratelimit-remaining-tokens", "x-ratelimit-limit-tokens",
             "x-ratelimit-remaining-requests"]),
    ({"x-ratelimit-remaining-tokens", "x-ratelimit-limit-tokens"}, [*PROVIDER_ONLY, "x-ratelimit-remaining-requests"]),
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


@pytest.mark.parametrize(("api", "expected"), [
    (errors.OPENAI, b'data: {"error":{}}\n\n'),
    (errors.ANTHROPIC, b'event: error\ndata: {"error":{}}\n\n'),
])
def test_error_event(api: str, expected: bytes) -> None:
    assert response.error_event(api, b'{"error":{}}') == expected


@pytest.mark.parametrize(("d", "usage", "line"), [
    (GPT, Usage(prompt_tokens=12, completion_tokens=9),
     "request_id=r1 tenant=acme model=gpt provider=openai status=200 upstream_status=200 prompt_tokens=12 "
     "completion_tokens=9 ms=41.5"),
    (None, None, "request_id=r1 tenant=acme model=- provider=- status=200 upstream_status=200 prompt_tokens=- "
                 "completion_tokens=- ms=41.5"),
])
def test_access_log(caplog: pytest.LogCaptureFixture, d: Deployment | None, usage: Usage | None, line: str) -> None:
    with caplog.at_level(logging.INFO, logger="interlock.router"):
        response.access_log("r1", "acme", d, 200, 200, usage, 41.49)
    assert [r.getMessage() for r in caplog.records] == [line]
