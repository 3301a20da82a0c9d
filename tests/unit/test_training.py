"""Training phases on Llama-3.2-1B / 3.1-8B and tiny specs: terms, peaks, validation, suggestions."""

from __future__ import annotations

import types
from fractions import Fraction

import pytest

from memfit.core.choices import AttnImpl, Checkpointing, Method, Optimizer, PhaseName, Precision
from memfit.core.dtypes import QUANTS, quant
from memfit.core.errors import InvalidWorkload
from memfit.core.estimate import estimate
from memfit.core.families import spec_from_config
from memfit.core.plan import cut_suggestions
from memfit.core.result import TOP_TERMS, Gpu, Phase
from memfit.core.spec import ModelSource, ModelSpec
from memfit.core.training import training_phases, weights_term
from memfit.core.workload import Lora, Training
from memfit.sources.resolve import load_model

L1B_PARAMS = 1_235_814_400
L1B_BYTES = 2 * L1B_PARAMS                    # 2,471,628,800 in bf16
L1B_BUFFERS = 32 * 4                          # rotary inv_freq: head_dim/2 = 32 fp32 values
L8B_BUFFERS = 64 * 4                          # head_dim 128 → 64 fp32 values
WORKSPACES = 2 * 32 * 2**20                   # forward and backward cuBLAS handles
T, V = 4 * 1024, 128_256


def _phases(wl: Training, model: str = "Llama-3.2-1B") -> dict[PhaseName, Phase]:
    phases, _ = training_phases(load_model(model), wl)
    return {p.name: p for p in phases}


def test_full_bf16_adamw_backward_start_peak() -> None:
    """l1b b4 s1024 full bf16: the peak is the start of backward, 20,975,071,360 B."""
    # weights 2,471,628,800 + rotary inv_freq 32 × 4 = 128 + AdamW states 2 × 2,471,628,800
    # + workspaces 67,108,864
    # activations 108,672 B/token/layer × 4096 × 16 = 7,121,928,192 + final norm 8 × 2048 × 4096 = 67,108,864
    # logits at backward start 12 × 4096 × 128,256 = 6,304,038,912 → 20,975,071,360
    phases = _phases(Training(seq_len=1024, batch_size=4))
    back = phases[PhaseName.BACKWARD]
    assert back.allocated_bytes == 20_975_071_360
    assert back.at.startswith("start of backward")
    assert max(phases.values(), key=lambda p: p.allocated_bytes).name is PhaseName.BACKWARD


def test_foreach_adamw_step_holds_one_extra_copy() -> None:
    """Optimizer phase: weights + grads + 2 states + the foreach temporary = 5 × params + workspaces."""
    # 5 × 2,471,628,800 + 67,108,864 = 12,425,252,864
    opt = _phases(Training(seq_len=1024, batch_size=4))[PhaseName.OPTIMIZER]
    assert opt.allocated_bytes == 5 * L1B_BYTES + L1B_BUFFERS + WORKSPACES


def test_fused_adamw_has_no_temporary_but_step_scalars() -> None:
    """Fused AdamW: 4 × params + one 512 B step scalar per tensor (146 tensors in Llama-3.2-1B)."""
    # 16 layers × (7 Linears + 2 norms) + embeddings + final norm = 146; 146 × 512 = 74,752
    opt = _phases(Training(seq_len=1024, batch_size=4, optimizer=Optimizer.ADAMW_FUSED))[PhaseName.OPTIMIZER]
    assert opt.allocated_bytes == 4 * L1B_BYTES + L1B_BUFFERS + 74_752 + WORKSPACES


def test_amp_keeps_fp32_params_and_bf16_weight_copies() -> None:
    """AMP: fp32 weights (4 B) and autocast's bf16 copies of every Linear and the (tied) head."""
    # Linears 16 × 60,817,408 = 973,078,528 + head 128,256 × 2048 = 262,668,288 → × 2 B = 2,471,493,632
    fwd = _phases(Training(seq_len=1024, batch_size=2, precision=Precision.AMP_BF16))[PhaseName.FORWARD]
    flat = fwd.memory.flat()
    assert flat["weights"] == 4 * L1B_PARAMS + L1B_BUFFERS
    assert flat["activations/autocast_weight_copies"] == 2_471_493_632


