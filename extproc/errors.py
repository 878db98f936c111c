"""One error tree for everything a client can be told.

    GatewayError                 status + client-safe message, rendered per client API
    ├── BadRequest               400 invalid_request_error
    ├── Unauthorized             401 authentication_error (code invalid_api_key)
    ├── NotFound                 404 not_found_error (unknown path, unknown or forbidden model)
    ├── MethodNotAllowed         405 invalid_request_error
    ├── PayloadTooLarge          413 invalid_request_error (code request_too_large)
    ├── RateLimited              429 rate_limit_error (+ Retry-After)
    ├── ProviderError            any status: a provider's failure mapped for the client
    ├── Unavailable              503 api_error (no deployment can serve)
    ├── DeadlineExceeded         504 timeout_error (the client's deadline cannot be met)
    └── InternalError            500 api_error: an unexpected fault, named by its request id only

Every node is a class, so `except errors.RateLimited` works. Only the message of a GatewayError
ever reaches a client. Anything else raised inside the ext_proc is caught at the one boundary
(`extproc.server`) and becomes an `InternalError` with the request id; its text and traceback go
to the log only.

Rendering is pure: `render(err, api)` returns the status, the JSON body and extra headers in
the client's API format (`openai` or `anthropic`).
"""

from __future__ import annotations

import orjson

OPENAI = "openai"
ANTHROPIC = "anthropic"


class GatewayError(Exception):
    """An error whose message is safe to show to the client.

    `status`: the HTTP status the client gets; `type`: OpenAI's `error.type` (Anthropic's is
    derived from the status); `code`, `param`: OpenAI's fields; `headers`: extra response headers
    (e.g. `retry-after`). A subclass fixes `status`, `type` and `code`; the base class takes
    them as arguments (a translator mapping a provider's answer, for example)."""

    status = 500
    type = "api_error"
    code: str | None = None

    def __init__(self, message: str, status: int | None = None, type: str | None = None,
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        if code is not None:
            self.code = code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status})"


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code, param=param)


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"

    def __init__(self, message: str = "Invalid or missing API key.") -> None:
        super().__init__(message)


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message, code=code, param=param)


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"

    def __init__(self, method: str, path: str) -> None:
        super().__init__(f"Method {method} is not allowed on {path}.")


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"

    def __init__(self, message: str = "Request body too large.") -> None:
        super().__init__(message)


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"retry-after": str(max(1, retry_after_s))})


class ProviderError(GatewayError):
    """A provider's failure (its error answer, an unreadable answer, unreachable), mapped to the
    status and text a client may see. Status and type vary; see `translate.base.provider_error`."""


class Unavailable(GatewayError):
    status = 503
    type = "api_error"
    code = "service_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message)


class DeadlineExceeded(GatewayError):
    status = 504
    type = "timeout_error"
    code = "deadline_exceeded"

    def __init__(self, message: str) -> None:
        super().__init__(message)


class InternalError(GatewayError):
    """An unexpected fault. The message names only the request id; the cause goes to the log."""

    status = 500
    type = "api_error"

    def __init__(self, request_id: str) -> None:
        super().__init__(f"Internal gateway error (request id {request_id or '-'}).")


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
    """Return (status, body, headers) for `err` in the client API `api` (Anthropic's format for
    `anthropic` and its sub-APIs such as `anthropic-count-tokens`, OpenAI's otherwise)."""
    if api.startswith(ANTHROPIC):
        body = {"type": "error", "error": {"type": anthropic_error_type(err.status), "message": err.message}}
    else:
        body = {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}
    headers = {"content-type": "application/json", **err.headers}
    return err.status, orjson.dumps(body), headers
