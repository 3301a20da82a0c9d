"""Family modules: the registry, config errors, and each family's layer pattern on tiny configs."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from memfit.core.choices import NormKind
from memfit.core.dtypes import DType
from memfit.core.errors import ConfigError, UnsupportedArchitecture
from memfit.core.families import FAMILIES, spec_from_config, supported_families
from memfit.core.families.gemma3 import siglip_params
from memfit.core.params import count_params
from memfit.core.spec import MlpSpec, ModelSource, ModelSpec, MoeSpec

SOURCE = ModelSource(kind="config", ref="test")
BASE = {"hidden_size": 64, "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 96, "max_position_embeddings": 128, "intermediate_size": 80}
EXPECTED_FAMILIES = {
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3",
    "gemma3_text", "phi", "phi3", "gpt2", "gpt_bigcode", "gpt_neox", "gptj", "opt", "bloom", "falcon",
    "cohere", "cohere2", "deepseek_v2", "deepseek_v3", "olmo2", "starcoder2", "granite", "gpt_oss",
    "granitemoehybrid", "nemotron_h", "bamba", "falcon_h1", "qwen2_5_vl", "llava", "jamba", "llama4",
    "llama4_text", "mistral3", "qwen3_next", "qwen3_vl", "qwen3_vl_moe",
}


def _spec(**config: object) -> ModelSpec:
    return spec_from_config({**BASE, **config}, name="tiny", source=SOURCE)


def test_registry_lists_every_family_by_module_name() -> None:
    """FAMILIES has one entry per HF model_type, each the spec_from_config of the module of that name."""
    assert set(FAMILIES) == EXPECTED_FAMILIES
    for model_type, builder in FAMILIES.items():
        assert builder is importlib.import_module(f"memfit.core.families.{model_type}").spec_from_config


def test_unknown_model_type_lists_supported() -> None:
    """An unmapped model_type raises UnsupportedArchitecture naming the supported types."""
    with pytest.raises(UnsupportedArchitecture,
                       match=r"'mamba' is not supported; supported: bamba, bloom, cohere"):
        _spec(model_type="mamba")
    assert supported_families()[0] == "bamba"


def test_missing_field_names_it() -> None:
    """A config without num_attention_heads raises ConfigError naming it: required fields get no default."""
    config = {k: v for k, v in BASE.items() if k != "num_attention_heads"}
    with pytest.raises(ConfigError, match=r"tiny: config field 'num_attention_heads' is missing"):
        spec_from_config({**config, "model_type": "llama"}, name="tiny", source=SOURCE)


def test_missing_field_without_default_names_it() -> None:
    """A field with no class default (DeepSeek-V2's num_experts_per_tok) raises ConfigError naming it."""
    with pytest.raises(ConfigError, match=r"tiny: config field 'num_experts_per_tok' is missing"):
        _spec(model_type="deepseek_v2")


def test_omitted_field_takes_class_default() -> None:
    """An omitted field takes transformers' class default (LlamaConfig.intermediate_size = 11,008)."""
    config = {k: v for k, v in BASE.items() if k != "intermediate_size"}
    spec = spec_from_config({**config, "model_type": "llama"}, name="tiny", source=SOURCE)
    assert spec.layers[0].mlp == MlpSpec(intermediate_size=11_008, gated=True)


def test_ill_typed_field_names_it() -> None:
    """A string where an integer belongs raises ConfigError naming the field and the value."""
    with pytest.raises(ConfigError, match=r"'hidden_size' must be an integer, got '64'"):
        _spec(model_type="llama", hidden_size="64")


def test_missing_model_type() -> None:
    """A config without model_type raises ConfigError."""
    with pytest.raises(ConfigError, match="'model_type' is missing"):
        spec_from_config(dict(BASE), name="tiny", source=SOURCE)


def test_equal_layers_share_one_object() -> None:
    """Identical decoder layers are one LayerSpec object repeated."""
    spec = _spec(model_type="llama")
    assert len({id(layer) for layer in spec.layers}) == 1


@pytest.mark.parametrize(("config", "expected"), [
    ({"torch_dtype": "bfloat16"}, DType.BF16),
    ({"dtype": "float16", "torch_dtype": "bfloat16"}, DType.FP16),
    ({}, DType.FP32),
])
def test_checkpoint_dtype(config: dict[str, str], expected: DType) -> None:
    """`dtype` wins over `torch_dtype`; a config with neither was saved in fp32."""
    assert _spec(model_type="llama", **config).checkpoint_dtype is expected


def _windows(spec: ModelSpec) -> list[int | None]:
    return [layer.attention.sliding_window for layer in spec.layers]


def test_gemma2_alternates_sliding_and_global() -> None:
    """Gemma 2 slides on even layers and attends globally on odd ones."""
    spec = _spec(model_type="gemma2", head_dim=16, sliding_window=8)
    assert _windows(spec) == [8, None, 8, None, 8, None]


def test_gemma3_text_every_sixth_layer_global() -> None:
    """Gemma 3 slides on five layers out of six."""
    spec = _spec(model_type="gemma3_text", head_dim=16, sliding_window=8, num_hidden_layers=7)
    assert _windows(spec) == [8, 8, 8, 8, 8, None, 8]


def test_cohere2_every_fourth_layer_global() -> None:
    """Command R7B slides on three layers out of four."""
    assert _windows(_spec(model_type="cohere2", sliding_window=8)) == [8, 8, 8, None, 8, 8]


def test_layer_types_wins() -> None:
    """An explicit layer_types list overrides the family's pattern."""
    types = ["full_attention"] * 5 + ["sliding_attention"]
    spec = _spec(model_type="gemma2", head_dim=16, sliding_window=8, layer_types=types)
    assert _windows(spec) == [None] * 5 + [8]


def test_qwen2_sliding_only_when_enabled() -> None:
    """Qwen2 ignores sliding_window unless use_sliding_window, then slides from max_window_layers on."""
    assert _windows(_spec(model_type="qwen2", sliding_window=16)) == [None] * 6
    spec = _spec(model_type="qwen2", sliding_window=16, use_sliding_window=True, max_window_layers=4)
    assert _windows(spec) == [None] * 4 + [16, 16]


def test_mistral_window_on_every_layer() -> None:
    """Mistral 7B v0.1's sliding window applies to all layers."""
    assert _windows(_spec(model_type="mistral", sliding_window=4096)) == [4096] * 6


def test_llama_ignores_sliding_window() -> None:
    """Llama-like code has no sliding attention, whatever sliding_window the config carries."""
    assert _windows(_spec(model_type="llama", sliding_window=16)) == [None] * 6


def test_qwen_moe_sliding_rules() -> None:
    """Qwen2-MoE slides on even layers below max_window_layers; Qwen3-MoE on every layer (when enabled)."""
    moe = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 24, "sliding_window": 16,
           "use_sliding_window": True, "max_window_layers": 4}
    assert _windows(_spec(model_type="qwen2_moe", **moe)) == [16, None, 16, None, None, None]
    assert _windows(_spec(model_type="qwen3_moe", **moe)) == [16] * 6
    assert _windows(_spec(model_type="qwen3_moe", **{**moe, "use_sliding_window": False})) == [None] * 6


