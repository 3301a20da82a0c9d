"""LoRA under FSDP2: which Linears peft adapts on fused-expert models, one unit's adapter gradients, and
those formed at the unit's backward peak."""

from __future__ import annotations

import dataclasses

from memfit.core.activations import shared_expert_freed_bytes, training_flow
from memfit.core.choices import FsdpStrategy
from memfit.core.optimizers import lora_targets
from memfit.core.per_rank import _before_peak, _unit_adapters
from memfit.core.result import Term
from memfit.core.spec import MoeSpec
from memfit.core.training import training_phases
from memfit.core.workload import Lora, Parallelism, Training
from memfit.sources.resolve import load_model

ALL_LINEAR = Lora(rank=16, alpha=32, dropout=0, targets=("all-linear",))


def _fsdp64() -> Training:
    return Training(seq_len=2048, method="lora", lora=ALL_LINEAR, checkpointing="full", precision="bf16",
                    parallel=Parallelism(dp=64, fsdp=FsdpStrategy.FULL))


def _child(term: Term, *path: str) -> Term | None:
    for name in path:
        found = next((c for c in term.children if c.name == name), None)
        if found is None:
            return None
        term = found
    return term


def test_all_linear_on_fused_experts_leaves_the_expert_names_out_of_the_modules() -> None:
    # peft 0.21.2 _convert_peft_config_moe moves gate, gate_proj, up_proj, down_proj ("qwen2_moe" mapping)
    # from target_modules to the fused expert parameters, so DeepSeek-V2-Lite's shared experts and its
    # dense first layer's MLP (nn.Linears with those names) get no adapter: only the attention remains
    assert lora_targets(load_model("DeepSeek-V2-Lite"), ALL_LINEAR) == frozenset(
        {"q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"})
    # a dense model keeps every Linear (no fused experts to move them to)
    assert {"gate_proj", "up_proj", "down_proj"} <= lora_targets(load_model("Llama-3.2-1B"), ALL_LINEAR)


def test_moe_unit_adapter_gradients_and_none_formed_at_the_routed_experts_peak() -> None:
    """DeepSeek-V2-Lite, LoRA r 16 all-linear, FSDP full dp 64: one MoE layer's padded adapter gradients
    are the reduce-scatter input (56,860,672 B), and none of the layer's are formed at its peak."""
    spec = load_model("DeepSeek-V2-Lite")
    # One MoE layer, A rows padded to a multiple of 64 (FSDP2 chunks dim 0 over 64 ranks), fp32:
    #   q_proj A (16→64, 2048) 131,072 + B (3072, 16) 49,152; kv_a A 131,072 + B (576, 16) 9,216;
    #   kv_b A (64, 512) 32,768 + B (4096, 16) 65,536; o_proj A 131,072 + B (2048, 16) 32,768 → 582,656
    #   router A (64, 2048) 131,072 + B (64, 16) 1,024 → 132,096
    #   experts gate_up A (2·64·16 = 2048, 2048) 4,194,304 + B (2816, 2048) 5,767,168;
    #   down A (64·16 = 1024, 1408) 1,441,792 + B (2048, 1024) 2,097,152 → 13,500,416
    #   total 14,215,168 elements × 4 B = 56,860,672 B (the trace's reduce_scatter_buffers exactly)
    phases = {str(p.name): p for p in training_phases(spec, _fsdp64())[0]}
    grads = _child(phases["backward"].memory, "gradients")
    assert grads is not None
    reduce = _child(grads, "reduce_scatter_buffers")
    assert reduce is not None
    assert reduce.nbytes == 56_860_672
    # at the routed experts' backward only the shared experts (after them in forward) have run their
    # backward, and they carry no adapter here: nothing of this unit is formed yet
    formed = _child(grads, "unsharded_unit")
    assert formed is None or formed.nbytes == 0
    moe = spec.layers[-1]
    assert [lin.role for lin in _before_peak(spec, moe)] == ["shared_experts"] * 3
    _, at_peak = _unit_adapters(spec, _fsdp64(), tuple(spec.layers))
    assert at_peak == 0


def test_dense_unit_forms_the_mlp_tail_adapter_gradients_at_its_peak() -> None:
    """Llama-3.2-1B, LoRA r 16 all-linear: at the SiLU backward the down_proj and up_proj adapters have
    their gradients, fp32 in their own (unpadded) shapes: 1,310,720 B."""
    spec = load_model("Llama-3.2-1B")
    # down_proj A (16, 8192) 131,072 + B (2048, 16) 32,768; up_proj A (16, 2048) 32,768 + B (8192, 16)
    # 131,072 → 327,680 elements × 4 B = 1,310,720 B
    assert [lin.name for lin in _before_peak(spec, spec.layers[0])] == ["up_proj", "down_proj"]
    _, at_peak = _unit_adapters(spec, _fsdp64(), tuple(spec.layers))
    assert at_peak == 1_310_720


def test_shared_experts_after_the_routed_ones_free_their_saved_tensors_before_the_experts_backward() -> None:
    """DeepSeek-V2-Lite bf16: the shared experts (2 × 1408 = 2816 wide, gated) run after the routed experts,
    so at the routed experts' backward their gate out, act out, up out and product are already freed:
    4 × 2816 × 2 B = 22,528 B per token; none when the shared expert runs first (Qwen2-MoE)."""
    spec = load_model("DeepSeek-V2-Lite")
    wl = _fsdp64()
    flow = training_flow(spec, wl, lora_targets=lora_targets(spec, ALL_LINEAR))
    moe = spec.layers[-1]
    assert shared_expert_freed_bytes(moe, flow) == 22_528
    assert shared_expert_freed_bytes(spec.layers[0], flow) == 0          # the dense first layer
    assert isinstance(moe.mlp, MoeSpec)
    first = dataclasses.replace(moe, mlp=dataclasses.replace(moe.mlp, shared_expert_first=True))
    assert shared_expert_freed_bytes(first, flow) == 0
