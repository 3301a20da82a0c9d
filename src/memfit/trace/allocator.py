"""A replay of the CUDA caching allocator's segments, fed by the tracker's allocations and frees in order.

It gives the trace a reserved figure (what `max_memory_reserved()` reports) from the same event stream the
allocated figure comes from. Rules (c10/cuda/CUDACachingAllocator.cpp, default settings):
- sizes round up to 512 B; requests ≤ 1 MiB use the small pool, others the large pool;
- a request takes the best-fitting cached free block of its pool (smallest size, then oldest segment);
- a block is split when the rest is ≥ 512 B (small pool) or > 1 MiB (large pool);
- with no fitting block a new segment is reserved: 2 MiB (small), 20 MiB (large requests < 10 MiB), else
  the request rounded up to 2 MiB;
- a freed block merges with free neighbours in its segment and stays reserved (cached).
Not modelled: streams other than the default one, expandable segments, empty_cache() (torch.cuda.graph's
__enter__ calls it: transformers' auto-compiled static-cache decoding), CUDA graph private pools, OOM retries.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from memfit.core import overhead

# the caching allocator's rules, shared with the analytic engine's segment rounding (core/overhead.py)
ROUND_BYTES = overhead.ALLOC_BLOCK_BYTES
SMALL_REQUEST_MAX_BYTES = overhead.SMALL_ALLOC_BYTES
SMALL_SEGMENT_BYTES = overhead.SMALL_SEGMENT_BYTES
MID_SEGMENT_BYTES = overhead.MID_SEGMENT_BYTES
MID_REQUEST_MAX_BYTES = overhead.MIN_LARGE_ALLOC_BYTES
LARGE_ROUND_BYTES = overhead.LARGE_ROUND_BYTES


@dataclass(eq=False)
class _Block:
    size: int
    segment: int
    offset: int
    small: bool
    free: bool = True
    prev: _Block | None = field(default=None, repr=False)
    next: _Block | None = field(default=None, repr=False)

    def key(self) -> tuple[int, int, int]:
        return (self.size, self.segment, self.offset)


class CachingAllocator:
    """Reserved bytes of the caching allocator under a sequence of malloc/free calls."""

    def __init__(self) -> None:
        self.reserved = 0
        self.peak_reserved = 0
        self._free: dict[bool, list[tuple[int, int, int]]] = {True: [], False: []}
        self._by_key: dict[tuple[int, int, int], _Block] = {}
        self._live: dict[int, _Block] = {}
        self._segments = 0

    def reset_peak(self) -> None:
        """As torch.cuda.reset_peak_memory_stats(): the peak restarts from what is reserved now."""
        self.peak_reserved = self.reserved

    def malloc(self, handle: int, nbytes: int) -> None:
        """Allocate `nbytes` for `handle` (a tracker serial)."""
        size = max(ROUND_BYTES, -(-nbytes // ROUND_BYTES) * ROUND_BYTES)
        small = size <= SMALL_REQUEST_MAX_BYTES
        block = self._take_free(size, small) or self._new_segment(size, small)
        rest = block.size - size
        splits = rest >= ROUND_BYTES if small else rest > SMALL_REQUEST_MAX_BYTES
        if splits:
            tail = _Block(size=rest, segment=block.segment, offset=block.offset + size, small=small,
                          prev=block, next=block.next)
            if block.next is not None:
                block.next.prev = tail
            block.next = tail
            block.size = size
            self._insert_free(tail)
        block.free = False
        self._live[handle] = block

    def free(self, handle: int) -> None:
        """Return `handle`'s block to its pool, merged with free neighbours."""
        block = self._live.pop(handle, None)
        if block is None:
            return
        block.free = True
        for neighbour in (block.prev, block.next):
            if neighbour is not None and neighbour.free:
                self._remove_free(neighbour)
                if neighbour is block.prev:
                    neighbour.size += block.size
                    neighbour.next = block.next
                    if block.next is not None:
                        block.next.prev = neighbour
                    block = neighbour
                else:
                    block.size += neighbour.size
                    block.next = neighbour.next
                    if neighbour.next is not None:
                        neighbour.next.prev = block
        self._insert_free(block)

    def _take_free(self, size: int, small: bool) -> _Block | None:
        keys = self._free[small]
        index = bisect.bisect_left(keys, (size, -1, -1))
        if index == len(keys):
            return None
        block = self._by_key.pop(keys.pop(index))
        return block

    def _new_segment(self, size: int, small: bool) -> _Block:
        if small:
            segment_bytes = SMALL_SEGMENT_BYTES
        elif size < MID_REQUEST_MAX_BYTES:
            segment_bytes = MID_SEGMENT_BYTES
        else:
            segment_bytes = -(-size // LARGE_ROUND_BYTES) * LARGE_ROUND_BYTES
        self._segments += 1
        self.reserved += segment_bytes
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        return _Block(size=segment_bytes, segment=self._segments, offset=0, small=small)

    def _insert_free(self, block: _Block) -> None:
        key = block.key()
        bisect.insort(self._free[block.small], key)
        self._by_key[key] = block

    def _remove_free(self, block: _Block) -> None:
        key = block.key()
        keys = self._free[block.small]
        del keys[bisect.bisect_left(keys, key)]
        del self._by_key[key]
