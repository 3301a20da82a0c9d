"""The caching-allocator replay: pools, segment sizes, best fit, splitting, merging, peaks."""

from memfit.core.units import MiB
from memfit.trace.allocator import CachingAllocator


def test_small_requests_share_a_2_mib_segment():
    """Two 100 B requests round to 512 B each and fit one 2 MiB small-pool segment."""
    alloc = CachingAllocator()
    alloc.malloc(1, 100)
    alloc.malloc(2, 100)
    assert alloc.reserved == 2 * MiB


def test_mid_requests_are_carved_from_20_mib_segments():
    """5 MiB takes a 20 MiB segment; a second 5 MiB splits its 15 MiB rest: 20 MiB reserved in all."""
    alloc = CachingAllocator()
    alloc.malloc(1, 5 * MiB)
    alloc.malloc(2, 5 * MiB)
    assert alloc.reserved == 20 * MiB


def test_large_requests_round_to_2_mib_and_cached_blocks_are_reused():
    """A 29 MiB + 1 B request reserves 30 MiB; freed, it serves a 20 MiB request without new memory."""
    alloc = CachingAllocator()
    alloc.malloc(1, 29 * MiB + 1)
    assert alloc.reserved == 30 * MiB
    alloc.free(1)
    alloc.malloc(2, 20 * MiB)
    assert alloc.reserved == 30 * MiB


def test_freed_neighbours_merge():
    """Two 8 MiB blocks of one 20 MiB segment, both freed, merge: an 18 MiB request then fits in it."""
    alloc = CachingAllocator()
    alloc.malloc(1, 8 * MiB)
    alloc.malloc(2, 8 * MiB)
    alloc.free(1)
    alloc.free(2)
    alloc.malloc(3, 18 * MiB)
    assert alloc.reserved == 20 * MiB


def test_unsplittable_rest_is_not_reused_by_the_other_pool():
    """A small request never takes a large-pool block: 20 MiB + 2 MiB reserved."""
    alloc = CachingAllocator()
    alloc.malloc(1, 5 * MiB)
    alloc.malloc(2, 1024)
    assert alloc.reserved == 22 * MiB


def test_reset_peak_restarts_from_the_current_reserve():
    """Reserved never shrinks; after reset_peak the peak is what is reserved now (2 MiB)."""
    alloc = CachingAllocator()
    alloc.malloc(1, 1024)
    alloc.free(1)
    alloc.reset_peak()
    assert alloc.peak_reserved == 2 * MiB
