"""Server-sent events (text/event-stream): an incremental decoder and an encoder.

Decoder theory of operation (the WHATWG event-stream grammar, sans-IO like h11):

    bytes ──feed()──▶ buffer ──split at CR, LF or CRLF──▶ lines ──▶ fields ──blank line──▶ Event

`SSEDecoder` keeps the bytes of the unfinished last line in an explicit buffer, so chunks may
split the stream anywhere: inside a field, between CR and LF, or inside a multi-byte UTF-8
character (lines are decoded only once complete, and CR/LF never occur inside a UTF-8 sequence).
A CR that ends a chunk ends its line at once; a LF that starts the next chunk is then skipped.

Fields: `data` lines are joined with "\\n"; `event` names the event; `id` and `retry` are parsed
away; lines starting with ":" are comments; one space after the colon is removed. A blank line
dispatches the event if it had at least one `data` line. At end of stream an unterminated event
is not dispatched (`pending` tells whether one was cut off).

Lifetime: one decoder per stream; not thread-safe. Decoding never raises: invalid UTF-8 is
replaced with U+FFFD.
"""

from __future__ import annotations

from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched server-sent event."""

    data: str
    event: str | None = None


class SSEDecoder:
    """Incremental event-stream decoder: `feed(bytes) -> list[Event]`."""

    __slots__ = ("_buffer", "_data", "_event", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._data: list[str] = []
        self._event: str | None = None
        self._skip_lf = False
        self._started = False

    @property
    def pending(self) -> bool:
        """True when bytes of an event that was never terminated by a blank line are held."""
        return bool(self._buffer) or bool(self._data) or self._event is not None

    def feed(self, chunk: bytes) -> list[Event]:
        """Take the next bytes of the stream; return the events they complete, in order."""
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
        buffer = self._buffer
        buffer += chunk
        if not self._started:
            if len(buffer) < 3 and _BOM.startswith(buffer):
                return []
            self._started = True
            if buffer.startswith(_BOM):
                del buffer[:3]
        if 0x0A not in chunk and 0x0D not in chunk:
            return []
        lines = buffer.splitlines(keepends=True)
        if lines[-1].endswith((b"\n", b"\r")):
            self._buffer = bytearray()
            self._skip_lf = lines[-1].endswith(b"\r")
        else:
            self._buffer = lines.pop()
        events: list[Event] = []
        for raw in lines:
            self._line(raw.rstrip(b"\r\n").decode("utf-8", "replace"), events)
        return events

    def _line(self, line: str, events: list[Event]) -> None:
        if not line:
            if self._data:
                events.append(Event("\n".join(self._data), self._event))
            self._data = []
            self._event = None
            return
        if line[0] == ":":
            return
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value or None


def encode_event(data: bytes | str, event: str | None = None) -> bytes:
    """One event on the wire: `[event: <name>\\n]data: <line>\\n…\\n`. Multi-line data becomes one
    `data:` line per line, so `SSEDecoder` gives back exactly `data`."""
    raw = data.encode() if isinstance(data, str) else data
    head = b"event: " + event.encode() + b"\n" if event is not None else b""
    if b"\n" not in raw and b"\r" not in raw:
        return head + b"data: " + raw + b"\n\n"
    lines = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


DONE = b"data: [DONE]\n\n"
