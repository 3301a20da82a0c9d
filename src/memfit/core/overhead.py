"""Runtime overhead: cuBLAS workspaces, caching-allocator rounding and slack, non-torch device memory.

Named constants with units and sources. `reserved_and_device_terms` turns a phase's allocated-memory tree
into the `fragmentation` (reserved − allocated) and `non_torch` (device − reserved) terms; the analytic and
trace engines share it.

The CUDA caching allocator (c10/cuda/CUDACachingAllocator.cpp) rounds every block to 512 B; blocks of at
most 1 MiB come from 2 MiB segments, blocks under 10 MiB from 20 MiB segments, larger ones get a segment
of their size rounded up to 2 MiB. Freed blocks stay reserved (cached) for reuse.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from fractions import Fraction

from memfit.core import devices
from memfit.core.result import Gpu, Term
from memfit.core.units import MiB
from memfit.core.workload import Inference, Training

ALLOC_BLOCK_BYTES = 512
"""Every allocation is rounded up to this. Source: CUDACachingAllocator.cpp kMinBlockSize."""
SMALL_ALLOC_BYTES = 1 * MiB
"""Largest 'small' request, served from 2 MiB segments. Source: kSmallSize."""
SMALL_SEGMENT_BYTES = 2 * MiB
"""Segment size of the small pool. Source: kSmallBuffer."""
MIN_LARGE_ALLOC_BYTES = 10 * MiB
"""Requests below this (and above 1 MiB) are carved from 20 MiB segments. Source: kMinLargeAlloc."""
MID_SEGMENT_BYTES = 20 * MiB
"""Segment size for 1-10 MiB requests. Source: kLargeBuffer."""
LARGE_ROUND_BYTES = 2 * MiB
"""Larger requests get their own segment rounded up to this. Source: kRoundLarge."""

CUBLAS_WORKSPACE_BYTES_SM90 = devices.CUBLAS_WORKSPACE_BYTES_SM90
"""cuBLAS workspace per handle on Hopper, served by the caching allocator (counted in allocated); the
workspace of other architectures is `Gpu.blas_workspace_bytes` (core/devices.py).
Source: groundtruth "context" case: alloc_after_matmul 100,663,296 − 2 × 32 MiB operands = 32 MiB."""

CUDA_CONTEXT_BYTES = 520 * MiB
"""Device memory of a process right after CUDA init. Source: groundtruth nvml_proc_after_init = 545,259,520 B
(H100, CUDA 13.0, torch 2.11)."""
LAZY_KERNEL_BYTES = 166 * MiB
"""Kernel images and library handles loaded lazily by the first forward (cuBLAS, SDPA kernels).
Source: groundtruth prefill rows: nvml_proc_end − peak_reserved = 719,323,136 B; minus CUDA_CONTEXT_BYTES."""

POOL_SLACK = Fraction(1, 2)
"""Cached-but-free bytes per byte of transient working set (activations, logits) at a peak inside a layer:
freed blocks of other sizes that the peak's allocations cannot reuse. Source: calibrated on groundtruth
l8b-gen-b8-p1024-n128 (412 MiB over allocated for a 932 MiB layer working set; the rounding is 0.44)."""

FREED_POOL_SLACK = Fraction(11, 10)
"""Cached bytes per byte of the last layer's working set once it is freed (at the LM head): the per-layer
blocks stay reserved and the full-sequence logits need a segment of their own. Source: groundtruth
l8b-prefill-b1-s4096: peak_reserved − allocated − segment rounding = 514 MiB for a 466 MiB layer set."""

DEQUANT_SLACK: dict[str, Fraction] = {
    "bnb-4bit": Fraction(1, 3),   # Source: l8b-nf4-gen-b1-p512-n64 (58 MiB reserved over allocated)
    "bnb-int8": Fraction(3),      # Source: l8b-int8-gen-b1-p512-n64 (1,206 MiB over allocated): the int8
                                  # outlier path frees fp32, bf16 and int8 weight-sized blocks per Linear
}
"""Cached slack per byte of dequantisation buffer, by Quant.kind (calibrated, one row each)."""

NON_TORCH_EXTRA_BYTES: dict[str, int] = {
    "bnb-4bit": 6 * MiB,    # Source: l8b-nf4-gen row: nvml_proc_end − peak_reserved = 692 MiB
    "bnb-int8": 70 * MiB,   # Source: l8b-int8-gen row: 756 MiB
}
"""Extra kernel images loaded by a quantization library, by Quant.kind."""


def round_block(nbytes: int) -> int:
    """Bytes the caching allocator charges for one tensor of `nbytes`: rounded up to 512 B (0 stays 0)."""
    return -(-nbytes // ALLOC_BLOCK_BYTES) * ALLOC_BLOCK_BYTES


def segment_waste(sizes: Iterable[int]) -> int:
    """Reserved − allocated bytes of a persistent set of tensors (see `segment_reserved`)."""
    return segment_waste_repeated([(tuple(sizes), 1)])


def segment_reserved(sizes: Iterable[int]) -> int:
    """Reserved bytes after allocating tensors of `sizes` in order, none freed (a persistent set).

    Small (≤1 MiB) blocks pack into 2 MiB segments, mid (<10 MiB) blocks into 20 MiB segments (best fit),
    large ones take a segment rounded up to 2 MiB. Source: CUDACachingAllocator.cpp (get_allocation_size,
    best-fit block search, block splitting).
    """
    return segment_reserved_repeated([(tuple(sizes), 1)])


Repeated = tuple[tuple[int, ...], int]
"""(tensor sizes in allocation order, times the group is allocated in a row): equal decoder layers."""


def segment_waste_repeated(groups: Iterable[Repeated]) -> int:
    """`segment_waste` of the tensors of every group, each group allocated `times` in a row."""
    groups = tuple(groups)
    allocated = sum(round_block(size) * times for sizes, times in groups for size in sizes)
    return segment_reserved_repeated(groups) - allocated


def segment_reserved_repeated(groups: Iterable[Repeated]) -> int:
    """`segment_reserved` of the tensors of every group, each group allocated `times` in a row.

    The same simulation in O(segments): the three pools never share a segment, so each pool sees only
    its own blocks in order; equal consecutive blocks are placed as one run (large blocks need no
    simulation at all). Gives exactly `segment_reserved` of the expanded list.
    """
    small: list[list[int]] = []   # [block, count] runs, consecutive equal blocks merged
    mid: list[list[int]] = []
    reserved = 0
    for sizes, times in groups:
        if times <= 0:
            continue
        small_part: list[int] = []
        mid_part: list[int] = []
        for size in sizes:
            block = round_block(size)
            if block == 0:
                continue
            if block <= SMALL_ALLOC_BYTES:
                small_part.append(block)
            elif block < MIN_LARGE_ALLOC_BYTES:
                mid_part.append(block)
            else:
                reserved += -(-block // LARGE_ROUND_BYTES) * LARGE_ROUND_BYTES * times
        _extend_runs(small, small_part, times)
        _extend_runs(mid, mid_part, times)
    reserved += _place_runs(tuple(map(tuple, small)), SMALL_SEGMENT_BYTES, smallest=ALLOC_BLOCK_BYTES)
    reserved += _place_runs(tuple(map(tuple, mid)), MID_SEGMENT_BYTES, smallest=SMALL_ALLOC_BYTES + 1)
    return reserved


def _extend_runs(runs: list[list[int]], blocks: list[int], times: int) -> None:
    """Append `blocks` repeated `times` to `runs`, merging equal neighbours (one run if all are equal)."""
    if not blocks:
        return
    if all(b == blocks[0] for b in blocks):
        blocks, times = [blocks[0]], len(blocks) * times
    else:
        blocks, times = blocks * times, 1
    for block in blocks:
        if runs and runs[-1][0] == block:
            runs[-1][1] += times
        else:
            runs.append([block, times])


@functools.lru_cache(maxsize=1024)
def _place_runs(runs: tuple[tuple[int, int], ...], segment: int, *, smallest: int) -> int:
    """Best-fit placement of (block, count) runs of equal blocks into one pool's segments; returns reserved
    bytes. Pure in its integer arguments, so memoised: a model's weights give the same runs on every call.

    A run fills its best-fitting free remainder with as many blocks as fit at once: the remainder stays
    the best fit while it shrinks, so this equals placing the blocks one by one."""
    free: list[int] = []
    reserved = 0
    for block, count in runs:
        while count:
            best = -1
            for i, room in enumerate(free):
                if room >= block and (best < 0 or room < free[best]):
                    best = i
            if best < 0:
                reserved += segment
                count -= 1
                if segment - block >= smallest:
                    free.append(segment - block)
                continue
            placed = min(count, free[best] // block)
            count -= placed
            free[best] -= placed * block
            if free[best] < smallest:
                free.pop(best)
    return reserved


def cublas_workspace_bytes(*, num_handles: int = 1, gpu: Gpu | None = None) -> int:
    """BLAS workspace bytes held through the caching allocator: num_handles × the GPU's workspace per handle
    (one handle per thread that runs a matmul). gpu None: an H100's 32 MiB.

    Source: `Gpu.blas_workspace_bytes` from core/devices.py (torch 2.13 CublasHandlePool.cpp); Hopper's
    measured ("context" groundtruth case).
    """
    per_handle = gpu.blas_workspace_bytes if gpu is not None else CUBLAS_WORKSPACE_BYTES_SM90
    return num_handles * per_handle


def workspace_note(gpu: Gpu | None, *, handles: int, threads: str) -> str:
    """The assumption line for the BLAS workspaces: 'cuBLAS workspaces: 2 × 32 MiB (Hopper; forward and
    autograd threads)'."""
    row = devices.arch_row(gpu.arch if gpu is not None else devices.DEFAULT_ARCH)
    per_handle = cublas_workspace_bytes(gpu=gpu)
    if per_handle == 0:
        return f"no cuBLAS workspace ({row.title}: no cuBLAS)"
    size = f"{per_handle // MiB} MiB" if per_handle % MiB == 0 else f"{per_handle:,} B"
    library = "hipBLAS + hipBLASLt" if row.vendor == "amd" else "cuBLAS"
    return f"{library} workspaces: {handles} × {size} ({row.title}; {threads})"


