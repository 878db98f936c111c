"""The simulator's aiohttp application: provider routes, control API, request recording.

Provider routes: OpenAI (`/v1/chat/completions`, `/v1/embeddings`, `/v1/models`), Anthropic
(`/v1/messages`), Gemini API (`/{v1|v1beta}/models/{model}:{method}`, `gemini_api`), Vertex AI
(`/v1/projects/…/publishers/{google|anthropic}/models/{model}:{method}`, `vertex_api`) with its
OAuth token endpoint (`POST /token`, `gcp`), Bedrock runtime (`/model/{modelId}/converse[-stream]`,
`bedrock_api`), Azure OpenAI (`/openai/deployments/{deployment}/{chat/completions|embeddings}`,
`azure_api`); OpenAI Responses (`/v1/responses`, Azure `/openai/v1/responses`, and `GET`/`DELETE`
`…/responses/{id}`, `…/{id}/input_items`, `POST …/{id}/cancel`, `responses_api`).

Control API (JSON; credentials and counters in `control`):
    PUT    /_sim/models/{model}   merge a behaviour patch (fields of `state.Behaviour`); `*` = all models
    GET    /_sim/models           effective behaviour of every configured model
    DELETE /_sim/models/{model}   drop the model's patch, zero its concurrency figures, forget its quota count
    POST   /_sim/reset            drop every behaviour and recorded request, zero the concurrency and quota
                                  figures
    GET    /_sim/requests         recorded provider requests, oldest first (last 1000): method, path
                                  (decoded), raw_path (as sent, with query), query, headers, body
                                  (parsed JSON or null), status (null while unanswered)
    DELETE /_sim/requests         forget recorded requests
    GET    /_sim/health           {"ok": true}
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from simulator import (
    anthropic_api,
    completions_api,
    control,
    count_tokens_api,
    gcp,
    openai_api,
    responses_api,
)
from simulator.azure_api import azure_route
from simulator.bedrock_api import bedrock_route
from simulator.common import json_response
from simulator.embeddings import embeddings
from simulator.gemini_api import gemini_route
from simulator.state import (
    SLOT,
    STREAM_STATUS,
    UNANSWERED,
    Behaviour,
    Clock,
    SimState,
    Sleep,
    validate_patch,
)
from simulator.validate import anthropic_messages_request_problems, openai_chat_request_problems
from simulator.validate.bedrock import bedrock_converse_request_problems
from simulator.validate.gemini import gemini_generate_request_problems
from simulator.vertex_api import vertex_route

STATE_KEY = web.AppKey("sim_state", SimState)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _record(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Append every provider request (not `/_sim/…`) to the records with its answered status."""
    if request.path.startswith("/_sim/"):
        return await handler(request)
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = None
    record: dict[str, Any] = {"method": request.method, "path": request.path, "query": request.query_string,
                              "raw_path": request.raw_path,
                              "headers": {k.lower(): v for k, v in request.headers.items()},
                              "body": body, "status": None}
    state = request.app[STATE_KEY]
    state.records.append(record)
    try:
        response = await handler(request)
        if request.get(SLOT) is not None and not response.prepared:
            # Send an accepted non-streamed answer here: its concurrency slot is held until it is out.
            with contextlib.suppress(ConnectionError):  # client gone: aiohttp finishes as usual
                await response.prepare(request)
                await response.write_eof()
    except web.HTTPException as exc:
        record["status"] = exc.status
        raise
    except asyncio.CancelledError:
        record["status"] = request.get(STREAM_STATUS)
        raise
    finally:
        state.release(request)
    if not request.get(UNANSWERED):
        record["status"] = response.status
    return response


def _state(request: web.Request) -> SimState:
    return request.app[STATE_KEY]


def _models(state: SimState) -> list[str]:
    return list(dict.fromkeys([*state.behaviours.models(), *state.seen_models]))


def _with_state(serve: Callable[[SimState, web.Request], Awaitable[web.StreamResponse]]) -> Handler:
    """The route handler that answers a request by `serve` over the application's state."""
    async def handler(request: web.Request) -> web.StreamResponse:
        return await serve(_state(request), request)
    return handler


_chat = _with_state(openai_api.chat_completions)
_messages = _with_state(anthropic_api.messages)
_embeddings = _with_state(embeddings)
_gemini = _with_state(gemini_route)
_vertex = _with_state(vertex_route)
_bedrock = _with_state(bedrock_route)
_responses = _with_state(responses_api.responses)
_stored_response = _with_state(responses_api.stored_response)
_completions = _with_state(completions_api.openai_completions)
_azure_completions = _with_state(completions_api.azure_completions)
_fim = _with_state(completions_api.mistral_fim)
_count_tokens = _with_state(count_tokens_api.anthropic_count)
_input_tokens = _with_state(count_tokens_api.openai_count)
_azure = _with_state(azure_route)


