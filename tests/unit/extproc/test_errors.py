"""The error tree: every node is a class a caller can catch, carries its status, and renders in
both client formats without anything but its message."""

from __future__ import annotations

import orjson
import pytest

from extproc import errors

CASES = [
    (errors.BadRequest("bad", param="model"), 400, "invalid_request_error", None, "invalid_request_error"),
    (errors.Unauthorized(), 401, "authentication_error", "invalid_api_key", "authentication_error"),
    (errors.NotFound("nope", code="model_not_found"), 404, "not_found_error", "model_not_found", "not_found_error"),
    (errors.MethodNotAllowed("PUT", "/v1/models"), 405, "invalid_request_error", None, "invalid_request_error"),
    (errors.PayloadTooLarge(), 413, "invalid_request_error", "request_too_large", "request_too_large"),
    (errors.RateLimited("slow down", 0), 429, "rate_limit_error", "rate_limit_exceeded", "rate_limit_error"),
    (errors.ProviderError("down", 502), 502, "api_error", None, "api_error"),
    (errors.Unavailable("none"), 503, "api_error", "service_unavailable", "overloaded_error"),
    (errors.DeadlineExceeded("late"), 504, "timeout_error", "deadline_exceeded", "timeout_error"),
    (errors.InternalError("rid-7"), 500, "api_error", None, "api_error"),
]


@pytest.mark.parametrize(("err", "status", "openai_type", "code", "anthropic_type"), CASES,
                         ids=[type(c[0]).__name__ for c in CASES])
def test_each_node_is_caught_as_itself_and_as_a_gateway_error(err: errors.GatewayError, status: int,
                                                              openai_type: str, code: str | None,
                                                              anthropic_type: str) -> None:
    with pytest.raises(type(err)) as caught:
        raise err
    assert isinstance(caught.value, errors.GatewayError) and caught.value is err
    s, body, headers = errors.render(err, errors.OPENAI)
    assert s == status and headers["content-type"] == "application/json"
    assert orjson.loads(body) == {"error": {"message": err.message, "type": openai_type, "param": err.param,
                                            "code": code}}
    s, body, _ = errors.render(err, errors.ANTHROPIC)
    assert s == status
    assert orjson.loads(body) == {"type": "error", "error": {"type": anthropic_type, "message": err.message}}


def test_a_rate_limit_says_when_to_retry_and_never_zero_seconds() -> None:
    _, _, headers = errors.render(errors.RateLimited("slow down", 0), errors.OPENAI)
    assert headers["retry-after"] == "1"
    _, _, headers = errors.render(errors.RateLimited("slow down", 12), errors.ANTHROPIC)
    assert headers["retry-after"] == "12"


def test_except_rate_limited_does_not_catch_other_errors() -> None:
    with pytest.raises(errors.BadRequest):
        try:
            raise errors.BadRequest("bad")
        except errors.RateLimited:
            pytest.fail("a BadRequest was caught as RateLimited")


def test_the_internal_error_names_only_the_request_id() -> None:
    assert errors.InternalError("rid-7").message == "Internal gateway error (request id rid-7)."
    assert errors.InternalError("").message == "Internal gateway error (request id -)."


def test_instances_do_not_share_headers() -> None:
    a, b = errors.ProviderError("x", 429), errors.ProviderError("y", 429)
    a.headers["retry-after"] = "5"
    assert b.headers == {}
