"""HPACK decoding (RFC 7541) of request header blocks for `frames.Connection`: our own decoder,
field by field, with `hpack`'s static table, Huffman code table and exceptions.

Why not `hpack.Decoder`: with tracing on, Envoy sends every gRPC call (ext_proc streams,
rate-limit calls) a new `traceparent`, as a literal with incremental indexing, among fields that
are otherwise the same on every call (`:path` a Huffman-coded literal without indexing, the rest
indexed). `hpack` decodes the whole block each time, ~25 µs; here the unchanged fields are table
lookups, a repeated Huffman string is a dict lookup, the new `traceparent` is the only string
decoded, and a block that leaves the table alone (Envoy's blocks without tracing) is answered
from a memory of whole blocks.

Theory of operation: the dynamic table is a deque of (name, value, size), newest first, with its
size in bytes (32 + name + value per entry, RFC 7541 §4.1) and limit; an entry added past the
limit evicts the oldest ones, one larger than the limit empties the table, a size update (only
at the start of a block, at most `max_table_size`) evicts down to the new limit. Each
representation is decoded as RFC 7541 §6 says: indexed field (§6.1), literal with incremental
indexing (§6.2.1), without indexing (§6.2.2), never indexed (§6.2.3), size update (§6.3).
Huffman strings (§5.2) go through a byte-at-a-time table composed once from `hpack`'s nibble
table, and short ones (up to 256 coded bytes) are remembered by their coded bytes. Decoded
blocks are remembered by their bytes until a block changes the table. Errors and limits are
`hpack`'s: integers of at most 5 continuation bytes, a decoded header list of at most 64 KiB
(with 32 bytes per field), `HPACKDecodingError` subclasses for each failure. The tests
(tests/unit/extproc/h2grpc/test_headers.py) compare this decoder with `hpack.Decoder`, headers
and table after every block, on random blocks from `hpack.Encoder` (size updates, evictions,
Huffman or not, never indexed) and on random representations and bytes, and replay blocks
captured from Envoy with tracing on; tests/component/test_h2grpc.py and every integration test
run it under grpc-core and Envoy.

Cost, µs of CPU per header block, ours / `hpack.Decoder` (2026-12, CPython 3.11.7, the 2-core
development machine shared with other work):
    the same 8 fields each call (Envoy, no tracing)          0.10 / 11.5
    those and a new traceparent each call (tracing on)       3.4  / 18.8
    Envoy's captured traced blocks, 24 per connection,
      each replay from a fresh decoder (ext_proc, rate limit) 4.5-5.1 / 29-33
    reproduce: .venv/bin/python bench/bench_h2grpc.py --blocks
In `make bench`'s telemetry-on instance (every request traced) this took the rate-limit process
from ~240 to ~190 µs of CPU per request (two calls; ~170 with telemetry off).

Not thread-safe, like the connection that owns it.
"""

from __future__ import annotations

from collections import deque

from hpack.exceptions import (
    HPACKDecodingError,
    InvalidTableIndexError,
    InvalidTableSizeError,
    OversizedHeaderListError,
)
from hpack.huffman_table import HUFFMAN_COMPLETE, HUFFMAN_EMIT_SYMBOL, HUFFMAN_FAIL, HUFFMAN_TABLE
from hpack.table import HeaderTable

DEFAULT_TABLE_SIZE = 4096  # bytes: the dynamic table's limit before the encoder updates it
MAX_HEADER_LIST = 1 << 16  # bytes of decoded fields (with 32 per field) in one block, as `hpack`
_ENTRY_OVERHEAD = 32  # bytes added to name and value for a table entry's size (RFC 7541 §4.1)
_MAX_CONTINUATION = 5  # bytes of an integer after its prefix, as `hpack`
_REMEMBERED = 64  # blocks; past that the memory starts over
_REMEMBERED_STRINGS = 512  # Huffman strings; likewise
_REMEMBERED_STRING_BYTES = 256  # the longest Huffman string remembered (coded bytes)

