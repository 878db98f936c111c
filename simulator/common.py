"""HTTP helpers shared by the simulated providers."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from simulator.state import STREAM_STATUS, UNANSWERED, Behaviour, SimState

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream"


class ClientGone(Exception):
    """The client closed the connection while the simulator was still writing."""


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type=JSON_TYPE,
                        headers=headers or {})


def bearer_token(request: web.Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def parse_json_body(request: web.Request) -> tuple[Any, str | None]:
    """The parsed JSON body, or an error message when it is not valid JSON."""
    raw = await request.read()
    if not raw:
        return None, "request body is empty"
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as exc:
        return None, f"request body is not valid JSON: {exc}"


async def read_body(request: web.Request, rejected: web.Response | None,
                    unparsable: Callable[[str], web.Response]) -> tuple[Any, web.Response | None]:
    """The parsed JSON body of a request whose credentials were checked, or the answer that ends the
    exchange instead: `rejected` (the refusal of the credentials; None = accepted), else
    `unparsable(message)` for a body that is empty or not JSON (each provider in its own format)."""
    if rejected is not None:
        return None, rejected
    body, parse_error = await parse_json_body(request)
    if parse_error:
        return None, unparsable(parse_error)
    return body, None


async def admit(state: SimState, request: web.Request, behaviour: Behaviour, model: str,
                refuse: Callable[[int], web.Response]) -> web.Response | None:
    """None when the request is to be answered; else the answer that ends it: `refuse(status)` for
    the error status admission gave (each provider in its own format), or, for a model that hangs,
    a bare 503 once the client has gone (recorded as unanswered)."""
    status = state.admission(behaviour, model, request)
    if status is not None:
        return refuse(status)
    if behaviour.hang:
        await state.hang(request)
        request[UNANSWERED] = True
        return web.Response(status=503)
    return None


class ModelExchange:
    """What a chat-style exchange (OpenAI's, Anthropic's) does between a valid body and its answer:
    `admitted` over the subclass's `capability_refusal` and `status_error`."""

    state: SimState
    request: web.Request

    def capability_refusal(self, body: dict[str, Any], model: str, behaviour: Behaviour) -> web.Response | None:
        """The provider's refusal of what `model` cannot do; None = it can."""
        raise NotImplementedError

    def status_error(self, status: int, behaviour: Behaviour, model: str, prompt: int) -> web.Response:
        """The provider's answer for the error `status` admission gave."""
        raise NotImplementedError

    async def admitted(self, body: dict[str, Any], count: Callable[[dict[str, Any]], int]
                       ) -> tuple[Behaviour, int, web.Response | None]:
        """The behaviour of the body's model, the request's input tokens (`count(body)`, 0 when
        refused before counting) and, unless the request is to be answered, the answer that ends it:
        the refusal of what the model cannot do, else what `admit` gives."""
        model = body["model"]
        behaviour = self.state.behaviour(model)
        refused = self.capability_refusal(body, model, behaviour)
        if refused is not None:
            return behaviour, 0, refused
        prompt = count(body)
        refused = await admit(self.state, self.request, behaviour, model,
                              lambda status: self.status_error(status, behaviour, model, prompt))
        return behaviour, prompt, refused


async def open_stream(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={
        "content-type": SSE_TYPE, "cache-control": "no-cache", **headers})
    await response.prepare(request)
    request[STREAM_STATUS] = response.status
    return response


async def write(response: web.StreamResponse, data: bytes) -> None:
    """Write `data`, raising ClientGone when the client has disconnected."""
    try:
        await response.write(data)
    except (ConnectionError, RuntimeError) as exc:
        raise ClientGone() from exc


def rfc3339(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration_text(seconds: float) -> str:
    """OpenAI's reset format rounded to whole seconds from 1 s up: `1s`, `6m0s`, `120ms` (the fixed
    figures of answers without a quota; see `go_duration` for exact ones)."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    whole = int(round(seconds))
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def go_duration(seconds: float) -> str:
    """OpenAI's reset format exactly: Go's `time.Duration` text at millisecond precision, rounded
    up: `250ms`, `1s`, `1m30.5s`, `6m0s`, `1h0m0s`."""
    ms = max(0, math.ceil(round(seconds * 1000, 3)))
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    secs = f"{whole}.{frac:03d}".rstrip("0") if frac else str(whole)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
