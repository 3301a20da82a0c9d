"""Interleaved 1F1B: each rank's order, the chunks it holds, its micro-batches in flight, against hand
derivations from torch 2.13 ScheduleInterleaved1F1B and against torch's own schedule code."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest
from tests.helpers import requires_transformers

from memfit.core.choices import PipelineSchedule
from memfit.core.errors import InvalidWorkload
from memfit.core.parallel import in_flight, rank_share
from memfit.core.per_rank import _held, _pipeline_buffers
from memfit.core.schedule import chunk_layers, fullest, interleaved_order, interleaved_warmup, rank_chunks
from memfit.core.training import training_phases
from memfit.core.workload import Parallelism, Training
from memfit.sources.resolve import load_model

INTERLEAVED = PipelineSchedule.INTERLEAVED
L1B_LAYER_PARAMS = 60_821_504
"""One Llama-3.2-1B decoder layer: q, o 2048² each, k, v 2048 × 512 each, gate, up, down 2048 × 8192
each, two norms 2048: 8,388,608 + 2,097,152 + 50,331,648 + 4,096."""


def _ops(order) -> str:
    return " ".join(f"{kind[0].upper()}{mb}.{chunk}" for kind, mb, chunk in order)


@pytest.mark.parametrize(("pp", "rank", "m", "expected", "most"), [
    # warm-up (V − 1) × group + 2 × (pp − 1 − rank) = 1 × 2 + 2 = 4, group = m // max(1, m // pp) = 2;
    # forwards walk chunk (step // 2) % 2: 0 0 1 1 0 0 1 1; backwards from the last chunk, (step − 4) // 2:
    # 1 1 0 0 1 1 0 0; steady steps run F then B. Held: 1 2 3 4 5 4 5 4 5 4 5 4 3 2 1 0 → 5 = warm-up + 1
    (2, 0, 4, "F0.0 F1.0 F0.1 F1.1 F2.0 B0.1 F3.0 B1.1 F2.1 B0.0 F3.1 B1.0 B2.1 B3.1 B2.0 B3.0", 5),
    # the last rank warms up with 1 × 2 + 0 = 2: held 1 2 3 2 3 2 ... 3 2 1 0 → 3
    (2, 1, 4, "F0.0 F1.0 F0.1 B0.1 F1.1 B1.1 F2.0 B0.0 F3.0 B1.0 F2.1 B2.1 F3.1 B3.1 B2.0 B3.0", 3),
    # pp 4, rank 0, 4 micro-batches: 1 × 4 + 2 × 3 = 10 capped by 4 × 2 = 8: every forward first → 8
    (4, 0, 4, "F0.0 F1.0 F2.0 F3.0 F0.1 F1.1 F2.1 F3.1 B0.1 B1.1 B2.1 B3.1 B0.0 B1.0 B2.0 B3.0", 8),
    # pp 4, the last rank: warm-up 4 (chunk 0's micro-batches), then F/B pairs on chunk 1 → 5
    (4, 3, 4, "F0.0 F1.0 F2.0 F3.0 F0.1 B0.1 F1.1 B1.1 F2.1 B2.1 F3.1 B3.1 B0.0 B1.0 B2.0 B3.0", 5),
])
def test_interleaved_order_and_chunk_micro_batches_in_flight(pp, rank, m, expected, most) -> None:
    """Two chunks per rank: the order ScheduleInterleaved1F1B gives the rank and the most chunk
    micro-batches it holds (forwarded, not yet backwarded) along it."""
    assert _ops(interleaved_order(pp, rank, m, 2)) == expected
    assert in_flight(pp, rank, m, INTERLEAVED, 2) == most


def test_interleaved_warmup_matches_megatron_when_micro_batches_are_a_multiple_of_pp() -> None:
    """pp 4, 8 micro-batches, 2 chunks: torch's group is 8 // (8 // 4) = 4 = pp, so the warm-up is
    Megatron's (pp − rank − 1) × 2 + (V − 1) × pp: rank 0 10, rank 3 4."""
    assert [interleaved_warmup(4, rank, 8, 2) for rank in range(4)] == [10, 8, 6, 4]