def test_lora_gradients_and_states_are_adapter_sized() -> None:
    """LoRA r16 all-linear on Llama-3.1-8B: 41,943,040 fp32 adapter params → grads 167,772,160 B."""
    # optimizer phase: adapters + grads + 2 states + foreach copy = 5 × 167,772,160 over the bf16 base
    wl = Training(seq_len=2048, method=Method.LORA, lora=Lora(rank=16, alpha=32))
    opt = _phases(wl, "Llama-3.1-8B")[PhaseName.OPTIMIZER]
    flat = opt.memory.flat()
    assert flat["gradients"] == 167_772_160
    assert flat["adapters"] == 167_772_160
    assert flat["optimizer_states"] == 3 * 167_772_160


def test_qlora_weights_quantized_plus_fp32_kept_parts() -> None:
    """QLoRA nf4-dq on Llama-3.1-8B: Linears at 2113/512 bits, the rest fp32 after prepare_kbit."""
    # quantized: 32 layers × 218,103,808 = 6,979,321,856 weights × 2113/512 / 8 = 3,600,416,768 B
    # kept: (8,030,261,248 − 6,979,321,856) × 4 B = 4,203,757,568 B
    wl = Training(seq_len=2048, method=Method.QLORA, lora=Lora(rank=16, alpha=32), quant=quant("nf4-dq"))
    term = weights_term(load_model("Llama-3.1-8B"), wl)
    assert term.flat() == {"quantized_linears": 3_600_416_768, "kept": 4_203_757_568, "buffers": L8B_BUFFERS}


def test_qlora_without_kbit_prep_keeps_bf16() -> None:
    """--no-kbit-prep: embeddings, lm_head and norms stay bf16 (half of the fp32 kept bytes)."""
    wl = Training(seq_len=2048, method=Method.QLORA, quant=quant("nf4-dq"),
                  lora=Lora(rank=16, alpha=32, prepare_kbit=False))
    assert weights_term(load_model("Llama-3.1-8B"), wl).bytes_of("kept") == 4_203_757_568 // 2


def test_grad_accumulation_keeps_grads_through_forward() -> None:
    """With grad_accum > 1 the accumulated gradients are alive in forward (bf16, params-sized)."""
    one = _phases(Training(seq_len=256, batch_size=1))[PhaseName.FORWARD]
    two = _phases(Training(seq_len=256, batch_size=1, grad_accum=2))[PhaseName.FORWARD]
    assert two.allocated_bytes - one.allocated_bytes == L1B_BYTES


def test_paged_states_are_evictable_non_torch() -> None:
    """Paged AdamW 32-bit: fp32 states of big tensors outside allocated, in non_torch, evictable."""
    wl = Training(seq_len=256, optimizer=Optimizer.PAGED_ADAMW_32BIT)
    est = estimate(load_model("Llama-3.2-1B"), wl, Gpu(name="x", memory_bytes=2**40, usable_bytes=2**40))
    opt = est.phase(PhaseName.OPTIMIZER)
    paged = opt.memory.child("non_torch").child("paged_optimizer_states")  # type: ignore[union-attr]
    assert paged is not None
    assert paged.evictable
    # norms (2048 < 1e5 elements) stay on device: 33 norms × 2 states × 2048 × 4 B = 540,672
    assert opt.memory.bytes_of("optimizer_states") == 540_672
    assert est.peak.evictable_bytes == paged.nbytes


def test_every_top_level_term_is_in_the_vocabulary() -> None:
    """Each phase's tree uses only result.py's top-level names."""
    wl = Training(seq_len=128, method=Method.QLORA, lora=Lora(rank=8, alpha=16), quant=quant("nf4"),
                  optimizer=Optimizer.PAGED_ADAMW_8BIT, precision=Precision.AMP_BF16)
    for phase in _phases(wl).values():
        assert {t.name for t in phase.memory.children} <= set(TOP_TERMS)


@pytest.mark.parametrize(("wl", "match"), [
    (lambda: Training(seq_len=64, method=Method.LORA, lora=Lora(rank=4, alpha=8, targets=("query",))),
     "lora_targets query not in Llama-3.2-1B; use all-linear or some of: q_proj,k_proj"),
    (lambda: Training(seq_len=64, method=Method.QLORA, lora=Lora(rank=4, alpha=8), quant=quant("nf4"),
                      precision=Precision.FP32), "method=qlora computes in bf16/fp16"),
    (lambda: Training(seq_len=64, attn=AttnImpl.FLASH, precision=Precision.FP32), "needs fp16/bf16"),
    (lambda: Training(seq_len=64, quant=quant("nf4")), "method=full cannot train"),
    (lambda: Training(seq_len=64, method=Method.LORA, lora=Lora(rank=0, alpha=8)), "lora_rank=0"),
    (lambda: Training(seq_len=64, grad_accum=0), "grad_accum=0"),
])
def test_impossible_settings_raise_one_line(wl, match: str) -> None:  # type: ignore[no-untyped-def]
    """Impossible settings raise InvalidWorkload naming the field and what is valid."""
    with pytest.raises(InvalidWorkload, match=match):
        training_phases(load_model("Llama-3.2-1B"), wl())


