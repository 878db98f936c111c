"""The pool board: one small memory-mapped file per pool in the run directory, written by the
pod's one scraper and read by every worker per request.

Layout (little endian): header `seq u64, count u32, flags u32, written f64`, then `MAX_ENDPOINTS`
records of `address 48s, scraped f64, waiting u32, running u32, kv f32, max_running u32, flags u32,
slot u32` (`scraped`: `time.monotonic()` of the newest good scrape, 0 = none; the monotonic clock is
system-wide on Linux, so ages compare across processes). Record flag 1: down (the last scrape
could not connect).

Concurrency: a seqlock. The one writer makes `seq` odd, writes, makes it even again; a reader
reads `seq`, the records, `seq` again, and retries when the two differ or are odd. A reader that
sees the same even `seq` as last time reuses what it parsed then (`BoardReader.read`), so the
per-request cost is one 8-byte read plus the ages: measured 1.3 µs per request (4 endpoints, board
unchanged) and 2.8 µs when the board changed since the last read (`python -m extproc.pools.board`,
2-core development machine under load).

Pick counters (`PickCounters`): one more file per worker and pool, `MAX_ENDPOINTS + 1` u64 slots
written only by that worker (picks per endpoint slot, then the count of least-request fallbacks);
the scraper sums them for its metrics.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from collections.abc import Sequence
from pathlib import Path

from routing.pool import EndpointLoad

MAX_ENDPOINTS = 256
_HEADER = struct.Struct("<QIId")
_RECORD = struct.Struct("<48sdIIfIII")
SIZE = _HEADER.size + MAX_ENDPOINTS * _RECORD.size
FLAG_DOWN = 1
_SEQ = struct.Struct("<Q")


def board_path(run_dir: str | Path, pool: str) -> Path:
    return Path(run_dir) / f"pool-{pool}.board"


def counters_path(run_dir: str | Path, pool: str, worker: int) -> Path:
    """`worker`: the worker's process id (a restarted worker starts a file of its own; the old
    one's counts stay in the sums, as a counter's should)."""
    return Path(run_dir) / f"pool-{pool}.picks.{worker}"


def _open(path: Path, size: int) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


class BoardWriter:
    """The scraper's side. `publish` replaces every record at once."""

    def __init__(self, path: Path) -> None:
        self.map = _open(path, SIZE)
        self.seq = _SEQ.unpack_from(self.map, 0)[0] & ~1

    def publish(self, records: Sequence[tuple[str, float, int, int, float, int, bool, int]]) -> None:
        """`(address, scraped, waiting, running, kv, max_running, down, slot)` per endpoint; `slot`:
        the endpoint's pick-counter slot, kept by the scraper for as long as the address exists."""
        m = self.map
        self.seq += 1
        _SEQ.pack_into(m, 0, self.seq)  # odd: writing
        for i, (address, scraped, waiting, running, kv, max_running, down, slot) in enumerate(records[:MAX_ENDPOINTS]):
            _RECORD.pack_into(m, _HEADER.size + i * _RECORD.size, address.encode(), scraped, waiting, running, kv,
                              max_running, FLAG_DOWN if down else 0, slot)
        self.seq += 1
        _HEADER.pack_into(m, 0, self.seq, min(len(records), MAX_ENDPOINTS), 0, time.monotonic())

    def close(self) -> None:
        self.map.close()


