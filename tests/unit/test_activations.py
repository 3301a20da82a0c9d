"""Saved activations per layer and token, attention backends and forward extras, with hand arithmetic."""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction

import pytest

from memfit.core.activations import (
    attention_backend,
    forward_extra_bytes,
    layer_token_bytes,
    saved_activations,
    training_flow,
)
from memfit.core.choices import AttnImpl, Checkpointing, Method, Precision
from memfit.core.dtypes import quant
from memfit.core.families import spec_from_config
from memfit.core.optimizers import lora_targets
from memfit.core.spec import AttentionSpec, LayerSpec, ModelSource, ModelSpec, MoeSpec
from memfit.core.workload import Lora, Training
from memfit.sources.resolve import load_model

SOURCE = ModelSource(kind="config", ref="test")
HIDDEN = 64
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 16
INTERMEDIATE = 80
BASE = {"model_type": "llama", "hidden_size": HIDDEN, "num_hidden_layers": 2, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "vocab_size": 96, "max_position_embeddings": 4096,
        "intermediate_size": INTERMEDIATE}


def _tiny(**extra: object) -> ModelSpec:
    return spec_from_config({**BASE, **extra}, name="tiny", source=SOURCE)


def _flow(spec: ModelSpec, wl: Training):  # type: ignore[no-untyped-def]
    targets = lora_targets(spec, wl.lora) if wl.lora is not None and wl.method is not Method.FULL \
        else frozenset()
    return training_flow(spec, wl, lora_targets=targets)


def _per_token(spec: ModelSpec, wl: Training, *, first: bool = False) -> int:
    flow = _flow(spec, wl)
    return sum(layer_token_bytes(spec, spec.layers[1], flow, seq_len=wl.seq_len, first=first).values())


def test_llama_1b_full_bf16_sdpa_per_layer_token() -> None:
    """Llama-3.2-1B, full bf16, SDPA flash: 108,672 bytes per token and layer."""
    # norms 2 × (4h fp32 input + 2h normalised + 2h output) = 16·2048 = 32,768
    # flash: q 2·2048 + k 2·512 + v 2·512 + out 2·2048 + lse 4·32 = 10,368
    # MLP: gate, silu, up, product 4 × 2·8192 = 65,536 → 108,672
    spec = load_model("Llama-3.2-1B")
    assert _per_token(spec, Training(seq_len=1024, batch_size=4)) == 108_672


def test_llama_1b_eager_adds_quadratic_probabilities() -> None:
    """Eager attention saves fp32 softmax and bf16 probabilities, (heads × seq) each, and repeated K/V."""
    # 32,768 norms + q, k_rep, v_rep, out copy 4 × 2·2048 = 16,384 + 65,536 MLP = 114,688
    # probabilities (4 + 2)·32 heads·1024 = 196,608 → 311,296
    spec = load_model("Llama-3.2-1B")
    assert _per_token(spec, Training(seq_len=1024, batch_size=2, attn=AttnImpl.EAGER)) == 311_296


def test_llama_1b_amp_casts_per_linear() -> None:
    """Under autocast each Linear keeps its own bf16 input cast and norms keep fp32 tensors."""
    # norms 2 × (4h input + 4h normalised) = 16h = 32,768; casts q,k,v 3·2h + gate,up 2·2h = 10h = 20,480
    # flash 10,368 (bf16 casts of q, k; v; out; lse) + MLP 65,536 → 129,152
    spec = load_model("Llama-3.2-1B")
    wl = Training(seq_len=1024, batch_size=2, precision=Precision.AMP_BF16)
    assert _per_token(spec, wl) == 129_152


def test_llama_8b_lora_saves_fp32_dropout_copies() -> None:
    """LoRA r16 all-linear on Llama-3.1-8B: 334,400 bytes per token and (non-first) layer."""
    # frozen norms 2 × 4h = 32,768; flash q 8192 + k 2048 + v 2048 + out 8192 + lse 128 = 20,608
    # MLP (frozen down keeps no product): 3 × 2·14336 = 86,016
    # LoRA: (4 + 1)·fan_in + 4·16 per Linear: 6 × (5·4096 + 64) + (5·14336 + 64) = 195,008 → 334,400
    spec = load_model("Llama-3.1-8B")
    wl = Training(seq_len=2048, method=Method.LORA, lora=Lora(rank=16, alpha=32))
    assert _per_token(spec, wl) == 334_400
    # layer 0's input needs no grad: its input norm saves nothing (4h = 16,384 less)
    assert _per_token(spec, wl, first=True) == 334_400 - 16_384


