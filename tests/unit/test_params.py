"""count_params, layer_linears and non_layer_params on tiny specs, with the arithmetic in comments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memfit.core.families import spec_from_config
from memfit.core.params import (
    TOP_LEVEL,
    count_params,
    layer_linears,
    layer_non_linear_params,
    lm_head_linear,
    non_layer_params,
)
from memfit.core.spec import ModelSource, ModelSpec

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"
SOURCE = ModelSource(kind="config", ref="test")
HIDDEN = 64
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 16
VOCAB = 96
INTERMEDIATE = 80
LAYERS = 3
BASE = {"hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB, "max_position_embeddings": 128,
        "intermediate_size": INTERMEDIATE}


def _spec(**config: object) -> ModelSpec:
    return spec_from_config({**BASE, **config}, name="tiny", source=SOURCE)


def _published(name: str) -> ModelSpec:
    return spec_from_config(json.loads((CONFIGS / f"{name}.json").read_text()), name=name, source=SOURCE)


def test_llama_3_2_1b_total_and_components() -> None:
    """Llama-3.2-1B counts 1,235,814,400 parameters, its tied LM head counted once."""
    # embeddings 128,256 × 2,048 = 262,668,288
    # per layer: q, o 2,048² = 4,194,304 each; k, v 2,048 × 512 = 1,048,576 each; gate, up, down
    #   2,048 × 8,192 = 16,777,216 each; two RMSNorms 4,096 → 60,821,504; × 16 layers = 973,144,064
    # final norm 2,048; lm_head tied → 0.  Total 262,668,288 + 973,144,064 + 2,048 = 1,235,814,400
    tree = count_params(_published("Llama-3.2-1B"))
    assert tree.num_params == 1_235_814_400
    assert tree.flat()["layers"] == 973_144_064
    assert [c.name for c in tree.children] == ["embeddings", "layers", "final_norm"]


def test_untied_head_counts_vocab_times_hidden() -> None:
    """An untied LM head adds vocab × hidden; a tied one is dropped from the tree."""
    # 96 × 64 = 6,144
    assert count_params(_spec(model_type="llama", tie_word_embeddings=False)).flat()["lm_head"] == 6_144
    assert "lm_head" not in count_params(_spec(model_type="llama", tie_word_embeddings=True)).flat()


def test_top_level_order_and_parent_sums() -> None:
    """Top-level children follow TOP_LEVEL's order and every parent is the sum of its children."""
    tree = count_params(_published("gpt2"))
    names = [c.name for c in tree.children]
    assert names == [n for n in TOP_LEVEL if n in names]
    stack = [tree]
    while stack:
        node = stack.pop()
        if node.children:
            assert node.num_params == sum(c.num_params for c in node.children)
            stack.extend(node.children)


def test_gpt2_small_is_124m_with_learned_positions() -> None:
    """GPT-2 small counts 124,439,808 parameters: wte, wpe and LayerNorms with biases."""
    # wte 50,257 × 768 = 38,597,376; wpe 1,024 × 768 = 786,432
    # per layer: c_attn 768 × 2,304 + 2,304 = 1,771,776; c_proj 768² + 768 = 590,592;
    #   c_fc 768 × 3,072 + 3,072 = 2,362,368; mlp c_proj 3,072 × 768 + 768 = 2,360,064;
    #   ln_1, ln_2 4 × 768 = 3,072 → 7,087,872; × 12 = 85,054,464; ln_f 1,536.
    # Total 38,597,376 + 786,432 + 85,054,464 + 1,536 = 124,439,808
    tree = count_params(_published("gpt2"))
    assert tree.num_params == 124_439_808
    assert tree.flat()["position_embeddings"] == 786_432
    assert tree.flat()["layers/attention/c_attn"] == 12 * 1_771_776


