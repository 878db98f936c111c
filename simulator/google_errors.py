"""Google's API error format (`google.rpc.Status` as JSON), shared by Gemini and Vertex AI.

    {"error": {"code": 400, "message": "...", "status": "INVALID_ARGUMENT", "details": [...]}}

`details` carries typed entries (`@type` = ``type.googleapis.com/google.rpc.ErrorInfo``,
``…BadRequest``, ``…RetryInfo``, ``…QuotaFailure``); it is left out when empty.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from simulator.common import json_response
from simulator.validate.gemini import Violation

STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 412: "FAILED_PRECONDITION", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
    501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}
GOOGLE_HEADERS = {"vary": "Origin, X-Origin, Referer", "server": "scaffolding on HTTPServer2",
                  "x-xss-protection": "0", "x-frame-options": "SAMEORIGIN", "x-content-type-options": "nosniff"}
TYPE_PREFIX = "type.googleapis.com/google.rpc."
NO_CREDENTIALS = ("Request is missing required authentication credential. Expected OAuth 2 access token, login "
                  "cookie or other valid authentication credential. See "
                  "https://developers.google.com/identity/sign-in/web/devconsole-project.")
BAD_CREDENTIALS = ("Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
                   "or other valid authentication credential. See "
                   "https://developers.google.com/identity/sign-in/web/devconsole-project.")


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")


def google_error(status: int, message: str, details: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> web.Response:
    """An answer in Google's error format."""
    error: dict[str, Any] = {"code": status, "message": message, "status": status_name(status)}
    if details:
        error["details"] = details
    return json_response(status, {"error": error}, {**GOOGLE_HEADERS, **(headers or {})})


def error_info(reason: str, service: str, **metadata: str) -> dict[str, Any]:
    return {"@type": TYPE_PREFIX + "ErrorInfo", "reason": reason, "domain": "googleapis.com",
            "metadata": {"service": service, **metadata}}


def retry_info(seconds: float) -> dict[str, Any]:
    """A RetryInfo detail; `retryDelay` is a JSON protobuf Duration (decimal seconds, no exponent)."""
    delay = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return {"@type": TYPE_PREFIX + "RetryInfo", "retryDelay": f"{delay}s"}


def violations_error(violations: list[Violation], headers: dict[str, str] | None = None) -> web.Response:
    """A 400 INVALID_ARGUMENT listing every violation (message and BadRequest field violations)."""
    message = "".join(v.description if v.description.endswith("\n") else v.description + "\n"
                      for v in violations).rstrip("\n") if len(violations) > 1 else violations[0].description
    details = [{"@type": TYPE_PREFIX + "BadRequest", "fieldViolations": [
        {"field": v.field, "description": v.description} for v in violations]}]
    return google_error(400, message, details, headers)


def invalid_json(detail: str) -> web.Response:
    return google_error(400, f"Invalid JSON payload received. {detail}")
