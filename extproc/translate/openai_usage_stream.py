"""An OpenAI passthrough stream whose usage the gateway asked for, given back as the client asked.

A client that streams Chat Completions without `stream_options.include_usage` would leave the
gateway without the stream's usage (rate-limit true-up, cost, the access log, time per output
token). The passthrough translator asks the provider for it anyway (`OpenAIToOpenAI`), and this
reader gives the client the stream it would have had without it, byte for byte, as OpenAI
documents the difference: with `include_usage` every chunk carries `"usage":null` and one more
chunk, with `"choices":[]` and the usage, comes before `data: [DONE]`. So each event loses its
`"usage":null` member, and the usage-only chunk is read (`usage`) and removed; everything else —
comments, other fields, the event framing, `[DONE]`, error events — goes on as it came.

Whole events only: the bytes of an event whose end has not arrived are held back (answered with
nothing) and go on with the chunk that ends it, so an event is never passed on before it can be
judged; `finish` gives back what is held when the stream ends inside an event. Events end at a
blank line (`\\n\\n` or `\\r\\n\\r\\n`). Cost, measured in-process on 101-chunk streams, one chunk per
event: 2.4–2.5 µs per chunk, against 1.5–1.8 for the plain reader on the stream without usage and
2.3–2.8 for it on the stream with (which it parses chunk by chunk: here only the usage-only chunk
is parsed, the others are searched).
"""

from __future__ import annotations

import orjson

from extproc.translate.base import StreamTranslator, Usage

_NULLS = (b',"usage":null', b'"usage":null,', b', "usage": null', b'"usage": null, ')


def without_asked_usage(event: bytes) -> bytes | None:
    """One whole event (its blank line included) as the client would have had it without
    `include_usage`: None for the usage-only chunk, else without its `"usage":null` member."""
    if b'"usage"' not in event:
        return event
    if b'"usage":null' in event or b'"usage": null' in event:
        for pattern in _NULLS:
            if pattern in event:
                return event.replace(pattern, b"", 1)
        return event
    data = b"".join(line[5:] for line in event.splitlines() if line.startswith(b"data:"))
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return event
    if isinstance(parsed, dict) and parsed.get("choices") == [] and isinstance(parsed.get("usage"), dict):
        return None
    return event


def _event_end(buf: bytearray, start: int) -> int:
    """The index just past the first blank line at or after `start` (-1: none yet)."""
    lf = buf.find(b"\n\n", start)
    crlf = buf.find(b"\r\n\r\n", start)
    if crlf != -1 and (lf == -1 or crlf < lf):
        return crlf + 4
    return lf + 2 if lf != -1 else -1


class UsageAskedStream:
    """The reader of a passthrough stream the gateway asked usage for (`without_asked_usage` on
    every event), around the plain `reader` (`OpenAIPassthroughStream`), which reads `usage` and
    `complete` from the events that carry them; `rewrites`: the router stage passes on what `feed`
    returns, not the provider's bytes."""

    rewrites = True

    def __init__(self, reader: StreamTranslator) -> None:
        self._reader = reader
        self.usage: Usage | None = None
        self._held = bytearray()
        self._scanned = 0  # `_held[:_scanned]` has no blank line
        self._partial_passed = False

    @property
    def complete(self) -> bool:
        return bool(getattr(self._reader, "complete", True))

    @property
    def pending(self) -> bool:
        """The bytes passed on end inside an event (only after `finish` gave back a partial one)."""
        return self._partial_passed

    def feed(self, chunk: bytes) -> bytes:
        held = self._held
        held += chunk
        out: list[bytes] = []
        start = 0
        while (end := _event_end(held, max(start, self._scanned - 3))) != -1:
            event = bytes(held[start:end])
            start = end
            self._scanned = 0
            kept = without_asked_usage(event)
            if kept is None or (kept is event and b'"usage"' in event) or b"[DONE]" in event or b'"error"' in event:
                self._reader.feed(event)  # what the plain reader reads: usage, the end, an error
            if kept is not None:
                out.append(kept)
        if start:
            del held[:start]
        self._scanned = len(held)
        self.usage = self._reader.usage
        return b"".join(out)

    def finish(self) -> bytes:
        rest = bytes(self._held)
        self._held.clear()
        if rest:
            self._partial_passed = True
            self._reader.feed(rest)
            self.usage = self._reader.usage
        return rest