def test_deepseek_v3_dense_then_moe() -> None:
    """DeepSeek-V3 keeps the first first_k_dense_replace layers dense and shares n_shared_experts × width."""
    spec = _spec(model_type="deepseek_v3", q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8,
                 qk_rope_head_dim=4, v_head_dim=8, n_routed_experts=8, n_shared_experts=2,
                 num_experts_per_tok=2, moe_intermediate_size=12, first_k_dense_replace=2)
    assert [layer.is_moe for layer in spec.layers] == [False, False, True, True, True, True]
    moe = spec.layers[-1].mlp
    assert isinstance(moe, MoeSpec)
    assert moe.shared_expert == MlpSpec(intermediate_size=24, gated=True)   # 12 × 2
    assert (moe.top_k, moe.num_experts, moe.score_correction_bias) == (2, 8, True)
    assert spec.layers[0].attention.mla is not None


def test_qwen2_moe_sparse_step_and_mlp_only_layers() -> None:
    """Qwen2-MoE is sparse where (i + 1) % decoder_sparse_step == 0, except mlp_only_layers."""
    spec = _spec(model_type="qwen2_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24,
                 shared_expert_intermediate_size=40, decoder_sparse_step=2, mlp_only_layers=[3])
    # sparse candidates i = 1, 3, 5; layer 3 forced dense
    assert [layer.is_moe for layer in spec.layers] == [False, True, False, False, False, True]