class BoardReader:
    """A worker's side; `read` returns the endpoints with their ages as of `now`. A board not
    written yet (no scraper, or not started) reads as no endpoints."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.map: mmap.mmap | None = None
        self.seq = -1
        self.rows: list[tuple[str, float, int, int, float, int, bool, int]] = []

    def _mapped(self) -> mmap.mmap | None:
        if self.map is None:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except OSError:
                return None
            try:
                if os.fstat(fd).st_size < SIZE:
                    return None
                self.map = mmap.mmap(fd, SIZE, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
        return self.map

    def rows_now(self) -> list[tuple[str, float, int, int, float, int, bool, int]]:
        m = self._mapped()
        if m is None:
            return []
        seq = _SEQ.unpack_from(m, 0)[0]
        if seq == self.seq:
            return self.rows
        for _ in range(100):
            seq, count, _, _ = _HEADER.unpack_from(m, 0)
            if seq & 1:
                continue
            rows = []
            for i in range(count):
                a, scraped, waiting, running, kv, max_running, flags, slot = _RECORD.unpack_from(
                    m, _HEADER.size + i * _RECORD.size)
                rows.append((a.rstrip(b"\0").decode(), scraped, waiting, running, kv, max_running,
                             bool(flags & FLAG_DOWN), slot))
            if _SEQ.unpack_from(m, 0)[0] == seq:
                self.seq, self.rows = seq, rows
                return rows
        return self.rows  # the writer kept writing: the last whole view

    def read(self, now: float | None = None) -> list[EndpointLoad]:
        now = time.monotonic() if now is None else now
        return [EndpointLoad(a, waiting, running, kv, (now - scraped) if scraped else float("inf"), down, max_running)
                for a, scraped, waiting, running, kv, max_running, down, _ in self.rows_now()]


_U64 = struct.Struct("<Q")
COUNTERS_SIZE = (MAX_ENDPOINTS + 1) * 8


class PickCounters:
    """One worker's pick counts for one pool, by endpoint slot (each board record's `slot`), and
    its least-request fallbacks (the last slot). Written only by that worker."""

    def __init__(self, path: Path, writable: bool = True) -> None:
        self.map = _open(path, COUNTERS_SIZE) if writable else None
        self.path = path

    def add(self, slot: int) -> None:
        if self.map is not None and 0 <= slot <= MAX_ENDPOINTS:
            _U64.pack_into(self.map, slot * 8, _U64.unpack_from(self.map, slot * 8)[0] + 1)

    def fallback(self) -> None:
        self.add(MAX_ENDPOINTS)


def read_counters(path: Path) -> list[int]:
    try:
        data = path.read_bytes()[:COUNTERS_SIZE]
    except OSError:
        return [0] * (MAX_ENDPOINTS + 1)
    data = data.ljust(COUNTERS_SIZE, b"\0")
    return [_U64.unpack_from(data, i * 8)[0] for i in range(MAX_ENDPOINTS + 1)]


def _bench() -> None:  # pragma: no cover - the figure in the module docstring
    import tempfile
    import timeit

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "b"
        w = BoardWriter(path)
        rows = [(f"127.0.0.{10 + i}:8000", time.monotonic(), 1, 2, 0.5, 0, False, i) for i in range(4)]
        w.publish(rows)
        r = BoardReader(path)
        r.read()
        n = 20000
        same = timeit.timeit(r.read, number=n) / n * 1e6

        def changed() -> None:
            w.publish(rows)
            r.read()
        publish = timeit.timeit(lambda: w.publish(rows), number=n) / n * 1e6
        both = timeit.timeit(changed, number=n) / n * 1e6
        print(f"read unchanged: {same:.2f} us; read after a change: {both - publish:.2f} us; publish: {publish:.2f} us")


if __name__ == "__main__":
    _bench()


PREFIX_SLOTS = 1 << 16
PREFIX_SIZE = PREFIX_SLOTS * 8
_TAG_MASK = ~0xFFFF & 0xFFFFFFFFFFFFFFFF


class SharedPrefixes:
    """Prompt-prefix hash → the pick-counter slot of the endpoint that last served it, shared by
    every worker of the pod (one file per pool), so a prefix stays on one server whichever worker
    routes it. A direct-mapped table of 65,536 eight-byte words (48-bit tag of the hash, 16-bit
    slot + 1); each entry is one aligned 8-byte store, so readers see an old or a new word, never
    a torn one. A collision overwrites: an entry is a hint, never a promise. The hashes are of
    the leading 1, 2, 4, … blocks (`routing.pool.prefix_hashes`), the longest known one wins."""

    def __init__(self, path: Path) -> None:
        self.map = _open(path, PREFIX_SIZE)

    def lookup(self, hashes: Sequence[int]) -> int | None:
        m = self.map
        for i in range(len(hashes) - 1, -1, -1):
            h = hashes[i] * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF
            word = _U64.unpack_from(m, (h % PREFIX_SLOTS) * 8)[0]
            if word and word & _TAG_MASK == h & _TAG_MASK:
                return (word & 0xFFFF) - 1
        return None

    def remember(self, hashes: Sequence[int], slot: int) -> None:
        m = self.map
        for i in range(len(hashes)):
            h = hashes[i] * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF
            _U64.pack_into(m, (h % PREFIX_SLOTS) * 8, (h & _TAG_MASK) | (slot + 1))


def prefixes_path(run_dir: str | Path, pool: str) -> Path:
    return Path(run_dir) / f"pool-{pool}.prefixes"
