"""What the most loaded GPU of a multi-GPU training step holds, by term: the one place that knows what each
strategy keeps.

Training terms are built unsharded (one replica, one micro-batch) in training.py and divided once here by
a `RankShare`; what a strategy adds on top (gathered units, communication buffers, unsharded gradients
before their reduce-scatter) is a `Collectives` record, placed at the moments of the step it exists:

- DDP: parameters, gradients, states whole; gradient buckets, a second copy of every gradient
  (gradient_as_bucket_view=False).
- ZeRO-1 (DeepSpeed): bf16 parameters and gradients whole; fp32 master weights and states / N; ipg
  buckets; the fp32 gradient partition during the step.
- ZeRO-2: as ZeRO-1 with a flat bf16 gradient partition / N; ipg buckets (two with overlap_comm); one
  tensor's unsharded gradient while it is copied into a bucket.
- ZeRO-3: parameters / N too; a live window (the largest module plus the prefetch bucket, capped by
  max_live_parameters); the head or embedding gathered with its unsharded gradient.
- FSDP2 full: every tensor dim-0 sharded, padded to ceil(dim0 / N) rows; the root unit (embedding, head,
  final norm) unsharded from forward to the end of backward; one unit gathered plus its flat all-gather
  output (prefetch); a unit's unsharded gradients and its reduce-scatter input; the root's gradients
  unsharded until it reduces at the end. Shard-grad-op keeps every unit unsharded from forward to the end
  of backward; hybrid shards within a node of gpus_per_node GPUs.
- tp (DTensor, torchtitan's Llama plan): Linears and the (vocab-parallel) embedding and head / tp, norms
  whole; attention and MLP internals / tp, but the input each column-parallel Linear saves stays whole
  (under sequence parallelism it is the all-gathered sequence; Megatron-LM's SP would keep the shard);
  norms and the residual stream / tp only with sequence parallelism; logits / tp, with one more fp32
  logits shard in the vocab-parallel loss; the embedding's gradient spans the whole vocabulary at the
  end of backward (untied: as .grad until the step).
- pp (1F1B or GPipe): a stage holds its ceil(L / pp) layers, the first also the embeddings, the last the
  final norm, head, loss and logits; min(micro-batches, pp − stage) micro-batches of activations in flight
  under 1F1B (with the earlier micro-batches' gradients once there are more), all of them under GPipe.
  Interleaved 1F1B: a rank holds pp_virtual_stages chunks (virtual stages chunk × pp + rank) and the
  activations of the chunk micro-batches its order holds at its fullest moment (core/schedule.py).
- offload (cpu/nvme): states, master weights and fp32 gradients (and with parameter offload, the
  parameters) in host RAM, reported per node (ranks per node × per-rank bytes).

NCCL buffers go to `non_torch`: NCCL_BUFFSIZE per channel per ring peer per communicator (an assumption
about channel counts, see the constants). Sources: torch 2.13 torch/distributed/fsdp/_fully_shard
(_fsdp_param.py dim-0 padded chunks, _fsdp_collectives.py foreach_all_gather / foreach_reduce,
_fsdp_param_group.py: the all-gather output kept for implicit forward prefetch, backward prefetch of the
next unit, root not resharded after forward); torch/nn/parallel/distributed.py (bucket_cap_mb=25,
dist._DEFAULT_FIRST_BUCKET_BYTES = 1 MiB); DeepSpeed 0.19 runtime/zero/stage_1_and_2.py (setup_buckets,
single_partition_of_fp32_groups), stage3.py (grad_partitions_flat_buffer, ipg bucket); Shoeybi et al. 2019
(Megatron-LM §3); Korthikanti et al. 2022 (sequence parallelism §4); Narayanan et al. 2021 (1F1B §2.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from memfit.core.choices import FsdpStrategy, Offload, PipelineSchedule, ZeroStage
from memfit.core.errors import InvalidWorkload
from memfit.core.params import layer_linears, layer_non_linear_params, non_layer_params
from memfit.core.result import Term
from memfit.core.schedule import fullest, rank_chunks, rank_order, stage_range
from memfit.core.spec import LayerSpec, ModelSpec, MoeSpec
from memfit.core.units import MiB
from memfit.core.workload import Parallelism

DDP_BUCKET_CAP_BYTES = 25 * MiB
"""DDP's bucket_cap_mb default. Source: torch/nn/parallel/distributed.py DistributedDataParallel.__init__."""
DDP_FIRST_BUCKET_BYTES = 1 * MiB
"""The first (last-layer) bucket's cap. Source: torch.distributed._DEFAULT_FIRST_BUCKET_BYTES."""
NCCL_BUFFSIZE_BYTES = 4 * MiB
"""NCCL_BUFFSIZE default: the Simple protocol's buffer per channel and peer. Source: NCCL docs (env vars)."""
NCCL_CHANNELS = 16
"""Channels per communicator (assumed): NCCL picks 8-32 on NVLink H100 nodes; 16 is typical for rings."""
NCCL_RING_PEERS = 2
"""Connections per channel in a ring: the previous and the next rank."""
NCCL_P2P_CHANNELS_PER_PEER = 2
"""Channels NCCL opens to each peer of a point-to-point exchange (all-to-all is one send and one receive
per peer). Source: NCCL docs (env vars), NCCL_NCHANNELS_PER_NET_PEER default 2; assumed for NVLink peers."""
LOAD_COPY_NOTE = "each process loads the checkpoint into CPU RAM before moving it to its GPU"


