"""The trace tracker: 512-byte rounding, storage lifetimes, per-phase peaks, roles."""

import pytest
from tests.helpers import requires_transformers

pytestmark = requires_transformers

torch = pytest.importorskip("torch")

from memfit.trace.tracker import Tracker, rounded_bytes  # noqa: E402


@pytest.mark.parametrize(("nbytes", "expected"), [(0, 0), (1, 512), (512, 512), (513, 1024), (4000, 4096)])
def test_rounded_bytes_follows_the_caching_allocator(nbytes, expected):
    """Requests round up to 512-byte blocks; empty tensors take nothing."""
    assert rounded_bytes(nbytes) == expected


def test_tracker_counts_a_storage_once_and_releases_it():
    """A 1000-float tensor counts 4,096 B (4,000 rounded); its view adds nothing; deleting both frees it."""
    tracker = Tracker()
    with tracker:
        a = torch.empty(1000)
        view = a[10:]
        assert tracker.total == 4096
        del a
        assert tracker.total == 4096          # the view keeps the storage alive
        del view
    assert tracker.total == 0
    assert tracker.peak == 4096


def test_phase_peak_and_breakdown_by_role():
    """A phase's peak is its own; marked storages split the peak, the rest goes to the default role."""
    tracker = Tracker()
    with tracker:
        weight = torch.empty(256)                     # 1,024 B
        tracker.mark("weights", [weight])
        with tracker.phase("forward") as record:
            tmp = torch.empty(1024)                   # 4,096 B transient
            del tmp
            out = torch.empty(128)                    # 512 B
    assert record.start_bytes == 1024
    assert record.peak_bytes == 1024 + 4096
    assert record.end_bytes == 1024 + 512
    assert tracker.breakdown(record, "activations") == {"weights": 1024, "activations": 4096}
    del out, weight


def test_repeat_phases_adds_the_tagged_storages():
    """Replaying step 1 for step 2 adds the optimizer states (2,048 B) to its start, peak and end."""
    tracker = Tracker()
    with tracker:
        with tracker.phase("forward"):
            act = torch.empty(256)                    # 1,024 B
        state = torch.empty(512)                      # 2,048 B
        tracker.mark("optimizer_states", [state])
        tracker.repeat_phases(("forward",), "optimizer_states")
    first, second = tracker.phases
    assert (second.peak_bytes - first.peak_bytes, second.start_bytes) == (2048, 2048)
    assert tracker.breakdown(second, "activations") == {"activations": 1024, "optimizer_states": 2048}
    del act, state


def test_cached_block_is_reserved_and_reused_but_never_allocated():
    """Llama-3.2-1B's untied LM head of a random-weight build: 128,256 × 2,048 × 2 B = 525,336,576 B, a
    large-pool request with a segment of its own rounded up to 2 MiB: 251 × 2 MiB = 526,385,152 B reserved,
    0 allocated. A 200 MiB activation afterwards splits that cached segment (its 302 MiB rest > 1 MiB), so
    reserved stays 526,385,152 B while 200 MiB are allocated."""
    from memfit.core.units import MiB
    from memfit.trace.allocator import CachingAllocator

    tracker = Tracker(allocator=CachingAllocator())
    with tracker:
        tracker.cached_block(128_256 * 2_048 * 2)
        assert (tracker.allocator.reserved, tracker.total) == (526_385_152, 0)
        act = torch.empty(200 * MiB, dtype=torch.uint8)
        assert (tracker.allocator.reserved, tracker.total) == (526_385_152, 200 * MiB)
        del act
