"""A streamed answer's body, chunk by chunk (FULL_DUPLEX_STREAMED: every reply carries the bytes
that go on, Envoy keeps none), and its end when its provider stalls (`stall.StallTimer`).

A translated stream goes on as the translator's client bytes (a partial event held back: an empty
reply); a read (passthrough) one unchanged, unless it ended before its final event (then with the
error event after it). The usage and event count on the `Flow` stay current for every chunk."""

from __future__ import annotations

from collections.abc import Callable

from extproc import errors
from extproc.stages import feedback, metering, response, stall
from extproc.stages.flow import Flow
from extproc.stages.response import Reply


def watch(f: Flow, loop: stall.Loop | None, on_stall: Callable[[], None]) -> None:
    """Start the stream's idle timer (`loop` None: the transport cannot send unasked, no timer)."""
    if loop is not None:
        f.timer = stall.StallTimer(loop, stall.idle_bound(f.chain), on_stall)


def passed_on(f: Flow, state: feedback.RoutingState, body: bytes, end: bool) -> bytes:
    """The bytes that go on to the client for one upstream chunk (`end`: the last)."""
    reader, d = f.reader, f.deployment
    assert reader is not None and d is not None, "a streamed body follows a streamed answer's headers"
    if f.timer is not None:
        f.timer.touch()
    chunk = reader.feed(body)
    out = body  # READ: the body goes on unchanged...
    if f.reply is Reply.TRANSLATE:
        out = chunk + reader.finish() if end else chunk
    elif end and not response.reached_its_end(reader):  # ...unless it was cut short
        feedback.broken(state, d, "stream cut before its final event", f.request_id)
        out = body + response.cut_stream_tail(reader, f.api)
    f.usage = reader.usage  # None when the client did not ask for usage: TTFT only
    f.events += metering.events_in(body)
    return out


def stalled(f: Flow, state: feedback.RoutingState) -> tuple[bytes, errors.GatewayError]:
    """The stream's provider sent nothing for nearly its idle timeout: the bytes that end the
    client's stream (the error event in its format) and the error. The provider is counted as
    failed, as for a stream cut before its end."""
    d = f.deployment
    assert d is not None, "a stall follows a streamed answer's headers"
    err = response.stalled(d.provider, stall.idle_bound(f.chain))
    feedback.broken(state, d, err.message, f.request_id)
    return response.cut_stream_tail(f.reader, f.api, err), err