def test_checkpointing_keeps_layer_inputs_only() -> None:
    """Non-reentrant checkpointing keeps each layer's bf16 input: 16 · 2 · 2048 · tokens."""
    # l1b b8 s2048: 16 layers × 2 B × 2048 × 16,384 tokens = 1,073,741,824; final norm 8h·T = 268,435,456
    spec = load_model("Llama-3.2-1B")
    wl = Training(seq_len=2048, batch_size=8, checkpointing=Checkpointing.FULL)
    term = saved_activations(spec, _flow(spec, wl), batch=8, seq_len=2048)
    assert term.flat() == {"layer_inputs": 1_073_741_824, "final_norm": 268_435_456}


def test_qlora_prepare_kbit_flows_fp32() -> None:
    """After prepare_kbit the residual stream is fp32 (fp32 embeddings), so checkpointed inputs are 4 B."""
    # 2 layers × 4 B × 64 × (2·32 tokens) = 32,768
    spec = _tiny()
    wl = Training(seq_len=32, batch_size=2, method=Method.QLORA, lora=Lora(rank=4, alpha=8),
                  quant=quant("nf4"), checkpointing=Checkpointing.FULL)
    term = saved_activations(spec, _flow(spec, wl), batch=2, seq_len=32)
    assert term.bytes_of("layer_inputs") == 32_768


@pytest.mark.parametrize(("precision", "attn", "kv_heads", "head_dim", "expected"), [
    (Precision.BF16, AttnImpl.SDPA, 2, 16, "flash"),
    (Precision.FP32, AttnImpl.SDPA, 2, 16, "math"),        # fp32 + enable_gqa: no fused kernel
    (Precision.FP32, AttnImpl.SDPA, 4, 16, "efficient"),   # fp32 MHA
    (Precision.BF16, AttnImpl.SDPA, 4, 320, "efficient"),  # head_dim > 256: no flash
    (Precision.BF16, AttnImpl.EAGER, 2, 16, "eager"),
])
def test_attention_backend_choice(precision: Precision, attn: AttnImpl, kv_heads: int, head_dim: int,
                                  expected: str) -> None:
    """SDPA picks flash for bf16, efficient for fp32 MHA or big heads, math for fp32 GQA."""
    spec = _tiny()
    att = AttentionSpec(num_heads=HEADS, num_kv_heads=kv_heads, head_dim=head_dim)
    flow = _flow(spec, Training(seq_len=64, precision=precision, attn=attn))
    assert attention_backend(att, flow, seq_len=64) == expected


def test_sliding_window_shorter_than_seq_needs_mask() -> None:
    """A window shorter than the sequence passes a mask to SDPA, which then runs efficient attention."""
    spec = _tiny()
    att = AttentionSpec(num_heads=HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM, sliding_window=32)
    flow = _flow(spec, Training(seq_len=64))
    assert attention_backend(att, flow, seq_len=64) == "efficient"
    assert attention_backend(att, flow, seq_len=32) == "flash"


def test_forward_extra_holds_eager_cache_and_final_hidden() -> None:
    """Eager GQA: the DynamicCache keeps rotated K and V (not saved otherwise) until forward returns."""
    # LoRA (frozen lm_head): last hidden 2 B × 64 × 64 tokens = 8,192
    # cache per layer: (2 + 2) B × kv width 32 × 64 tokens = 8,192; 2 layers → 16,384; total 24,576
    spec = _tiny()
    wl = Training(seq_len=64, method=Method.LORA, lora=Lora(rank=4, alpha=8), attn=AttnImpl.EAGER)
    assert forward_extra_bytes(spec, _flow(spec, wl), batch=1, seq_len=64) == 24_576


def test_hidden_dropout_adds_two_masks_per_layer() -> None:
    """Residual-branch dropout keeps two bool masks of hidden size per token and layer."""
    spec = _tiny()
    dropped = dataclasses.replace(spec, hidden_dropout=True)
    wl = Training(seq_len=16)
    assert _per_token(dropped, wl) - _per_token(spec, wl) == 2 * HIDDEN


