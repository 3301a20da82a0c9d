"""Tensor and sequence parallelism of the traced model through DTensor's `parallelize_module`.

The Llama-style plan torchtitan applies (torchtitan/models/llama3/infra/parallelize.py, `apply_tp`), on
transformers' module names:

| module                              | tp                           | with sequence parallelism       |
|-------------------------------------|------------------------------|---------------------------------|
| self_attn.q_proj, k_proj, v_proj    | ColwiseParallel              | same                            |
| self_attn.o_proj                    | RowwiseParallel → Replicate  | → Shard(1) (sequence), DTensor  |
| mlp.gate_proj, up_proj              | ColwiseParallel              | same                            |
| mlp.down_proj                       | RowwiseParallel → Replicate  | → Shard(1), DTensor             |
| input_layernorm, post_attention_... | replicated (plain)           | SequenceParallel                |
| self_attn, mlp inputs               | -                            | all-gather Shard(1) → Replicate |
| model.embed_tokens                  | RowwiseParallel → Replicate  | → Shard(1), DTensor             |
| model.norm                          | replicated (plain)           | SequenceParallel                |
| lm_head                             | ColwiseParallel → Shard(-1) logits; vocab-parallel loss        |

With sequence parallelism the residual stream stays a DTensor sharded on the sequence, so transformers
reads the global sequence length (rotary positions, the causal mask) from it. Each unit is turned into fake
CUDA tensors just before it is split, so the load phase holds one unsplit layer at a time.
"""

from __future__ import annotations

from typing import Any

from memfit.core.errors import EngineUnavailable
from memfit.core.workload import Training
from memfit.trace import harness
from memfit.trace.tracker import Tracker

LAYER_MODULES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm",
                 "post_attention_layernorm")
ROOT_MODULES = ("model.embed_tokens", "model.norm", "lm_head")
"""The module names the plan needs (Llama, Mistral, Qwen2/3 dense and their kin)."""


def check_plan(model: Any, workload: Training) -> None:
    """EngineUnavailable unless the model has the Llama-style modules the plan splits, without LoRA."""
    if workload.lora is not None:
        raise EngineUnavailable("trace splits plain Linear layers for tp, not peft's LoRA layers; use "
                                "method=full or engine=analytic")
    from memfit.trace.sharding import decoder_layers

    layers = decoder_layers(model)
    names = {name for name, _ in model.named_modules()}
    layer_names = {name for name, _ in layers[0].named_modules()} if layers else set()
    missing = [m for m in ROOT_MODULES if m not in names] + [m for m in LAYER_MODULES if m not in layer_names]
    if missing:
        raise EngineUnavailable(f"trace's tensor-parallel plan covers Llama-style models; "
                                f"{model.config.model_type} has no {missing[0]}; use engine=analytic")


def layer_plan(sequence_parallel: bool) -> dict[str, Any]:
    """The plan of one decoder layer (see the module table)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
    )

    out = Shard(1) if sequence_parallel else Replicate()
    plan: dict[str, Any] = {
        **{f"self_attn.{name}": ColwiseParallel() for name in ("q_proj", "k_proj", "v_proj")},
        **{f"mlp.{name}": ColwiseParallel() for name in ("gate_proj", "up_proj")},
        "self_attn.o_proj": RowwiseParallel(output_layouts=out, use_local_output=not sequence_parallel),
        "mlp.down_proj": RowwiseParallel(output_layouts=out, use_local_output=not sequence_parallel),
    }
    if sequence_parallel:
        plan.update({
            "input_layernorm": SequenceParallel(), "post_attention_layernorm": SequenceParallel(),
            "self_attn": PrepareModuleInput(input_kwarg_layouts={"hidden_states": Shard(1)},
                                            desired_input_kwarg_layouts={"hidden_states": Replicate()}),
            "mlp": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
        })
    return plan


def root_plan(sequence_parallel: bool) -> dict[str, Any]:
    """The plan of the embeddings, final norm and LM head (see the module table)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, SequenceParallel

    sequence = Shard(1) if sequence_parallel else Replicate()
    plan: dict[str, Any] = {
        "model.embed_tokens": RowwiseParallel(input_layouts=Replicate(), output_layouts=sequence,
                                              use_local_output=not sequence_parallel),
        "lm_head": ColwiseParallel(input_layouts=sequence, output_layouts=Shard(-1), use_local_output=False),
    }
    if sequence_parallel:
        plan["model.norm"] = SequenceParallel()
    return plan


def split(model: Any, workload: Training, tp_mesh: Any, device: str, tracker: Tracker) -> None:
    """Materialise and split each decoder layer, then the root, over `tp_mesh`; tag the local shards."""

    from memfit.trace.sharding import decoder_layers

    check_plan(model, workload)
    sequence_parallel = workload.parallel.sequence_parallel
    for layer in decoder_layers(model):
        split_unit(layer, layer_plan(sequence_parallel), tp_mesh, device, tracker)
    split_root(model, workload, tp_mesh, device, tracker)


def split_root(model: Any, workload: Training, tp_mesh: Any, device: str, tracker: Tracker, *,
               mark: bool = True) -> None:
    """Split the embeddings, final norm and LM head. Tied embeddings stay tied: the embedding's row-wise
    and the LM head's column-wise split both shard the (vocab, hidden) weight on the vocabulary, but
    parallelize_module makes a new parameter for each, so the LM head is pointed back at the embedding's."""
    split_unit(model, root_plan(workload.parallel.sequence_parallel), tp_mesh, device, tracker, mark=mark)
    if getattr(model.config, "tie_word_embeddings", False):
        model.lm_head.weight = model.model.embed_tokens.weight


def split_unit(unit: Any, plan: dict[str, Any], tp_mesh: Any, device: str, tracker: Tracker, *,
               mark: bool = True) -> None:
    """Materialise `unit` and split it by `plan`; tag its local shards as weights unless FSDP will shard
    them again (`mark=False`: FSDP tags its own shards)."""
    from torch.distributed.tensor.parallel import parallelize_module

    harness.materialize(unit, device)
    parallelize_module(unit, tp_mesh, plan)
    if mark:
        harness.mark_weights(unit, tracker)