@dataclass(frozen=True, slots=True, kw_only=True)
class RankShare:
    """The fraction of each unsharded training term this GPU holds (Fractions; padding included)."""

    params: Fraction = Fraction(1)
    adapters: Fraction = Fraction(1)        # LoRA adapters (padded over their own shapes)
    grads: Fraction = Fraction(1)
    states: Fraction = Fraction(1)          # optimizer states, master weights, step temporaries
    layer_activations: Fraction = Fraction(1)   # attention and MLP internals of the stage's layers
    residual_activations: Fraction = Fraction(1)  # norms, layer inputs, the residual stream
    replicated_activations: Fraction = Fraction(1)  # tensors whole on every tp rank (Linear inputs)
    logits: Fraction = Fraction(1)          # 0 on a pipeline stage without the head
    tail: Fraction = Fraction(1)            # the final norm's saved input: the last stage, / tp under SP
    one_layer: Fraction = Fraction(1)       # one layer's transients and recomputation: / tp
    autocast: Fraction = Fraction(1)        # AMP weight casts (0 under an FSDP mixed-precision policy)
    grads_persist: bool = False             # ZeRO-2/3 keep a flat gradient partition through forward
    sharded_grads: bool = False             # gradients are reduce-scattered a unit at a time
    host_params: bool = False               # parameters live in host RAM (offload)
    host_states: bool = False               # optimizer states, master weights, fp32 grads in host RAM
    master: bool = False                    # DeepSpeed keeps fp32 master weights (bf16/fp16 params)


@dataclass(frozen=True, slots=True, kw_only=True)
class Collectives:
    """Bytes a strategy adds on one GPU, each alive at the moments named in `moment_terms`."""

    root: int = 0             # FSDP root unit (embedding, head, final norm) unsharded, forward → backward
    unit: int = 0             # one gathered unit (FSDP) or ZeRO-3's live window, in the gather dtype
    unit_buffer: int = 0      # FSDP's flat all-gather output of one unit (prefetch); ep: the dense part
    expert_buffer: int = 0    # ep: the routed experts' own unit's flat all-gather output (dp / ep > 1)
    split_units: bool = False  # ep: each layer is two FSDP units, its dense part and its routed experts
    all_units: int = 0        # shard-grad-op: every unit unsharded from forward until its own backward
    unit_size: int = 0        # one unit's unsharded bytes (FSDP), gathered or not
    unit_grads: int = 0       # one unit's (layer's) unsharded gradients before their reduction
    unit_grads_peak: int | None = None  # ... those formed at the layer's backward transient peak (None: all)
    unit_reduce: int = 0      # FSDP's reduce-scatter input of one unit (reduce dtype), held one unit
    root_grads_held: int = 0  # FSDP: head and final-norm gradients, unsharded until the root reduces
    root_grads: int = 0       # FSDP: all root gradients unsharded at the end of backward
    root_reduce: int = 0      # FSDP: the root's reduce-scatter input
    head_gather: int = 0      # ZeRO-3: lm_head (or embedding) gathered for its forward/backward
    persistent: int = 0       # ZeRO-3: parameters under stage3_param_persistence_threshold kept whole
    buckets: int = 0          # DDP gradient buckets (from construction), ZeRO ipg buffers (first backward)
    bucket_name: str = "ddp_buckets"
    fp32_grads: int = 0       # ZeRO: fp32 gradient partition during the optimizer step
    nccl: int = 0             # NCCL communicator buffers (non_torch)
    loss_shift: int = 0       # vocab-parallel loss: the shifted fp32 logits beside log_softmax's output
    embed_grad: int = 0       # vocab-parallel embedding: its gradient over the whole vocabulary, at the end
    embed_grad_kept: int = 0  # ... and the part of it that stays as the untied embedding's .grad to the step