@requires_transformers
def test_interleaved_order_is_torchs() -> None:
    """For pp 2-8, 2-4 chunks and every micro-batch count torch accepts up to 3 × pp, each rank's forwards
    and backwards are those of torch's own ScheduleInterleaved1F1B (no-op padding dropped)."""
    from torch.distributed.pipelining.schedules import ScheduleInterleaved1F1B, _ComputationType

    def torch_order(pp: int, rank: int, m: int, virtual: int) -> tuple[tuple[str, int, int], ...]:
        schedule = ScheduleInterleaved1F1B.__new__(ScheduleInterleaved1F1B)   # no process group needed
        schedule.pp_group_size, schedule.n_local_stages, schedule._n_microbatches = pp, virtual, m
        schedule.number_of_rounds = max(1, m // pp)
        schedule.microbatches_per_round = m // schedule.number_of_rounds
        return tuple(("forward" if op.computation_type == _ComputationType.FORWARD else "backward",
                      op.microbatch_index, op.stage_index // pp)
                     for op in schedule._calculate_single_rank_operations(rank) if op is not None)

    cases = [(pp, rank, m, virtual) for pp in (2, 3, 4, 8) for virtual in (2, 3, 4)
             for m in range(1, 3 * pp + 1) if m % max(1, m // pp) == 0 for rank in range(pp)]
    assert len(cases) == 702
    assert all(interleaved_order(*case) == torch_order(*case) for case in cases)


def test_chunk_c_of_rank_r_holds_virtual_stage_c_pp_plus_r() -> None:
    """Llama-3.2-1B (16 layers), pp 2, 2 chunks: 4 virtual stages of 4 layers; rank 0 holds stages 0 and 2
    (layers 0-3, 8-11), rank 1 stages 1 and 3 (4-7, 12-15). An uneven split (10 layers over 4 stages:
    3 3 2 2) gives rank 0 layers 0-2 and 6-7."""
    spec = load_model("Llama-3.2-1B")
    distinct = dataclasses.replace(spec, layers=tuple(dataclasses.replace(layer) for layer in spec.layers))
    ids = {id(layer): index for index, layer in enumerate(distinct.layers)}

    def indices(num_layers: int, rank: int) -> list[list[int]]:
        cut = dataclasses.replace(distinct, layers=distinct.layers[:num_layers])
        return [[ids[id(layer)] for layer in chunk] for chunk in rank_chunks(cut, pp=2, virtual=2, rank=rank)]

    assert indices(16, 0) == [[0, 1, 2, 3], [8, 9, 10, 11]]
    assert indices(16, 1) == [[4, 5, 6, 7], [12, 13, 14, 15]]
    assert indices(10, 0) == [[0, 1, 2], [6, 7]]
    assert len(chunk_layers(spec, pp=4, virtual=2, rank=3, chunk=1)) == 2    # 16 / 8


def test_interleaved_rank_holds_its_chunks_activations_at_the_fullest_moment() -> None:
    """Llama-3.2-1B, pp 2, 4 micro-batches, 2 chunks of 4 layers: rank 0 holds 5 chunk micro-batches × 4
    layers = 20 layer micro-batches of 16 (5/4 of one replica's layers; 1F1B: 2 × 8 = 16, 1); rank 1
    3 × 4 = 12 (3/4), of them 1 on its last chunk, whose final norm input it keeps. Parameters are as
    under 1F1B: 8 layers + embeddings (rank 0) or + final norm and the tied head's own copy (rank 1)."""
    spec = load_model("Llama-3.2-1B")
    par = Parallelism(pp=2, pp_schedule="interleaved", pp_virtual_stages=2)
    first = rank_share(spec, par, stage=0, micro_batches=4)
    last = rank_share(spec, par, stage=1, micro_batches=4)
    assert first.layer_activations == Fraction(5, 4)
    assert last.layer_activations == Fraction(3, 4)
    assert last.tail == 1
    most = fullest(spec, pp=2, rank=1, micro_batches=4, schedule=INTERLEAVED, virtual=2)
    assert most.alive_by_chunk == (2, 1)
    plain = Parallelism(pp=2)
    assert first.params == rank_share(spec, plain, stage=0, micro_batches=4).params
    assert last.params == rank_share(spec, plain, stage=1, micro_batches=4).params


def test_interleaved_pipeline_buffers_follow_each_chunks_virtual_stage() -> None:
    """pp 2, 4 micro-batches, 2 chunks, 512 tokens: rank 0's fullest moment holds 3 micro-batches of chunk
    0 (virtual stage 0: its output only) and 2 of chunk 1 (stage 2: receive buffer and output): 3 + 4 = 7
    buffers; rank 1 holds 2 of chunk 0 (stage 1: both) and 1 of chunk 1 (stage 3, the last: receive only):
    5. Each 512 × 2048 × 2 B = 2,097,152 B."""
    spec = load_model("Llama-3.2-1B")
    wl = Training(seq_len=512, grad_accum=4,
                  parallel=Parallelism(pp=2, pp_schedule="interleaved", pp_virtual_stages=2))
    assert _pipeline_buffers(spec, wl, 0).nbytes == 7 * 2_097_152
    assert _pipeline_buffers(spec, wl, 1).nbytes == 5 * 2_097_152


def test_interleaved_gradients_form_a_chunk_at_a_time() -> None:
    """Rank 1 of pp 2, 4 micro-batches, 2 chunks (F0.0 F1.0 F0.1 B0.1 F1.1 B1.1 F2.0 B0.0 ...): before
    B0.1 no gradient exists; from F1.1 on chunk 1's: 4 layers 243,286,016 + final norm 2,048 + the tied
    head's own copy 262,668,288 = 505,956,352 of the rank's 749,242,368 elements; after B0.0 all."""
    spec = load_model("Llama-3.2-1B")
    par = Parallelism(pp=2, pp_schedule="interleaved", pp_virtual_stages=2)
    most = fullest(spec, pp=2, rank=1, micro_batches=4, schedule=INTERLEAVED, virtual=2)
    held = _held(spec, par, 1, 4, most)
    assert [h.grads for h in held[:5]] == [0, 0, 0, 0, Fraction(505_956_352, 749_242_368)]
    assert 4 * L1B_LAYER_PARAMS + 2_048 + 262_668_288 == 505_956_352
    assert held[8].grads == 1
    assert [h.loss for h in held[:4]] == [False, False, True, True]     # F0.1 and B0.1 run chunk 1


def test_interleaved_needs_its_chunks_layers_and_micro_batches() -> None:
    """Refusals, one line each: chunks without the interleaved schedule, interleaved with one chunk, more
    chunks than layers, and micro-batches that torch cannot split into rounds (pp 4, 9: 2 rounds)."""
    with pytest.raises(InvalidWorkload, match=r"^pp_virtual_stages=2 splits each pipeline rank into model "
                                              r"chunks; it needs pp_schedule=interleaved"):
        Parallelism(pp=2, pp_virtual_stages=2)
    with pytest.raises(InvalidWorkload, match=r"^pp_schedule=interleaved runs several model chunks per rank; "
                                              r"set pp_virtual_stages to 2 or more$"):
        Parallelism(pp=2, pp_schedule="interleaved")
    with pytest.raises(InvalidWorkload, match=r"^grad_accum=9 micro-batches do not split into the 2 rounds "
                                              r"interleaved 1F1B runs with pp=4; use grad_accum 8 or 10"):
        Training(grad_accum=9, parallel=Parallelism(pp=4, pp_schedule="interleaved", pp_virtual_stages=2))
    wide = Training(grad_accum=4, parallel=Parallelism(pp=4, pp_schedule="interleaved", pp_virtual_stages=8))
    with pytest.raises(InvalidWorkload, match=r"^pp=4 × pp_virtual_stages=8 = 32 model chunks exceed "
                                              r"num_hidden_layers=16 of Llama-3.2-1B; use "
                                              r"pp_virtual_stages ≤ 4$"):
        training_phases(load_model("Llama-3.2-1B"), wide)
