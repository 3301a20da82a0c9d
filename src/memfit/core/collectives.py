"""What a multi-GPU strategy adds on one GPU beyond its share of each term, and when it is alive.

`collectives()` sizes the buffers (see core/parallel.py for the strategy table and sources);
`moment_terms()` says which exist at each moment of a training step, as Terms under the top-level names
they belong to (`weights`, `gradients`), which training.py merges into its phases.

Moments and what FSDP2 holds at each (besides its shards), following _fsdp_param_group.py:
- forward_layer: the root unit (not resharded after forward), the unit being computed, and its flat
  all-gather output, kept for implicit prefetch until the next unit's copy-out;
- forward_copy_out: the next unit's copy-out: the previous output, this output, this unit unsharded;
- forward_loss (inside the root's forward): the root and the last unit's all-gather output;
- backward_start: the root and the prefetched last unit's all-gather output;
- backward_head: + the head's (and final norm's) unsharded gradients, held until the root reduces at the end;
- backward_layer: + the unit unsharded, the next unit prefetched, this unit's unsharded gradients;
- backward_layer_steady: + the previous unit's reduce-scatter input (held one unit);
- backward_last_unit: the second decoder layer's backward (the last with a unit to prefetch): the other
  units' gradients reduced to shards, two layers' activations left (shard-grad-op: two units unsharded);
- backward_expert_gather (expert parallelism): layer 0's routed experts gathered, every later unit reduced,
  layer 0's dense unit unsharded and its saved activations left;
- backward_end: the root's unsharded gradients beside its parameters, which it frees before allocating its
  reduce-scatter input;
- optimizer: shards only (ZeRO: + the fp32 gradient partition).
"""

from __future__ import annotations

from dataclasses import dataclass

from memfit.core.choices import FsdpStrategy, Offload, ZeroStage
from memfit.core.deepspeed import resolved_zero
from memfit.core.parallel import (
    NCCL_BUFFSIZE_BYTES,
    NCCL_CHANNELS,
    NCCL_P2P_CHANNELS_PER_PEER,
    NCCL_RING_PEERS,
    Collectives,
    Shape,
    counted,
    expert_world,
    is_fsdp,
    layer_shapes,
    layers_shapes,
    model_shapes,
    padded_elements,
    rank_layers,
    shard_world,
    unit_padded_elements,
)
from memfit.core.result import Term
from memfit.core.spec import ModelSpec
from memfit.core.workload import Parallelism

