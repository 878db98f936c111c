"""Processes for tests and benchmarks: a process and everything under it (not for the product)."""

from __future__ import annotations

from pathlib import Path


def descendants(pid: int) -> list[int]:
    """`pid` and every process under it, parents first (from /proc)."""
    out = [pid]
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for k in kids:
        out += descendants(int(k))
    return out
