"""extproc.h2grpc.headers: which HPACK blocks leave the dynamic table alone, and the memory of
decoded blocks never answering from a table that changed since."""

from __future__ import annotations

import pytest
from hpack import Encoder
from hpack.exceptions import HPACKError

from extproc.h2grpc.headers import HeaderDecoder, table_neutral

# Envoy 1.40's first ext_proc block on a connection (captured from tests/integration): literals
# without indexing for :path, te, x-forwarded-for; with incremental indexing for :authority,
# content-type and x-envoy-internal.
ENVOY_FIRST = bytes.fromhex(
    "8304a560b5773fa5d05b3b98855cbe5315761c8bf7657c1e525b2a1d1aec390a841ec635d8721508418c35492d941c9d622f94d761c9"
    "8640027465864d833505b11f5f8b1d75d0620d263d4c4d6564408cf2b16aee7f4b1aa496ca8747834d9697408bf2b4a7b3c0ec90b22d"
    "29ec870be25c0b89717f")
ENVOY_HEADERS = {":method": "POST", ":path": "/envoy.service.ext_proc.v3.ExternalProcessor/Process",
                 ":authority": "interlock_extproc", ":scheme": "http", "te": "trailers",
                 "content-type": "application/grpc", "x-envoy-internal": "true", "x-forwarded-for": "192.0.2.2"}


def literal(first: int, name: bytes | None, value: bytes) -> bytes:
    """A literal field: `first` carries the representation bits and a small name index."""
    out = bytes([first])
    if name is not None:
        out += bytes([len(name)]) + name
    return out + bytes([len(value)]) + value


NEUTRAL = {
    "indexed static fields": b"\x82\x86\x84",
    "an indexed field past 127 (multi-byte index)": b"\xff\x01",
    "a literal without indexing, indexed name": literal(0x04, None, b"/x"),
    "a literal without indexing, new name": literal(0x00, b"x-a", b"1"),
    "a literal never indexed": literal(0x10, b"authorization", b"secret"),
    "a literal without indexing, name index 15+": bytes([0x0F, 0x10]) + b"\x01a",
    "Huffman strings, never indexed": Encoder().encode([("x-key", "a secret value", True)], huffman=True),
    "the empty block": b"",
}
CHANGING = {
    "a literal with incremental indexing": literal(0x40, b"x-a", b"1"),
    "a literal with incremental indexing, indexed name": literal(0x41, None, b"host"),
    "a dynamic table size update": b"\x3f\xe1\x1f",
    "Envoy's first block on a connection": ENVOY_FIRST,
}


@pytest.mark.parametrize("name", NEUTRAL)
def test_blocks_that_leave_the_table_alone(name: str) -> None:
    assert table_neutral(NEUTRAL[name])


@pytest.mark.parametrize("name", CHANGING)
def test_blocks_that_may_change_the_table(name: str) -> None:
    assert not table_neutral(CHANGING[name])


def test_truncated_blocks_are_not_called_neutral() -> None:
    assert not table_neutral(b"\xff")
    assert not table_neutral(literal(0x00, b"x-a", b"123")[:-1])


def test_envoys_block_decodes_and_the_next_ones_are_remembered() -> None:
    dec = HeaderDecoder(max_table_size=65536)
    assert dec.decode(ENVOY_FIRST) == ENVOY_HEADERS
    enc = Encoder()
    first = enc.encode(list(ENVOY_HEADERS.items()))
    later = enc.encode(list(ENVOY_HEADERS.items()))
    dec = HeaderDecoder(max_table_size=65536)
    assert dec.decode(first) == ENVOY_HEADERS and not table_neutral(first)
    assert table_neutral(later) and len(later) == len(ENVOY_HEADERS)
    got = dec.decode(later)
    assert got == ENVOY_HEADERS
    got["mutated"] = "by the owner"
    assert dec.decode(later) == ENVOY_HEADERS


def test_a_remembered_block_is_forgotten_when_the_table_changes() -> None:
    enc = Encoder()
    dec = HeaderDecoder(max_table_size=65536)
    dec.decode(enc.encode([("x-a", "1")]))  # indexed as dynamic entry 62
    by_index = b"\xbe"  # indexed field 62
    assert dec.decode(by_index) == {"x-a": "1"}
    dec.decode(enc.encode([("x-b", "2")]))  # now 62 is x-b
    assert dec.decode(by_index) == {"x-b": "2"}


def test_a_malformed_block_raises_hpack_error_and_is_not_remembered() -> None:
    dec = HeaderDecoder(max_table_size=65536)
    with pytest.raises(HPACKError):
        dec.decode(b"\xbe")  # no dynamic entry 62 yet
    dec.decode(Encoder().encode([("x-a", "1")]))
    assert dec.decode(b"\xbe") == {"x-a": "1"}


def test_the_memory_is_bounded() -> None:
    dec = HeaderDecoder(max_table_size=65536)
    for i in range(200):
        block = literal(0x00, b"x-n", str(i).encode())
        assert dec.decode(block) == {"x-n": str(i)}
        assert dec.decode(block) == {"x-n": str(i)}
    assert len(dec._known) <= 64
