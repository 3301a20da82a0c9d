"""One GPU's share of a training step's amounts: the unsharded parts training.py builds, divided once by
the `RankShare` core/parallel.py decides, plus the strategy's `Collectives` (core/collectives.py), host RAM
per node, pipeline buffers and the tensor-parallel split of saved activations.

`Parts` is every amount one phase builder needs; `per_rank` maps one replica's `Parts` to the most loaded
GPU's. No strategy is named here beyond what `RankShare` and `Collectives` carry: which amount is divided
by which share is the `_SHARE_OF` table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from memfit.core import activations as act
from memfit.core.choices import Method, Offload, Precision, ZeroStage
from memfit.core.collectives import GradBytes, collectives
from memfit.core.loss import saved_logits
from memfit.core.optimizers import ParamTensor, layer_adapters, lora_targets, optimizer_memory, param_bytes
from memfit.core.parallel import (
    LOAD_COPY_NOTE,
    NO_COLLECTIVES,
    Collectives,
    RankShare,
    Shape,
    counted,
    elements,
    layers_shapes,
    rank_layers,
    rank_share,
    root_shapes,
    scale_activations,
    scale_bytes,
    scale_term,
)
from memfit.core.params import Linear, layer_linears
from memfit.core.result import Term
from memfit.core.schedule import Moment, fullest, grads_share, moments, rank_chunks
from memfit.core.spec import LayerSpec, ModelSpec, MoeSpec
from memfit.core.workload import Parallelism, Training


@dataclass(frozen=True, slots=True, kw_only=True)
class Held:
    """One op of an interleaved pipeline rank's order: the share of the fullest moment's in-flight
    activations held while it runs, the share of the rank's gradients formed before it, and whether its
    gradients (its chunk's) are still to form and it runs the loss (the last rank's last chunk)."""

    kind: str
    activations: Fraction
    grads: Fraction
    first_backward: bool
    loss: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Parts:
    """Every amount one phase builder needs, in bytes (Terms where they have a breakdown)."""

    weights: Term
    adapters: Term
    grads: int
    states: Term
    paged: int
    step_bytes: int
    step_note: str
    saved: Term
    cache: int
    forward_cache: int        # AMP: casts the autocast cache holds while forward runs
    fwd_extra: int
    recompute: int
    layer_transient: int      # the forward's last layer
    backward_transient: int   # the last layer's backward (net of its freed MLP half)
    layer_grads: int
    head_grads: int
    dequant: int
    logits_share: Fraction = Fraction(1)
    master: int = 0          # fp32 master weights (DeepSpeed ZeRO over bf16/fp16 parameters)
    host: Term | None = None  # host RAM per node: offloaded states, parameters, gradients
    load_host: Term | None = None  # host RAM per node while loading (a CPU copy per process)
    extras: Collectives = NO_COLLECTIVES  # what the strategy adds (gathers, buffers), by moment
    sharded_grads: bool = False  # gradients reduced a unit at a time into shards (extras hold the rest)
    grads_persist: bool = False  # a flat gradient partition lives through forward (ZeRO-2/3)
    layer_saved: int = 0     # one decoder layer's saved activations on this rank
    root_grad_shard: int = 0  # this rank's shard of the root unit's (embedding, head) gradients
    accumulates: bool = False  # gradients of earlier micro-batches are alive at the fullest moments
    flight: int = 1          # pipeline micro-batches whose activations this stage holds at once
    moments: tuple[Held, ...] = ()  # interleaved pipeline: what each op of the rank's order runs beside
    ep_dispatch: int = 0     # expert parallelism: one MoE layer's all-to-all send and receive buffers


def compute_workload(wl: Training) -> Training:
    """The workload as its layers compute: FSDP's MixedPrecisionPolicy over fp32 parameters (memfit's AMP
    under fsdp) all-gathers them in the compute dtype and runs without autocast, as pure bf16/fp16 does."""
    if wl.parallel.fsdp is None or not wl.precision.is_amp:
        return wl
    compute = Precision.BF16 if wl.precision is Precision.AMP_BF16 else Precision.FP16
    return dataclasses.replace(wl, precision=compute)


_SHARE_OF = {
    "weights": "params", "adapters": "adapters", "grads": "grads", "layer_grads": "grads",
    "head_grads": "grads", "states": "states", "paged": "states", "step_bytes": "states",
    "master": "states", "cache": "autocast", "forward_cache": "autocast", "fwd_extra": "one_layer",
    "recompute": "one_layer",
    "layer_transient": "one_layer", "backward_transient": "one_layer",
}
"""Which `RankShare` fraction divides each unsharded `Parts` amount (core/parallel.py decides the values)."""


def _scaled(value: Term | int, share: Fraction) -> Term | int:
    return scale_term(value, share) if isinstance(value, Term) else scale_bytes(value, share)


def _grad_bytes(spec: ModelSpec, wl: Training, p: Parts, tensors: tuple[ParamTensor, ...],
                stage: int) -> GradBytes:
    """Unsharded gradient sizes of one stage's units, in the dtypes the strategy uses."""
    par = wl.parallel
    mixed = wl.precision.is_amp and par.fsdp is not None   # MixedPrecisionPolicy(bf16, reduce fp32)
    full = wl.method is Method.FULL
    grad_el = 2 if mixed else (param_bytes(wl) if full else 4)
    layers = tuple(layer for layer, _ in counted(rank_layers(spec, par, stage)))
    layer_params = max((sum(_local(lin.num_params, lin, par.ep) for lin in layer_linears(spec, one))
                        for one in layers), default=0)
    largest = max((_local(lin.fan_in * lin.fan_out * (1 if lin.is_module else lin.count), lin, par.ep)
                   for one in layers for lin in layer_linears(spec, one)), default=0) // par.tp
    vocab_rows = spec.vocab_size * (spec.embedding_dim or spec.hidden_size) // par.tp
    head_trains = full or (wl.lora is not None and "lm_head" in wl.lora.targets)
    head = vocab_rows if stage == par.pp - 1 and head_trains else 0
    emb = vocab_rows if stage == 0 and full and not spec.tie_word_embeddings else 0
    whole = _whole(spec, par, stage)
    adapter_shapes, lora_at_peak = ((), 0) if full else _unit_adapters(spec, wl, layers)
    if full:
        total_el = sum(t.count * t.numel for t in tensors)
        layer, total = layer_params // par.tp * grad_el, scale_bytes(total_el * grad_el, whole)
    else:
        layer, total = p.grads // max(spec.num_layers, 1) // par.tp, scale_bytes(p.grads, whole)
    return GradBytes(layer=layer, head=head * grad_el, root=(head + emb) * grad_el, total=total,
                     gather_bytes=2 if mixed or not full else param_bytes(wl), grad_bytes=grad_el,
                     reduce_bytes=4 if mixed else grad_el, largest_tensor=largest,
                     largest_grad=largest if full else max((t.numel for t in tensors), default=0) // par.tp,
                     adapter_shapes=() if full else adapter_shapes,
                     layer_at_peak=(_mlp_tail_params(spec, layers) // par.tp * grad_el or None) if full
                     else lora_at_peak)


def _local(num: int, lin: Linear, ep: int) -> int:
    """`num` elements of `lin` as one rank holds them: routed experts split over ep ranks."""
    return num // ep if lin.role == "experts" else num


EP_DISPATCH_BUFFERS = 2
"""All-to-all buffers of one MoE layer alive at once under expert parallelism, each tokens × top_k × hidden
in the compute dtype (balanced routing assumed): the dispatch's received tokens and the combine's output
beside the permuted send buffer the layer already has. Source: torchtitan distributed/expert_parallel.py
ExpertParallel._token_dispatch / _token_combine (all_to_all_single_autograd, output sized by the split
counts)."""


def ep_dispatch_bytes(spec: ModelSpec, wl: Training) -> int:
    """Bytes of one MoE layer's all-to-all buffers on one rank: EP_DISPATCH_BUFFERS × tokens × top_k ×
    hidden × compute bytes (the largest top_k of the model's MoE layers); 0 without expert parallelism."""
    if wl.parallel.ep == 1:
        return 0
    top_k = max((layer.mlp.top_k for layer in spec.layers if isinstance(layer.mlp, MoeSpec)), default=0)
    element = 4 if wl.precision is Precision.FP32 else 2
    return EP_DISPATCH_BUFFERS * wl.batch_size * wl.seq_len * top_k * spec.hidden_size * element


def _mlp_tail_params(spec: ModelSpec, layers: tuple[LayerSpec, ...]) -> int:
    """Parameters of the dense MLP Linears whose backward runs before the activation's (the layer's
    transient peak): down_proj, and up_proj when a gated MLP has it separate from gate_proj (autograd
    runs nodes in reverse creation order: down, the product, up, then the activation). 0 for MoE.
    Source: transformers LlamaMLP.forward; the multi-rank trace's peak at the SiLU backward."""
    most = 0
    for layer in layers:
        if isinstance(layer.mlp, MoeSpec):
            return 0
        mlp = [lin for lin in layer_linears(spec, layer) if lin.role == "mlp"]
        tail = mlp[-2:] if layer.mlp is not None and layer.mlp.gated and len(mlp) == 3 else mlp[-1:]
        most = max(most, sum(lin.num_params for lin in tail))
    return most


def _before_peak(spec: ModelSpec, layer: LayerSpec) -> tuple[Linear, ...]:
    """The Linears of `layer` whose backward runs before the layer's transient backward peak, so whose
    weight (or adapter) gradients exist then. Autograd runs nodes in reverse creation order: a dense MLP's
    down_proj, the product, then up_proj when separate (`_mlp_tail_params`); an MoE block's shared experts
    when they run after the routed experts in forward (DeepSeek: `hidden + shared_experts(residuals)` after
    `experts(...)`), none when they run first (MoeSpec.shared_expert_first). The peak is the routed
    experts' backward. Source: transformers 5.17.0 LlamaMLP.forward, DeepseekV2MoE.forward; the
    multi-rank trace's peaks (SiLU backward; DeepSeek-V2-Lite LoRA: aten._grouped_mm)."""
    lins = layer_linears(spec, layer)
    if isinstance(layer.mlp, MoeSpec):
        first = layer.mlp.shared_expert_first
        return () if first else tuple(lin for lin in lins if lin.role == "shared_experts")
    mlp = [lin for lin in lins if lin.role == "mlp"]
    return tuple(mlp[-2:] if layer.mlp is not None and layer.mlp.gated and len(mlp) == 3 else mlp[-1:])


def _unit_adapters(spec: ModelSpec, wl: Training,
                   layers: tuple[LayerSpec, ...]) -> tuple[tuple[Shape, ...], int]:
    """LoRA: the A and B shapes (dim 0, rest) of the decoder layer with the most adapter elements (one FSDP
    unit), and the bytes of its adapter gradients formed at its backward peak: those of `_before_peak`'s
    Linears, fp32 in their own (unpadded) shapes on the unsharded parameters."""
    targets = lora_targets(spec, wl.lora) if wl.lora is not None else frozenset()
    best: tuple[tuple[Shape, ...], int] = ((), 0)
    for layer in layers:
        shapes = _adapter_shapes(layer_adapters(spec, wl, layer, targets))
        if sum(d * r for d, r in shapes) > sum(d * r for d, r in best[0]):
            formed = layer_adapters(spec, wl, layer, targets, _before_peak(spec, layer))
            best = shapes, sum(t.nbytes for t in formed)
    return best


def _expert_adapters(spec: ModelSpec, tensors: tuple[ParamTensor, ...]) -> tuple[ParamTensor, ...]:
    """The LoRA tensors of the fused routed experts (peft's ParamWrapper adapters) among `tensors`."""
    names = {lin.name for layer, _ in counted(spec.layers) for lin in layer_linears(spec, layer)
             if lin.role == "experts" and not lin.is_module}
    return tuple(t for t in tensors if t.name.rsplit(".", 1)[0] in names)


def _adapter_shapes(tensors: tuple[ParamTensor, ...]) -> tuple[Shape, ...]:
    """Every LoRA A and B tensor as (dim 0, rest)."""
    return tuple((t.rows, t.cols * t.stack) for t in tensors for _ in range(t.count))


def _whole(spec: ModelSpec, par: Parallelism, stage: int) -> Fraction:
    """The stage's unsharded fraction of the model (tp-local)."""
    plain = dataclasses.replace(par, dp=1, zero=ZeroStage.NONE, fsdp=None, offload_optimizer=Offload.NONE,
                                offload_params=Offload.NONE, zero_config=None)
    return rank_share(spec, plain, stage=stage).params


def per_rank(spec: ModelSpec, wl: Training, p: Parts, tensors: tuple[ParamTensor, ...], *,
             stage: int) -> Parts:
    """`p` (one unsharded replica) as the most loaded GPU of pipeline stage `stage` holds it: each amount
    divided once by its `RankShare` fraction, plus the strategy's `Collectives` (core/parallel.py)."""
    par = wl.parallel
    adapters = () if wl.method is Method.FULL else _adapter_shapes(tensors)
    share = rank_share(spec, par, stage=stage, micro_batches=wl.grad_accum if par.pp > 1 else 1,
                       amp=wl.precision.is_amp, adapters=adapters,
                       expert_adapters=_adapter_shapes(_expert_adapters(spec, tensors)) if adapters else ())
    most = _fullest(spec, wl, stage)
    if share.master and any(t.element_bytes < 4 for t in tensors):
        fp32 = tuple(dataclasses.replace(t, element_bytes=4) for t in tensors)
        opt = optimizer_memory(wl.optimizer, fp32)
        p = dataclasses.replace(p, states=opt.states, step_bytes=opt.step_bytes, paged=opt.paged_bytes,
                                master=sum(t.nbytes for t in fp32))
    fields: dict[str, Any] = {name: _scaled(getattr(p, name), getattr(share, kind))
                              for name, kind in _SHARE_OF.items()}
    ranked = dataclasses.replace(p, **fields)
    extras = collectives(spec, par, stage=stage, grads=_grad_bytes(spec, wl, p, tensors, stage))
    if par.tp > 1 and stage == 0 and wl.method is Method.FULL:
        # DTensor computes the vocab-parallel embedding's gradient over the whole vocabulary (untied: it
        # stays so as .grad until the step, beyond the shard; tied: beside the head's shard-sized gradient
        # and their sum).
        # Source: the multi-rank trace of torchtitan's plan (Llama-3.2-1B tied, Llama-3.1-8B untied, tp 2)
        full = spec.vocab_size * (spec.embedding_dim or spec.hidden_size) * param_bytes(wl)
        extra = full + 2 * (full // par.tp) if spec.tie_word_embeddings else full - full // par.tp
        kept = 0 if spec.tie_word_embeddings else extra
        extras = dataclasses.replace(extras, embed_grad=extra, embed_grad_kept=kept)
    if par.tp > 1 and share.logits and not wl.chunked_loss:
        # DTensor's vocab-parallel log_softmax keeps x − max(x) beside its result (one more fp32 buffer)
        extras = dataclasses.replace(extras, loss_shift=scale_bytes(
            4 * wl.batch_size * wl.seq_len * spec.vocab_size, share.logits))
    host = _host(wl, ranked, share, extras)
    none = Fraction(0)
    if share.host_states:
        ranked = dataclasses.replace(ranked, states=scale_term(p.states, none), paged=0, step_bytes=0,
                                     master=0, grads=0 if share.sharded_grads else ranked.grads)
        extras = dataclasses.replace(extras, fp32_grads=0)
    if share.host_params:
        ranked = dataclasses.replace(ranked, weights=scale_term(p.weights, none),
                                     adapters=scale_term(p.adapters, none))
    layers = layer_child(p.saved)
    one_layer = share.layer_activations / max(len(rank_layers(spec, par, stage)), 1)
    if layers is not None and layers.name == "layer_inputs":
        one_layer = share.residual_activations / max(len(rank_layers(spec, par, stage)), 1)
    # DTensor's column-parallel Linears save their (under SP: all-gathered) input whole on every rank
    replicated = _tp_replicated(spec, wl) if par.tp > 1 else {}
    saved = scale_activations(p.saved, share, replicated=replicated)
    if par.pp > 1:
        saved = Term.group(saved.name, [*saved.children, _pipeline_buffers(spec, wl, stage),
                                        *_earlier_losses(spec, wl, stage, share)], note=saved.note)
    return dataclasses.replace(
        ranked, saved=saved, logits_share=share.logits,
        host=host,
        load_host=_load_host(wl, p), extras=extras, sharded_grads=share.sharded_grads,
        grads_persist=share.grads_persist and not share.host_states,
        layer_saved=scale_bytes(layers.nbytes if layers else 0, one_layer),
        # 1F1B: a stage's activations are at their fullest with gradients alive only when an earlier
        # micro-batch has already run its backward, i.e. more micro-batches than it holds in flight
        # (GPipe runs every forward first: it holds all of them, so never)
        # (interleaved: gradients form a chunk at a time, so `moments` places them op by op instead)
        accumulates=wl.grad_accum > most.alive if par.pp_virtual_stages == 1 else False,
        flight=most.alive,
        moments=_held(spec, par, stage, wl.grad_accum, most) if par.pp_virtual_stages > 1 else (),
        ep_dispatch=ep_dispatch_bytes(spec, wl),
        root_grad_shard=scale_bytes(extras.root_grads, share.grads) if share.sharded_grads else 0,
    )


def _fullest(spec: ModelSpec, wl: Training, stage: int) -> Moment:
    """The moment pipeline rank `stage` holds the most decoder-layer micro-batches (one micro-batch
    without a pipeline)."""
    par = wl.parallel
    return fullest(spec, pp=par.pp, rank=stage, micro_batches=wl.grad_accum if par.pp > 1 else 1,
                   schedule=par.pp_schedule, virtual=par.pp_virtual_stages)


def _held(spec: ModelSpec, par: Parallelism, stage: int, micro_batches: int,
          most: Moment) -> tuple[Held, ...]:
    """Every op of an interleaved rank's order as a `Held`: activations as a share of the fullest moment's
    decoder-layer micro-batches, gradients as the share of the rank's parameter elements whose chunk ran a
    backward (each chunk's layers, the embeddings with rank 0's first, the final norm and head with the
    last rank's last)."""
    virtual = par.pp_virtual_stages
    chunks = rank_chunks(spec, pp=par.pp, virtual=virtual, rank=stage)
    sizes = tuple(elements(layers_shapes(spec, layers, tp=par.tp, ep=par.ep)) + elements(root_shapes(
        spec, tp=par.tp, first=stage == 0 and c == 0, last=stage == par.pp - 1 and c == virtual - 1))
        for c, layers in enumerate(chunks))
    loss_rank = stage == par.pp - 1
    return tuple(Held(kind=one.kind, activations=Fraction(one.alive_layers, max(most.alive_layers, 1)),
                      grads=grads_share(one.chunks_with_grads, sizes),
                      first_backward=one.chunk not in one.chunks_with_grads,
                      loss=loss_rank and one.chunk == virtual - 1)
                 for one in moments(spec, pp=par.pp, rank=stage, micro_batches=micro_batches,
                                    schedule=par.pp_schedule, virtual=virtual))


def _pipeline_buffers(spec: ModelSpec, wl: Training, stage: int) -> Term:
    """A pipeline stage's per-micro-batch hidden states, one per micro-batch in flight: the receive buffer
    (every stage but the first; a leaf that needs grad) and the output kept for its backward (every stage
    but the last), batch × seq × hidden in the compute dtype; under interleaved 1F1B per chunk micro-batch
    held at the fullest moment, each chunk a virtual stage chunk × pp + stage of pp × virtual.
    Source: torch.distributed.pipelining stage buffers; the multi-rank trace's pipeline stage."""
    par = wl.parallel
    element = 4 if wl.precision is Precision.FP32 else 2
    stages = par.pp * par.pp_virtual_stages
    held = _fullest(spec, wl, stage).alive_by_chunk
    virtual_stages = [c * par.pp + stage for c in range(len(held))]
    count = sum(n * ((s > 0) + (s < stages - 1)) for n, s in zip(held, virtual_stages, strict=True))
    return Term(name="pipeline_buffers", nbytes=count * wl.batch_size * wl.seq_len * spec.hidden_size
                * element, note="received and sent hidden states of the micro-batches in flight")


def _earlier_losses(spec: ModelSpec, wl: Training, stage: int, share: RankShare) -> list[Term]:
    """The last stage's losses of its earlier micro-batches still in flight (GPipe runs every forward before
    any backward): each keeps what the loss saves for its backward, the fp32 log_softmax output. The
    final norm's saved input follows the micro-batches in flight through `share.tail`.
    Source: the multi-rank trace's GPipe stage (Llama-3.2-1B pp 2, 4 micro-batches: 3 × 1,050,673,152 B
    of log_softmax beside the fourth micro-batch's loss)."""
    par = wl.parallel
    earlier = _fullest(spec, wl, stage).alive_by_chunk[-1] - 1
    if stage != par.pp - 1 or earlier < 1:
        return []
    targets = lora_targets(spec, wl.lora) if wl.lora is not None and wl.method is not Method.FULL \
        else frozenset()
    flow = act.training_flow(spec, compute_workload(wl), lora_targets=targets)
    kept = saved_logits(spec, flow, tokens=wl.batch_size * wl.seq_len, chunked=wl.chunked_loss)
    return [Term(name="earlier_losses", nbytes=earlier * scale_bytes(kept.nbytes, share.logits),
                 note=f"{earlier} earlier micro-batches' saved loss tensors")]


def _tp_replicated(spec: ModelSpec, wl: Training) -> dict[str, int]:
    """Bytes of the saved attention and MLP activations that are the hidden-wide inputs of their first
    Linears (the norm output q/k/v and gate/up read): whole on every tensor-parallel rank, and under
    DTensor's sequence parallelism too (the sequence is all-gathered before the column-parallel Linear,
    which saves the gathered input; Megatron-LM's SP would save only the shard). The reader rule is
    activations.layer_token_bytes' own (`inputs_bytes`)."""
    targets = lora_targets(spec, wl.lora) if wl.lora is not None and wl.method is not Method.FULL \
        else frozenset()
    flow = act.training_flow(spec, compute_workload(wl), lora_targets=targets)
    if flow.checkpointing:
        return {}
    h, tokens = spec.hidden_size, wl.batch_size * wl.seq_len
    out = {"attention": 0, "mlp": 0}
    for layer, count in counted(spec.layers):
        lins = layer_linears(spec, layer)
        attn = [lin for lin in lins if lin.role == "attention"][:-1]
        readers = [lin for lin in attn if lin.fan_in == h]
        out["attention"] += act.inputs_bytes(readers, h, flow) * tokens * count
        if not isinstance(layer.mlp, MoeSpec):
            mlp = [lin for lin in lins if lin.role == "mlp"][:-1]
            out["mlp"] += act.inputs_bytes(mlp, h, flow) * tokens * count
        else:   # the experts split on their intermediate dimension; their hidden-wide rows stay whole
            out["mlp"] += act.moe_whole_token_bytes(h, layer, flow, lins) * tokens * count
    return out


def _host(wl: Training, ranked: Parts, share: RankShare, extras: Collectives) -> Term | None:
    """Host RAM per node under offload: every local rank's states, master weights, gradients (fp32 under
    ZeRO) and, with parameter offload, parameters."""
    if not (share.host_states or share.host_params):
        return None
    ranks = min(wl.parallel.num_gpus, wl.parallel.gpus_per_node)
    zero = wl.parallel.zero_config
    pinned = " (pinned)" if zero is not None and zero.pin_memory else ""
    parts = []
    if share.host_states:
        grads = (extras.fp32_grads if share.master else ranked.grads) if share.sharded_grads else 0
        # DeepSpeed steps offloaded states with DeepSpeedCPUAdam, in place; FSDP2 runs the torch optimizer
        step = 0 if share.master else ranked.step_bytes
        parts += [Term(name="optimizer_states", nbytes=ranks * (ranked.states.nbytes + step)),
                  Term(name="master_weights", nbytes=ranks * ranked.master),
                  Term(name="gradients", nbytes=ranks * grads, note="gradient partitions" + pinned)]
    if share.host_params:
        parts.append(Term(name="parameters", nbytes=ranks * (ranked.weights.nbytes + ranked.adapters.nbytes)))
    return Term.group("host", parts, note=f"per node: {ranks} ranks")


def _load_host(wl: Training, p: Parts) -> Term | None:
    """Host RAM per node at load: DDP and ZeRO-1/2 load a full CPU copy in every process (ZeRO-3 builds
    the model under zero.Init, FSDP on the meta device)."""
    par = wl.parallel
    if par.fsdp is not None or par.zero is ZeroStage.PARAMETERS or par.dp == 1:
        return None
    ranks = min(par.num_gpus, par.gpus_per_node)
    return Term.group("host", [Term(name="checkpoint_copies", nbytes=ranks * p.weights.nbytes,
                                    note=LOAD_COPY_NOTE)], note=f"per node: {ranks} ranks")


LAYER_CHILDREN = ("layers", "layer_inputs")
"""The per-decoder-layer part of the saved activations (layer_inputs under checkpointing)."""


def layer_child(saved: Term) -> Term | None:
    return next((c for c in saved.children if c.name in LAYER_CHILDREN), None)
