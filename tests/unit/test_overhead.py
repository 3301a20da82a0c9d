"""Allocator and runtime overhead (core/overhead.py): rounding, segments, cuBLAS, reserved/device terms."""

from hypothesis import given
from hypothesis import strategies as st

from memfit.api import load_model
from memfit.core.choices import Runtime
from memfit.core.dtypes import DType, quant
from memfit.core.overhead import (
    CUDA_CONTEXT_BYTES,
    LAZY_KERNEL_BYTES,
    cublas_workspace_bytes,
    reserved_and_device_terms,
    round_block,
    segment_reserved,
    segment_reserved_repeated,
    segment_waste_repeated,
)
from memfit.core.result import Term, memory
from memfit.core.units import MiB
from memfit.core.weights import weight_tensor_bytes
from memfit.core.workload import Inference


def test_round_block_to_512_bytes():
    """1 B and 512 B take one 512-byte block; 513 B take two; 0 stays 0."""
    assert [round_block(n) for n in (0, 1, 512, 513)] == [0, 512, 512, 1024]


def test_two_8_mib_tensors_share_a_20_mib_segment():
    """Requests between 1 and 10 MiB are carved from 20 MiB segments: 8 + 8 MiB reserve 20 MiB."""
    assert segment_reserved([8 * MiB, 8 * MiB]) == 20 * MiB


def test_large_tensor_rounds_to_2_mib():
    """A 33 MiB + 1 B tensor gets its own segment of 34 MiB."""
    assert segment_reserved([33 * MiB + 1]) == 34 * MiB


def test_small_tensors_pack_into_2_mib_segments():
    """Four 512 KiB tensors fill one 2 MiB small segment; a fifth opens another."""
    assert segment_reserved([512 * 1024] * 5) == 4 * MiB


def test_llama_3_1_8b_weight_segments_match_measured_slack():
    """Per layer k+v (8 MiB each) waste 4 MiB of a 20 MiB segment: 32 × 4 MiB = 134,217,728 B, plus the
    2 MiB small segment less its 532,992 B of norms and buffers = 135,781,888 B (measured: 135,780,864)."""
    tensors = weight_tensor_bytes(load_model("Llama-3.1-8B"), dtype=DType.BF16, quant=quant("none"),
                                  runtime=Runtime.TRANSFORMERS)
    sizes = [b for _, b in tensors]
    assert segment_reserved(sizes) - sum(round_block(s) for s in sizes) == 135_781_888


def test_cublas_workspace_is_32_mib_per_handle():
    """Hopper: 32 MiB per cuBLAS handle (groundtruth "context": 100,663,296 − 2 × 32 MiB)."""
    assert cublas_workspace_bytes() == 32 * MiB
    assert cublas_workspace_bytes(num_handles=2) == 64 * MiB


def test_reserved_and_device_terms():
    """Slack = waste + ½ × (activations + logits); non_torch = context + lazily loaded kernels."""
    allocated = memory([Term(name="weights", nbytes=10 * MiB), Term(name="activations", nbytes=6 * MiB),
                        Term(name="logits", nbytes=2 * MiB)])
    frag, non_torch = reserved_and_device_terms(allocated, Inference(prompt_tokens=8),
                                                persistent_waste_bytes=1 * MiB)
    # 1 MiB + (6 + 2) MiB / 2 = 5 MiB
    assert (frag.name, frag.nbytes) == ("fragmentation", 5 * MiB)
    assert (non_torch.name, non_torch.nbytes) == ("non_torch", CUDA_CONTEXT_BYTES + LAZY_KERNEL_BYTES)


def test_cached_floor_is_filled_by_transients_first():
    """A 100 MiB cached load block with 8 MiB of pool slack adds only 92 MiB more."""
    allocated = memory([Term(name="activations", nbytes=16 * MiB)])
    frag, _ = reserved_and_device_terms(allocated, Inference(prompt_tokens=8), cached_floor_bytes=100 * MiB)
    assert frag.nbytes == 100 * MiB


def _one_by_one_reserved(sizes: list[int]) -> int:
    """The allocator rule placed block by block (the original simulation), as a reference."""
    pools: dict[str, list[int]] = {"small": [], "mid": []}
    reserved = 0
    for size in sizes:
        block = round_block(size)
        if block == 0:
            continue
        if block >= 10 * MiB:
            reserved += -(-block // (2 * MiB)) * 2 * MiB
            continue
        pool, segment, smallest = (("small", 2 * MiB, 512) if block <= MiB else ("mid", 20 * MiB, MiB + 1))
        free = pools[pool]
        fits = [i for i, room in enumerate(free) if room >= block]
        if fits:
            best = min(fits, key=lambda i: free[i])   # first of the smallest fitting remainders
            free[best] -= block
            if free[best] < smallest:
                free.pop(best)
        else:
            reserved += segment
            if segment - block >= smallest:
                free.append(segment - block)
    return reserved


@given(st.lists(st.tuples(st.lists(st.sampled_from(
    [0, 1, 300, 512, 4096, 700 * 1024, MiB, MiB + 1, 3 * MiB, 7 * MiB + 5, 9 * MiB, 10 * MiB, 33 * MiB]),
    max_size=6), st.integers(0, 5)), max_size=6))
def test_repeated_groups_equal_one_by_one_placement(groups: list[tuple[list[int], int]]) -> None:
    """Run-length placement of repeated groups reserves exactly what block-by-block placement does."""
    expanded = [size for sizes, times in groups for _ in range(times) for size in sizes]
    assert segment_reserved_repeated([(tuple(s), t) for s, t in groups]) == _one_by_one_reserved(expanded)
    assert segment_reserved(expanded) == _one_by_one_reserved(expanded)


def test_repeated_layers_waste_like_the_expanded_list():
    """126 layers of [8 MiB, 8 MiB, 64 KiB]: each pair wastes 4 MiB of a 20 MiB segment = 504 MiB, and
    126 × 64 KiB = 7.875 MiB of norms in four 2 MiB small segments (8 MiB, 0.125 MiB of it unused)."""
    groups = [((8 * MiB, 8 * MiB, 64 * 1024), 126)]
    assert segment_waste_repeated(groups) == 126 * 4 * MiB + 8 * MiB - 126 * 64 * 1024
