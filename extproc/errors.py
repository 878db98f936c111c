"""One error tree for everything a client can be told.

    GatewayError                 status + client-safe message, rendered per client API
    ├── BadRequest               400 invalid_request_error
    ├── Unauthorized             401 authentication_error
    ├── NotFound                 404 not_found_error (unknown path, unknown or forbidden model)
    ├── PayloadTooLarge          413 request_too_large
    ├── RateLimited              429 rate_limit_error (+ Retry-After)
    ├── ProviderError            any status: a provider's failure mapped for the client
    ├── Unavailable              503 api_error (no deployment can serve)
    └── DeadlineExceeded         504 timeout_error (the client's deadline cannot be met)

Only the message of a GatewayError ever reaches a client. Anything else raised inside the
ext_proc is caught at the server boundary and becomes a 500 "internal error" with the request
id; its text and traceback go to the log only.

Rendering is pure: `render(err, api)` returns the status, the JSON body and extra headers in
the client's API format (`openai` or `anthropic`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

OPENAI = "openai"
ANTHROPIC = "anthropic"


@dataclass
class GatewayError(Exception):
    """An error whose message is safe to show to the client."""

    message: str
    status: int = 500
    # OpenAI `error.type`; Anthropic's `error.type` is derived from the status.
    type: str = "api_error"
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)


def BadRequest(message: str, *, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(message, 400, "invalid_request_error", code, param)


def Unauthorized(message: str = "Invalid or missing API key.") -> GatewayError:
    return GatewayError(message, 401, "authentication_error", "invalid_api_key")


def NotFound(message: str, *, code: str | None = None, param: str | None = None) -> GatewayError:
    return GatewayError(message, 404, "not_found_error", code, param)


def PayloadTooLarge(message: str = "Request body too large.") -> GatewayError:
    return GatewayError(message, 413, "invalid_request_error", "request_too_large")


def RateLimited(message: str, retry_after_s: int) -> GatewayError:
    return GatewayError(message, 429, "rate_limit_error", "rate_limit_exceeded",
                        headers={"retry-after": str(max(1, retry_after_s))})


def Unavailable(message: str) -> GatewayError:
    return GatewayError(message, 503, "api_error", "service_unavailable")


def DeadlineExceeded(message: str) -> GatewayError:
    return GatewayError(message, 504, "timeout_error", "deadline_exceeded")


# Anthropic's error `type` per HTTP status (https://docs.anthropic.com/en/api/errors).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    if status in _ANTHROPIC_TYPES:
        return _ANTHROPIC_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def render(err: GatewayError, api: str) -> tuple[int, bytes, dict[str, str]]:
    """Return (status, body, headers) for `err` in the client API `api`."""
    if api == ANTHROPIC:
        body = {"type": "error", "error": {"type": anthropic_error_type(err.status), "message": err.message}}
    else:
        body = {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}
    headers = {"content-type": "application/json", **err.headers}
    return err.status, orjson.dumps(body), headers