# (name, value, size) by index: 0 is not a field; 1..61 are RFC 7541 Appendix A.
_STATIC: tuple[tuple[str, str, int], ...] = (("", "", 0), *(
    (n.decode("latin-1"), v.decode("latin-1"), len(n) + len(v) + _ENTRY_OVERHEAD) for n, v in HeaderTable.STATIC_TABLE))

# The Huffman decoder's steps: (next state, bytes decoded, may end), built on first use (see
# `_huffman_steps`) and published whole, so a thread never sees part of them.
_Steps = tuple[list[int], list[bytes], list[bool]]
_steps: _Steps | None = None


class HeaderDecoder:
    """One connection's HPACK decoder. `max_table_size` is the largest dynamic table size update
    the encoder may send (bytes)."""

    def __init__(self, max_table_size: int) -> None:
        self.max_table_size = max_table_size
        self._table: deque[tuple[str, str, int]] = deque()  # (name, value, size), newest first
        self._table_bytes = 0
        self._table_limit = DEFAULT_TABLE_SIZE
        self._known: dict[bytes, dict[str, str]] = {}
        self._strings: dict[bytes, str] = {}

    def decode(self, block: bytes) -> dict[str, str]:
        """Names and values as latin-1 text, in order (a repeated name keeps its last value); a new
        dict each call. Raises `hpack.exceptions.HPACKDecodingError` on a malformed block, after
        which the table is undefined: the connection must end."""
        known = self._known.get(block)
        if known is not None:
            return dict(known)
        try:
            headers, changed = self._decode(block)
        except IndexError:
            self._known.clear()
            raise HPACKDecodingError("truncated header block") from None
        except HPACKDecodingError:
            self._known.clear()
            raise
        if changed:
            self._known.clear()
        elif len(self._known) < _REMEMBERED:
            self._known[block] = dict(headers)
        else:
            self._known = {block: dict(headers)}
        return headers

    def _decode(self, block: bytes) -> tuple[dict[str, str], bool]:
        headers: dict[str, str] = {}
        table, static, strings = self._table, _STATIC, self._strings
        pos, end = 0, len(block)
        changed = False
        listed = 0
        while pos < end:
            first = block[pos]
            pos += 1
            if first & 0x80:  # indexed field (§6.1)
                index = first & 0x7F
                if index == 0x7F:
                    index, pos = _integer(block, pos, index)
                if index < 62:
                    if not index:
                        raise InvalidTableIndexError("index 0 in an indexed field")
                    name, value, size = static[index]
                elif index - 62 < len(table):
                    name, value, size = table[index - 62]
                else:
                    raise InvalidTableIndexError(f"no table entry {index}")
            else:
                if first & 0x40:  # literal with incremental indexing (§6.2.1)
                    index = first & 0x3F
                    if index == 0x3F:
                        index, pos = _integer(block, pos, index)
                elif first & 0x20:  # dynamic table size update (§6.3)
                    if headers:
                        raise HPACKDecodingError("table size update after a field")
                    size = first & 0x1F
                    if size == 0x1F:
                        size, pos = _integer(block, pos, size)
                    if size > self.max_table_size:
                        raise InvalidTableSizeError(f"table size {size} over {self.max_table_size}")
                    self._table_limit = size
                    self._evict()
                    changed = True
                    continue
                else:  # literal without indexing (§6.2.2) or never indexed (§6.2.3)
                    index = first & 0x0F
                    if index == 0x0F:
                        index, pos = _integer(block, pos, index)
                if not index:
                    name, pos = self._string(block, pos)
                elif index < 62:
                    name = static[index][0]
                elif index - 62 < len(table):
                    name = table[index - 62][0]
                else:
                    raise InvalidTableIndexError(f"no table entry {index}")
                coded = block[pos]  # the value (§5.2), the _string of the common case inline
                length = coded & 0x7F
                pos += 1
                if length == 0x7F:
                    length, pos = _integer(block, pos, length)
                stop = pos + length
                if stop > end:
                    raise HPACKDecodingError("truncated header block")
                if not coded & 0x80:
                    value = block[pos:stop].decode("latin-1")
                else:
                    raw = block[pos:stop]
                    value = strings.get(raw) or self._huffman(raw)
                pos = stop
                size = len(name) + len(value) + _ENTRY_OVERHEAD
                if first & 0x40:
                    self._add(name, value, size)
                    changed = True
            headers[name] = value
            listed += size
            if listed > MAX_HEADER_LIST:
                raise OversizedHeaderListError(f"header list over {MAX_HEADER_LIST} bytes")
        return headers, changed

    def _string(self, block: bytes, pos: int) -> tuple[str, int]:
        """A string literal (§5.2) at `pos`, and the position after it."""
        first = block[pos]
        length = first & 0x7F
        pos += 1
        if length == 0x7F:
            length, pos = _integer(block, pos, length)
        stop = pos + length
        if stop > len(block):
            raise HPACKDecodingError("truncated header block")
        if not first & 0x80:
            return block[pos:stop].decode("latin-1"), stop
        raw = block[pos:stop]
        return self._strings.get(raw) or self._huffman(raw), stop

    def _huffman(self, raw: bytes) -> str:
        """`huffman_decode(raw)`, remembered if short."""
        text = huffman_decode(raw)
        if len(raw) <= _REMEMBERED_STRING_BYTES:
            if len(self._strings) >= _REMEMBERED_STRINGS:
                self._strings.clear()
            self._strings[raw] = text
        return text

    def _add(self, name: str, value: str, size: int) -> None:
        table = self._table
        if size > self._table_limit:  # an entry larger than the table empties it (§4.4)
            table.clear()
            self._table_bytes = 0
            return
        table.appendleft((name, value, size))
        self._table_bytes += size
        self._evict()

    def _evict(self) -> None:
        table, used, limit = self._table, self._table_bytes, self._table_limit
        while used > limit:
            used -= table.pop()[2]
        self._table_bytes = used


