"""Envoy's own replies shaped like the client API's errors (`local_reply_config`): no healthy
upstream, overflow, timeouts, a body or an answer over the limits, the ext_proc unavailable, rate
limited, overloaded, and the HTTP codec's refusals of malformed requests. Each mapper writes the
gateway's own message (never Envoy's text) in the format of the client's API, read from the
client's own path recorded before the router stage rewrote it (`CLIENT_NAMESPACE`)."""

from __future__ import annotations

from typing import Any, NamedTuple

from extproc import metadata
from extproc.config.model import Limits

_CEL = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"
# Where the client's own path is recorded (dynamic metadata) before the router stage rewrites it.
CLIENT_NAMESPACE = "interlock.client"
ANTHROPIC_PATH = "/v1/messages"
# Envoy's HTTP codec limits on request headers (Envoy's defaults, written out): over them, a 431.
MAX_HEADERS_COUNT = 100
MAX_REQUEST_HEADERS_KB = 60


class _Reply(NamedTuple):
    """One kind of reply Envoy makes itself, as the client sees it."""

    when: str  # CEL over the reply (`response.code`, `response.code_details`)
    status: int | None  # the status to send; None keeps Envoy's
    openai_type: str
    code: str | None  # OpenAI's `code`
    anthropic_type: str
    message: str  # written here, never Envoy's own text (it names Envoy internals)


def _local_replies(limits: Limits) -> tuple[_Reply, ...]:
    """Envoy's own replies, in mapper order (the first that matches shapes the reply)."""
    R = _Reply
    return (
        R("response.code_details.startsWith('ext_proc')", 503, "api_error", "service_unavailable",
          "overloaded_error", "The gateway's request processor is unavailable; retry shortly."),
        R("response.code_details == 'request_rate_limited'", 429, "rate_limit_error", "rate_limit_exceeded",
          "rate_limit_error", "Rate limit exceeded for this API key; retry after the number of seconds in Retry-After."),
        R("response.code_details == 'overload'", 503, "api_error", "service_unavailable", "overloaded_error",
          "The gateway is overloaded; retry shortly."),
        R("response.code_details == 'denied_by_admission_control'", 503, "api_error", "service_unavailable",
          "overloaded_error", "The providers behind this gateway are failing; the gateway is shedding load."),
        # A provider's answer over the buffer the gateway holds a whole answer in (to translate or
        # read it): Envoy's own 500, but the provider's doing.
        R("response.code_details == 'response_payload_too_large'", 502, "api_error", "response_too_large",
          "api_error", f"The provider's answer is larger than the gateway's limit of {limits.max_response_bytes} "
          "bytes (limits.max_response_bytes)."),
        R("response.code == 413", 413, "invalid_request_error", "request_too_large", "request_too_large",
          f"Request body too large: the limit is {limits.max_request_bytes} bytes."),
        # The HTTP codec's refusals, before any filter saw the request; and the router stage's
        # headers not fitting beside the client's (Envoy's 503 for its own limit, the client's doing).
        R("response.code == 431 || response.code_details == 'header_mutation_result_exceeds_limit'", 431,
          "invalid_request_error", "request_headers_too_large", "invalid_request_error",
          f"Request headers too large: at most {MAX_HEADERS_COUNT} headers (a few of them the gateway's own) "
          f"and {MAX_REQUEST_HEADERS_KB} KiB in all."),
        R("response.code == 426", 426, "invalid_request_error", "http_version_not_supported", "invalid_request_error",
          "Only HTTP/1.1 and HTTP/2 are supported."),
        # An unknown transfer-coding: Envoy's 501, but a client's mistake like any other framing.
        R("response.code == 501", 400, "invalid_request_error", "invalid_request", "invalid_request_error",
          "Unsupported Transfer-Encoding: only chunked is accepted."),
        R("response.code_details.endsWith('unexpected_underscore')", 400, "invalid_request_error", "invalid_header",
          "invalid_request_error", "Header names must not contain underscores."),
        R("response.code_details == 'missing_host_header'", 400, "invalid_request_error", "invalid_request",
          "invalid_request_error", "The request has no Host header."),
        R("response.code == 404", None, "not_found_error", "unknown_url", "not_found_error", "Not found."),
        R("response.code == 429", None, "rate_limit_error", "rate_limit_exceeded", "rate_limit_error",
          "Too many requests; retry shortly."),
        R("response.code == 502", None, "api_error", "bad_gateway", "api_error",
          "The provider's answer could not be read."),
        R("response.code == 503", None, "api_error", "service_unavailable", "overloaded_error",
          "No provider could take the request; retry shortly."),
        R("response.code == 504", None, "timeout_error", "upstream_timeout", "timeout_error",
          "The provider did not answer in time."),
        R("response.code >= 500", None, "api_error", "internal_error", "api_error", "Internal gateway error."),
        R("response.code >= 400", None, "invalid_request_error", "invalid_request", "invalid_request_error",
          "Malformed HTTP request."),
    )


def _client_is_anthropic() -> str:
    """CEL: the client spoke Anthropic's Messages API. The router stage rewrites the path for the
    provider (an OpenAI client's request to an Anthropic model goes upstream as /v1/messages), so
    the client's own path is read from `CLIENT_NAMESPACE`, recorded before the ext_proc; without it
    (Envoy refused the request before any filter ran) the path as received, if there is one."""
    ns, p = CLIENT_NAMESPACE, ANTHROPIC_PATH
    return (f"(('{ns}' in metadata.filter_metadata) ? metadata.filter_metadata['{ns}']['path'].startsWith('{p}')"
            f" : (has(request.path) && request.path.startsWith('{p}')))")


def local_reply_config(limits: Limits) -> dict[str, Any]:
    """Shape Envoy's own error replies like the client API's errors, with a message written here
    (never Envoy's own text). A reply to a request Envoy could not parse (no path) is in OpenAI's
    format."""
    mappers = []
    api = _client_is_anthropic()
    # Left alone: the ext_proc's own replies, and the health endpoints' (a status for a prober).
    mine = (f"response.code_details != '{metadata.IMMEDIATE_DETAILS}'"
            " && !response.code_details.startsWith('health_check')")
    for anthropic in (True, False):
        for r in _local_replies(limits):
            expr = f"{mine} && ({r.when}) && " + (api if anthropic else f"!{api}")
            if anthropic:
                body: dict[str, Any] = {"type": "error", "error": {"type": r.anthropic_type, "message": r.message}}
            else:
                body = {"error": {"message": r.message, "type": r.openai_type, "param": None, "code": r.code}}
            mapper: dict[str, Any] = {
                "filter": {"extension_filter": {"name": "envoy.access_loggers.extension_filters.cel",
                                                "typed_config": {"@type": _CEL, "expression": expr}}},
                "body_format_override": {"json_format": body, "content_type": "application/json"},
                # Every answer names who made it; here Envoy did, before any provider.
                "headers_to_add": [
                    {"header": {"key": metadata.PROVIDER_HEADER, "value": metadata.GATEWAY_PROVIDER},
                     "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
                    {"header": {"key": metadata.MODEL_HEADER, "value": "-"},
                     "append_action": "ADD_IF_ABSENT"},
                    # A request Envoy refused before reading its headers has no request id yet;
                    # one that had one gets it back (Envoy sets it on every answer).
                    {"header": {"key": metadata.REQUEST_ID_HEADER, "value": "%UNIQUE_ID%"},
                     "append_action": "ADD_IF_ABSENT"}],
            }
            if r.status is not None:
                mapper["status_code"] = r.status
            mappers.append(mapper)
    return {"mappers": mappers}