NO_COLLECTIVES = Collectives()
"""One GPU: nothing added."""


def validate_parallel(spec: ModelSpec, par: Parallelism) -> None:
    """InvalidWorkload when tp does not split every layer's heads, or pp exceeds the layers."""
    layers = {id(one): one for one in spec.attention_specs}.values()

    def splits(tp: int) -> bool:   # heads split evenly; KV heads split, or replicated when fewer than tp
        return all(att.num_heads % tp == 0 and (att.num_kv_heads % tp == 0 or tp % att.num_kv_heads == 0)
                   for att in layers)

    if not splits(par.tp):
        att = next(iter(layers))
        valid = ", ".join(str(t) for t in range(1, att.num_heads + 1) if splits(t))
        raise InvalidWorkload(f"tp={par.tp} does not split the attention of {spec.name} "
                              f"({att.num_heads} heads, {att.num_kv_heads} KV heads); use tp in {valid}")
    if par.pp > spec.num_layers:
        raise InvalidWorkload(f"pp={par.pp} exceeds num_hidden_layers={spec.num_layers} of {spec.name}")
    stages = par.pp * par.pp_virtual_stages
    if stages > spec.num_layers:
        raise InvalidWorkload(f"pp={par.pp} × pp_virtual_stages={par.pp_virtual_stages} = {stages} model "
                              f"chunks exceed num_hidden_layers={spec.num_layers} of {spec.name}; use "
                              f"pp_virtual_stages ≤ {spec.num_layers // par.pp}")
    validate_ep(spec, par)


def validate_ep(spec: ModelSpec, par: Parallelism) -> None:
    """InvalidWorkload when ep > 1 on a model without MoE layers, or ep does not divide the routed experts
    of every MoE layer (each rank holds num_experts / ep whole experts)."""
    if par.ep == 1:
        return
    experts = sorted({layer.mlp.num_experts for layer in spec.layers if isinstance(layer.mlp, MoeSpec)})
    if not experts:
        raise InvalidWorkload(f"ep={par.ep} splits routed experts, but {spec.name} has no MoE layers; "
                              "use ep=1")
    if any(n % par.ep for n in experts):
        valid = ", ".join(str(e) for e in range(1, experts[0] + 1) if all(n % e == 0 for n in experts))
        raise InvalidWorkload(f"ep={par.ep} does not divide the {experts[0]} routed experts of {spec.name}; "
                              f"use ep in {valid}")


# --- who shards what ---------------------------------------------------------------------------------------

def is_fsdp(par: Parallelism) -> bool:
    return par.fsdp is not None


def shard_world(par: Parallelism) -> int:
    """Ranks one sharded tensor is split over: dp, or the node (gpus_per_node) for FSDP hybrid."""
    if par.fsdp is FsdpStrategy.HYBRID:
        return min(par.dp, par.gpus_per_node)
    return par.dp


def _levels(par: Parallelism) -> tuple[bool, bool, bool]:
    """(parameters, gradients, optimizer states) sharded over the data-parallel ranks. FSDP2's
    shard-grad-op (reshard_after_forward=False) still holds the shard; its unsharded layers are extra."""
    params = par.zero is ZeroStage.PARAMETERS or par.fsdp is not None   # FSDP2 always keeps the shard
    grads = params or par.zero is ZeroStage.GRADIENTS
    return params, grads, grads or par.zero is ZeroStage.OPTIMIZER


