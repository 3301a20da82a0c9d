"""transformers 5.17.0 config-class defaults for the fields the family modules read.

A config.json may omit a field whose value is the config class default (Gemma 3's text_config lists only
what differs); `with_defaults` fills such gaps exactly as `AutoConfig.for_model` would. Only literal field
defaults appear here: fields that transformers derives in `__post_init__` (num_key_value_heads = heads,
head_dim = hidden // heads, Falcon's ffn_hidden_size = 4h) are left to the family modules.
Source: `dataclasses.fields(CONFIG_MAPPING[model_type])` in transformers 5.17.0, non-null defaults only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "bamba": {
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 128000, "max_position_embeddings": 262144, "intermediate_size": 14336,
        "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False, "mamba_n_heads": 128,
        "mamba_d_head": "auto", "mamba_n_groups": 1, "mamba_d_state": 256, "mamba_d_conv": 4,
        "mamba_expand": 2, "mamba_chunk_size": 256, "mamba_conv_bias": True, "mamba_proj_bias": False,
        "hidden_act": "silu",
    },
    "bloom": {
        "hidden_size": 64, "n_layer": 2, "n_head": 8, "vocab_size": 250880, "tie_word_embeddings": True,
    },
    "cohere": {
        "hidden_size": 8192, "num_hidden_layers": 40, "num_attention_heads": 64, "vocab_size": 256000,
        "max_position_embeddings": 8192, "intermediate_size": 22528, "tie_word_embeddings": True,
        "attention_bias": False, "use_qk_norm": False,
        "hidden_act": "silu",
    },
    "cohere2": {
        "hidden_size": 8192, "num_hidden_layers": 40, "num_attention_heads": 64, "vocab_size": 256000,
        "max_position_embeddings": 8192, "intermediate_size": 22528, "tie_word_embeddings": True,
        "attention_bias": False, "sliding_window": 4096,
        "hidden_act": "silu",
    },
    "deepseek_v2": {
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 102400,
        "max_position_embeddings": 2048, "intermediate_size": 11008, "tie_word_embeddings": False,
        "attention_bias": False, "mlp_bias": False, "n_routed_experts": 64, "moe_intermediate_size": 1407,
        "n_shared_experts": 2, "first_k_dense_replace": 0, "q_lora_rank": 1536, "kv_lora_rank": 512,
        "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
        "hidden_act": "silu",
    },
    "deepseek_v3": {
        "hidden_size": 7168, "num_hidden_layers": 61, "num_attention_heads": 128,
        "num_key_value_heads": 128, "vocab_size": 129280, "max_position_embeddings": 4096,
        "intermediate_size": 18432, "tie_word_embeddings": False, "attention_bias": False,
        "n_routed_experts": 256, "num_experts_per_tok": 8, "moe_intermediate_size": 2048,
        "n_shared_experts": 1, "first_k_dense_replace": 3, "q_lora_rank": 1536, "kv_lora_rank": 512,
        "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
        "hidden_act": "silu",
    },
    "falcon": {
        "hidden_size": 4544, "num_hidden_layers": 32, "num_attention_heads": 71, "vocab_size": 65024,
        "max_position_embeddings": 2048, "tie_word_embeddings": True, "bias": False, "multi_query": True,
        "new_decoder_architecture": False, "parallel_attn": True,
        "activation": "gelu",
    },
    "falcon_h1": {
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 128000, "max_position_embeddings": 8192, "intermediate_size": 14336,
        "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False, "mamba_d_ssm": 1024,
        "mamba_n_heads": 128, "mamba_d_head": "auto", "mamba_n_groups": 1, "mamba_d_state": 256,
        "mamba_d_conv": 4, "mamba_expand": 2, "mamba_chunk_size": 256, "mamba_conv_bias": True,
        "mamba_proj_bias": False, "mamba_rms_norm": False, "projectors_bias": False,
        "hidden_act": "silu",
    },
    "gemma": {
        "hidden_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 16,
        "head_dim": 256, "vocab_size": 256000, "max_position_embeddings": 8192, "intermediate_size": 24576,
        "tie_word_embeddings": True, "attention_bias": False,
        "hidden_act": "gelu_pytorch_tanh",
    },
    "gemma2": {
        "hidden_size": 2304, "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
        "head_dim": 256, "vocab_size": 256000, "max_position_embeddings": 8192, "intermediate_size": 9216,
        "tie_word_embeddings": True, "attention_bias": False, "sliding_window": 4096,
        "final_logit_softcapping": 30.0,
        "hidden_activation": "gelu_pytorch_tanh", "attn_logit_softcapping": 50.0,
    },
    "gemma3_text": {
        "hidden_size": 2304, "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
        "head_dim": 256, "vocab_size": 262208, "max_position_embeddings": 131072,
        "intermediate_size": 9216, "tie_word_embeddings": True, "attention_bias": False,
        "sliding_window": 4096,
        "hidden_activation": "gelu_pytorch_tanh",
    },
    "gpt2": {
        "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257, "n_positions": 1024,
        "tie_word_embeddings": True,
        "activation_function": "gelu_new", "resid_pdrop": 0.1, "attn_pdrop": 0.1,
    },
    "gpt_bigcode": {
        "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257, "n_positions": 1024,
        "tie_word_embeddings": True, "multi_query": True,
        "activation_function": "gelu_pytorch_tanh", "resid_pdrop": 0.1, "attn_pdrop": 0.1,
    },
    "gpt_neox": {
        "hidden_size": 6144, "num_hidden_layers": 44, "num_attention_heads": 64, "vocab_size": 50432,
        "max_position_embeddings": 2048, "intermediate_size": 24576, "tie_word_embeddings": False,
        "attention_bias": True, "use_parallel_residual": True,
        "hidden_act": "gelu",
    },
    "gpt_oss": {
        "hidden_size": 2880, "num_hidden_layers": 36, "num_attention_heads": 64, "num_key_value_heads": 8,
        "head_dim": 64, "vocab_size": 201088, "max_position_embeddings": 131072, "intermediate_size": 2880,
        "tie_word_embeddings": False, "attention_bias": True, "sliding_window": 128,
        "num_local_experts": 128, "num_experts_per_tok": 4,
        "hidden_act": "silu",
    },
    "gptj": {
        "n_embd": 4096, "n_layer": 28, "n_head": 16, "vocab_size": 50400, "n_positions": 2048,
        "tie_word_embeddings": False,
        "activation_function": "gelu_new",
    },
    "granite": {
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32000,
        "max_position_embeddings": 2048, "intermediate_size": 11008, "tie_word_embeddings": False,
        "attention_bias": False, "mlp_bias": False,
        "hidden_act": "silu",
    },
    "granitemoehybrid": {
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32000,
        "max_position_embeddings": 2048, "intermediate_size": 11008, "tie_word_embeddings": False,
        "attention_bias": False, "num_local_experts": 8, "num_experts_per_tok": 2,
        "shared_intermediate_size": 1024, "mamba_n_heads": 128, "mamba_n_groups": 1, "mamba_d_state": 256,
        "mamba_d_head": "auto", "mamba_d_conv": 4, "mamba_expand": 2, "mamba_chunk_size": 256,
        "mamba_conv_bias": True, "mamba_proj_bias": False,
        "hidden_act": "silu",
    },
    "jamba": {
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 65536, "max_position_embeddings": 262144, "intermediate_size": 14336,
        "tie_word_embeddings": False, "num_experts": 16, "num_experts_per_tok": 2, "expert_layer_period": 2,
        "expert_layer_offset": 1, "attn_layer_period": 8, "attn_layer_offset": 4, "mamba_d_state": 16,
        "mamba_d_conv": 4, "mamba_expand": 2, "mamba_dt_rank": "auto", "mamba_conv_bias": True,
        "mamba_proj_bias": False,
        "hidden_act": "silu",
    },
    "llama": {
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32000,
        "max_position_embeddings": 2048, "intermediate_size": 11008, "tie_word_embeddings": False,
        "attention_bias": False, "mlp_bias": False,
        "hidden_act": "silu",
    },
    "llama4_text": {
        "hidden_size": 5120, "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8,
        "head_dim": 128, "vocab_size": 202048, "max_position_embeddings": 131072, "intermediate_size": 8192,
        "intermediate_size_mlp": 16384, "tie_word_embeddings": False, "attention_bias": False,
        "num_experts_per_tok": 1, "num_local_experts": 16, "interleave_moe_layer_step": 1,
        "use_qk_norm": True, "no_rope_layer_interval": 4, "attention_chunk_size": 8192,
        "hidden_act": "silu",
    },
    "mistral": {
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 32000, "max_position_embeddings": 131072, "intermediate_size": 14336,
        "tie_word_embeddings": False, "sliding_window": 4096,
        "hidden_act": "silu",
    },
    "mixtral": {
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 32000, "max_position_embeddings": 131072, "intermediate_size": 14336,
        "tie_word_embeddings": False, "num_local_experts": 8, "num_experts_per_tok": 2,
        "hidden_act": "silu",
    },
    "nemotron_h": {
        "hidden_size": 4096, "num_hidden_layers": 4, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "vocab_size": 131072, "max_position_embeddings": 4096, "intermediate_size": 21504,
        "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False, "use_bias": False,
        "ssm_state_size": 128, "mamba_num_heads": 128, "mamba_head_dim": 64, "n_groups": 8, "conv_kernel": 4,
        "expand": 2, "use_conv_bias": True, "chunk_size": 128, "n_routed_experts": 8, "n_shared_experts": 1,
        "moe_intermediate_size": 7688, "moe_shared_expert_intermediate_size": 7688, "num_experts_per_tok": 2,
        "mlp_hidden_act": "relu2",
    },
    "olmo2": {
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 50304,
        "max_position_embeddings": 2048, "intermediate_size": 11008, "tie_word_embeddings": False,
        "attention_bias": False,
        "hidden_act": "silu",
    },
    "opt": {
        "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "vocab_size": 50272,
        "max_position_embeddings": 2048, "ffn_dim": 3072, "tie_word_embeddings": True,
        "do_layer_norm_before": True, "enable_bias": True, "layer_norm_elementwise_affine": True,
        "_remove_final_layer_norm": False,
        "activation_function": "relu", "dropout": 0.1,
    },
    "phi": {
        "hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 32, "vocab_size": 51200,
        "max_position_embeddings": 2048, "intermediate_size": 8192, "tie_word_embeddings": False,
        "qk_layernorm": False,
        "hidden_act": "gelu_new",
    },
    "phi3": {
        "hidden_size": 3072, "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32064,
        "max_position_embeddings": 4096, "intermediate_size": 8192, "tie_word_embeddings": False,
        "hidden_act": "silu",
    },
    "qwen2": {
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "vocab_size": 151936, "max_position_embeddings": 32768, "intermediate_size": 22016,
        "tie_word_embeddings": False, "sliding_window": 4096, "use_sliding_window": False,
        "max_window_layers": 28,
        "hidden_act": "silu",
    },
    "qwen2_moe": {
        "hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16,
        "vocab_size": 151936, "max_position_embeddings": 32768, "intermediate_size": 5632,
        "tie_word_embeddings": False, "qkv_bias": True, "sliding_window": 4096,
        "use_sliding_window": False, "max_window_layers": 28, "num_experts": 60, "num_experts_per_tok": 4,
        "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632, "decoder_sparse_step": 1,
        "hidden_act": "silu",
    },
    "qwen3": {
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 32768,
        "intermediate_size": 22016, "tie_word_embeddings": False, "attention_bias": False,
        "sliding_window": 4096, "use_sliding_window": False, "max_window_layers": 28,
        "hidden_act": "silu",
    },
    "qwen3_moe": {
        "hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 32, "num_key_value_heads": 4,
        "vocab_size": 151936, "max_position_embeddings": 32768, "intermediate_size": 6144,
        "tie_word_embeddings": False, "attention_bias": False, "sliding_window": 4096,
        "use_sliding_window": False, "num_experts": 128, "num_experts_per_tok": 8,
        "moe_intermediate_size": 768, "decoder_sparse_step": 1,
        "hidden_act": "silu",
    },
    "qwen3_next": {
        "hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 16, "num_key_value_heads": 2,
        "head_dim": 256, "vocab_size": 151936, "max_position_embeddings": 32768, "intermediate_size": 5632,
        "tie_word_embeddings": False, "attention_bias": False, "num_experts": 512, "num_experts_per_tok": 10,
        "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512, "decoder_sparse_step": 1,
        "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128, "linear_value_head_dim": 128,
        "linear_num_key_heads": 16, "linear_num_value_heads": 32, "full_attention_interval": 4,
        "hidden_act": "silu",
    },
    "starcoder2": {
        "hidden_size": 3072, "num_hidden_layers": 30, "num_attention_heads": 24, "num_key_value_heads": 2,
        "vocab_size": 49152, "max_position_embeddings": 4096, "intermediate_size": 12288,
        "tie_word_embeddings": True, "use_bias": True,
        "hidden_act": "gelu_pytorch_tanh",
    },
}

_ALIASES = (
    ("hidden_size", "n_embd", "n_embed", "d_model"),
    ("num_hidden_layers", "n_layer"),
    ("num_attention_heads", "n_head"),
    ("max_position_embeddings", "n_positions"),
    ("num_experts", "num_local_experts", "n_routed_experts"),
)
"""Spellings of one field (transformers attribute_map): a default is skipped when any spelling is present."""


REQUIRED = frozenset({"hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"})
"""Fields a config.json must state (any spelling): a config without them is malformed, not a default model.
(Gemma 3's multimodal text_config is the exception: gemma3.py fills it from Gemma3TextConfig entirely.)"""


def with_defaults(config: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    """`config` with the class defaults of `model_type` added for omitted fields outside REQUIRED.

    Explicit nulls are kept, as transformers keeps them.
    """
    merged = dict(config)
    for key, value in CONFIG_DEFAULTS.get(model_type, {}).items():
        spellings = next((group for group in _ALIASES if key in group), (key,))
        if any(spelling in REQUIRED for spelling in spellings):
            continue
        if not any(spelling in config for spelling in spellings):
            merged[key] = value
    return merged
