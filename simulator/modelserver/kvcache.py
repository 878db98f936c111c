"""A paged KV cache with automatic prefix caching, after vLLM v1's block pool.

Theory of operation: the cache holds `num_blocks` blocks of `block_size` tokens. A block is in use
while some request references it (`refs > 0`); otherwise it sits in the free queue, oldest-freed
first. A full prompt block, once computed, is registered under its chain hash (the hash of the
previous block's hash and this block's tokens), so a later prompt with the same leading tokens
finds it and skips its prefill. Allocation takes blocks from the head of the free queue; taking a
registered block evicts it from the hash map (LRU eviction of unreferenced blocks). A cache hit on
a free block takes it out of the free queue. Requests free their blocks last-first, so a prompt's
tail is evicted before its shared head.

`usage()` is vLLM's `kv_cache_usage_perc`: 1 − free blocks / all blocks (cached but unreferenced
blocks count as free). Sans-IO and synchronous; not thread-safe (one engine owns it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

BlockHash = int


def chain_hashes(tokens: Sequence[str], block_size: int) -> list[BlockHash]:
    """The chain hash of every full block of `tokens` (a partial last block has none)."""
    hashes: list[BlockHash] = []
    parent = 0
    for start in range(0, len(tokens) - block_size + 1, block_size):
        parent = hash((parent, tuple(tokens[start:start + block_size])))
        hashes.append(parent)
    return hashes


class KVCache:
    """Blocks, their reference counts, the prefix hash map and the free queue (see the module)."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be at least 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._refs = [0] * num_blocks
        self._hash_of: list[BlockHash | None] = [None] * num_blocks
        self._by_hash: dict[BlockHash, int] = {}
        self._free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))

    @property
    def free_blocks(self) -> int:
        return len(self._free)

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    def usage(self) -> float:
        return 1.0 - len(self._free) / self.num_blocks

    def cached_prefix(self, hashes: Sequence[BlockHash], max_blocks: int) -> list[int]:
        """Blocks holding the longest cached prefix of `hashes` (at most `max_blocks`); not taken."""
        blocks: list[int] = []
        for h in hashes[:max_blocks]:
            block = self._by_hash.get(h)
            if block is None:
                break
            blocks.append(block)
        return blocks

    def can_allocate(self, n: int, hits: Sequence[int] = ()) -> bool:
        """Whether `n` new blocks fit after taking the cache hits `hits` (free hits leave the queue)."""
        free_hits = sum(1 for b in hits if self._refs[b] == 0)
        return n <= len(self._free) - free_hits

    def touch(self, blocks: Sequence[int]) -> None:
        """Reference the cache hits `blocks`."""
        for b in blocks:
            if self._refs[b] == 0:
                del self._free[b]
            self._refs[b] += 1

    def allocate(self, n: int) -> list[int]:
        """`n` fresh blocks from the head of the free queue (evicting their cached content)."""
        if n > len(self._free):
            raise MemoryError(f"{n} blocks wanted, {len(self._free)} free")
        blocks: list[int] = []
        for _ in range(n):
            b, _unused = self._free.popitem(last=False)
            old = self._hash_of[b]
            if old is not None:
                if self._by_hash.get(old) == b:
                    del self._by_hash[old]
                self._hash_of[b] = None
            self._refs[b] = 1
            blocks.append(b)
        return blocks

    def register(self, block: int, block_hash: BlockHash) -> None:
        """Make the computed full block `block` findable under `block_hash` (first one wins)."""
        if block_hash not in self._by_hash and self._hash_of[block] is None:
            self._by_hash[block_hash] = block
            self._hash_of[block] = block_hash

    def free(self, blocks: Sequence[int]) -> None:
        """Drop one reference to each of `blocks`, last block first."""
        for b in reversed(blocks):
            self._refs[b] -= 1
            if self._refs[b] < 0:
                raise AssertionError(f"block {b} freed more often than taken")
            if self._refs[b] == 0:
                self._free[b] = None

    def cached_blocks(self) -> int:
        """Blocks currently findable by hash (in use or free)."""
        return len(self._by_hash)