def test_lora_dropout_zero_drops_the_mask() -> None:
    """Without LoRA dropout peft keeps no mask: 1 byte per input feature less for each adapted Linear."""
    # adapted q, k, v, o (fan_in 64 each), gate, up (64), down (80): 6·64 + 80 = 464
    spec = _tiny()
    with_drop = Training(seq_len=16, method=Method.LORA, lora=Lora(rank=4, alpha=8))
    no_drop = Training(seq_len=16, method=Method.LORA, lora=Lora(rank=4, alpha=8, dropout=Fraction(0)))
    assert _per_token(spec, with_drop) - _per_token(spec, no_drop) == 464


def _softcapped(spec: ModelSpec) -> ModelSpec:
    layers = tuple(dataclasses.replace(layer, attention=dataclasses.replace(layer.attention, softcap=True))
                   for layer in spec.layers)
    return dataclasses.replace(spec, layers=layers)


def test_gemma2_eager_softcapping_keeps_tanh_output() -> None:
    """attn_logit_softcapping under eager keeps tanh's bf16 output: heads × seq × 2 B per token more."""
    # 4 heads × 64 positions × 2 B = 512
    spec = _tiny()
    wl = Training(seq_len=64, attn=AttnImpl.EAGER)
    capped = _softcapped(spec)
    assert _per_token(capped, wl) - _per_token(spec, wl) == 512


def test_attention_sinks_softmax_in_bf16_over_one_more_column() -> None:
    """gpt-oss sinks: bf16 softmax over seq + 1 columns and an int64 argmax replace fp32 + bf16 probs."""
    # without sinks: (4 + 2) B × 4 heads × 64 = 1,536; with: 2 B × 4 × 65 + 8 B × 4 = 552 → −984
    spec = _tiny()
    layers = tuple(dataclasses.replace(layer, attention=dataclasses.replace(layer.attention, sinks=True))
                   for layer in spec.layers)
    sinks = dataclasses.replace(spec, layers=layers)
    wl = Training(seq_len=64, attn=AttnImpl.EAGER)
    assert _per_token(sinks, wl) - _per_token(spec, wl) == -984


def test_gpt_oss_runs_eager_when_sdpa_is_asked() -> None:
    """transformers 5.17 GptOss has _supports_sdpa = False: attn=sdpa runs its default, eager."""
    spec = load_model("gpt-oss-20b")
    flow = _flow(spec, Training(seq_len=1024))
    assert attention_backend(spec.layers[0].attention, flow, seq_len=1024) == "eager"


GPT_OSS = {"model_type": "gpt_oss", "hidden_size": 64, "intermediate_size": 48, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 96,
           "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 32,
           "max_position_embeddings": 4096}


def _without_gpt_oss_quirks(spec: ModelSpec) -> ModelSpec:
    """The same shapes with a SwiGLU expert and norms that keep their output dtype (as Qwen2-MoE)."""
    def plain(layer: LayerSpec) -> LayerSpec:
        assert isinstance(layer.mlp, MoeSpec)
        expert = dataclasses.replace(layer.mlp.expert, clamped_glu=False)
        return dataclasses.replace(layer, mlp=dataclasses.replace(layer.mlp, expert=expert))
    return dataclasses.replace(spec, norm_fp32_output=False, layers=tuple(plain(one) for one in spec.layers))


@pytest.mark.parametrize(("method", "mlp_more", "norms_more"), [
    # experts: 3 more I-wide bf16 tensors per routed copy, 3 × 48 × 2 B × top-2 = 576 (frozen or not);
    # full: the two trained norms keep an fp32 (not bf16) normalised tensor, 2 × 64 × 2 B = 256
    (Method.FULL, 576, 256),
    (Method.LORA, 576, 0),
])
def test_gpt_oss_clamped_glu_and_fp32_norm_weight(method: Method, mlp_more: int, norms_more: int) -> None:
    """gpt-oss experts keep gate_up, clamped gate, up + 1, sigmoid and glu; its norms multiply in fp32."""
    spec = spec_from_config(GPT_OSS, name="tiny-oss", source=SOURCE)
    plain = _without_gpt_oss_quirks(spec)
    lora = Lora(rank=2, alpha=4) if method is Method.LORA else None
    wl = Training(seq_len=64, method=method, lora=lora, attn=AttnImpl.EAGER)
    got = layer_token_bytes(spec, spec.layers[1], _flow(spec, wl), seq_len=64)
    ref = layer_token_bytes(plain, plain.layers[1], _flow(plain, wl), seq_len=64)
    assert (got["mlp"] - ref["mlp"], got["norms"] - ref["norms"]) == (mlp_more, norms_more)