LORA_BYTES = 4
"""peft keeps LoRA adapters in fp32 (autocast_adapter_dtype=True). Source: peft tuners_utils."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GradBytes:
    """Unsharded trainable-gradient bytes training.py knows, for one stage: per decoder layer (largest),
    the head and final norm, the whole root unit, and all of the stage; plus the element sizes."""

    layer: int
    head: int
    root: int
    total: int
    gather_bytes: int       # bytes per gathered parameter element (FSDP param_dtype, ZeRO's bf16/fp16)
    grad_bytes: int         # bytes per unsharded gradient element
    reduce_bytes: int       # bytes per reduce-scatter element (FSDP reduce_dtype)
    largest_tensor: int     # elements of the largest parameter tensor of a decoder layer (tp-local)
    largest_grad: int       # elements of the largest trainable tensor of a decoder layer (tp-local)
    adapter_shapes: tuple[Shape, ...] = ()  # LoRA: one layer's A and B tensors (fp32), gathered with it
    layer_at_peak: int | None = None  # of the unit: gradients formed at its backward peak (None: all)


def nccl_bytes(par: Parallelism) -> int:
    """NCCL buffers of one process: NCCL_BUFFSIZE × channels × ring peers per communicator it joins
    (data parallel, or shard and replicate groups for hybrid FSDP; tensor parallel; pipeline p2p), plus
    the expert groups under expert parallelism (`expert_nccl_bytes`)."""
    communicators = 0
    if par.dp > 1:
        communicators += 2 if is_fsdp(par) and shard_world(par) < par.dp else 1
    communicators += (par.tp > 1) + (par.pp > 1)
    return communicators * NCCL_CHANNELS * NCCL_RING_PEERS * NCCL_BUFFSIZE_BYTES + expert_nccl_bytes(par)


def expert_nccl_bytes(par: Parallelism) -> int:
    """NCCL buffers of the expert-parallel communicators one process joins (0 without ep):

    - the ep group's all-to-all: a receive buffer of NCCL_BUFFSIZE per channel from each of its ep − 1
      peers, NCCL_P2P_CHANNELS_PER_PEER channels each;
    - the expert-data-parallel group (dp / ep ranks holding the same experts), which reduces the experts'
      gradients (and all-gathers their FSDP shards): a ring communicator like the data-parallel one, when
      it has more than one rank.
    Source: torchtitan ParallelDims (the "ep" and "efsdp" mesh dimensions are their own process groups);
    DeepSpeed utils/groups.py (expert-parallel and expert-data-parallel groups)."""
    if par.ep == 1:
        return 0
    all_to_all = (par.ep - 1) * NCCL_P2P_CHANNELS_PER_PEER * NCCL_BUFFSIZE_BYTES
    ring = NCCL_CHANNELS * NCCL_RING_PEERS * NCCL_BUFFSIZE_BYTES if expert_world(par) > 1 else 0
    return all_to_all + ring


def _fsdp(spec: ModelSpec, par: Parallelism, stage: int, g: GradBytes) -> Collectives:
    world = shard_world(par)
    root, _ = model_shapes(spec, par, stage)
    per_layer = [(unit_padded_elements(spec, layer, par), count)
                 for layer, count in counted(rank_layers(spec, par, stage))]
    unit = max((padded for padded, _ in per_layer), default=0)
    body = sum(padded * count for padded, count in per_layer)
    keep_all = par.fsdp is FsdpStrategy.SHARD_GRAD_OP
    ratio_num, ratio_den = g.reduce_bytes, g.grad_bytes
    # LoRA: the unit's fp32 adapters are all-gathered with it (padded over their own dim 0: A has rank rows)
    adapter_bytes = padded_elements(g.adapter_shapes, world) * LORA_BYTES
    unit_grads = adapter_bytes if g.adapter_shapes else g.layer
    unit_bytes = unit * g.gather_bytes + adapter_bytes
    body_bytes = body * g.gather_bytes + adapter_bytes * len(rank_layers(spec, par, stage))
    dense_buffer, expert_buffer = unit_bytes if world > 1 else 0, 0
    grads_at_peak, reduced = g.layer_at_peak, unit_grads
    if par.ep > 1:      # the routed experts are a unit of their own over expert_world(par) ranks
        experts = max((padded_elements(layer_shapes(spec, layer, ep=par.ep, experts=True), expert_world(par))
                       for layer, _ in counted(rank_layers(spec, par, stage))), default=0)
        expert_buffer = experts * g.gather_bytes if expert_world(par) > 1 else 0
        dense_buffer = (unit_bytes - experts * g.gather_bytes) if world > 1 else 0
        if not g.adapter_shapes:
            # at the routed experts' backward (the layer's peak) their own gradients are still forming and
            # the unit reduced before them is the next layer's dense part
            grads_at_peak, reduced = 0, max(unit_grads - experts * g.grad_bytes, 0)
            unit_grads = max(experts * g.grad_bytes, reduced)     # one of the two units at a time
    return Collectives(
        root=padded_elements(root, world) * g.gather_bytes,
        unit=0 if keep_all else unit_bytes,
        unit_size=unit_bytes,
        unit_buffer=dense_buffer,
        expert_buffer=expert_buffer,
        split_units=par.ep > 1,
        all_units=body_bytes if keep_all else 0,
        unit_grads=unit_grads,
        unit_grads_peak=grads_at_peak,
        unit_reduce=reduced * ratio_num // ratio_den if world > 1 else 0,
        root_grads_held=g.head,
        root_grads=g.root,
        root_reduce=g.root * ratio_num // ratio_den if world > 1 else 0,
        nccl=nccl_bytes(par),
    )


def _zero(spec: ModelSpec, par: Parallelism, stage: int, g: GradBytes) -> Collectives:
    z = resolved_zero(par.zero_config, hidden_size=spec.hidden_size, stage=par.zero.level)
    buffers = (2 if z.overlap_comm and par.zero.level < 3 else 1) if z.contiguous_gradients else 0
    buckets = buffers * z.reduce_bucket_elements * g.grad_bytes
    fp32_partition = g.total // g.grad_bytes * 4 // par.dp
    # ZeRO-3 on the GPU upcasts one sub-group (sub_group_size elements) at a time; ZeRO-1/2 the whole
    # partition; offloaded, the whole partition lives on the host
    sub_groups = par.zero is ZeroStage.PARAMETERS and par.offload_optimizer is Offload.NONE
    fp32 = min(fp32_partition, 4 * z.sub_group_size) if sub_groups else fp32_partition
    if par.zero is not ZeroStage.PARAMETERS:
        return Collectives(buckets=buckets, bucket_name="ipg_buckets", fp32_grads=fp32, nccl=nccl_bytes(par),
                           unit_grads=g.largest_grad * g.grad_bytes if par.zero.level == 2 else 0)
    root, _ = model_shapes(spec, par, stage)
    layers = rank_layers(spec, par, stage)
    shapes = layers_shapes(spec, layers, tp=par.tp, ep=par.ep)
    body = sum(d * r for d, r in shapes)
    window = min(g.largest_tensor + z.prefetch_bucket_elements, z.max_live_parameters, body)
    head = max((d * r for d, r in root), default=0)
    # tensors below stage3_param_persistence_threshold elements stay unpartitioned on every rank (norms);
    # the rank's own 1/N of them is already in its partition
    small = sum(d * r for d, r in shapes if d * r < z.param_persistence_threshold)
    small += sum(d * r for d, r in root if d * r < z.param_persistence_threshold)
    return Collectives(
        persistent=(small - small // par.dp) * g.gather_bytes,
        unit=window * g.gather_bytes,
        unit_grads=g.largest_grad * g.grad_bytes,
        head_gather=head * g.gather_bytes,
        root_grads_held=0,
        root_grads=head * g.grad_bytes if g.root else 0,
        buckets=buckets, bucket_name="ipg_buckets", fp32_grads=fp32, nccl=nccl_bytes(par),
    )


def collectives(spec: ModelSpec, par: Parallelism, *, stage: int, grads: GradBytes) -> Collectives:
    """The buffers `par` adds on the most loaded rank of pipeline stage `stage` (bytes)."""
    if is_fsdp(par):
        return _fsdp(spec, par, stage, grads)
    if par.zero is not ZeroStage.NONE:
        return _zero(spec, par, stage, grads)
    if par.dp > 1:
        # DDP: one flat bucket per ≤ 25 MiB of gradients, a full second copy (gradient_as_bucket_view=False)
        return Collectives(buckets=grads.total, nccl=nccl_bytes(par))
    return Collectives(nccl=nccl_bytes(par))


MOMENTS = ("forward_layer", "forward_copy_out", "forward_loss", "backward_start", "backward_head",
           "backward_layer", "backward_layer_steady", "backward_end", "optimizer")


def _gather_buffers(c: Collectives, moment: str, buffers: int, unit_done: bool = False) -> int:
    """Bytes of the flat all-gather outputs alive at `moment`, `buffers` of them (one unit per layer).

    With expert parallelism a layer is two units, its dense part then its experts; each copy-out frees the
    previous unit's output (forward's implicit prefetch), even the experts' unit that gathers over one rank
    and keeps no output. So forward holds the dense output or the experts' one, both at a copy-out, the
    experts' one at the loss (the last unit copied out); backward starts with the last layer's dense unit
    prefetched, and when a layer's experts finish their backward the unit prefetched is a dense one.
    Source: torch 2.13 _fsdp_param_group.py FSDPParamGroup.wait_for_unshard (the previous
    all_gather_state is freed before the world_size == 1 branch), pre_backward (prefetches the next unit
    in backward order)."""
    if not c.split_units or not buffers:
        return buffers * c.unit_buffer
    if unit_done and moment.startswith("backward"):
        return c.unit_buffer
    return {"forward_copy_out": c.unit_buffer + c.expert_buffer, "forward_loss": c.expert_buffer,
            "backward_start": c.unit_buffer, "backward_expert_gather": c.expert_buffer,
            }.get(moment, max(c.unit_buffer, c.expert_buffer))


def moment_terms(c: Collectives, moment: str, *, unit_done: bool = False) -> tuple[Term, ...]:
    """What `c` holds at `moment` (see the module docstring), as top-level Terms to merge. Names follow
    the multi-rank trace: weights/all_gather_buffers, gradients/reduce_scatter_buffers, .../ddp_buckets."""
    fwd_bwd = moment.startswith(("forward", "backward"))
    weights = [Term(name="persistent_params", nbytes=c.persistent,
                    note="ZeRO-3: below stage3_param_persistence_threshold, unpartitioned")]
    # shard-grad-op: every unit stays unsharded until its own backward reshards it
    units = {"backward_layer_steady": max(c.all_units - c.unit_size, 0),
             "backward_last_unit": min(c.all_units, 2 * c.unit_size),
             "backward_end": 0}.get(moment, c.all_units)
    if fwd_bwd:
        weights += [Term(name="root_unit", nbytes=c.root, note="FSDP root: embedding, head, final norm"),
                    Term(name="unsharded_units", nbytes=units, note="shard-grad-op keeps them")]
    if moment in ("forward_layer", "forward_copy_out", "backward_layer", "backward_layer_steady",
                  "backward_last_unit", "backward_expert_gather"):
        weights.append(Term(name="gathered_unit", nbytes=c.unit, note="one unit (layer) all-gathered"))
    if moment in ("backward_head", "backward_end"):
        weights.append(Term(name="gathered_head", nbytes=c.head_gather, note="ZeRO-3: head/embedding"))
    buffers = {"forward_layer": 1, "forward_copy_out": 2, "forward_loss": 1, "backward_start": 1,
               "backward_layer": 1, "backward_layer_steady": 1, "backward_last_unit": 1,
               "backward_expert_gather": 1}.get(moment, 0)
    if c.all_units and moment.startswith("backward"):
        buffers = 0     # shard-grad-op: every unit is still unsharded, backward gathers nothing
    weights.append(Term(name="all_gather_buffers", nbytes=_gather_buffers(c, moment, buffers, unit_done),
                        note="flat all-gather output (prefetch)"))
    # DDP builds its buckets in its constructor; DeepSpeed its ipg buffers at the first backward
    at_load = c.bucket_name == "ddp_buckets"
    grads = [Term(name=c.bucket_name, nbytes=c.buckets if moment != "load" or at_load else 0,
                  note="flat gradient buckets")]
    if moment in ("backward_layer", "backward_layer_steady", "backward_last_unit"):
        # at the layer's transient peak (its MLP activation's backward) only the Linears after it have
        # their weight gradients; at the end of the layer's backward (unit_done) all of them
        formed = c.unit_grads if unit_done or c.unit_grads_peak is None else c.unit_grads_peak
        grads.append(Term(name="unsharded_unit", nbytes=formed, note="before reduce-scatter"))
    if moment in ("backward_layer_steady", "backward_last_unit", "backward_expert_gather"):
        grads.append(Term(name="reduce_scatter_buffers", nbytes=c.unit_reduce, note="previous unit"))
    if moment in ("backward_head", "backward_layer", "backward_layer_steady", "backward_last_unit",
                  "backward_expert_gather"):
        grads.append(Term(name="root_held", nbytes=c.root_grads_held,
                          note="head grads until the root reduces"))
    if moment == "backward_head":
        grads.append(Term(name="unsharded_head", nbytes=c.root_grads if c.head_gather else 0))
    if moment == "backward_end":
        grads.append(Term(name="embedding_full_vocab", nbytes=c.embed_grad,
                          note="DTensor's vocab-parallel embedding backward before it reduces to the shard"))
        grads.append(Term(name="unsharded_root", nbytes=c.root_grads, note="embedding, head, final norm"))
        # the root reshards (frees its unsharded parameters) before it allocates its reduce-scatter input
        grads.append(Term(name="reduce_scatter_buffers", nbytes=max(0, c.root_reduce - c.root),
                          note="root unit, beyond its freed parameters"))
    if moment == "optimizer":
        grads.append(Term(name="fp32_partition", nbytes=c.fp32_grads, note="ZeRO: fp32 grads for the step"))
        grads.append(Term(name="embedding_full_vocab", nbytes=c.embed_grad_kept,
                          note="an untied vocab-parallel embedding's .grad spans the whole vocabulary"))
    # vocab-parallel loss: one more fp32 logits-sized buffer than the single-GPU loss, in forward (x − max(x)
    # beside the result) and at the start of backward
    shift = c.loss_shift if moment in ("forward_loss", "backward_start") else 0
    logits = [Term(name="loss_parallel_extra", nbytes=shift,
                   note="loss_parallel's fp32 buffer (torch tensor/parallel/loss.py _log_softmax)")]
    out = [Term.group("weights", weights), Term.group("gradients", grads), Term.group("logits", logits)]
    return tuple(t for t in out if t.nbytes)
