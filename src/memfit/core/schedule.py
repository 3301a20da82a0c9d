"""The order a pipeline rank runs its micro-batches' forwards and backwards in, and what it holds at each
moment: the one place that knows the schedules (1F1B, GPipe, interleaved 1F1B).

A rank of an interleaved pipeline (Narayanan et al. 2021 §2.2.2, Megatron-LM's virtual pipeline) holds
`virtual` model chunks: chunk c of rank r is virtual stage c × pp + r of pp × virtual, so rank 0's first
chunk holds the embeddings and the last rank's last chunk the final norm, head and loss. Each op is
(kind, micro-batch, chunk); chunk is 0 under 1F1B and GPipe.

Source: torch 2.13 torch/distributed/pipelining/schedules.py (Schedule1F1B and ScheduleGPipe
`_step_microbatches`; ScheduleInterleaved1F1B `_calculate_single_rank_operations`, `_get_warmup_ops`,
`_get_1f1b_rank_ops`, whose steady state runs one forward then one backward). Megatron-LM's
forward_backward_pipelining_with_interleaving warms up with the same count,
2 × (pp − rank − 1) + (virtual − 1) × microbatch_group_size_per_vp_stage (default pp), capped by
micro-batches × virtual; torch's group is micro-batches // rounds, rounds = max(1, micro-batches // pp),
which is pp when micro-batches is a multiple of pp.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from memfit.core.choices import PipelineSchedule
from memfit.core.spec import LayerSpec, ModelSpec

Op = tuple[str, int, int]
"""("forward" | "backward", micro-batch, chunk) of one op a pipeline rank runs."""


def stage_range(num_layers: int, stages: int, stage: int) -> range:
    """The decoder-layer indices of `stage` of `stages`: an even split, the first num_layers % stages one
    layer more. Source: torch.distributed.pipelining's even split by layer count (torchtitan; the
    multi-rank trace cuts its stages with it)."""
    base, extra = divmod(num_layers, stages)
    start = stage * base + min(stage, extra)
    return range(start, start + base + (1 if stage < extra else 0))


def chunk_layers(spec: ModelSpec, *, pp: int, virtual: int, rank: int, chunk: int) -> tuple[LayerSpec, ...]:
    """The decoder layers of chunk `chunk` of rank `rank`: virtual stage chunk × pp + rank of an even split
    of the layers over pp × virtual stages (the first L % (pp × virtual) stages one layer more).

    Source: torch.distributed.pipelining's stage index of ScheduleInterleaved1F1B (forward_stage_index:
    local_index × pp_group_size + rank); torchtitan splits the layers evenly over the stages."""
    layers = stage_range(spec.num_layers, pp * virtual, chunk * pp + rank)
    return spec.layers[layers.start:layers.stop]


def rank_chunks(spec: ModelSpec, *, pp: int, virtual: int, rank: int) -> tuple[tuple[LayerSpec, ...], ...]:
    """Every chunk's decoder layers of `rank`, chunk 0 first."""
    return tuple(chunk_layers(spec, pp=pp, virtual=virtual, rank=rank, chunk=c) for c in range(virtual))


def interleaved_warmup(pp: int, rank: int, micro_batches: int, virtual: int) -> int:
    """Forwards rank `rank` runs before its first backward under interleaved 1F1B:
    (virtual − 1) × group + 2 × (pp − 1 − rank), capped by micro_batches × virtual, with group =
    micro_batches // max(1, micro_batches // pp). Source: torch 2.13 schedules.py `_get_warmup_ops`."""
    group = micro_batches // max(1, micro_batches // pp)
    return min((virtual - 1) * group + 2 * (pp - 1 - rank), micro_batches * virtual)