def test_python_gelu_keeps_three_more_intermediates() -> None:
    """GPT-2's gelu_new is Python arithmetic: tanh output and two products saved, 3 × I more."""
    # non-gated MLP, intermediate 80, bf16: 3 × 80 × 2 B = 480
    plain = _tiny(mlp_bias=False)
    gelu = ModelSpec(**{**{f: getattr(plain, f) for f in plain.__dataclass_fields__}, "layers": tuple(
        dataclasses.replace(layer, mlp=dataclasses.replace(layer.mlp, gated=False, activation="gelu_new"))
        for layer in plain.layers)})
    exact = ModelSpec(**{**{f: getattr(plain, f) for f in plain.__dataclass_fields__}, "layers": tuple(
        dataclasses.replace(layer, mlp=dataclasses.replace(layer.mlp, gated=False, activation="gelu"))
        for layer in plain.layers)})
    wl = Training(seq_len=16)
    assert _per_token(gelu, wl) - _per_token(exact, wl) == 480


def test_relu_keeps_its_output_under_lora() -> None:
    """LoRA freezes the down projection, but relu's backward reads its own output: it stays saved."""
    # non-gated MLP, intermediate 80, bf16: relu keeps 80 × 2 B = 160 per token; gelu under LoRA keeps
    # only its input (the up projection's output, 160), so relu and gelu save the same
    plain = _tiny(mlp_bias=False)

    def with_act(name: str) -> ModelSpec:
        return ModelSpec(**{**{f: getattr(plain, f) for f in plain.__dataclass_fields__}, "layers": tuple(
            dataclasses.replace(layer, mlp=dataclasses.replace(layer.mlp, gated=False, activation=name))
            for layer in plain.layers)})

    lora = Training(seq_len=16, method=Method.LORA, lora=Lora(rank=2, alpha=4, targets=("q_proj",)))
    full = Training(seq_len=16)
    assert _per_token(with_act("relu"), lora) == _per_token(with_act("gelu"), lora)
    assert _per_token(with_act("gelu"), full) - _per_token(with_act("relu"), full) == 160


def test_gelu_new_under_autocast_keeps_fp32_intermediates() -> None:
    """Autocast runs gelu_new's pow in fp32: 16 B per intermediate element are saved, not 10."""
    # intermediate 80: bf16 (2 + 3) × 80 × 2 B = 800; AMP 16 B × 80 = 1,280 → 480 more
    plain = _tiny(mlp_bias=False)
    gelu = ModelSpec(**{**{f: getattr(plain, f) for f in plain.__dataclass_fields__}, "layers": tuple(
        dataclasses.replace(layer, mlp=dataclasses.replace(layer.mlp, gated=False, activation="gelu_new"))
        for layer in plain.layers)})
    exact = ModelSpec(**{**{f: getattr(plain, f) for f in plain.__dataclass_fields__}, "layers": tuple(
        dataclasses.replace(layer, mlp=dataclasses.replace(layer.mlp, gated=False, activation="gelu"))
        for layer in plain.layers)})
    amp = Training(seq_len=16, precision=Precision.AMP_BF16)
    bf16 = Training(seq_len=16)
    amp_more = _per_token(gelu, amp) - _per_token(exact, amp)
    bf16_more = _per_token(gelu, bf16) - _per_token(exact, bf16)
    # exact gelu: 2 × 80 × 2 B = 320 in both; gelu_new: AMP 1,280 − 320 = 960, bf16 800 − 320 = 480
    assert (amp_more, bf16_more) == (960, 480)


COHERE2 = {"model_type": "cohere2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 96,
           "sliding_window": 4096, "max_position_embeddings": 8192}


