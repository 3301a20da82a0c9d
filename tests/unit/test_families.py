"""Family modules: the registry, config errors, and each family's layer pattern on tiny configs."""

from __future__ import annotations

import importlib

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
    with pytest.raises(UnsupportedArchitecture, match=r"'mamba' is not supported; supported: bloom, cohere"):
        _spec(model_type="mamba")
    assert supported_families()[0] == "bloom"


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
