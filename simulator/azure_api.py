"""Simulated Azure OpenAI: ``POST /openai/deployments/{deployment}/chat/completions`` and
``/embeddings``, both with ``?api-version=``.

The deployment name is the model (behaviours, usage, the answer's `model`); a `model` in the body
is optional and ignored. Bodies are OpenAI's (see `openai_api`, `embeddings`). Differences from
OpenAI, as Azure answers:
- no ``api-version`` → 404 ``{"error": {"code": "404", "message": "Resource not found"}}``; one
  not shaped ``YYYY-MM-DD[-preview]`` (or ``v1``, ``latest``, ``preview``) → 400 ``API version not supported``;
- the key travels in ``api-key``; without it (``Authorization`` alone included) or with an
  unknown one → 401 ``{"error": {"code": "401", "message": "Access denied due to invalid
  subscription key or wrong API endpoint. ..."}}``;
- completions carry `prompt_filter_results` and per-choice `content_filter_results`; streams
  open with a prompt-filter chunk and carry no `obfuscation`;
- rate limits: ``x-ratelimit-remaining-requests|tokens`` (+ limits); a 429 is
  ``{"error": {"code": "429", "message": "... Please retry after N seconds. ..."}}`` with
  ``retry-after`` and ``retry-after-ms``; an injected 404 is ``DeploymentNotFound``;
- with a `request_limit` behaviour every answer past validation reports the deployment's quota as
  OpenAI does (``x-ratelimit-limit|remaining|reset-requests``, see `openai_api`); a 429 for the
  quota asks to retry (``retry-after``, ``retry-after-ms``, the message) when the window resets.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from aiohttp import web

from simulator.capabilities import serves_chat
from simulator.common import go_duration, json_response
from simulator.embeddings import Embeddings
from simulator.openai_api import ChatCompletions
from simulator.state import QUOTA, Behaviour, SimState

REQUEST_LIMIT = 1_000
TOKEN_LIMIT = 1_000_000
_VERSION = re.compile(r"^(\d{4}-\d{2}-\d{2}(-preview)?|v1|latest|preview)$")
ACCESS_DENIED = ("Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
                 "valid key for an active subscription and use a correct regional API endpoint for your resource.")
_SAFE = {"filtered": False, "severity": "safe"}
FILTER_RESULTS = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
OPERATIONS = {"chat/completions": "ChatCompletions_Create", "embeddings": "Embeddings_Create"}
OPERATION_HELP = ("Please choose different model and try again. You can learn m"
                  "ore about which models can be used with each operation here: https://go.microsoft.com/fwlink/?linkid=2197993.")


def azure_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(status, {"error": {"code": code, "message": message}}, headers)


class AzureMixin:
    """Azure's authentication, model naming, headers and error answers over an OpenAI exchange."""

    state: SimState
    request: web.Request
    headers: dict[str, str]
    obfuscate_by_default = False

    def _azure_init(self) -> None:
        rid = str(uuid.UUID(int=self.state.rng.getrandbits(128), version=4))
        self.headers = {"apim-request-id": rid, "x-request-id": rid, "x-ms-region": "Sweden Central",
                        "azureml-model-session": "d001-20250101000000", "x-ms-rai-invoked": "true"}

    @property
    def deployment(self) -> str:
        return self.request.match_info["deployment"]

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**self.headers, **(extra or {})}

    def authenticate(self) -> web.Response | None:
        if not self.state.key_accepted(self.request.headers.get("api-key")):
            return azure_error(401, "401", ACCESS_DENIED, self._headers())
        return None

    def prepare(self, body: Any) -> Any:
        return {**body, "model": self.deployment} if isinstance(body, dict) else body

    def rate_headers(self, behaviour: Behaviour, used_tokens: int, limited: bool) -> dict[str, str]:
        quota = self.request.get(QUOTA)
        refused = quota is not None and quota.exhausted
        headers = {"x-ratelimit-limit-requests": str(REQUEST_LIMIT), "x-ratelimit-limit-tokens": str(TOKEN_LIMIT),
                   "x-ratelimit-remaining-requests": "0" if limited else str(REQUEST_LIMIT - 1),
                   "x-ratelimit-remaining-tokens": "0" if limited and not refused else str(TOKEN_LIMIT - used_tokens)}
        if quota is not None:
            headers["x-ratelimit-limit-requests"] = str(quota.limit)
            headers["x-ratelimit-remaining-requests"] = str(quota.remaining)
            headers["x-ratelimit-reset-requests"] = go_duration(quota.reset_s)
        if limited and quota is not None and refused:
            headers["retry-after"] = str(quota.retry_after_s)
            headers["retry-after-ms"] = str(quota.reset_ms)
        elif limited:
            headers["retry-after"] = f"{max(1, round(behaviour.retry_after_s))}"
            headers["retry-after-ms"] = f"{int(behaviour.retry_after_s * 1000)}"
        return headers

    def status_error(self, status: int, behaviour: Behaviour, model: str, prompt: int) -> web.Response:
        if status == 429:
            operation = OPERATIONS["embeddings" if self.request.path.endswith("/embeddings") else "chat/completions"]
            version = self.request.query.get("api-version", "")
            retry = max(1, round(self.state.retry_after_s(behaviour, self.request)))
            message = (f"Requests to the {operation} Operation under Azure OpenAI API version {version} have "
                       "exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after "
                       f"{retry} seconds. Please go here: "
                       "https://aka.ms/oai/quotaincrease if you would like to further increase the default rate "
                       "limit.")
            return azure_error(429, "429", message, self._headers(self.rate_headers(behaviour, prompt, True)))
        if status == 404:
            extra = self.rate_headers(behaviour, prompt, False) if self.request.get(QUOTA) is not None else {}
            return azure_error(404, "DeploymentNotFound", "The API deployment for this resource does not exist. If "
                               "you created the deployment within the last 5 minutes, please wait a moment and try "
                               "again.", self._headers(extra))
        return super().status_error(status, behaviour, model, prompt)  # type: ignore[misc]

    def capability_refusal(self, body: dict[str, Any], model: str, behaviour: Behaviour) -> web.Response | None:
        """Chat to an embeddings deployment is Azure's 400 OperationNotSupported; the rest as OpenAI."""
        if not serves_chat(model, behaviour):
            return azure_error(400, "OperationNotSupported", "The chatCompletion operation does not work with the "
                               f"specified model, {model}. " + OPERATION_HELP, self._headers())
        return super().capability_refusal(body, model, behaviour)  # type: ignore[misc, no-any-return]

    def embeddings_refusal(self, model: str) -> web.Response:
        return azure_error(400, "OperationNotSupported", "The embeddings operation does not work with the "
                           f"specified model, {model}. " + OPERATION_HELP, self._headers())

    def decorate(self, data: dict[str, Any]) -> dict[str, Any]:
        choices = [{**c, "content_filter_results": FILTER_RESULTS} for c in data.get("choices") or []]
        data = {**data, "choices": choices}
        if data.get("object") == "chat.completion":
            data["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": FILTER_RESULTS}]
        return data

    def prelude(self, envelope: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"choices": [], "created": 0, "id": "", "model": "", "object": "",
                 "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": FILTER_RESULTS}]}]


class AzureChatCompletions(AzureMixin, ChatCompletions):
    def __init__(self, state: SimState, request: web.Request) -> None:
        super().__init__(state, request)
        self._azure_init()


class AzureEmbeddings(AzureMixin, Embeddings):
    def __init__(self, state: SimState, request: web.Request) -> None:
        super().__init__(state, request)
        self._azure_init()


async def azure_route(state: SimState, request: web.Request) -> web.StreamResponse:
    """Both Azure OpenAI routes; checks `api-version` before anything else, as Azure does."""
    version = request.query.get("api-version")
    if not version:
        return azure_error(404, "404", "Resource not found")
    if not _VERSION.match(version):
        return azure_error(400, "BadRequest", "API version not supported")
    if request.match_info["operation"] == "embeddings":
        return await AzureEmbeddings(state, request).answer()
    return await AzureChatCompletions(state, request).answer()
