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
COLWISE = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.q_b_proj",
           "self_attn.kv_b_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.shared_experts.gate_proj",
           "mlp.shared_experts.up_proj")
ROWWISE = ("self_attn.o_proj", "mlp.down_proj", "mlp.shared_experts.down_proj")
"""Column- and row-parallel Linears wherever a layer has them: the Llama plan's, MLA's head-wise
up-projections (q_b_proj or q_proj, kv_b_proj; the latent down-projections q_a_proj and
kv_a_proj_with_mqa and their norms stay replicated, as in transformers 5.17's deepseek_v2
base_model_tp_plan and torchtitan's DeepSeek-V3 plan, NoParallel wkv_a / kv_norm) and the shared experts'."""
MLA_OR_MOE = ("self_attn.kv_b_proj", "mlp.experts")
"""Modules whose layers the sequence-parallel variant does not cover."""


def check_plan(model: Any, workload: Training) -> None:
    """EngineUnavailable unless every layer has the modules the plan splits (Llama-style attention or
    MLA; a dense MLP or fused routed experts), without LoRA."""
    if workload.lora is not None:
        raise EngineUnavailable("trace splits plain Linear layers for tp, not peft's LoRA layers; use "
                                "method=full or engine=analytic")
    from memfit.trace.sharding import decoder_layers

    names = {name for name, _ in model.named_modules()}
    missing = [m for m in ROOT_MODULES if m not in names]
    for layer in decoder_layers(model)[:1] if not missing else ():
        missing = _missing(set(dict(layer.named_modules())), workload.parallel.sequence_parallel)
    for layer in decoder_layers(model)[1:] if not missing else ():
        missing = _missing(set(dict(layer.named_modules())), workload.parallel.sequence_parallel)
        if missing:
            break
    if missing:
        raise EngineUnavailable(f"trace's tensor-parallel plan covers Llama-style and MLA attention with "
                                f"dense or fused-expert MLPs; {model.config.model_type} has no {missing[0]}; "
                                "use engine=analytic")


def _missing(layer_names: set[str], sequence_parallel: bool) -> list[str]:
    """What one layer lacks for the plan (empty when it is covered)."""
    if sequence_parallel and any(m in layer_names for m in MLA_OR_MOE):
        return ["sequence-parallel plan for MLA or MoE layers"]
    attention = [m for m in ("self_attn.o_proj",) if m not in layer_names]
    if "self_attn.kv_b_proj" not in layer_names:
        attention += [m for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
                      if m not in layer_names]
    elif not {"self_attn.q_proj", "self_attn.q_b_proj"} & layer_names:
        attention.append("self_attn.q_proj")
    if "mlp.experts" in layer_names:
        return attention
    return attention + [m for m in ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj") if m not in layer_names]


def layer_plan(sequence_parallel: bool, layer_names: set[str] | None = None) -> dict[str, Any]:
    """The plan of one decoder layer (see the module table), for the modules in `layer_names` (None: the
    Llama plan's)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
    )

    present = set(LAYER_MODULES) if layer_names is None else layer_names
    out = Shard(1) if sequence_parallel else Replicate()
    plan: dict[str, Any] = {
        **{name: ColwiseParallel() for name in COLWISE if name in present},
        **{name: RowwiseParallel(output_layouts=out, use_local_output=not sequence_parallel)
           for name in ROWWISE if name in present},
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
        split_layer(layer, sequence_parallel, tp_mesh, device, tracker)
    split_root(model, workload, tp_mesh, device, tracker)


def split_layer(layer: Any, sequence_parallel: bool, tp_mesh: Any, device: str, tracker: Tracker, *,
                mark: bool = True) -> None:
    """Split one decoder layer: its Linears by the plan, then its fused routed experts (if any)."""
    names = set(dict(layer.named_modules()))
    split_unit(layer, layer_plan(sequence_parallel, names), tp_mesh, device, tracker, mark=False)
    experts = getattr(getattr(layer, "mlp", None), "experts", None)
    if experts is not None and "mlp.experts" in names:
        split_experts(experts, tp_mesh)
    if mark:
        harness.mark_weights(layer, tracker)


def split_experts(experts: Any, tp_mesh: Any) -> None:
    """Fused routed experts split as transformers 5.17's own plan does ("layers.*.mlp.experts.gate_up_proj":
    "packed_colwise", "...down_proj": "rowwise", "layers.*.mlp.experts": "moe_tp_experts"): every rank
    keeps every expert's 1/tp slice of the intermediate dimension (gate and up halves alike), runs
    grouped_mm on those local slices and all-reduces the partial output.
    Source: transformers 5.17 distributed/tensor_parallel.py PackedColwiseParallel, RowwiseParallel,
    MoeExpertsParallel."""
    from transformers.distributed.tensor_parallel import ALL_PARALLEL_STYLES

    for name, style in (("gate_up_proj", "packed_colwise"), ("up_proj", "colwise"),
                        ("down_proj", "rowwise")):
        if name in experts._parameters:
            ALL_PARALLEL_STYLES[style].shard_param(experts, name, tp_mesh)
    ALL_PARALLEL_STYLES["moe_tp_experts"].install_forward(experts, tp_mesh)


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
