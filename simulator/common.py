"""HTTP helpers shared by the simulated providers."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import orjson
from aiohttp import web

from simulator.state import STREAM_STATUS

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
