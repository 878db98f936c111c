"""HPACK decoding of request header blocks for `frames.Connection`: `hpack`'s decoder, plus a
memory of blocks that cannot change its dynamic table.

Envoy's gRPC client sends every call's headers as literals without indexing, so each ext_proc
stream brings the same block, and decoding it with `hpack` costs more than the rest of the
stream's framing. A block made only of indexed fields and literals without (or never) indexing
(RFC 7541 §6.1, §6.2.2, §6.2.3) leaves the table as it was, so it decodes to the same headers
until a block that can change the table (incremental indexing, a size update) is decoded: that
one clears the memory. Not thread-safe, like the connection that owns it.
"""

from __future__ import annotations

from hpack import Decoder

_REMEMBERED = 64  # blocks; past that the memory starts over


class HeaderDecoder:
    def __init__(self, max_table_size: int) -> None:
        self._decoder = Decoder()
        self._decoder.max_allowed_table_size = max_table_size
        self._known: dict[bytes, dict[str, str]] = {}

    def decode(self, block: bytes) -> dict[str, str]:
        """Names and values as latin-1 text, in order; a new dict each call. Raises
        `hpack.exceptions.HPACKError` on a malformed block."""
        known = self._known.get(block)
        if known is not None:
            return dict(known)
        decoded = self._decoder.decode(block, raw=True)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in decoded}  # type: ignore[union-attr]
        if not table_neutral(block):
            self._known.clear()
        elif len(self._known) < _REMEMBERED:
            self._known[block] = dict(headers)
        else:
            self._known = {block: dict(headers)}
        return headers


def table_neutral(block: bytes) -> bool:
    """Whether decoding the well-formed `block` leaves the dynamic table unchanged."""
    try:
        pos, end = 0, len(block)
        while pos < end:
            first = block[pos]
            if first & 0x80:  # indexed field
                pos = _integer(block, pos, 7)[1]
            elif first < 0x20:  # literal without indexing (0000) or never indexed (0001)
                name_index, pos = _integer(block, pos, 4)
                if name_index == 0:
                    pos = _string_end(block, pos)
                pos = _string_end(block, pos)
            else:  # literal with incremental indexing (01), dynamic table size update (001)
                return False
        return pos == end
    except IndexError:
        return False


def _integer(block: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """(value, position after it) of an HPACK integer with an N-bit prefix (RFC 7541 §5.1)."""
    mask = (1 << prefix_bits) - 1
    value = block[pos] & mask
    pos += 1
    if value == mask:
        shift = 0
        while True:
            byte = block[pos]
            pos += 1
            value += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
    return value, pos


def _string_end(block: bytes, pos: int) -> int:
    length, pos = _integer(block, pos, 7)
    return pos + length
