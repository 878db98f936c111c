"""Simulated Vertex AI prediction endpoints.

Routes: ``POST /{v1|v1beta1}/projects/{project}/locations/{location}/publishers/google/models/{model}:
generateContent|streamGenerateContent`` (Gemini format, see `gemini_api`) and
``.../publishers/anthropic/models/{model}:rawPredict|streamRawPredict`` (Anthropic Messages format
without `model`, with `anthropic_version` — ``vertex-2023-10-16`` or the version the installed
`anthropic` SDK sends — see `anthropic_api`).

Every request needs ``Authorization: Bearer <token>`` with a token the simulator's `/token`
endpoint issued (`gcp`), unexpired, with the cloud-platform scope; when the token's service
account names a project, the path's project must be it. Refusals are Google errors (401
UNAUTHENTICATED, 403 PERMISSION_DENIED). Injected 429s and those of a `request_limit` quota are
Google's RESOURCE_EXHAUSTED for both publishers, without rate-limit headers; other injected errors
of Anthropic models are in Anthropic's format.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from simulator.anthropic_api import MessagesExchange
from simulator.common import bearer_token
from simulator.gemini_api import GeminiExchange, Target
from simulator.google_errors import BAD_CREDENTIALS, NO_CREDENTIALS, error_info, google_error
from simulator.state import Behaviour, SimState

SERVICE = "aiplatform.googleapis.com"
VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"


def _sdk_anthropic_version() -> str:
    from anthropic._constants import ANTHROPIC_API_VERSION

    return str(ANTHROPIC_API_VERSION)


def anthropic_versions() -> tuple[str, ...]:
    """The `anthropic_version` values accepted in Vertex bodies."""
    return VERTEX_ANTHROPIC_VERSION, _sdk_anthropic_version()


class VertexMessagesExchange(MessagesExchange):
    """An Anthropic Messages exchange on Vertex AI (already authenticated, model from the path)."""

    def __init__(self, state: SimState, request: web.Request, model: str) -> None:
        super().__init__(state, request)
        self.model = model

    def precheck(self) -> web.Response | None:
        return None

    def rate_headers(self, behaviour: Behaviour, used_tokens: int, limited: bool) -> dict[str, str]:
        return {}

    def prepare(self, body: Any) -> tuple[Any, list[str]]:
        if not isinstance(body, dict):
            return body, ["(root): must be an object"]
        problems: list[str] = []
        version = body.get("anthropic_version")
        if version is None:
            problems.append("anthropic_version: Field required")
        elif version not in anthropic_versions():
            problems.append(f"anthropic_version: Input should be '{VERTEX_ANTHROPIC_VERSION}'")
        if "model" in body:
            problems.append("model: Extra inputs are not permitted")
        rest = {k: v for k, v in body.items() if k != "anthropic_version"}
        return {"model": self.model, **rest}, problems

    def status_error(self, status: int, behaviour: Behaviour, model: str, prompt: int) -> web.Response:
        if status == 429:
            return google_error(429, f"Quota exceeded for {SERVICE}/online_prediction_requests_per_base_model "
                                f"with base model: {model}. Please submit a quota increase request. "
                                "https://cloud.google.com/vertex-ai/docs/generative-ai/quotas-genai.")
        return super().status_error(status, behaviour, model, prompt)


def auth_error(state: SimState, request: web.Request, project: str, resource: str) -> web.Response | None:
    """Google's refusal of the request's bearer token for `project` (None = accepted)."""
    issued, reason = state.gcp.check_bearer(bearer_token(request), state.clock())
    if reason == "CREDENTIALS_MISSING":
        return google_error(401, NO_CREDENTIALS, [error_info(reason, SERVICE)])
    if issued is None:
        return google_error(401, BAD_CREDENTIALS, [error_info(str(reason), SERVICE)])
    if reason is not None:
        return google_error(403, "Request had insufficient authentication scopes.", [error_info(reason, SERVICE)])
    if issued.project_id is not None and issued.project_id != project:
        return google_error(403, f"Permission 'aiplatform.endpoints.predict' denied on resource "
                            f"'//{SERVICE}/{resource}' (or it may not exist).",
                            [error_info("IAM_PERMISSION_DENIED", SERVICE, permission="aiplatform.endpoints.predict",
                                        resource=resource)])
    return None


async def vertex_route(state: SimState, request: web.Request) -> web.StreamResponse:
    """`POST /{v1|v1beta1}/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}:{method}`."""
    info = request.match_info
    model, _, method = info["rest"].partition(":")
    resource = (f"projects/{info['project']}/locations/{info['location']}/publishers/{info['publisher']}/"
                f"models/{model}")
    rejected = auth_error(state, request, info["project"], resource)
    if rejected is not None:
        return rejected
    if info["publisher"] == "anthropic" and model == "count-tokens" and method == "rawPredict":
        from simulator.count_tokens_api import anthropic_count

        return await anthropic_count(state, request, vertex_model=model)
    if info["publisher"] == "google" and method == "countTokens":
        from simulator.count_tokens_api import gemini_count

        return await gemini_count(state, request, model, vertex=True)
    if info["publisher"] == "anthropic" and method in ("rawPredict", "streamRawPredict"):
        exchange = VertexMessagesExchange(state, request, model)
        return await exchange.answer()
    if info["publisher"] == "google" and method in ("generateContent", "streamGenerateContent"):
        return await GeminiExchange(state, request, Target(model, method, info["version"], resource)).answer()
    return google_error(404, f"Method not found: {info['publisher']} models do not support {method or 'this path'}.")