def _quant_kind(workload: Inference | Training) -> str:
    return workload.quant.kind


def reserved_and_device_terms(
    allocated: Term,
    workload: Inference | Training,
    *,
    persistent_waste_bytes: int = 0,
    extra_slack_bytes: int = 0,
    cached_floor_bytes: int = 0,
    pool_slack: Fraction = POOL_SLACK,
) -> tuple[Term, Term]:
    """The `fragmentation` and `non_torch` terms of one phase, given its allocated-memory tree.

    fragmentation = persistent_waste_bytes (segment rounding of weights and KV cache, when the caller knows
        the tensors; see `segment_reserved`) + POOL_SLACK × (activations + logits)
        + DEQUANT_SLACK[quant kind] × runtime_overhead/dequant + extra_slack_bytes, where the cached
        slack is at least cached_floor_bytes (a freed block known to stay cached, e.g. a load temporary,
        which transients reuse first);
    non_torch = CUDA_CONTEXT_BYTES + LAZY_KERNEL_BYTES + NON_TORCH_EXTRA_BYTES[quant kind].

    Args:
        allocated: the phase's memory tree (root with top-level allocator terms as children).
        workload: the job; its quant kind selects the calibrated slack.
        persistent_waste_bytes: reserved − allocated of the persistent tensors, when known.
        extra_slack_bytes: other cached free blocks the caller knows of.
        cached_floor_bytes: a cached free block that transients fill before the pool grows.
        pool_slack: cached bytes per transient byte at this peak (POOL_SLACK; 0 where the caller passes
            the freed pool as cached_floor_bytes instead).
    Source: constants above; calibrated on the H100 groundtruth rows they name.
    """
    transient = allocated.bytes_of("activations") + allocated.bytes_of("logits")
    overhead = allocated.child("runtime_overhead")
    dequant = overhead.bytes_of("dequant") if overhead else 0
    kind = _quant_kind(workload)
    pool = int(pool_slack * transient)
    dequant_slack = int(DEQUANT_SLACK.get(kind, Fraction(0)) * dequant)
    floor_extra = max(0, cached_floor_bytes - pool - dequant_slack)
    fragmentation = Term.group("fragmentation", [
        Term(name="segment_rounding", nbytes=persistent_waste_bytes,
             note="2 MiB / 20 MiB segment rounding of weights and KV cache"),
        Term(name="cached_transients", nbytes=pool, note="freed per-layer blocks kept by the allocator"),
        Term(name="cached_dequant", nbytes=dequant_slack, note="freed dequantisation blocks"),
        Term(name="cached_load_block", nbytes=floor_extra, note="freed load temporary kept cached"),
        Term(name="cached_other", nbytes=extra_slack_bytes),
    ])
    non_torch = Term.group("non_torch", [
        Term(name="cuda_context", nbytes=CUDA_CONTEXT_BYTES),
        Term(name="kernels", nbytes=LAZY_KERNEL_BYTES + NON_TORCH_EXTRA_BYTES.get(kind, 0)),
    ])
    return fragmentation, non_torch