def interleaved_order(pp: int, rank: int, micro_batches: int, virtual: int) -> tuple[Op, ...]:
    """The ops rank `rank` runs under interleaved 1F1B, in order: the warm-up forwards, then one forward and
    one backward while forwards remain, then the remaining backwards. Forwards walk the chunks in groups of
    `group` micro-batches (0, 1, ..., virtual − 1, 0, ...), backwards the same groups from the last chunk
    down; each chunk takes its micro-batches in order.
    Source: torch 2.13 schedules.py ScheduleInterleaved1F1B (forward_stage_index, backward_stage_index,
    `_get_1f1b_rank_ops` without the no-op padding)."""
    group = micro_batches // max(1, micro_batches // pp)
    total = micro_batches * virtual
    warm = interleaved_warmup(pp, rank, micro_batches, virtual)
    next_forward = [0] * virtual
    next_backward = [0] * virtual
    ops: list[Op] = []

    def forward(step: int) -> None:
        chunk = (step // group) % virtual
        ops.append(("forward", next_forward[chunk], chunk))
        next_forward[chunk] += 1

    def backward(step: int) -> None:
        chunk = virtual - 1 - ((step - warm) // group) % virtual
        ops.append(("backward", next_backward[chunk], chunk))
        next_backward[chunk] += 1

    for step in range(total):
        if step < warm:
            forward(step)
            continue
        forward(step)
        backward(step)
    for step in range(total, total + warm):
        backward(step)
    return tuple(ops)


def rank_order(pp: int, rank: int, micro_batches: int,
               schedule: PipelineSchedule = PipelineSchedule.ONE_F_ONE_B,
               virtual: int = 1) -> tuple[Op, ...]:
    """Every forward and backward rank `rank` runs in one step, in order, as (kind, micro-batch, chunk).

    1F1B: min(m, pp − rank) warm-up forwards, then one backward and one forward while forwards remain,
    then the remaining backwards. GPipe: every forward, then every backward. Interleaved: see
    `interleaved_order`. Source: torch 2.13 schedules.py (Schedule1F1B._step_microbatches: warmup_chunks,
    the 1B1F loop and the cooldown; ScheduleGPipe._step_microbatches; ScheduleInterleaved1F1B).
    """
    m = micro_batches
    if schedule is PipelineSchedule.INTERLEAVED:
        return interleaved_order(pp, rank, m, virtual)
    if schedule is PipelineSchedule.GPIPE:
        return (*(("forward", i, 0) for i in range(m)), *(("backward", i, 0) for i in range(m)))
    warm = min(m, pp - rank)
    steady = [op for i in range(m - warm) for op in (("backward", i, 0), ("forward", warm + i, 0))]
    cooldown = (("backward", i, 0) for i in range(m - warm, m))
    return (*(("forward", i, 0) for i in range(warm)), *steady, *cooldown)


@dataclass(frozen=True, slots=True, kw_only=True)
class Moment:
    """What a pipeline rank holds while one op of its order runs (forward: after its activations are saved;
    backward: before any are freed): micro-batches held per chunk, and the chunks with gradients."""

    kind: str
    chunk: int
    alive_by_chunk: tuple[int, ...]     # micro-batches forwarded, not yet backwarded, of each chunk
    alive_layers: int                   # decoder-layer micro-batches: Σ over chunks of alive × its layers
    chunks_with_grads: tuple[int, ...]  # chunks whose backward ran before this op (their gradients exist)

    @property
    def alive(self) -> int:
        """Chunk micro-batches whose activations are held."""
        return sum(self.alive_by_chunk)


def moments(spec: ModelSpec, *, pp: int, rank: int, micro_batches: int,
            schedule: PipelineSchedule = PipelineSchedule.ONE_F_ONE_B,
            virtual: int = 1) -> tuple[Moment, ...]:
    """One `Moment` per op of `rank_order`, in order."""
    sizes = [len(layers) for layers in rank_chunks(spec, pp=pp, virtual=virtual, rank=rank)]
    alive = [0] * virtual
    done: set[int] = set()
    out: list[Moment] = []
    for kind, _, chunk in rank_order(pp, rank, micro_batches, schedule, virtual):
        if kind == "forward":
            alive[chunk] += 1
        out.append(Moment(kind=kind, chunk=chunk, alive_by_chunk=tuple(alive),
                          alive_layers=sum(n * size for n, size in zip(alive, sizes, strict=True)),
                          chunks_with_grads=tuple(sorted(done))))
        if kind == "backward":
            alive[chunk] -= 1
            done.add(chunk)
    return tuple(out)


def fullest(spec: ModelSpec, *, pp: int, rank: int, micro_batches: int,
            schedule: PipelineSchedule = PipelineSchedule.ONE_F_ONE_B, virtual: int = 1) -> Moment:
    """The first moment of `moments` with the most decoder-layer micro-batches held. 1F1B and GPipe in
    closed form: the warm-up's last forward, min(m, pp − rank) (GPipe: m) micro-batches of the stage."""
    if schedule is not PipelineSchedule.INTERLEAVED:
        held = micro_batches if schedule is PipelineSchedule.GPIPE else min(micro_batches, pp - rank)
        layers = len(chunk_layers(spec, pp=pp, virtual=1, rank=rank, chunk=0))
        return Moment(kind="forward", chunk=0, alive_by_chunk=(held,), alive_layers=held * layers,
                      chunks_with_grads=())
    return max(moments(spec, pp=pp, rank=rank, micro_batches=micro_batches, schedule=schedule,
                       virtual=virtual), key=lambda one: one.alive_layers)


def grads_share(held: tuple[int, ...], sizes: tuple[int, ...]) -> Fraction:
    """The fraction of a rank's gradient elements formed once chunks `held` have run a backward, with
    `sizes` the elements of each chunk."""
    return Fraction(sum(sizes[c] for c in held), sum(sizes)) if sum(sizes) else Fraction(0)
