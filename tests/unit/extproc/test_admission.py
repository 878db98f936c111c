"""Concurrency budgets: the shared board (across processes) and the gate (spill, priority shares,
bounded deadline-aware waiting, shedding with Retry-After)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from pathlib import Path

import pytest

from extproc import errors
from extproc.admission import Board, Candidate, Gate
from extproc.config.model import Admission


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def gate(board: Board | None = None, **settings: float) -> Gate:
    cfg = Admission(**settings)  # type: ignore[arg-type]
    return Gate(board or Board(), lambda: cfg, asyncio.get_running_loop().time)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_board_counts_across_rows_and_a_restarted_row_starts_empty(tmp_path: Path) -> None:
    path = str(tmp_path / "board")
    a, b = Board(path, 0, 2), Board(path, 1, 2)
    assert a.try_acquire("d", 3) and b.try_acquire("d", 3) and a.try_acquire("d", 3)
    assert not b.try_acquire("d", 3)
    assert a.in_flight("d") == b.in_flight("d") == 3
    assert b.try_acquire("other", 1) and a.in_flight("other") == 1
    # Worker 0 dies holding two slots; its replacement clears its row.
    Board(path, 0, 2)
    assert b.in_flight("d") == 1
    b.release("d")
    b.release("d")  # a second release never goes below zero
    assert a.in_flight("d") == 0
    with pytest.raises(ValueError):
        Board(path, 2, 2)


def _hammer(path: str, row: int, rows: int, cap: int, rounds: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    board = Board(path, row, rows)
    peak = taken = 0
    for _ in range(rounds):
        if board.try_acquire("hot", cap):
            taken += 1
            peak = max(peak, board.in_flight("hot"))
            board.release("hot")
    out.put((peak, taken))


def test_processes_racing_for_the_last_slots_never_exceed_the_cap(tmp_path: Path) -> None:
    path, rows, cap = str(tmp_path / "board"), 4, 3
    Board(path, 0, rows)  # create the file
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(path, i, rows, cap, 3000, out)) for i in range(rows)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    assert all(p.exitcode == 0 for p in procs)
    assert max(peak for peak, _ in results) <= cap
    assert sum(taken for _, taken in results) > 0
    assert Board(path, 0, rows).in_flight("hot") == 0


def cands(*budgets: int, ttft: float = 0.0, service: float = 1.0) -> list[Candidate]:
    return [Candidate(f"d{i}", b, ttft, service) for i, b in enumerate(budgets)]


def test_spills_to_the_next_candidate_then_sheds_with_retry_after() -> None:
    async def body() -> None:
        g = gate(queue_timeout=0.0)
        cs = cands(2, 1, service=4.0)
        tickets = [await g.admit(cs, "interactive", None) for _ in range(3)]
        assert [t.index for t in tickets] == [0, 0, 1]
        assert g.spilled == 1
        with pytest.raises(errors.GatewayError) as e:
            await g.admit(cs, "interactive", None)
        assert e.value.status == 429 and e.value.headers["retry-after"] == "2"  # 4 s / budget 2 (the best one)
        g.release(tickets[0])
        g.release(tickets[0])  # a ticket releases once
        assert g.board.in_flight("d0") == 1
        assert (await g.admit(cs, "interactive", None)).index == 0
    run(body())


def test_priority_shares_keep_the_top_of_the_budget_for_interactive() -> None:
    async def body() -> None:
        g = gate(queue_timeout=0.0, batch_share=0.5, default_share=0.75)
        cs = cands(4)
        await g.admit(cs, "batch", None)
        await g.admit(cs, "batch", None)
        with pytest.raises(errors.GatewayError):
            await g.admit(cs, "batch", None)
        await g.admit(cs, "default", None)
        with pytest.raises(errors.GatewayError):
            await g.admit(cs, "default", None)
        await g.admit(cs, "interactive", None)
        assert g.board.in_flight("d0") == 4
        with pytest.raises(errors.GatewayError) as e:
            await g.admit(cs, "interactive", None)
        assert e.value.status == 429
    run(body())


def test_a_waiting_request_takes_the_slot_freed_while_it_waits() -> None:
    async def body() -> None:
        g = gate(queue_timeout=2.0)
        cs = cands(1)
        held = await g.admit(cs, "default", None)
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, g.release, held)
        start = loop.time()
        t = await g.admit(cs, "default", None)
        assert 0.04 <= t.waited_s < 1.0 and loop.time() - start < 1.0
        assert g.queued == 1
    run(body())


def test_waiting_is_bounded_by_queue_timeout_the_deadline_and_the_room() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        g = gate(queue_timeout=0.2)
        cs = cands(1, ttft=0.05)
        await g.admit(cs, "default", None)
        start = loop.time()
        with pytest.raises(errors.GatewayError):
            await g.admit(cs, "default", None)
        assert 0.18 <= loop.time() - start < 0.6
        # The deadline leaves 0.1 s minus the expected 0.05 s to first token: waits ~0.05 s.
        start = loop.time()
        with pytest.raises(errors.GatewayError) as e:
            await g.admit(cs, "default", loop.time() + 0.1)
        assert loop.time() - start < 0.15 and e.value.status == 429
        # One waiter per budget slot per worker: the next one is shed at once.
        waiter = asyncio.ensure_future(g.admit(cs, "default", None))
        await asyncio.sleep(0.01)
        start = loop.time()
        with pytest.raises(errors.GatewayError):
            await g.admit(cs, "default", None)
        assert loop.time() - start < 0.05
        with pytest.raises(errors.GatewayError):
            await waiter
    run(body())


def test_a_deadline_shorter_than_every_candidates_time_to_first_token_is_rejected_at_once() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        g = gate()
        with pytest.raises(errors.GatewayError) as e:
            await g.admit([Candidate("a", 0, 0.8, 1.0), Candidate("b", 4, 0.5, 1.0)], "interactive",
                          loop.time() + 0.3)
        assert e.value.status == 504 and e.value.code == "deadline_exceeded"
        assert g.deadline_rejected == 1
        # One candidate can make it: admitted, no budget counted for a deployment without one.
        t = await g.admit([Candidate("a", 0, 0.1, 1.0)], "interactive", loop.time() + 0.3)
        assert t.index == 0 and not t.counted
    run(body())


def test_board_file_is_private(tmp_path: Path) -> None:
    Board(str(tmp_path / "b"), 0, 1)
    assert os.stat(tmp_path / "b").st_mode & 0o077 == 0