@pytest.mark.parametrize(("method", "norms"), [
    (Method.FULL, 768),     # 3 fp32 copies (x − mean twice, normalised for the weight) × 64 × 4 B
    (Method.LORA, 512),     # frozen weight: the two x − mean copies, 2 × 64 × 4 B
])
def test_cohere_python_layer_norm_keeps_fp32_copies(method: Method, norms: int) -> None:
    """Cohere's LayerNorm is fp32 Python arithmetic: its one norm per (parallel) layer keeps fp32 copies."""
    spec = spec_from_config(COHERE2, name="tiny-cohere2", source=SOURCE)
    lora = Lora(rank=2, alpha=4) if method is Method.LORA else None
    wl = Training(seq_len=64, method=method, lora=lora)
    assert layer_token_bytes(spec, spec.layers[1], _flow(spec, wl), seq_len=64)["norms"] == norms


def test_parallel_layer_norms_share_their_saved_input() -> None:
    """GPT-NeoX parallel residual: both LayerNorms read the layer input, F.layer_norm saves it once."""
    # full bf16: one 64-wide bf16 input, 64 × 2 B = 128 (not 2 × 128)
    cfg = {"model_type": "gpt_neox", "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
           "num_attention_heads": 4, "vocab_size": 96, "rotary_pct": 0.25, "max_position_embeddings": 2048,
           "use_parallel_residual": True, "hidden_act": "gelu", "hidden_dropout": 0.0}
    spec = spec_from_config(cfg, name="tiny-neox", source=SOURCE)
    wl = Training(seq_len=64)
    assert layer_token_bytes(spec, spec.layers[1], _flow(spec, wl), seq_len=64)["norms"] == 128


def test_olmo2_norms_keep_fp32_normalised_when_trained() -> None:
    """OLMo-2's RMSNorm multiplies the weight in fp32: each trained norm keeps 4 B per element, not 2."""
    # 2 layer norms (64) + q_norm (64) + k_norm (2 kv heads × 16 = 32): (64 + 64 + 64 + 32) × 2 B = 448 more
    spec = _tiny(model_type="olmo2", head_dim=16)
    llama_like = dataclasses.replace(spec, norm_fp32_output=False)
    wl = Training(seq_len=64)
    assert _per_token(spec, wl) - _per_token(llama_like, wl) == 448


def _fused(spec: ModelSpec, *, rotary: bool = True) -> ModelSpec:
    return dataclasses.replace(spec, layers=tuple(dataclasses.replace(layer, attention=dataclasses.replace(
        layer.attention, fused_qkv=True, rotary=rotary)) for layer in spec.layers))


@pytest.mark.parametrize(("rotary", "checkpointing", "more"), [
    # rotary: q and k are new tensors; with the training cache (no checkpointing) v is the cache's cat
    # copy (nothing is a view: 0); without it v is a view, keeping q's 64 + k's 32 elements: 96 × 2 B = 192
    (True, Checkpointing.NONE, 0),
    (True, Checkpointing.FULL, 192),
    # no rotary (GPT-2): q is a view; with the cache k and v are copies, so the buffer adds k + v: 64 × 2 B
    (False, Checkpointing.NONE, 128),
])
def test_fused_qkv_output_kept_by_a_view(rotary: bool, checkpointing: Checkpointing, more: int) -> None:
    """A view of the fused q|k|v output reaching the attention kernel keeps the whole buffer alive."""
    plain = _tiny()
    wl = Training(seq_len=16, checkpointing=checkpointing)
    assert _per_token(_fused(plain, rotary=rotary), wl) - _per_token(plain, wl) == more


def test_falcon_alibi_sdpa_keeps_one_shared_bias() -> None:
    """ALiBi under SDPA: efficient kernel with one float (batch, heads, seq, seq) bias for all layers."""
    # 2 B × batch 2 × 4 heads × 64 × 64 = 65,536
    config = {"model_type": "falcon", "hidden_size": HIDDEN, "num_attention_heads": HEADS,
              "num_hidden_layers": 2, "vocab_size": 96, "alibi": True, "multi_query": False,
              "new_decoder_architecture": False, "parallel_attn": False, "bias": True}
    spec = spec_from_config(config, name="rw", source=ModelSource(kind="config", ref="rw",
                                                                  config_json=json.dumps(config)))
    wl = Training(seq_len=64, batch_size=2)
    flow = _flow(spec, wl)
    assert attention_backend(spec.layers[0].attention, flow, seq_len=64) == "efficient"
    assert saved_activations(spec, flow, batch=2, seq_len=64).bytes_of("alibi_bias") == 65_536