async def _token(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    return await gcp.token_endpoint(state.gcp, request, state.clock())


async def _list_models(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    if "anthropic-version" in request.headers:
        return await anthropic_api.list_models(state, request, _models(state))
    return await openai_api.list_models(state, request, _models(state))


async def _not_found(request: web.Request) -> web.StreamResponse:
    if "anthropic-version" in request.headers or "x-api-key" in request.headers:
        return anthropic_api.MessagesExchange(_state(request), request).error(
            404, f"Not found: {request.method} {request.path}")
    return openai_api.error(404, f"Invalid URL ({request.method} {request.path})")


async def _put_model(request: web.Request) -> web.Response:
    try:
        patch = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        return json_response(400, {"problems": ["body: not valid JSON"]})
    problems = validate_patch(patch)
    if problems:
        return json_response(400, {"problems": problems})
    behaviour = _state(request).behaviours.update(request.match_info["model"], patch)
    return json_response(200, _behaviour_json(behaviour))


async def _get_models(request: web.Request) -> web.Response:
    return json_response(200, _state(request).behaviours.snapshot())


async def _delete_model(request: web.Request) -> web.Response:
    _state(request).reset_concurrency(request.match_info["model"])
    _state(request).reset_quota(request.match_info["model"])
    found = _state(request).behaviours.delete(request.match_info["model"])
    return json_response(200 if found else 404, {"deleted": found})


async def _reset(request: web.Request) -> web.Response:
    _state(request).reset()
    return json_response(200, {"ok": True})


async def _get_requests(request: web.Request) -> web.Response:
    return json_response(200, list(_state(request).records))


async def _delete_requests(request: web.Request) -> web.Response:
    _state(request).records.clear()
    return json_response(200, {"ok": True})


async def _health(request: web.Request) -> web.Response:
    return json_response(200, {"ok": True})


def _behaviour_json(behaviour: Behaviour) -> dict[str, Any]:
    return asdict(behaviour)


def make_app(state: SimState) -> web.Application:
    """The aiohttp application serving both provider APIs and the control API over `state`."""
    app = web.Application(middlewares=[_record], client_max_size=64 * 1024 * 1024)
    app[STATE_KEY] = state
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/messages", _messages)
    app.router.add_get("/v1/models", _list_models)
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_post("/beta/completions", _completions)  # DeepSeek's FIM prefix (an OpenAI-compatible host)
    app.router.add_post("/v1/fim/completions", _fim)
    app.router.add_post("/openai/deployments/{deployment}/completions", _azure_completions)
    app.router.add_post("/v1/messages/count_tokens", _count_tokens)
    app.router.add_post("/v1/responses/input_tokens", _input_tokens)
    app.router.add_post("/v1/responses", _responses)
    app.router.add_post("/openai/v1/responses", _responses)
    for path in ("/v1/responses/{id}", "/openai/v1/responses/{id}"):
        app.router.add_get(path, _stored_response)
        app.router.add_delete(path, _stored_response)
        app.router.add_get(path + "/input_items", _stored_response)
        app.router.add_post(path + "/cancel", _stored_response)
    app.router.add_post("/{version:v1|v1beta1}/projects/{project}/locations/{location}/publishers/{publisher}/"
                        "models/{rest}", _vertex)
    app.router.add_post("/{version}/models/{rest}", _gemini)
    app.router.add_post("/token", _token)
    app.router.add_post("/model/{rest:.+}", _bedrock)
    app.router.add_post("/openai/deployments/{deployment}/{operation:chat/completions|embeddings}", _azure)
    control.add_routes(app, _state)
    app.router.add_put("/_sim/models/{model:.+}", _put_model)
    app.router.add_delete("/_sim/models/{model:.+}", _delete_model)
    app.router.add_get("/_sim/models", _get_models)
    app.router.add_post("/_sim/reset", _reset)
    app.router.add_get("/_sim/requests", _get_requests)
    app.router.add_delete("/_sim/requests", _delete_requests)
    app.router.add_get("/_sim/health", _health)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


class Simulator:
    """A running simulator (see `start`)."""

    def __init__(self, state: SimState, runner: web.AppRunner, host: str, port: int) -> None:
        self.state = state
        self.host = host
        self.port = port
        self._runner = runner

    @property
    def url(self) -> str:
        """Base URL without path, e.g. ``http://127.0.0.1:43123`` (OpenAI clients add ``/v1``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def set_behaviour(self, model: str, **patch: Any) -> Behaviour:
        """In-process equivalent of ``PUT /_sim/models/{model}``."""
        problems = validate_patch(patch)
        if problems:
            raise ValueError("; ".join(problems))
        return self.state.behaviours.update(model, patch)

    def requests(self) -> list[dict[str, Any]]:
        """In-process equivalent of ``GET /_sim/requests``."""
        return list(self.state.records)

    def reset(self) -> None:
        """In-process equivalent of ``POST /_sim/reset``."""
        self.state.reset()

    @property
    def token_url(self) -> str:
        """The simulated Google OAuth token endpoint (a service account's `token_uri`)."""
        return self.url + "/token"

    def add_gcp_service_account(self, path: str | Path) -> dict[str, Any]:
        """Know the service account of a key file; creates the file first (token_uri = `token_url`)
        when it does not exist. Returns the file's content."""
        if not Path(path).exists():
            gcp.make_service_account(path, self.token_url)
        self.state.gcp.load_file(path)
        return dict(orjson.loads(Path(path).read_bytes()))

    def add_aws_credentials(self, access_key_id: str, secret_access_key: str) -> None:
        """In-process equivalent of ``POST /_sim/aws/credentials``."""
        self.state.aws.add(access_key_id, secret_access_key)

    def set_gcp_token_lifetime(self, seconds: int) -> None:
        """In-process equivalent of ``PUT /_sim/gcp/oauth {"expires_in": seconds}``."""
        self.state.gcp.expires_in = seconds

    def revoke_gcp_tokens(self) -> int:
        """In-process equivalent of ``DELETE /_sim/gcp/tokens``; returns how many were revoked."""
        count = len(self.state.gcp.tokens)
        self.state.gcp.tokens.clear()
        return count

    def stats(self) -> dict[str, Any]:
        """In-process equivalent of ``GET /_sim/stats``."""
        return control.stats(self.state)

    async def stop(self) -> None:
        """Stop serving; hanging requests end, in-flight streams get at most one second."""
        self.state.stopping.set()
        await self._runner.cleanup()


def _warm_up() -> None:
    """Build the validators once (google-genai's pydantic schemas take ~0.5 s) before listening."""
    openai_chat_request_problems({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    anthropic_messages_request_problems({"model": "m", "max_tokens": 1, "messages": []})
    gemini_generate_request_problems({
        "contents": [{"role": "user", "parts": [{"text": "x"}]}], "systemInstruction": {"parts": [{"text": "s"}]},
        "tools": [{"functionDeclarations": [{"name": "f"}]}], "toolConfig": {}, "safetySettings": [],
        "generationConfig": {}})
    bedrock_converse_request_problems({"messages": []}, "m", False)


async def start(host: str = "127.0.0.1", port: int = 0, api_keys: list[str] | None = None, *,
                seed: int = 0, clock: Clock | None = None, sleep: Sleep | None = None,
                gcp_service_accounts: list[str] | None = None,
                aws_credentials: dict[str, str] | None = None) -> Simulator:
    """Serve on `host:port` (0 = a free port) inside the running event loop.

    `api_keys`: when given, only those keys are accepted (OpenAI, Anthropic, Gemini, Azure);
    otherwise any non-empty key. `seed` seeds ids and `error_rate` draws; `clock` (epoch seconds)
    and `sleep` (async) replace `time.time` and `asyncio.sleep` so tests need not wait.
    `gcp_service_accounts`: key files whose accounts may get OAuth tokens (a missing file is
    created, see `Simulator.add_gcp_service_account`). `aws_credentials`: access key id → secret
    accepted for SigV4, besides the demo pair `aws_auth.DEMO_ACCESS_KEY_ID` / `DEMO_SECRET_ACCESS_KEY`.
    """
    _warm_up()
    state = SimState(api_keys, seed=seed, clock=clock, sleep=sleep)
    runner = web.AppRunner(make_app(state), shutdown_timeout=1.0, handler_cancellation=True,
                           access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    simulator = Simulator(state, runner, host, int(bound))
    for key_id, secret in (aws_credentials or {}).items():
        simulator.add_aws_credentials(key_id, secret)
    try:
        for path in gcp_service_accounts or []:
            simulator.add_gcp_service_account(path)
    except (OSError, ValueError, KeyError) as exc:
        await simulator.stop()
        raise ValueError(f"GCP service account: {exc}") from exc
    return simulator


async def _serve(host: str, port: int, api_keys: list[str] | None, gcp_service_accounts: list[str] | None,
                 aws_credentials: dict[str, str] | None) -> None:
    simulator = await start(host, port, api_keys, gcp_service_accounts=gcp_service_accounts,
                            aws_credentials=aws_credentials)
    print(f"simulator: listening on http://{host}:{simulator.port}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        await simulator.stop()


def run(host: str, port: int, api_keys: list[str] | None = None, *,
        gcp_service_accounts: list[str] | None = None, aws_credentials: dict[str, str] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; prints ``simulator: listening on http://HOST:PORT`` when ready.
    Arguments as for `start`."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(host, port, api_keys, gcp_service_accounts, aws_credentials))