def test_lm_head_is_a_valid_explicit_target() -> None:
    """lm_head may be named explicitly: its adapter is rank × (hidden + vocab) fp32 parameters."""
    # 8 × (2048 + 128,256) × 4 B = 4,169,728
    wl = Training(seq_len=64, method=Method.LORA, lora=Lora(rank=8, alpha=16, targets=("lm_head",)))
    assert _phases(wl)[PhaseName.LOAD].memory.bytes_of("adapters") == 4_169_728


def test_cut_suggestions_lower_the_peak_in_order() -> None:
    """Each suggestion lowers the peak on the same GPUs; the list is sorted by the new peak; every peak,
    the baseline included, comes from the one estimator passed (savings never mix engines)."""
    spec = load_model("Llama-3.2-1B")
    wl = Training(seq_len=2048, batch_size=8)
    base = max(p.allocated_bytes for p in training_phases(spec, wl)[0])
    cuts = cut_suggestions(spec, wl)
    peaks = [c.allocated_bytes for c in cuts]
    assert peaks == sorted(peaks)
    assert all(p < base for p in peaks)
    assert {c.base_bytes for c in cuts} == {base}
    assert "activation checkpointing (--grad-checkpointing)" in {c.description for c in cuts}
    assert all(c.workload.parallel.num_gpus == 1 for c in cuts)


def test_cut_suggestions_compare_within_the_estimator_they_are_given() -> None:
    """An estimator that doubles every peak doubles the baseline too: the savings double, never mix."""
    spec = load_model("Llama-3.2-1B")
    wl = Training(seq_len=1024, batch_size=2)

    def doubled(s, w, g):  # type: ignore[no-untyped-def]
        peak = estimate(s, w, g).peak.allocated_bytes
        return types.SimpleNamespace(peak=types.SimpleNamespace(allocated_bytes=2 * peak))

    plain = {c.description: c.base_bytes - c.allocated_bytes for c in cut_suggestions(spec, wl)}
    twice = {c.description: c.base_bytes - c.allocated_bytes
             for c in cut_suggestions(spec, wl, estimator=doubled)}
    assert twice == {k: 2 * v for k, v in plain.items()}


def test_loop_adamw_and_first_layer_do_not_crash_on_fp32() -> None:
    """fp32 full training with the for-loop AdamW: 2 fp32 states, a step of two largest-tensor copies."""
    # largest tensor: embeddings 128,256 × 2048 × 4 B = 1,050,673,152; two copies = 2,101,346,304
    opt = _phases(Training(seq_len=64, precision=Precision.FP32, optimizer=Optimizer.ADAMW_LOOP))[
        PhaseName.OPTIMIZER]
    flat = opt.memory.flat()
    assert flat["optimizer_states/step_temporaries"] == 2_101_346_304
    assert flat["optimizer_states/states"] == 2 * 4 * L1B_PARAMS


def test_unquantized_lora_weights_follow_precision() -> None:
    """LoRA on a bf16 base keeps 2 B per base parameter; the quant table's 'none' is unquantized."""
    wl = Training(seq_len=64, method=Method.LORA, lora=Lora(rank=4, alpha=8, dropout=Fraction(0)),
                  quant=QUANTS["none"], checkpointing=Checkpointing.FULL)
    assert _phases(wl)[PhaseName.LOAD].memory.bytes_of("weights") == L1B_BYTES + L1B_BUFFERS


FALCON = {"model_type": "falcon", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
          "vocab_size": 100, "new_decoder_architecture": False, "multi_query": False, "parallel_attn": False,
          "bias": True, "alibi": True}


def test_qlora_leaves_falcon_linears_unquantized_in_fp32() -> None:
    """bnb converts only `type(m) is nn.Linear`: FalconLinear stays, and prepare_kbit makes it all fp32."""
    # per layer: query_key_value 64·192+192 = 12,480; dense 64·64+64 = 4,160; dense_h_to_4h 64·256+256
    # = 16,640; dense_4h_to_h 256·64+64 = 16,448; two LayerNorms 256 → 49,984; × 2 layers = 99,968
    # + embeddings 100·64 = 6,400 + final LayerNorm 128 = 106,496 parameters × 4 B = 425,984
    # + rotary inv_freq (head_dim 16 → 8 fp32 values) 32 B = 426,016
    spec = spec_from_config(FALCON, name="tiny-falcon", source=ModelSource(kind="config", ref="t"))
    wl = Training(seq_len=64, method=Method.QLORA, lora=Lora(rank=2, alpha=4), quant=quant("nf4-dq"),
                  checkpointing=Checkpointing.FULL)
    term = weights_term(spec, wl)
    assert term.nbytes == 426_016
    assert term.flat().get("weights/quantized_linears", 0) == 0