def test_merged_expert_backward_gradient_nets_out_the_freed_down_projection() -> None:
    """LoRA on Qwen3-30B-A3B's fused experts (bf16): gate_up W + ΔW is 128 × 1,536 × 2,048 = 402,653,184
    elements, down 128 × 2,048 × 768 = 201,326,592. Backward runs down first (its gradient beside both
    W + ΔW: excess 201,326,592) then gate_up (down's W + ΔW freed: 402,653,184 − 201,326,592 =
    201,326,592); the worst excess is 201,326,592 elements, half the largest parameter."""
    from memfit.core.activations import merged_expert_backward_elements, training_flow

    spec = load_model("Qwen3-30B-A3B")
    wl = Training(seq_len=64, method=Method.LORA, lora=Lora(rank=16, alpha=32, dropout=Fraction(0)))
    flow = training_flow(spec, wl, lora_targets=lora_targets(spec, wl.lora))
    assert merged_expert_backward_elements(spec, spec.layers[-1], flow) == 201_326_592
    full = training_flow(spec, Training(seq_len=64), lora_targets=frozenset())
    assert merged_expert_backward_elements(spec, spec.layers[-1], full) == 0


def test_merged_experts_keep_the_fold_and_the_bf16_copies_of_the_lora_factors() -> None:
    """LoRA r=16 on one Qwen3-30B-A3B layer (bf16, 128 experts, hidden 2,048, expert width 768): baddbmm keeps
    W + ΔW for gate_up (128 × 1,536 × 2,048) and down (128 × 2,048 × 768) = 603,979,776 elements, and the
    fp32 A / B factors cast to bf16: gate_up A (E, 2r, h) 128 × 32 × 2,048 = 8,388,608, B (E, 2I, 2r)
    128 × 1,536 × 32 = 6,291,456; down A (E, r, I) 128 × 16 × 768 = 1,572,864, B (E, h, r)
    128 × 2,048 × 16 = 4,194,304; factors 20,447,232 elements. Bytes: 2 × (603,979,776 + 20,447,232)
    = 1,248,854,016 (the saved tensors of that layer on CPU: 1,152 MiB of W + ΔW, 39 MiB of factors)."""
    from memfit.core.activations import merged_expert_bytes, training_flow

    spec = load_model("Qwen3-30B-A3B")
    wl = Training(seq_len=64, method=Method.LORA, lora=Lora(rank=16, alpha=32, dropout=Fraction(0)))
    flow = training_flow(spec, wl, lora_targets=lora_targets(spec, wl.lora))
    assert merged_expert_bytes(spec, spec.layers[-1], flow) == (1_248_854_016, 402_653_184)


def test_checkpointed_backward_pairs_each_layer_with_its_own_transient() -> None:
    """DeepSeek-V2-Lite, full bf16, checkpointing, 2,048 tokens: the largest recomputation is an MoE layer's
    (403,832,832 B) but the largest MLP gradients are the dense first layer's (3 × 10,944 × 2 B × 2,048 =
    134,479,872). Beside its own recomputation an MoE layer has 3 × (1,408 × 6 routed) × 2 B × 2,048 =
    103,809,024, less its shared experts' saved tensors already freed (they run after the routed experts:
    4 × 2,816 × 2 B × 2,048 = 46,137,344) = 57,671,680, plus the residual gradient in and out,
    2 × 2 B × 2,048 × 2,048 = 16,777,216: 74,448,896; the dense layer's 296,878,080 + 151,257,088 =
    448,135,168 is less than 403,832,832 + 74,448,896 = 478,281,728."""
    from memfit.core.activations import recompute_and_backward_transient, training_flow

    spec = load_model("DeepSeek-V2-Lite")
    wl = Training(seq_len=2048, checkpointing=Checkpointing.FULL)
    flow = training_flow(spec, wl, lora_targets=frozenset())
    assert recompute_and_backward_transient(spec, flow, batch=1, seq_len=2048) == (403_832_832, 74_448_896)
