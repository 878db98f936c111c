"""Scripted provider faults on successful answers (`Behaviour.fault`), the same for every API.

A real provider (or a proxy in front of it) sometimes answers 200 and then fails to deliver:

    html          a 200 whose body is an HTML page (`text/html`), streamed request or not
    invalid_json  a 200 `application/json` whose body is not JSON (cut in the middle); a streamed
                  request gets the same body instead of an event stream
    cut           the answer ends cleanly (the HTTP body is complete) but early: a stream after
                  `fault_after` content deltas, without its final event (`[DONE]`,
                  `message_stop`, ...); a whole answer cut in the middle of its JSON
    stall         the answer stops after `fault_after` content deltas (a whole answer: after its
                  headers and half its body) and the connection stays open until the client goes
    reset         like `cut`, but the connection is closed (0.2 s later, so what was written
                  arrives first) without ending the HTTP body (no final chunk; a whole answer
                  shorter than its content-length)

The simulator stays an independent oracle: nothing here knows the gateway.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from aiohttp import web

from simulator.common import ClientGone, json_response, write
from simulator.state import FAULTS, Behaviour, SimState

__all__ = ["FAULTS", "break_off", "broken_whole", "stream_broken", "stream_faulted", "strike", "whole_answer",
           "whole_fault"]

STREAM_FAULTS = ("cut", "stall", "reset")
RESET_DELAY_S = 0.2  # faults that strike inside a stream, after `fault_after` deltas

HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>Service temporarily unavailable</title></head>\n"
             b"<body><h1>We'll be right back</h1><p>The service is down for maintenance.</p></body></html>\n")


def whole_fault(fault: str | None, body: bytes, headers: dict[str, str]) -> web.Response | None:
    """The answer for a fault that replaces a whole answer at once (`html`, `invalid_json`, and
    `cut` for a non-streamed answer), None otherwise. `body` is the answer it replaces."""
    if fault == "html":
        return web.Response(status=200, body=HTML_PAGE, content_type="text/html", headers=headers)
    if fault == "invalid_json" or fault == "cut":
        return web.Response(status=200, body=body[: max(1, len(body) // 2)], content_type="application/json",
                            headers=headers)
    return None


async def broken_whole(state: SimState, request: web.Request, fault: str | None, body: bytes,
                       headers: dict[str, str]) -> web.StreamResponse | None:
    """A non-streamed answer's `stall` or `reset`: headers and half the body, then nothing (stall)
    or a closed connection (reset). None for other faults."""
    if fault not in ("stall", "reset"):
        return None
    response = web.StreamResponse(status=200, headers={"content-type": "application/json", **headers})
    response.content_length = len(body)
    await response.prepare(request)
    with contextlib.suppress(ClientGone):
        await write(response, body[: len(body) // 2])
        await strike(state, request, response, fault)
    return response


async def whole_answer(state: SimState, request: web.Request, fault: str | None, result: Any,
                       headers: dict[str, str]) -> web.StreamResponse:
    """A non-streamed 200 JSON answer of `result`, or what `fault` makes of it (`whole_fault`,
    `broken_whole`)."""
    raw = orjson.dumps(result)
    broken = whole_fault(fault, raw, headers) or await broken_whole(state, request, fault, raw, headers)
    return broken or json_response(200, result, headers)


async def strike(state: SimState, request: web.Request, response: web.StreamResponse, fault: str) -> None:
    """Break a started answer: `cut` ends the body cleanly, `stall` waits for the client to go
    away, `reset` closes the connection without ending the body."""
    if fault == "cut":
        await response.write_eof()
    elif fault == "stall":
        await state.hang(request)
    elif fault == "reset":
        # Let what was written reach the client first, so the reset comes after it.
        await state.sleep(RESET_DELAY_S)
        if request.transport is not None:
            request.transport.abort()


def stream_faulted(fault: str | None, fault_after: int, deltas_sent: int) -> bool:
    """True when a stream fault strikes before the next content delta."""
    return fault in STREAM_FAULTS and deltas_sent >= fault_after


def stream_broken(behaviour: Behaviour, deltas_sent: int) -> bool:
    """True when the behaviour's `stream_error_after` breaks the stream off with an error event
    before the next content delta."""
    return behaviour.stream_error_after is not None and deltas_sent >= behaviour.stream_error_after


async def break_off(response: web.StreamResponse, error_event: bytes) -> web.StreamResponse:
    """`response` (a started stream) ended cleanly after `error_event`, the provider's in-stream error."""
    await write(response, error_event)
    await response.write_eof()
    return response