def test_gqa_linears_have_hf_names_and_shapes() -> None:
    """A Llama layer lists q/k/v/o and gate/up/down with GQA widths, all real nn.Linear modules."""
    spec = _spec(model_type="llama")
    shapes = {lin.name: (lin.fan_in, lin.fan_out, lin.role) for lin in layer_linears(spec, spec.layers[0])}
    # q: 4 heads × 16 = 64 out; k, v: 2 kv heads × 16 = 32 out
    assert shapes == {
        "q_proj": (64, 64, "attention"), "k_proj": (64, 32, "attention"), "v_proj": (64, 32, "attention"),
        "o_proj": (64, 64, "attention"), "gate_proj": (64, 80, "mlp"), "up_proj": (64, 80, "mlp"),
        "down_proj": (80, 64, "mlp"),
    }


def test_phi3_fused_qkv_and_gate_up() -> None:
    """Phi-3 has one qkv_proj of (heads + 2·kv)·head_dim outputs and one gate_up_proj of 2·intermediate."""
    spec = _spec(model_type="phi3")
    shapes = {lin.name: (lin.fan_in, lin.fan_out) for lin in layer_linears(spec, spec.layers[0])}
    # qkv: (4 + 2·2) × 16 = 128; gate_up: 2 × 80 = 160
    assert shapes == {"qkv_proj": (64, 128), "o_proj": (64, 64), "gate_up_proj": (64, 160),
                      "down_proj": (80, 64)}


def test_gpt2_conv1d_names_are_lora_targetable() -> None:
    """GPT-2's Conv1D matrices carry their HF names and count as linear modules (peft all-linear)."""
    spec = _published("gpt2")
    linears = layer_linears(spec, spec.layers[0])
    assert [(lin.name, lin.role) for lin in linears] == [
        ("c_attn", "attention"), ("c_proj", "attention"), ("c_fc", "mlp"), ("c_proj", "mlp")]
    assert all(lin.is_module and lin.bias for lin in linears)


def test_moe_experts_are_fused_parameters() -> None:
    """Mixtral-style experts are two raw 3-D Parameters of num_experts matrices; the router is raw too."""
    spec = _spec(model_type="mixtral", num_local_experts=4, num_experts_per_tok=2)
    by_name = {lin.name: lin for lin in layer_linears(spec, spec.layers[0]) if lin.role != "attention"}
    assert set(by_name) == {"gate", "gate_up_proj", "down_proj"}
    assert (by_name["gate_up_proj"].count, by_name["gate_up_proj"].fan_out) == (4, 160)  # 2 × 80
    assert not any(lin.is_module for lin in by_name.values())
    # per layer: router 64 × 4 = 256; experts 4 × (64 × 160 + 80 × 64) = 61,440
    assert count_params(spec).flat()["layers/moe"] == LAYERS * (256 + 61_440)


def test_qwen2_moe_shared_expert_and_gate() -> None:
    """Qwen2-MoE adds a shared expert MLP and a one-output shared_expert_gate Linear."""
    spec = _spec(model_type="qwen2_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24,
                 shared_expert_intermediate_size=40)
    flat = count_params(spec).flat()
    # shared expert 3 × 64 × 40 = 7,680 per layer; gate 64 × 1 = 64 per layer
    assert flat["layers/moe/shared_experts"] == LAYERS * 7_680
    assert flat["layers/moe/shared_expert_gate"] == LAYERS * 64


def test_mla_linears_and_norms() -> None:
    """DeepSeek MLA lists q_a/q_b, kv_a_proj_with_mqa, kv_b and o projections plus two latent norms."""
    spec = _spec(model_type="deepseek_v3", q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8,
                 qk_rope_head_dim=4, v_head_dim=8, n_routed_experts=4, n_shared_experts=1,
                 num_experts_per_tok=2, moe_intermediate_size=12, first_k_dense_replace=1)
    shapes = {lin.name: (lin.fan_in, lin.fan_out) for lin in layer_linears(spec, spec.layers[0])
              if lin.role == "attention"}
    # q_b: 4 heads × (8 + 4) = 48; kv_a: 16 + 4 = 20; kv_b: 4 × (8 + 8) = 64; o: 4 × 8 = 32 in
    assert shapes == {"q_a_proj": (64, 24), "q_b_proj": (24, 48), "kv_a_proj_with_mqa": (64, 20),
                      "kv_b_proj": (16, 64), "o_proj": (32, 64)}
    flat = count_params(spec).flat()
    assert flat["layers/attention/q_a_layernorm"] == LAYERS * 24
    assert flat["layers/attention/kv_a_layernorm"] == LAYERS * 16