# --- tensor shapes: what FSDP2 pads ------------------------------------------------------------------------

Shape = tuple[int, int]
"""(dim-0 size, elements per dim-0 row) of one parameter tensor."""


def layer_shapes(spec: ModelSpec, layer: LayerSpec, *, tp: int = 1, ep: int = 1,
                 experts: bool | None = None) -> tuple[Shape, ...]:
    """Every parameter tensor of one decoder layer, tp-local: Linears split over tp (but those tensor
    parallelism replicates, `Linear.tp_split == 1`: MLA's q_a_proj and kv_a_proj_with_mqa, routers, as
    transformers 5.17's deepseek_v2 base_model_tp_plan leaves them), norms whole.

    A module's `count` copies are separate tensors; a raw Parameter (fused experts) is one stacked tensor
    whose dim 0 is the expert count, ep-local: num_experts / ep rows (torchtitan's ExpertParallel shards the
    fused expert weights on dim 0, Shard(0)). `experts` True keeps only the routed experts' tensors, False
    every other tensor, None all.
    """
    tp_all = tp
    out: list[Shape] = []
    for lin in layer_linears(spec, layer):
        if experts is not None and (lin.role == "experts") is not experts:
            continue
        count = lin.count // ep if lin.role == "experts" else lin.count
        tp = 1 if lin.tp_split == 1 else tp_all     # MLA's latent down-projections and routers: replicated
        if lin.is_module:
            out += [(lin.fan_out, lin.fan_in // tp)] * count
            out += [(lin.fan_out // tp, 1)] * (count if lin.bias else 0)
        elif lin.count > 1:     # fused experts: (experts, fan_out, fan_in), dim 0 the expert count
            out.append((count, lin.fan_out * lin.fan_in // tp))
            out += [(count, lin.fan_out // tp)] if lin.bias else []
        else:                   # a raw (fan_out, fan_in) Parameter: a router
            out.append((lin.fan_out, lin.fan_in // tp))
            out += [(lin.fan_out // tp, 1)] if lin.bias else []
    if experts:
        return tuple(out)
    for _, n in layer_non_linear_params(spec, layer):
        width = spec.hidden_size if n % spec.hidden_size == 0 else n
        out += [(width, 1)] * (n // width)
    return tuple(out)


def counted(layers: tuple[LayerSpec, ...]) -> list[tuple[LayerSpec, int]]:
    """The distinct layer objects of `layers` with how many times each occurs (equal layers share one)."""
    distinct: dict[int, LayerSpec] = {}
    counts: dict[int, int] = {}
    for layer in layers:
        distinct.setdefault(id(layer), layer)
        counts[id(layer)] = counts.get(id(layer), 0) + 1
    return [(layer, counts[key]) for key, layer in distinct.items()]


def layers_shapes(spec: ModelSpec, layers: tuple[LayerSpec, ...], *, tp: int = 1, ep: int = 1,
                  experts: bool | None = None) -> tuple[Shape, ...]:
    """`layer_shapes` of every layer in `layers`, each distinct layer object worked out once."""
    out: list[Shape] = []
    for layer, count in counted(layers):
        out += layer_shapes(spec, layer, tp=tp, ep=ep, experts=experts) * count
    return tuple(out)


def root_shapes(spec: ModelSpec, *, tp: int = 1, first: bool = True, last: bool = True) -> tuple[Shape, ...]:
    """Parameters outside the decoder layers (FSDP's root unit): embeddings on the first stage, final norm
    and an untied head on the last; the vocabulary split over tp (vocab-parallel)."""
    width = spec.embedding_dim or spec.hidden_size
    out: list[Shape] = []
    if spec.tie_word_embeddings and last and not first:
        # a tied head on a later stage than the embedding holds its own copy of the weight
        out.append((spec.vocab_size // tp, width))
    for name, n in non_layer_params(spec):
        if n == 0:
            continue
        if name == "embeddings" and first:
            out.append((spec.vocab_size // tp, width))
        elif name == "lm_head" and last:
            out.append((spec.vocab_size // tp, n // spec.vocab_size))
        elif name not in ("embeddings", "lm_head") and (last if name == "final_norm" else first):
            out.append((n, 1))
    return tuple(out)


def shard_elements(shape: Shape, world: int) -> int:
    """Elements of one rank's FSDP2 shard: dim 0 chunked over `world`, padded to ceil(dim0 / world) rows.

    Source: _fsdp_param.py FSDPParam._init_sharded_param (torch.chunk, padded_sharded_param_size).
    """
    dim0, rest = shape
    return -(-dim0 // world) * rest


def elements(shapes: tuple[Shape, ...]) -> int:
    return sum(d * r for d, r in shapes)


def padded_elements(shapes: tuple[Shape, ...], world: int) -> int:
    """Elements of the unsharded (all-gathered) tensors, padded: world × the padded shard."""
    return sum(world * shard_elements(s, world) for s in shapes)


def sharded_elements(shapes: tuple[Shape, ...], world: int) -> int:
    return sum(shard_elements(s, world) for s in shapes)


def partition_elements(shapes: tuple[Shape, ...], world: int, par: Parallelism) -> int:
    """Elements of `shapes` one rank keeps when sharded over `world`: FSDP2 chunks each tensor's dim 0
    (padded rows); DeepSpeed ZeRO-3 partitions each flattened parameter (ceil(numel / world)); ZeRO-1/2
    partition the flat group (ceil(total / world)).

    Source: _fsdp_param.py; DeepSpeed partition_parameters.py `_partition_param` (ds_tensor of
    ceil(numel / world)); stage_1_and_2.py flatten_dense_tensors_aligned + get_data_parallel_partitions.
    """
    if is_fsdp(par):
        return sharded_elements(shapes, world)
    if par.zero is ZeroStage.PARAMETERS:
        return sum(-(-d * r // world) for d, r in shapes)
    return -(-elements(shapes) // world)


# --- pipeline stages ---------------------------------------------------------------------------------------

def stage_layers(spec: ModelSpec, pp: int, stage: int) -> tuple[LayerSpec, ...]:
    """The decoder layers of `stage`: an even split of L over pp, the first L % pp stages one layer more.

    Source: torch.distributed.pipelining's even split by layer count (as the multi-rank trace cuts stages).
    """
    layers = stage_range(spec.num_layers, pp, stage)
    return spec.layers[layers.start:layers.stop]


def rank_layers(spec: ModelSpec, par: Parallelism, stage: int) -> tuple[LayerSpec, ...]:
    """The decoder layers pipeline rank `stage` holds: its stage's (`stage_layers`), or under the
    interleaved schedule those of its pp_virtual_stages chunks (core/schedule.py chunk_layers)."""
    if par.pp_virtual_stages == 1:
        return stage_layers(spec, par.pp, stage)
    chunks = rank_chunks(spec, pp=par.pp, virtual=par.pp_virtual_stages, rank=stage)
    return tuple(layer for chunk in chunks for layer in chunk)


def stage_order(pp: int, stage: int, micro_batches: int,
                schedule: PipelineSchedule = PipelineSchedule.ONE_F_ONE_B) -> tuple[tuple[str, int], ...]:
    """The forwards ("forward", i) and backwards ("backward", i) stage `stage` runs in one step, in order
    (1F1B or GPipe: one chunk per rank; core/schedule.py rank_order has the chunks too).

    1F1B: min(m, pp − stage) warm-up forwards, then one backward and one forward while forwards remain,
    then the remaining backwards. GPipe: every forward, then every backward.
    Source: torch 2.13 torch/distributed/pipelining/schedules.py (Schedule1F1B._step_microbatches:
    warmup_chunks, the 1B1F loop and the cooldown; ScheduleGPipe._step_microbatches).
    """
    return tuple((kind, index) for kind, index, _ in rank_order(pp, stage, micro_batches, schedule))


def in_flight(pp: int, stage: int, micro_batches: int,
              schedule: PipelineSchedule = PipelineSchedule.ONE_F_ONE_B, virtual: int = 1) -> int:
    """Most micro-batches whose activations stage `stage` holds at once (forwards run, backwards not yet):
    min(m, pp − stage) under 1F1B, all m under GPipe; under interleaved 1F1B, chunk micro-batches: its
    warm-up forwards plus the steady state's forward before each backward, min(warm-up + 1, m × virtual)
    (the most over `rank_order`)."""
    if schedule is PipelineSchedule.GPIPE:
        return micro_batches
    if schedule is PipelineSchedule.ONE_F_ONE_B:
        return min(micro_batches, pp - stage)
    held = most = 0
    for kind, _, _ in rank_order(pp, stage, micro_batches, schedule, virtual):
        held += 1 if kind == "forward" else -1
        most = max(most, held + (kind == "backward"))
    return most


def model_shapes(spec: ModelSpec, par: Parallelism,
                 stage: int) -> tuple[tuple[Shape, ...], tuple[Shape, ...]]:
    """(root shapes, every decoder-layer shape) this stage holds, tp-local and ep-local."""
    layers = rank_layers(spec, par, stage)
    root = root_shapes(spec, tp=par.tp, first=stage == 0, last=stage == par.pp - 1)
    return root, layers_shapes(spec, layers, tp=par.tp, ep=par.ep)


def expert_world(par: Parallelism) -> int:
    """Ranks one ep-local expert tensor is sharded over: the expert-data-parallel group, shard_world / ep.

    Source: torchtitan ParallelDims (experts' FSDP mesh dp_shard_mod_ep = dp_shard / ep); DeepSpeed
    utils/groups.py _create_expert_and_data_parallel (expert-data-parallel groups of dp / ep_size).
    """
    return max(shard_world(par) // par.ep, 1)


def ep_partition_elements(spec: ModelSpec, layers: tuple[LayerSpec, ...], root: tuple[Shape, ...],
                          par: Parallelism) -> int:
    """Elements one rank keeps of `root` and `layers` under `par`: the routed experts (ep-local) sharded
    over the expert-data-parallel group (their own flat group under ZeRO-1/2, as DeepSpeed-MoE keeps
    expert parameters in separate groups), everything else over shard_world(par)."""
    dense = root + layers_shapes(spec, layers, tp=par.tp, experts=False)
    experts = layers_shapes(spec, layers, tp=par.tp, ep=par.ep, experts=True)
    return (partition_elements(dense, shard_world(par), par)
            + partition_elements(experts, expert_world(par), par))


def unit_padded_elements(spec: ModelSpec, layer: LayerSpec, par: Parallelism) -> int:
    """Elements of one decoder layer as FSDP2 all-gathers it on one rank: the layer's non-expert tensors
    over shard_world(par), its ep-local experts over the expert-data-parallel group (padded rows)."""
    dense = padded_elements(layer_shapes(spec, layer, tp=par.tp, experts=False), shard_world(par))
    return dense + padded_elements(layer_shapes(spec, layer, tp=par.tp, ep=par.ep, experts=True),
                                   expert_world(par))


# --- the share of each term --------------------------------------------------------------------------------

def rank_share(spec: ModelSpec, par: Parallelism, *, stage: int = 0, micro_batches: int = 1,
               amp: bool = False, adapters: tuple[Shape, ...] = (),
               expert_adapters: tuple[Shape, ...] = ()) -> RankShare:
    """This rank's fraction of each unsharded term under `par`, on pipeline stage `stage`. With LoRA
    `adapters` (every A and B tensor), the adapters, gradients and states follow those tensors' padding;
    under expert parallelism `expert_adapters` (those of the rank's own routed experts, already ep-local)
    are sharded over the expert-data-parallel group, the rest over shard_world."""
    validate_parallel(spec, par)
    root, body = model_shapes(spec, par, stage)
    total = elements(root_shapes(spec)) + elements(layers_shapes(spec, spec.layers))
    held = elements(root) + elements(body)
    params_sharded, grads_sharded, states_sharded = _levels(par)
    world = shard_world(par)
    kept = partition_elements(root + body, world, par) if par.ep == 1 else \
        ep_partition_elements(spec, rank_layers(spec, par, stage), root, par)
    shard = Fraction(kept, total)
    whole = Fraction(held, total)
    most = fullest(spec, pp=par.pp, rank=stage, micro_batches=micro_batches, schedule=par.pp_schedule,
                   virtual=par.pp_virtual_stages)
    # the fullest moment's decoder-layer micro-batches; the final norm's input: the last chunk's ones
    stage_acts = Fraction(most.alive_layers, spec.num_layers)
    flight = most.alive_by_chunk[-1]
    # FSDP2's CPUOffloadPolicy moves parameters, gradients and the optimizer step to the host together
    trained = shard if not adapters else \
        Fraction(partition_elements(adapters, world, par), elements(adapters)) * whole
    if adapters and par.ep > 1:     # `whole` counts the base experts ep-local; the adapters already are
        dense = tuple(a for a in adapters if a not in expert_adapters) if expert_adapters else adapters
        kept_adapters = (partition_elements(dense, world, par)
                         + partition_elements(expert_adapters, expert_world(par), par))
        plain = elements(root) + elements(layers_shapes(spec, rank_layers(spec, par, stage), tp=par.tp))
        trained = Fraction(kept_adapters, elements(adapters)) * Fraction(plain, total)
        whole_adapters = Fraction(plain, total)
    else:
        whole_adapters = whole
    offload_states = par.offload_optimizer is not Offload.NONE or (
        is_fsdp(par) and par.offload_params is not Offload.NONE)
    return RankShare(
        params=shard if params_sharded else whole,
        adapters=trained if params_sharded else whole_adapters,
        grads=trained if grads_sharded else whole_adapters if adapters else whole,
        states=trained if states_sharded else whole_adapters if adapters else whole,
        layer_activations=stage_acts / par.tp,
        residual_activations=stage_acts / (par.tp if par.sequence_parallel else 1),
        replicated_activations=stage_acts,
        logits=Fraction(1, par.tp) if stage == par.pp - 1 else Fraction(0),
        # the final norm's saved input, once per micro-batch in flight (the last stage holds 1 under 1F1B)
        tail=Fraction(flight, par.tp if par.sequence_parallel else 1) if stage == par.pp - 1 else Fraction(0),
        one_layer=Fraction(1, par.tp),
        autocast=Fraction(0) if amp and is_fsdp(par) else whole,
        grads_persist=par.zero.level >= 2,
        sharded_grads=grads_sharded,
        host_params=par.offload_params is not Offload.NONE,
        host_states=offload_states,
        master=par.zero is not ZeroStage.NONE,
    )


def scale_term(term: Term, share: Fraction) -> Term:
    """`term` with every leaf multiplied by `share` (rounded up: a shard holds whole elements)."""
    if share == 1:
        return term
    if not term.children:
        return Term(name=term.name, nbytes=scale_bytes(term.nbytes, share), note=term.note,
                    evictable=term.evictable)
    return Term.group(term.name, [scale_term(c, share) for c in term.children], note=term.note)


def scale_bytes(nbytes: int, share: Fraction) -> int:
    """`nbytes × share`, rounded up."""
    scaled = nbytes * share
    return -(-scaled.numerator // scaled.denominator)


def scale_activations(saved: Term, share: RankShare, *, replicated: dict[str, int] | None = None) -> Term:
    """Saved activations of the stage's in-flight micro-batches on this rank: attention and MLP internals
    split over tp, except the inputs their column-parallel Linears save (`replicated`, bytes by child),
    which stay whole; norms and layer inputs split only under sequence parallelism; the final norm's input
    only on the last stage."""
    whole = replicated or {}
    out = []
    for child in saved.children:
        if child.name == "layers" and child.children:
            parts = []
            for c in child.children:
                split = c.name in ("attention", "mlp", "moe")
                if not split or c.children:
                    fraction = share.layer_activations if split else share.residual_activations
                    parts.append(scale_term(c, fraction))
                    continue
                kept = min(whole.get(c.name, 0), c.nbytes)
                parts.append(Term(name=c.name, note=c.note,
                                  nbytes=scale_bytes(c.nbytes - kept, share.layer_activations)
                                  + scale_bytes(kept, share.replicated_activations)))
            out.append(Term.group("layers", parts, note=child.note))
        elif child.name in ("layers", "layer_inputs"):     # checkpointing keeps each layer's input
            out.append(scale_term(child, share.residual_activations))
        else:
            out.append(scale_term(child, share.tail))
    return Term.group(saved.name, out, note=saved.note)