def _integer(block: bytes, pos: int, value: int) -> tuple[int, int]:
    """The rest of an HPACK integer whose prefix is full (`value`), from `pos` (§5.1)."""
    shift = 0
    for _ in range(_MAX_CONTINUATION):
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise HPACKDecodingError("integer too long")


def huffman_decode(raw: bytes) -> str:
    """A Huffman-coded string (RFC 7541 §5.2, Appendix B) as latin-1 text. Raises
    `HPACKDecodingError` on a code that is invalid or ends badly (padding longer than 7 bits,
    not all ones, or EOS in the string)."""
    if not raw:
        return ""
    following, emitted, may_end = _steps or _huffman_steps()
    state = step = 0
    out = bytearray()
    try:
        for byte in raw:
            step = state | byte
            out += emitted[step]
            state = following[step]
    except IndexError:  # the state after an invalid code
        raise HPACKDecodingError("invalid Huffman string") from None
    if not may_end[step]:
        raise HPACKDecodingError("incomplete or invalid Huffman string")
    return out.decode("latin-1")


def _huffman_steps() -> _Steps:
    """`hpack`'s Huffman decoder table (a state machine fed 4 bits at a time: (next state, flags,
    symbol) at state × 16 + nibble) composed into one step per byte, at state × 256 + byte: the
    next state × 256 (past the table after an invalid code), the bytes decoded, whether the
    string may end there."""
    global _steps
    following: list[int] = []
    emitted: list[bytes] = []
    may_end: list[bool] = []
    failed = len(HUFFMAN_TABLE) // 16 << 8
    for state in range(len(HUFFMAN_TABLE) // 16):
        for byte in range(256):
            high_state, high_flags, high_symbol = HUFFMAN_TABLE[state * 16 + (byte >> 4)]
            low_state, low_flags, low_symbol = HUFFMAN_TABLE[high_state * 16 + (byte & 0x0F)]
            if (high_flags | low_flags) & HUFFMAN_FAIL:
                following.append(failed)
                emitted.append(b"")
                may_end.append(False)
                continue
            following.append(low_state << 8)
            emitted.append(bytes([high_symbol] if high_flags & HUFFMAN_EMIT_SYMBOL else []) + bytes(
                [low_symbol] if low_flags & HUFFMAN_EMIT_SYMBOL else []))
            may_end.append(bool(low_flags & HUFFMAN_COMPLETE))
    _steps = following, emitted, may_end
    return _steps
