"""extproc.h2grpc.headers: our HPACK decoder against `hpack.Decoder` (the same headers and the same
dynamic table after every block, the same blocks refused), Huffman strings, and the memory of
decoded blocks never answering from a table that changed since."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hpack import Decoder, Encoder
from hpack.exceptions import HPACKError
from hpack.hpack import encode_integer
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extproc.h2grpc.headers import MAX_HEADER_LIST, HeaderDecoder, huffman_decode

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
MAX_TABLE = 65536  # what frames.Connection allows
HUFFMAN = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


def literal(first: int, name: bytes | None, value: bytes) -> bytes:
    """A literal field: `first` carries the representation bits and a small name index."""
    out = bytes([first])
    if name is not None:
        out += bytes([len(name)]) + name
    return out + bytes([len(value)]) + value


class Oracle:
    """`hpack.Decoder` as frames.Connection configured it before, its output in our format."""

    def __init__(self) -> None:
        self.decoder = Decoder()
        self.decoder.max_allowed_table_size = MAX_TABLE

    def decode(self, block: bytes) -> dict[str, str]:
        return {k.decode("latin-1"): v.decode("latin-1")
                for k, v in self.decoder.decode(block, raw=True)}  # type: ignore[union-attr]

    def table(self) -> list[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.decoder.header_table.dynamic_entries]


def same_outcome(ours: HeaderDecoder, oracle: Oracle, block: bytes) -> bool:
    """Decode `block` with both; assert they agree (headers and table, or both refuse it).
    Whether both decoded it."""
    try:
        want = oracle.decode(block)
    except HPACKError:
        with pytest.raises(HPACKError):
            ours.decode(block)
        return False
    assert ours.decode(block) == want
    assert [(n, v) for n, v, _ in ours._table] == oracle.table()
    assert ours._table_bytes == oracle.decoder.header_table._current_size
    return True


# -- random header lists through hpack.Encoder ---------------------------------------------------

NAMES = st.sampled_from([b":path", b":authority", b"content-type", b"te", b"traceparent", b"x-request-id",
                         b"authorization", b"grpc-timeout", b"x-a", b"x-b"]) | st.binary(min_size=1, max_size=12)
VALUES = st.sampled_from([b"", b"POST", b"/x", b"application/grpc", b"trailers"]) | st.binary(max_size=80)
FIELD = st.tuples(NAMES, VALUES, st.booleans())  # (name, value, sensitive: never indexed)
BLOCK = st.tuples(st.lists(FIELD, max_size=12), st.booleans(),  # fields, Huffman
                  st.none() | st.sampled_from([0, 64, 200, 1024, 4096, 65536]) | st.integers(0, MAX_TABLE))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(BLOCK, min_size=1, max_size=12))
def test_blocks_from_hpacks_encoder_decode_as_hpack_does(blocks: list) -> None:
    enc, ours, oracle = Encoder(), HeaderDecoder(MAX_TABLE), Oracle()
    for fields, huffman, table_size in blocks:
        if table_size is not None:
            enc.header_table_size = table_size  # a size update starts the next block
        assert same_outcome(ours, oracle, enc.encode(fields, huffman=huffman))
        repeat = enc.encode(fields, huffman=huffman)  # mostly indexed fields now
        assert same_outcome(ours, oracle, repeat)
        if repeat in ours._known:  # it left the table alone: decoded again, from the memory
            assert same_outcome(ours, oracle, repeat)


# -- every representation, by hand ----------------------------------------------------------------

def string(raw: bytes, huffman: bool) -> bytes:
    if huffman:
        coded = HUFFMAN.encode(raw)
        head = encode_integer(len(coded), 7)
        head[0] |= 0x80
        return bytes(head) + coded
    return bytes(encode_integer(len(raw), 7)) + raw


@st.composite
def representation(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["indexed", "incremental", "without", "never", "size"]))
    if kind == "indexed":
        return _prefixed(0x80, 7, draw(st.integers(0, 140)))
    if kind == "size":
        return _prefixed(0x20, 5, draw(st.sampled_from([0, 50, 300, 4096, MAX_TABLE, MAX_TABLE + 1])))
    first, bits = {"incremental": (0x40, 6), "without": (0x00, 4), "never": (0x10, 4)}[kind]
    name_index = draw(st.integers(0, 120))
    out = _prefixed(first, bits, name_index)
    if not name_index:
        out += string(draw(NAMES), draw(st.booleans()))
    return out + string(draw(VALUES), draw(st.booleans()))


def _prefixed(first: int, bits: int, value: int) -> bytes:
    out = encode_integer(value, bits)
    out[0] |= first
    return bytes(out)


SIZE_UPDATE = st.sampled_from([0, 40, 100, 300, 4096]).map(lambda n: _prefixed(0x20, 5, n))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.lists(SIZE_UPDATE, max_size=2), st.lists(representation(), max_size=10)),
                min_size=1, max_size=10))
def test_every_representation_decodes_as_hpack_does(blocks: list[tuple[list[bytes], list[bytes]]]) -> None:
    """Indexes past the table, names by index, size updates first (evicting; a small table
    emptied by an entry larger than it) and anywhere (refused after a field or over the maximum),
    Huffman and not: the same headers, the same table, the same refusals."""
    ours, oracle = HeaderDecoder(MAX_TABLE), Oracle()
    for updates, fields in blocks:
        if not same_outcome(ours, oracle, b"".join(updates + fields)):
            return  # a refused block ends the connection


def test_the_table_holds_exactly_its_size_and_an_entry_larger_empties_it() -> None:
    ours, oracle = HeaderDecoder(MAX_TABLE), Oracle()
    assert same_outcome(ours, oracle, _prefixed(0x20, 5, 100) + literal(0x40, b"x-a", b"v" * 65))
    assert ours._table_bytes == 100 and len(ours._table) == 1  # 32 + 3 + 65: a fit, not an eviction
    assert same_outcome(ours, oracle, literal(0x40, b"x-a", b"1"))  # evicts the first
    assert [(n, v) for n, v, _ in ours._table] == [("x-a", "1")]
    assert same_outcome(ours, oracle, _prefixed(0x20, 5, 30))  # a size update under its 36 bytes
    assert not ours._table and ours._table_bytes == 0
    assert same_outcome(ours, oracle, _prefixed(0x20, 5, 100) + literal(0x40, b"x-a", b"1"))
    assert same_outcome(ours, oracle, literal(0x40, b"x-b", b"v" * 70))  # 32 + 3 + 70 > 100
    assert not ours._table and ours._table_bytes == 0
    assert same_outcome(ours, oracle, literal(0x40, b"x-b", b"v" * 70))  # 32 + 3 + 70 > 100
    assert not ours._table and ours._table_bytes == 0


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=4))
def test_arbitrary_bytes_are_refused_or_decoded_as_hpack_does(blocks: list[bytes]) -> None:
    ours, oracle = HeaderDecoder(MAX_TABLE), Oracle()
    for block in blocks:
        if not same_outcome(ours, oracle, block):
            return


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_huffman_strings_decode_as_encoded(raw: bytes) -> None:
    assert huffman_decode(HUFFMAN.encode(raw)) == raw.decode("latin-1")


@pytest.mark.parametrize("coded", [
    b"\xff\xff\xff\xff",  # EOS (30 ones) inside the string
    b"\x1f\xff",  # 'a' (00011), then 11 bits of padding: longer than 7
    b"\x18",  # 'a', then padding of zeros
    b"\xfe",  # the first 7 bits of a longer code, not padding of ones... then the end
])
def test_bad_huffman_strings_are_refused_as_hpack_refuses_them(coded: bytes) -> None:
    from hpack.huffman_table import decode_huffman
    with pytest.raises(HPACKError):
        decode_huffman(coded)
    with pytest.raises(HPACKError):
        huffman_decode(coded)


# -- cases by name ---------------------------------------------------------------------------------

def test_envoys_block_decodes_and_the_next_ones_are_remembered() -> None:
    dec = HeaderDecoder(max_table_size=MAX_TABLE)
    assert dec.decode(ENVOY_FIRST) == ENVOY_HEADERS
    enc = Encoder()
    first = enc.encode(list(ENVOY_HEADERS.items()))
    later = enc.encode(list(ENVOY_HEADERS.items()))
    dec = HeaderDecoder(max_table_size=MAX_TABLE)
    assert dec.decode(first) == ENVOY_HEADERS and not dec._known
    assert len(later) == len(ENVOY_HEADERS)  # all indexed
    got = dec.decode(later)
    assert got == ENVOY_HEADERS and later in dec._known
    got["mutated"] = "by the owner"
    assert dec.decode(later) == ENVOY_HEADERS


def test_a_new_traceparent_per_call_is_the_only_field_decoded_again() -> None:
    """Envoy with tracing: each call's block indexes a new traceparent; the others come from the
    table, so the block after 100 calls is still right (and evictions kept the table in step)."""
    enc, ours, oracle = Encoder(), HeaderDecoder(MAX_TABLE), Oracle()
    for i in range(100):
        fields = [*ENVOY_HEADERS.items(), ("traceparent", f"00-{i * 7919:032x}-{i:016x}-01")]
        block = enc.encode(fields, huffman=True)
        assert ours.decode(block) == dict(fields)
        oracle.decode(block)
    assert [(n, v) for n, v, _ in ours._table] == oracle.table()
    assert ours._table_bytes <= 4096


def envoy_traced_connections() -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    lines = (Path(__file__).parent / "envoy_traced_blocks.txt").read_text().splitlines()
    for line in lines:
        if line in ("# extproc", "# ratelimit"):
            blocks = out[line[2:]] = []
        elif not line.startswith("#"):
            blocks.append(bytes.fromhex(line))
    return out


@pytest.mark.parametrize("server", ["extproc", "ratelimit"])
def test_envoys_traced_calls_decode_as_hpack_decodes_them(server: str) -> None:
    """Blocks Envoy sent with tracing on (tests/unit/extproc/h2grpc/envoy_traced_blocks.txt): a
    health check, then calls, with `traceparent`s changing from call to call (a new one indexed each
    time) and `:path` a Huffman literal."""
    ours, oracle = HeaderDecoder(MAX_TABLE), Oracle()
    blocks = envoy_traced_connections()[server]
    calls = []
    for block in blocks:
        got = ours.decode(block)
        assert got == oracle.decode(block)
        assert [(n, v) for n, v, _ in ours._table] == oracle.table()
        calls.append(got)
    paths = {c[":path"] for c in calls[1:]}
    assert paths == {"/envoy.service.ext_proc.v3.ExternalProcessor/Process" if server == "extproc"
                     else "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"}
    parents = [c["traceparent"] for c in calls[1:]]
    assert len(set(parents)) > 5 and all(re.fullmatch("00-[0-9a-f]{32}-[0-9a-f]{16}-01", p) for p in parents)


def test_a_remembered_block_is_forgotten_when_the_table_changes() -> None:
    enc = Encoder()
    dec = HeaderDecoder(max_table_size=MAX_TABLE)
    dec.decode(enc.encode([("x-a", "1")]))  # indexed as dynamic entry 62
    by_index = b"\xbe"  # indexed field 62
    assert dec.decode(by_index) == {"x-a": "1"}
    dec.decode(enc.encode([("x-b", "2")]))  # now 62 is x-b
    assert dec.decode(by_index) == {"x-b": "2"}


def test_a_malformed_block_raises_hpack_error_and_is_not_remembered() -> None:
    dec = HeaderDecoder(max_table_size=MAX_TABLE)
    with pytest.raises(HPACKError):
        dec.decode(b"\xbe")  # no dynamic entry 62 yet
    dec.decode(Encoder().encode([("x-a", "1")]))
    assert dec.decode(b"\xbe") == {"x-a": "1"}


@pytest.mark.parametrize("block", [
    b"\x80",  # index 0
    b"\xff",  # an integer cut short
    b"\xff\x80\x80\x80\x80\x80\x01",  # an integer of 6 continuation bytes
    literal(0x00, b"x-a", b"123")[:-1],  # a value cut short
    b"\x82\x20",  # a size update after a field
    b"\x3f\xe2\xff\x03",  # a size update over the maximum (65537)
    b"\x00\x81\xff\x00",  # a Huffman name with EOS in it
    b"\x0f\x2f\x01a",  # a name index past the table (62 + 0)
])
def test_malformed_blocks_are_refused(block: bytes) -> None:
    with pytest.raises(HPACKError):
        Oracle().decode(block)
    with pytest.raises(HPACKError):
        HeaderDecoder(MAX_TABLE).decode(block)


def test_a_header_list_over_the_limit_is_refused() -> None:
    enc = Encoder()
    big = enc.encode([("x-big", "v" * 4000)])  # indexed, 4037 bytes of the 4096
    dec = HeaderDecoder(MAX_TABLE)
    dec.decode(big)
    fits = b"\xbe" * (MAX_HEADER_LIST // 4037)  # the same field again and again
    assert dec.decode(fits) == {"x-big": "v" * 4000}
    with pytest.raises(HPACKError):
        dec.decode(fits + b"\xbe")


def test_the_memory_is_bounded() -> None:
    dec = HeaderDecoder(max_table_size=MAX_TABLE)
    for i in range(200):
        block = literal(0x00, b"x-n", str(i).encode())
        assert dec.decode(block) == {"x-n": str(i)}
        assert dec.decode(block) == {"x-n": str(i)}
    assert len(dec._known) <= 64