@pytest.mark.parametrize(("config", "kv_heads", "norms"), [
    ({"multi_query": True}, 1, 1),                                                        # Falcon-7B
    ({"multi_query": False, "parallel_attn": False}, 4, 2),                               # Falcon-RW
    ({"new_decoder_architecture": True, "num_kv_heads": 2}, 2, 2),                        # Falcon-40B
])
def test_falcon_kv_heads_and_norms(config: dict[str, object], kv_heads: int, norms: int) -> None:
    """Falcon's K/V heads follow multi_query / new_decoder_architecture; norms follow parallel_attn."""
    layer = _spec(model_type="falcon", **config).layers[0]
    assert (layer.attention.num_kv_heads, layer.norms_per_layer) == (kv_heads, norms)
    assert layer.attention.fused_qkv


def test_gpt_bigcode_multi_query() -> None:
    """StarCoder (GPT-BigCode) caches one K/V head by default and learns its positions."""
    spec = _spec(model_type="gpt_bigcode", n_positions=64)
    assert (spec.layers[0].attention.num_kv_heads, spec.learned_positions) == (1, 64)


def test_cohere_parallel_block_and_bias_free_norms() -> None:
    """Command-R runs attention and MLP in parallel after one bias-free LayerNorm; tied by default."""
    spec = _spec(model_type="cohere")
    layer = spec.layers[0]
    assert (layer.parallel_block, layer.norm, layer.norms_per_layer) == (True, NormKind.LAYER_NO_BIAS, 1)
    assert spec.tie_word_embeddings


def test_bloom_embedding_norm() -> None:
    """BLOOM normalises its embeddings with a LayerNorm (weight and bias)."""
    spec = _spec(model_type="bloom")
    assert count_params(spec).flat()["embedding_norm"] == 2 * 64


def test_siglip_tower_count() -> None:
    """A tiny SigLIP tower with the pooling head counts 29,232 parameters."""
    # h 32, I 48, 2 layers, 3 channels, 32 px images, 8 px patches
    # patch conv 32·3·8² + 32 = 6,176; positions (32/8)² · 32 = 512
    # per layer: LayerNorms 4·32 = 128, q/k/v/out 4·(32² + 32) = 4,224, MLP 32·48 + 48 + 48·32 + 32 = 3,152
    #   → 7,504; × 2 = 15,008; post LayerNorm 64
    # head: probe 32, in_proj 3·32² + 96 = 3,168, out_proj 32² + 32 = 1,056, LayerNorm 64, MLP 3,152 → 7,472
    # total 6,176 + 512 + 15,008 + 64 + 7,472 = 29,232
    vision = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_channels": 3,
              "image_size": 32, "patch_size": 8}
    assert siglip_params(vision, name="tiny") == 29_232
    assert siglip_params({**vision, "vision_use_head": False}, name="tiny") == 29_232 - 7_472


def test_gemma3_multimodal_extras() -> None:
    """Gemma 3 (multimodal) adds vision_tower and multi_modal_projector after the text components."""
    vision = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "image_size": 32,
              "patch_size": 8}
    config = {"model_type": "gemma3", "text_config": {**BASE, "head_dim": 16, "sliding_window": 8},
              "vision_config": vision}
    spec = spec_from_config(config, name="tiny", source=SOURCE)
    names = [c.name for c in count_params(spec).children]
    assert names[-2:] == ["vision_tower", "multi_modal_projector"]
    # projector: 32 × 64 + 32 (mm_soft_emb_norm) = 2,080
    assert count_params(spec).flat()["multi_modal_projector"] == 2_080


CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"