def test_qk_norms_per_head_and_full() -> None:
    """Qwen3 norms one head_dim vector each for q and k; OLMo 2 norms every head's features."""
    qwen3 = count_params(_spec(model_type="qwen3", head_dim=HEAD_DIM)).flat()
    olmo2 = count_params(_spec(model_type="olmo2")).flat()
    assert qwen3["layers/attention/q_norm"] == LAYERS * 16
    # OLMo 2: q_norm 4 × 16 = 64, k_norm 2 × 16 = 32 per layer
    assert (olmo2["layers/attention/q_norm"], olmo2["layers/attention/k_norm"]) == (LAYERS * 64, LAYERS * 32)


def test_gpt_oss_sinks_and_biased_experts() -> None:
    """gpt-oss has one sink per head and biased experts and router."""
    spec = _spec(model_type="gpt_oss", head_dim=HEAD_DIM, num_local_experts=4, num_experts_per_tok=2,
                 sliding_window=8)
    flat = count_params(spec).flat()
    assert flat["layers/attention/sinks"] == LAYERS * HEADS
    # router 4 × 64 + 4 = 260; gate_up 4 × (64 × 160 + 160) = 41,600 per layer
    assert flat["layers/moe/router"] == LAYERS * 260
    assert flat["layers/moe/experts/gate_up_proj"] == LAYERS * 41_600


def test_non_layer_params_opt_350m_narrow_embeddings() -> None:
    """OPT-350m embeds at word_embed_proj_dim=512 and adds project_in/project_out as extra components."""
    spec = _spec(model_type="opt", hidden_size=1024, num_attention_heads=16, num_key_value_heads=16,
                 ffn_dim=4096, word_embed_proj_dim=512, vocab_size=50272, max_position_embeddings=2048,
                 do_layer_norm_before=False)
    parts = dict(non_layer_params(spec))
    # embeddings 50,272 × 512 = 25,739,264; project_in, project_out 512 × 1,024 = 524,288 each;
    # positions (2,048 + 2) × 1,024 = 2,099,200; no final norm (do_layer_norm_before false)
    assert parts["embeddings"] == 25_739_264
    assert (parts["project_in"], parts["project_out"]) == (524_288, 524_288)
    assert parts["position_embeddings"] == 2_099_200
    assert parts["final_norm"] == 0
    assert lm_head_linear(spec).fan_in == 512


@pytest.mark.parametrize(("model_type", "norms_per_layer"), [("gemma2", 4), ("cohere", 1), ("phi", 1)])
def test_norms_per_layer(model_type: str, norms_per_layer: int) -> None:
    """Gemma 2 has four RMSNorms per layer; Cohere one bias-free LayerNorm; Phi one LayerNorm with bias."""
    spec = _spec(model_type=model_type, head_dim=HEAD_DIM, sliding_window=8)
    width = 2 * HIDDEN if model_type == "phi" else HIDDEN   # LayerNorm with bias: weight + bias
    assert count_params(spec).flat()["layers/norms"] == LAYERS * norms_per_layer * width


def test_layer_non_linear_params_qwen3() -> None:
    """A Qwen3 layer's non-Linear parameters are its two per-head QK norms and two RMSNorms."""
    spec = _spec(model_type="qwen3", head_dim=HEAD_DIM)
    # q_norm, k_norm: head_dim 16 each; norms 2 × 64 = 128
    assert layer_non_linear_params(spec, spec.layers[0]) == (
        ("attention/q_norm", 16), ("attention/k_norm", 16), ("norms", 128))
