"""Control API for provider credentials and counters (JSON; see `server` for the rest).

    POST   /_sim/gcp/service-accounts  {"client_email", "public_key_pem", "project_id"?} → 201
    GET    /_sim/gcp/service-accounts  [{"client_email", "project_id"}]
    PUT    /_sim/gcp/oauth             {"expires_in": seconds} lifetime of tokens issued from now on
    DELETE /_sim/gcp/tokens            revoke every issued access token (callers get 401 until they refresh)
    POST   /_sim/aws/credentials       {"access_key_id", "secret_access_key"} → 201
    GET    /_sim/aws/credentials       {"access_key_ids": [...]}
    GET    /_sim/stats                 {"gcp": {"token_requests", "tokens_issued", "tokens_valid",
                                        "expires_in"}, "requests": n, "concurrency": {model: {"in_flight",
                                        "peak", "accepted", "rejected"}}  (see `state.Concurrency`),
                                        "quota": {model: {"limit", "window_s", "used_in_window",
                                        "remaining", "reset_in_s", "rejected"}}}  (see `quota.Quota`)

`quota` lists every model with a `request_limit` now or a count since the last reset: `limit` and
`window_s` of its behaviour now (`limit` null once unset), requests accepted in the window holding
the clock's now (`used_in_window`, 0 once that window has passed), `remaining` of them (null
without a limit), seconds until that window ends, and requests refused for the quota since the
last reset (`rejected`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson
from aiohttp import web

from simulator.common import json_response
from simulator.state import SimState


def stats(state: SimState) -> dict[str, Any]:
    now = state.clock()
    gcp = state.gcp
    return {"gcp": {"token_requests": gcp.token_requests, "tokens_issued": gcp.tokens_issued,
                    "tokens_valid": sum(1 for t in gcp.tokens.values() if t.expires_at > now),
                    "expires_in": gcp.expires_in},
            "requests": len(state.records),
            "concurrency": {model: asdict(figures) for model, figures in state.concurrency.items()},
            "quota": state.quota_figures()}


async def _json_object(request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        return None, json_response(400, {"problems": ["body: not valid JSON"]})
    if not isinstance(body, dict):
        return None, json_response(400, {"problems": ["body: must be a JSON object"]})
    return body, None


def _strings(body: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...] = ()) -> list[str]:
    problems = [f"{k}: required string" for k in required if not isinstance(body.get(k), str) or not body[k]]
    problems += [f"{k}: must be a string" for k in optional if body.get(k) is not None and not isinstance(body[k], str)]
    problems += [f"{k}: unknown field" for k in body if k not in required + optional]
    return problems


def add_routes(app: web.Application, state_of: Any) -> None:
    """Register the handlers; `state_of(request)` gives the `SimState`."""

    async def add_account(request: web.Request) -> web.Response:
        body, bad = await _json_object(request)
        if body is None:
            return bad  # type: ignore[return-value]
        problems = _strings(body, ("client_email", "public_key_pem"), ("project_id",))
        if problems:
            return json_response(400, {"problems": problems})
        try:
            state_of(request).gcp.register(body["client_email"], body["public_key_pem"], body.get("project_id"))
        except ValueError as exc:
            return json_response(400, {"problems": [f"public_key_pem: {exc}"]})
        return json_response(201, {"client_email": body["client_email"], "project_id": body.get("project_id")})

    async def list_accounts(request: web.Request) -> web.Response:
        accounts = state_of(request).gcp.accounts.values()
        return json_response(200, [{"client_email": a.client_email, "project_id": a.project_id} for a in accounts])

    async def set_oauth(request: web.Request) -> web.Response:
        body, bad = await _json_object(request)
        if body is None:
            return bad  # type: ignore[return-value]
        value = body.get("expires_in")
        if set(body) != {"expires_in"} or not isinstance(value, int) or isinstance(value, bool) or value < 1:
            return json_response(400, {"problems": ["expires_in: required positive integer (seconds)"]})
        state_of(request).gcp.expires_in = value
        return json_response(200, {"expires_in": value})

    async def revoke_tokens(request: web.Request) -> web.Response:
        tokens = state_of(request).gcp.tokens
        count = len(tokens)
        tokens.clear()
        return json_response(200, {"revoked": count})


    async def add_credentials(request: web.Request) -> web.Response:
        body, bad = await _json_object(request)
        if body is None:
            return bad  # type: ignore[return-value]
        problems = _strings(body, ("access_key_id", "secret_access_key"))
        if problems:
            return json_response(400, {"problems": problems})
        state_of(request).aws.add(body["access_key_id"], body["secret_access_key"])
        return json_response(201, {"access_key_id": body["access_key_id"]})

    async def list_credentials(request: web.Request) -> web.Response:
        return json_response(200, {"access_key_ids": sorted(state_of(request).aws.secrets)})

    async def get_stats(request: web.Request) -> web.Response:
        return json_response(200, stats(state_of(request)))

    app.router.add_post("/_sim/gcp/service-accounts", add_account)
    app.router.add_get("/_sim/gcp/service-accounts", list_accounts)
    app.router.add_put("/_sim/gcp/oauth", set_oauth)
    app.router.add_delete("/_sim/gcp/tokens", revoke_tokens)
    app.router.add_post("/_sim/aws/credentials", add_credentials)
    app.router.add_get("/_sim/aws/credentials", list_credentials)
    app.router.add_get("/_sim/stats", get_stats)