MOE = {"model_type": "qwen3_moe", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
       "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 100,
       "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 96,
       "max_position_embeddings": 512}


def _moe_spec() -> ModelSpec:
    return spec_from_config(MOE, name="tiny-moe", source=ModelSource(kind="config", ref="t"))


def test_all_linear_on_fused_experts_needs_zero_dropout() -> None:
    """peft's ParamWrapper refuses lora_dropout > 0, so all-linear on a transformers-5 MoE is invalid."""
    wl = Training(seq_len=64, method=Method.LORA, lora=Lora(rank=2, alpha=4))
    with pytest.raises(InvalidWorkload, match="needs lora_dropout=0"):
        training_phases(_moe_spec(), wl)


def test_dropout_left_to_memfit_is_zero_on_fused_experts_else_005() -> None:
    """Lora(dropout=None): every engine settles it before sizing (workload_for_gpu) — 0 with a note where
    peft wraps fused experts, 0.05 elsewhere; a dropout the user gave is kept, and refused where peft
    would refuse it."""
    default = Lora(rank=2, alpha=4)
    est = estimate(_moe_spec(), Training(seq_len=64, method=Method.LORA, lora=default))
    assert est.workload.lora is not None
    assert est.workload.lora.dropout == 0
    assert any(a.startswith("LoRA dropout 0: peft's all-linear adapts the fused expert")
               for a in est.assumptions)
    dense = estimate(load_model("Llama-3.2-1B"), Training(seq_len=64, method=Method.LORA, lora=default))
    assert dense.workload.lora is not None
    assert dense.workload.lora.dropout == Fraction(1, 20)
    with pytest.raises(InvalidWorkload, match="needs lora_dropout=0"):
        estimate(_moe_spec(), Training(seq_len=64, method=Method.LORA,
                                       lora=Lora(rank=2, alpha=4, dropout=Fraction(1, 10))))


def test_qwen2_moe_all_linear_accepts_dropout_and_skips_experts() -> None:
    """peft 0.21 maps no Qwen2-MoE expert to ParamWrapper: dropout is fine and only attention gets LoRA."""
    # same shapes as MOE with model_type qwen2_moe (+ shared expert 64 wide, its gate): attention as below
    # 896 per layer; shared expert gate/up (64→64) 2·(2·64+2·64) = 512, down 2·64+2·64 = 256,
    # shared_expert_gate (64→1) 2·64 + 1·2 = 130 → 1,794 per layer; 2 layers × 1,794 × 4 B = 14,352
    cfg = {**MOE, "model_type": "qwen2_moe", "shared_expert_intermediate_size": 64}
    spec = spec_from_config(cfg, name="tiny-qwen2-moe", source=ModelSource(kind="config", ref="t"))
    wl = Training(seq_len=64, method=Method.LORA, lora=Lora(rank=2, alpha=4))
    load = training_phases(spec, wl)[0][0]
    assert load.memory.bytes_of("adapters") == 14_352


def test_all_linear_moe_adapters_match_peft() -> None:
    """r=2, E=4: gate_up A (16, 64) + B (192, 16), down A (8, 96) + B (64, 8), router A (2, 64) + B (4, 2)."""
    # experts: 16·64 + 192·16 + 8·96 + 64·8 = 1024 + 3072 + 768 + 512 = 5,376; router 128 + 8 = 136
    # attention q,k,v,o: 2·(64+64) + 2·(64+32) + 2·(64+32) + 2·(64+64) = 896 → 6,408 per layer
    # 2 layers × 6,408 × 4 B = 51,264 (shapes from get_peft_model on the meta device, peft 0.21)
    wl = Training(seq_len=64, method=Method.LORA, lora=Lora(rank=2, alpha=4, dropout=Fraction(0)))
    load = training_phases(_moe_spec(), wl)[0][0]
    assert load.memory.bytes_of("adapters") == 51_264


def test_training_weights_carry_gpt_bigcode_causal_buffer() -> None:
    """GPT-BigCode registers a bool (n_positions × n_positions) mask: 8,192² = 67,108,864 B on the GPU."""
    spec = load_model("starcoderbase-1b")
    assert weights_term(spec, Training(seq_len=512)).bytes_of("buffers") == 8192 * 8192