# Totals of tests/data/configs/tiny-*.json by hand. Shared: hidden 64, vocab 96 → embeddings (and an untied
# lm_head) 96·64 = 6,144; an RMSNorm 64, a LayerNorm with bias 128. "attn" is q, k, v, o; "mlp" gate, up,
# down (64·80 = 5,120 each unless stated). test_meta_params proves the same files on the meta device.
TINY_TOTALS = [
    # Falcon-H1, 2 layers, untied, attention and Mamba side by side in each. Attention q, o 4,096,
    # k, v 2,048 → 12,288. Mamba (6 heads of 16 = mamba_d_ssm 96, d_state 16, 1 group, no gated norm):
    # conv_dim 128; in_proj 64·(96 + 128 + 6) = 14,720; conv1d 128·4 + 128 = 640; dt_bias, A_log, D 18;
    # out_proj 96·64 = 6,144 → 21,522. Gated MLP 3·64·96 = 18,432; norms 128 → 52,370 × 2 = 104,740;
    # + 6,144 + 64 + 6,144
    ("tiny-falcon_h1", 117_092),
    # Bamba, layers M A M, untied; Mamba (8 heads of 16, d_state 16, 1 group): conv_dim 160; in_proj
    # 64·296 = 18,944; conv1d 800; 24; norm 128; out_proj 8,192 → 28,088. Attention 12,288; gated MLP
    # 3·64·96 = 18,432 and norms 128 in every layer. 2·46,648 + 30,848 = 124,144; + 6,144 + 64 + 6,144
    ("tiny-bamba", 136_496),
    # Jamba, layers M+MLP, M+MoE, A+MLP, M+MoE (period 4 offset 2; experts period 2 offset 1), untied. A
    # Mamba-1 mixer (d_inner 128, d_state 16, 4 taps, dt_rank ceil(64 / 16) = 4): in_proj 64·256 = 16,384;
    # conv1d 128·4 + 128 = 640; x_proj 128·(4 + 32) = 4,608; dt_proj 4·128 + 128 = 640; A_log 128·16 =
    # 2,048; D 128; dt/B/C norms 4 + 16 + 16 = 36; out_proj 8,192 → 32,676. Attention 12,288; gated MLP
    # 3·64·96 = 18,432; MoE router 64·4 = 256, experts 4·(2·96·64) + 4·64·96 = 73,728 → 73,984; norms 128.
    # 51,236 + 2·106,788 + 30,848 = 295,660; + 6,144 + 64 + 6,144 = 308,012
    ("tiny-jamba", 308_012),
    # Qwen3-Next, layers D+MLP, A+MoE, D+MoE, A+MoE (full_attention_interval 2; mlp_only_layers [0]), untied.
    # Gated DeltaNet (2 key heads of 8, 4 value heads of 12, 4 taps): key_dim 16, value_dim 48, conv_dim 80;
    # in_proj_qkvz 64·(2·16 + 2·48) = 8,192; in_proj_ba 64·2·4 = 512; conv1d 80·4 (no bias) = 320;
    # dt_bias, A_log 4 each; gated norm 12; out_proj 48·64 = 3,072 → 12,116. Attention (4 heads of 16, 2 KV):
    # q_proj with its output gate 64·2·64 = 8,192; k, v 2,048 each; o 4,096; q/k norms 16 each → 16,416.
    # Dense MLP 3·64·80 = 15,360; MoE router 4·64 = 256, experts 4·2·24·64 + 4·64·24 = 18,432, shared
    # expert 3·64·32 = 6,144, shared_expert_gate 64 → 24,896; norms 128 per layer.
    # 27,604 + 2·41,440 + 37,140 = 147,624; + 6,144 + 64 + 6,144 = 159,976
    ("tiny-qwen3_next", 159_976),
    # Granite-4.0-H, layers M M A M, tied. A Mamba mixer (8 heads of 16, d_state 16, 2 groups, 4 taps):
    # d_inner 128, conv_dim 128 + 2·2·16 = 192; in_proj 64·(128 + 192 + 8) = 20,992; conv1d 192·4 + 192 =
    # 960; dt_bias, A_log, D 24; gated norm 128; out_proj 128·64 = 8,192 → 30,296. Attention q, o 4,096,
    # k, v 2,048 → 12,288. Every layer: shared_mlp 64·96 + 48·64 = 9,216; router 256; experts 4·64·64 +
    # 4·64·32 = 24,576; norms 128 → 34,176. 3·64,472 + 46,464 = 239,880; + 6,144 + 64 = 246,088
    ("tiny-granitemoehybrid", 246_088),
    # Nemotron-H "M-M*-E", untied, one norm (64) per block. Mamba (8 heads of 12, d_state 16, 2 groups):
    # d_inner 96, conv_dim 160; in_proj 64·264 = 16,896; conv1d 800; 24; norm 96; out_proj 6,144 → 24,024
    # with its block norm. MLP (relu2) up, down 6,144 each → 12,352; attention 12,288 → 12,352; MoE router
    # 256, experts 4·24·64 · 2 = 12,288, shared 64·40 · 2 = 5,120 → 17,728.
    # 2·24,024 + 3·12,352 + 17,728 = 102,832; + 6,144 + 64 + 6,144 = 115,184
    ("tiny-nemotron_h", 115_184),
    # kv 1, head_dim 32, biases: q 64·128 + 128 = 8,320; k, v 64·32 + 32 = 2,080; o 128·64 + 64 = 8,256;
    # gate, up 5,200; down 5,184; norms 128 → 36,448 × 3 = 109,344; + 6,144 + 64 + head 6,144 = 121,696
    ("tiny-llama-biases", 121_696),
    # kv 2, head_dim 32: q, o 8,192; k, v 4,096; mlp 15,360; norms 128 → 40,064 × 3 = 120,192; + 12,352
    ("tiny-mistral", 132_544),
    # kv 2, q/k/v biases: q 4,160; k, v 2,080; o 4,096; mlp 15,360; norms 128 → 27,904 × 3; tied: + 6,208
    ("tiny-qwen2-sliding", 89_920),
    # head_dim 24: q, o 6,144; k, v 3,072; q_norm, k_norm 24; mlp 15,360; norms 128 → 33,968 × 3 = 101,904;
    # + 6,144 + 64 + 6,144
    ("tiny-qwen3", 114_256),
    # kv 1, head_dim 16: q, o 4,096; k, v 1,024; mlp 15,360; norms 128 → 25,728 × 3 = 77,184; tied: + 6,208
    ("tiny-gemma", 83_392),
    # kv 2: attn 12,288; mlp 15,360; four norms 256 → 27,904 × 3 = 83,712; tied: + 6,208
    ("tiny-gemma2", 89_920),
    # as Gemma 2 plus q_norm, k_norm 16 each → 27,936 × 7 layers = 195,552; tied: + 6,208
    ("tiny-gemma3_text", 201_760),
    # text 27,936 × 3 + 6,208 = 90,016; SigLIP tower 29,232 (test_families); projector 32·64 + 32 = 2,080
    ("tiny-gemma3-vision-head", 121_328),
    # vocab 128, intermediate 96: q, o 4,096; k, v 2,048; q/k norms 32; mlp 3 · 6,144; four norms 256
    # → 31,008 × 3 = 93,024; tied embeddings 8,192; final norm 64 → text 101,280. SigLIP (h 64, I 160,
    # 2 layers, 128² px of 8² patches, no head): conv 64·3·64 + 64 = 12,352; positions 256·64 = 16,384;
    # per layer 2 LayerNorms 256, q/k/v/out 4·(4,096 + 64) = 16,640, fc1/fc2 10,400 + 10,304 → 37,600 × 2;
    # post LN 128 → 104,064. Projector 64·64 + 64 = 4,160. Total 209,504
    ("tiny-gemma3-images", 209_504),
    # text (vocab 128, kv 2, intermediate 96, untied): q 4,160, k, v 2,080, o 4,096; mlp 18,432; norms 128
    # → 30,976 × 2 = 61,952; embeddings and lm_head 8,192 each; final norm 64 → 78,400. visual (h 32, I 48,
    # depth 2): Conv3d 3·2·14·14·32 = 37,632; per block norms 64, qkv 3,168, proj 1,056, gate/up 1,584
    # each, down 1,568 → 9,024 × 2; merger RMSNorm 32, 128·128 + 128, 128·64 + 64 → 24,800: 80,480.
    # Total 158,880
    ("tiny-qwen2_5_vl", 158_880),
    # text (vocab 128, 4 heads of 16, kv 2, intermediate 96, untied): q, o 4,096; k, v 2,048; q/k norms 16
    # each; mlp 3·64·96 = 18,432; norms 128 → 30,880 × 2 = 61,760; embeddings and lm_head 8,192 each; final
    # norm 64 → 78,208. visual (h 32, I 48, depth 3, 16² patches, 64 positions, 2 deepstack, out 64):
    # Conv3d 3·2·16·16·32 + 32 = 49,184; pos_embed 64·32 = 2,048; per block LNs 128, qkv 3,168, proj
    # 1,056, fc1 1,584, fc2 1,568 → 7,504 × 3 = 22,512; merger LN 64, 128·128 + 128 = 16,512,
    # 128·64 + 64 = 8,256 → 24,832; deepstack mergers (LN over 128: 256) 25,024 × 2 = 50,048 → 148,624.
    # Total 226,832
    ("tiny-qwen3_vl", 226_832),
    # the same tower; text tied, layer 0 MoE (router 4·64 = 256, experts 4·2·32·64 + 4·64·32 = 24,576),
    # layer 1 dense (mlp_only_layers): attention 12,320 and norms 128 each → 37,280 + 30,880 = 68,160;
    # embeddings 8,192; final norm 64 → 76,416 + 148,624 = 225,040
    ("tiny-qwen3_vl_moe", 225_040),
    # text (llama, vocab 128, kv 2, intermediate 96, untied): q, o 4,096; k, v 2,048; mlp 18,432; norms 128
    # → 30,848 × 2 = 61,696; embeddings and lm_head 8,192 each; final norm 64 → 78,144. CLIP (h 96, I 256,
    # 4 layers, 224² px of 14² patches): class 96, conv 3·196·96 = 56,448, positions 257·96 = 24,672; pre
    # and post LN 192 each; per layer LNs 384, q/k/v/out 4·(9,216 + 96) = 37,248, fc1 24,832, fc2 24,672
    # → 87,136 × 4 = 348,544 → 430,144. Projector 96·64 + 64 + 64·64 + 64 = 10,368. Total 518,656
    ("tiny-llava", 518_656),
    # attn 12,288; q_norm 4·16 = 64, k_norm 2·16 = 32; mlp 15,360; norms 128 → 27,872 × 3 = 83,616; + 12,352
    ("tiny-olmo2-gqa", 95_968),
    # attention biases: q, o 4,160; k, v 2,080; mlp 15,360; norms 128 → 27,968 × 3 = 83,904; + 12,352
    ("tiny-granite", 96_256),
    # attn 12,288; q_norm (4, 16) = 64, k_norm (2, 16) = 32; mlp 15,360; one bias-free LayerNorm 64
    # → 27,808 × 3 = 83,424; tied: + 6,144 + 64
    ("tiny-cohere-qk-norm", 89_632),
    # attn 12,288; mlp 15,360; one norm 64 → 27,712 × 5 layers = 138,560; tied: + 6,208
    ("tiny-cohere2", 144_768),
    # qkv_proj 64·(64 + 2·32) = 8,192; o 4,096; gate_up 64·160 = 10,240; down 5,120; norms 128 → 27,776 × 3;
    # tied: + 6,208
    ("tiny-phi3-gqa-tied", 89_536),
    # no biases: attn 12,288; c_fc, c_proj 5,120; two LayerNorms 256 → 22,784 × 3 = 68,352;
    # + 6,144 + final LayerNorm 128 + head 6,144
    ("tiny-starcoder2-no-bias", 80_768),
    # q, k, v, dense 64·64 + 64 = 4,160; q_layernorm, k_layernorm 2·16 = 32 each; fc1 5,200; fc2 5,184;
    # one LayerNorm 128 → 27,216 × 3 = 81,648; + 6,144 + 128 + biased head 6,144 + 96
    ("tiny-phi-qk-layernorm", 94_160),
    # c_attn 64·192 + 192 = 12,480; c_proj 4,160; c_fc 64·100 + 100 = 6,500; c_proj 100·64 + 64 = 6,464;
    # ln_1, ln_2 256 → 29,860 × 2 = 59,720; + wte 6,144 + wpe 64·64 = 4,096 + ln_f 128 + untied head 6,144
    ("tiny-gpt2-n-inner", 76_232),
    # the same shapes (multi_query false: c_attn 64·192), tied
    ("tiny-gpt_bigcode-mha", 70_088),
    # no attention bias: query_key_value 64·192 = 12,288; dense 4,096; dense_h_to_4h 5,200; 4h_to_h 5,184;
    # two LayerNorms 256 → 27,024 × 3 = 81,072; tied: + 6,144 + 128
    ("tiny-gpt_neox-sequential-no-bias", 87_344),
    # q, k, v, out 4,096 each; fc_in 64·256 + 256 = 16,640; fc_out 256·64 + 64 = 16,448; ln_1 128
    # → 49,600 × 2 = 99,200; + 6,144 + 128 + biased head 6,240
    ("tiny-gptj", 111_712),
    # no biases: q, k, v, out 4,096; fc1, fc2 64·72 = 4,608; two LayerNorms 256 → 25,856 × 3 = 77,568;
    # embeddings 96·32 = 3,072; positions (128 + 2)·64 = 8,320; project_in, project_out 32·64 = 2,048 each
    ("tiny-opt-no-final-norm", 93_056),
    # query_key_value 12,480; dense 4,160; dense_h_to_4h 64·256 + 256 = 16,640; 4h_to_h 16,448; norms 256
    # → 49,984 × 2 = 99,968; + 6,144 + embedding LayerNorm 128 + ln_f 128
    ("tiny-bloom", 106_368),
    # the same layers as BLOOM (3h fused qkv, biases, two norms) without the embedding LayerNorm
    ("tiny-falcon-classic-mha", 106_240),
    # 8 heads of 8, kv 2: query_key_value 64·(8 + 4)·8 = 6,144; dense 4,096; MLP 2 × 64·96; one LayerNorm 128
    # → 22,656 × 2 = 45,312; + 6,144 + 128
    ("tiny-falcon-new-arch-one-ln", 51_584),
    # attn 12,288; router 4·64 = 256; experts 4·(64·160 + 80·64) = 61,440; norms 128 → 74,112 × 3; + 12,352
    ("tiny-mixtral-sliding", 234_688),
    # attn 12,288; layers 0, 2, 3 dense: 15,360 + 128; layer 1 sparse: router 256, experts 4·(64·48 + 24·64)
    # = 18,432, shared 3·64·40 = 7,680, shared_expert_gate 64, norms 128 → 3 × 27,776 + 38,848; + 12,352
    ("tiny-qwen2_moe-sparse-step", 134_528),
    # head_dim 8: q, o 2,048; k, v 1,024; q/k norms 8 each → 6,160; layer 0 dense 15,360; layers 1, 2
    # router 256 + experts 18,432; norms 128 → 21,648 + 2 × 24,976 = 71,600; + 12,352
    ("tiny-qwen3_moe-mlp-only", 83_952),
    # MLA without q LoRA: q_proj 64·4·12 = 3,072; kv_a 64·20 + 20 = 1,300; kv_b 16·4·16 = 1,024;
    # o 32·64 + 64 = 2,112; kv_a_layernorm 16 → 7,524; layer 0 dense 15,360; layers 1, 2 router 256,
    # experts 4·(64·24 + 12·64) = 9,216, shared 3·64·24 = 4,608; norms 128 → 23,012 + 2 × 21,732; + 12,352
    ("tiny-deepseek_v2-no-q-lora", 78_828),
    # q_a 64·24 = 1,536; q_b 24·48 = 1,152; kv_a 1,280; kv_b 1,024; o 2,048; latent norms 24 + 16 → 7,080;
    # layers 0, 1 dense 15,360; layer 2 router 512, experts 8·2,304 = 18,432, shared 3·64·12 = 2,304;
    # norms 128 → 2 × 22,568 + 28,456 = 73,592; + 12,352
    ("tiny-deepseek_v3-dense-then-moe", 85_944),
    # biased attn: q, o 4,160; k, v 2,080; sinks 4; router 256 + 4; gate_up 4·(64·160 + 160) = 41,600;
    # down 4·(80·64 + 64) = 20,736; norms 128 → 75,208 × 3 = 225,624; + 12,352
    ("tiny-gpt_oss", 237_976),
    # q, o 64·64 = 4,096; k, v 64·32 = 2,048 → 12,288 (L2 QK norm: no weights); norms 128
    # layers 0, 2 dense: gate, up, down 64·160 = 10,240 each → 43,136; layers 1, 3 MoE: router 4·64 = 256,
    # experts 4·64·192 + 4·96·64 = 73,728, shared 3·64·96 = 18,432 → 104,832;
    # 2 × 43,136 + 2 × 104,832 = 295,936; + embeddings 512·64 = 32,768 + head 32,768 + final norm 64
    ("tiny-llama4_text-interleaved", 361_536),
    # the same text model with every layer MoE (its vision tower is not built): 4 × 104,832 + 65,600
    ("tiny-llama4-legacy-temperature", 484_928),
    # Mistral decoder: q, o 4,096; k, v 2,048; MLP 3·64·96 = 18,432; norms 128 → 30,848 × 2 = 61,696;
    # + embeddings 256·64 = 16,384 + untied head 16,384 + final norm 64 = 94,528.
    # Pixtral tower (h 32, I 48, patch 14): conv 3·14²·32 = 18,816 + ln_pre 32 + 2 × (norms 64 + q/k/v/o
    # 4·32² + SwiGLU 3·32·48) = 2 × 8,768 → 36,384. Projector: norm 32 + merger 32·2²·32 = 4,096 + linear_1
    # from two feature layers 32·2·64 = 4,096 + linear_2 64² = 4,096 + biases 2·64 → 12,448
    ("tiny-mistral3-two-feature-layers", 143_360),
]


