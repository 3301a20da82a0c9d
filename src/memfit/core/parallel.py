"""Per-GPU share of each training term under data, tensor and pipeline parallelism (a first version).

One rank's fraction of each term, the most loaded rank:

| setting                      | weights | gradients | optimizer states | activations                   |
|------------------------------|---------|-----------|------------------|-------------------------------|
| dp (plain DDP)               | 1       | 1         | 1                | 1                             |
| ZeRO-1                       | 1       | 1         | 1/dp             | 1                             |
| ZeRO-2, FSDP shard-grad-op   | 1       | 1/dp      | 1/dp             | 1                             |
| ZeRO-3, FSDP full            | 1/dp    | 1/dp      | 1/dp             | 1, + gathered layers          |
| FSDP hybrid                  | as full, sharded within a node of GPUS_PER_NODE                       |
| tp (Megatron-style)          | 1/tp    | 1/tp      | 1/tp             | in-layer and logits 1/tp (*)  |
| pp (1F1B)                    | 1/pp    | 1/pp      | 1/pp             | 1 (**)                        |
| offload optimizer (cpu/nvme) |         |           | 0 on the GPU     |                               |
| offload params (ZeRO-3)      | 0, + gathered layers                                                  |

(*) norms and the residual stream are split by tp only with sequence parallelism; the loss is
vocab-parallel. (**) stage 0 keeps pp micro-batches of L/pp layers in flight, about one full model's worth.

DeepSpeed ZeRO with bf16/fp16 parameters keeps fp32 master weights and fp32 states in its optimizer
(`master_weights`). Not modelled yet: DDP/ZeRO gradient buckets, NCCL buffers, pipeline bubbles.
Sources: Rajbhandari et al. 2020 (ZeRO, §5); PyTorch FSDP docs (ShardingStrategy); Shoeybi et al. 2019
(Megatron-LM, §3); Korthikanti et al. 2022 (sequence parallelism, §4); Narayanan et al. 2021 (1F1B, §2.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from memfit.core.choices import FsdpStrategy, Offload, ZeroStage
from memfit.core.errors import InvalidWorkload
from memfit.core.result import Term
from memfit.core.spec import ModelSpec
from memfit.core.workload import Parallelism

GPUS_PER_NODE = 8
"""GPUs per node for FSDP's hybrid sharding (full shard within a node). Source: DGX/HGX H100 nodes."""
GATHER_PREFETCH_LAYERS = 2
"""ZeRO-3/FSDP full: the current layer's gathered parameters plus one prefetched. Source: FSDP
forward_prefetch / DeepSpeed stage3_prefetch_bucket_size defaults, rounded to whole layers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RankShare:
    """Fraction of each term the most loaded GPU holds, and what is gathered or offloaded."""

    weights: Fraction = Fraction(1)
    gradients: Fraction = Fraction(1)
    optimizer_states: Fraction = Fraction(1)
    layer_activations: Fraction = Fraction(1)     # attention and MLP internals
    residual_activations: Fraction = Fraction(1)  # norms, layer inputs, the residual stream
    logits: Fraction = Fraction(1)
    gathered_layers: int = 0                      # whole layers of parameters gathered at a time
    master_weights: bool = False                  # DeepSpeed keeps fp32 master weights with its states
    offload_states: bool = False
    offload_params: bool = False


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def validate_parallel(spec: ModelSpec, par: Parallelism) -> None:
    """InvalidWorkload when tp does not split every layer's heads, or pp exceeds the layers."""
    for layer in {id(one): one for one in spec.layers}.values():
        att = layer.attention
        if att.num_heads % par.tp:
            raise InvalidWorkload(f"tp={par.tp} does not divide num_attention_heads={att.num_heads} of "
                                  f"{spec.name}; use tp in {_divisors(att.num_heads)}")
        if att.num_kv_heads % par.tp and par.tp % att.num_kv_heads:
            raise InvalidWorkload(f"tp={par.tp} does not divide num_kv_heads={att.num_kv_heads} of "
                                  f"{spec.name}; use tp in {_divisors(att.num_kv_heads)}")
    if par.pp > spec.num_layers:
        raise InvalidWorkload(f"pp={par.pp} exceeds num_hidden_layers={spec.num_layers} of {spec.name}")


def rank_share(spec: ModelSpec, par: Parallelism) -> RankShare:
    """The most loaded GPU's share of each term under `par` (see the module table)."""
    validate_parallel(spec, par)
    model = Fraction(1, par.tp * par.pp)
    shard = par.dp
    if par.fsdp is FsdpStrategy.HYBRID:
        shard = min(par.dp, GPUS_PER_NODE)
    full = par.zero is ZeroStage.PARAMETERS or par.fsdp in (FsdpStrategy.FULL, FsdpStrategy.HYBRID)
    grads = full or par.zero is ZeroStage.GRADIENTS or par.fsdp is FsdpStrategy.SHARD_GRAD_OP
    states = grads or par.zero is ZeroStage.OPTIMIZER
    in_layer = Fraction(1, par.tp)
    gathers = full or par.offload_params is not Offload.NONE   # ZeRO-3 gathers even on one rank
    return RankShare(
        weights=model / (shard if full else 1),
        gradients=model / (shard if grads else 1),
        optimizer_states=model / (shard if states else 1),
        layer_activations=in_layer,
        residual_activations=in_layer if par.sequence_parallel else Fraction(1),
        logits=in_layer,
        gathered_layers=GATHER_PREFETCH_LAYERS if gathers else 0,
        master_weights=par.zero is not ZeroStage.NONE,
        offload_states=par.offload_optimizer is not Offload.NONE,
        offload_params=par.offload_params is not Offload.NONE,
    )


def scale_term(term: Term, share: Fraction) -> Term:
    """`term` with every leaf multiplied by `share` (rounded up: a shard holds whole elements)."""
    if share == 1:
        return term
    if not term.children:
        scaled = term.nbytes * share
        return Term(name=term.name, nbytes=-(-scaled.numerator // scaled.denominator), note=term.note,
                    evictable=term.evictable)
    return Term.group(term.name, [scale_term(c, share) for c in term.children], note=term.note)


def scale_bytes(nbytes: int, share: Fraction) -> int:
    """`nbytes × share`, rounded up."""
    scaled = nbytes * share
    return -(-scaled.numerator // scaled.denominator)
