"""`freeze_startup_heap`: what is alive at startup is left out of the collector's full passes."""

from __future__ import annotations

import gc

from extproc.cmd.heap import freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_the_startup_heap_is_frozen_and_what_comes_after_stays_collectable() -> None:
    try:
        before = len(gc.get_objects())
        freeze_startup_heap()
        assert gc.get_freeze_count() >= before * 0.9  # everything alive then (less what the collection freed)
        assert len(gc.get_objects(generation=2)) < before * 0.01  # a full collection has ~nothing left to walk
        later = _Node()
        alive = len(gc.get_objects())
        del later
        assert gc.collect() >= 1  # the cycle made after the freeze is still found and freed
        assert len(gc.get_objects()) < alive
    finally:
        gc.unfreeze()