def test_every_tiny_config_has_a_row() -> None:
    """Each tiny config in tests/data/configs has a hand-computed total here."""
    assert {row[0] for row in TINY_TOTALS} == {p.stem for p in CONFIGS.glob("tiny-*.json")}


@pytest.mark.parametrize(("stem", "total"), TINY_TOTALS, ids=[row[0] for row in TINY_TOTALS])
def test_tiny_total(stem: str, total: int) -> None:
    """count_params gives the hand-computed total."""
    path = CONFIGS / f"{stem}.json"
    config = json.loads(path.read_text())
    spec = spec_from_config(config, name=stem, source=ModelSource(kind="config", ref=stem))
    assert count_params(spec).num_params == total


def test_gpt_oss_stored_dtype_defaults_to_bf16() -> None:
    """gpt-oss configs name no dtype; its non-expert tensors are stored in bf16."""
    spec = _spec(model_type="gpt_oss", head_dim=16, num_local_experts=4, num_experts_per_tok=2,
                 sliding_window=8)
    assert spec.checkpoint_dtype is DType.BF16


def test_omitted_activation_and_dropouts_take_the_config_class_defaults() -> None:
    """A config.json that omits activation_function and dropouts gets GPT2Config's: gelu_new, 0.1 dropouts
    (transformers 5.17); one that omits Gemma 2's attn_logit_softcapping gets its 50.0 (soft-capped)."""
    gpt2 = {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 96,
            "n_positions": 64}
    spec = spec_from_config(gpt2, name="g", source=SOURCE)
    assert spec.layers[0].mlp.activation == "gelu_new"
    assert (spec.hidden_dropout, spec.attention_dropout) == (True, True)
    gemma2 = {"model_type": "gemma2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "head_dim": 16, "vocab_size": 96, "max_position_embeddings": 64,
              "sliding_window": 32}
    assert spec_from_config(gemma2, name="g2", source=SOURCE).layers[0].attention.softcap
