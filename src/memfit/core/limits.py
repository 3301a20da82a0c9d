"""Physical limits on model dimensions: a config.json beyond them is corrupt or hostile, not a model.

Every integer a family module reads from a config is checked against its field's `Bound` before any work
is sized by it, so `num_hidden_layers: 10**9` is one ConfigError line, not a 10^9-layer tuple. Each limit is
the largest value of any published model times a generous margin: memfit never refuses a real model, and
what it accepts stays cheap to hold and to sum over (layers are a tuple; everything else is an int).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_NUM_LAYERS = 4_096
"""Decoder layers. The deepest published LLMs have 126 (Llama-3.1-405B) and 118 (PaLM-540B); the deepest
trained Transformer has 1,000 (DeepNet, Wang et al. 2022, arXiv:2203.00555): about 4× the latter."""

MAX_HIDDEN_SIZE = 131_072
"""Model width (hidden_size, n_embd, d_model; also MLA ranks and OPT's word_embed_proj_dim). The widest
published dense models have 20,480 (Megatron-Turing NLG 530B) and 18,432 (PaLM-540B): about 6× the widest."""

MAX_INTERMEDIATE_SIZE = 1_048_576
"""MLP width (intermediate_size, ffn_dim, n_inner, expert widths). The widest published MLPs are 81,920
(Megatron-Turing NLG: 4 × 20,480) and 73,728 (PaLM-540B): about 12× the widest."""

MAX_NUM_HEADS = 8_192
"""Attention heads, query or key/value. The most published is 232 (Falcon-180B), then 128 (Llama-3.1-405B,
DeepSeek-V3, MT-NLG): about 35× the most."""

MAX_HEAD_DIM = 8_192
"""Per-head width (head_dim, MLA qk_nope/qk_rope/v head dims). The widest published are 384 (PaLM-540B:
18,432 / 48 heads) and 256 (Gemma): about 21× the widest."""

MAX_VOCAB_SIZE = 16_777_216
"""Vocabulary rows. The largest LLM vocabularies are 262,208 (Gemma 3) and 250,880 (BLOOM); the largest
published of any Transformer is XLM-V's 901,629 (arXiv:2301.10472): about 18× that."""

MAX_CONTEXT_TOKENS = 1_073_741_824
"""Tokens of context (max_position_embeddings, n_positions, seq_length, sliding_window). The longest
published is 10,485,760 (Llama 4 Scout, 10M tokens): about 100× that, and 2^30 keeps plan searches short."""

MAX_NUM_EXPERTS = 65_536
"""MoE experts (routed, shared, or per token). The most published is 2,048 (Switch-C, arXiv:2101.03961);
recent LLMs have 384 (Kimi K2) and 256 (DeepSeek-V3): 32× Switch-C."""

MAX_IMAGE_PIXELS = 65_536
"""Vision tower input side and patch size in pixels. The largest fixed SigLIP input is 896 (Gemma 3's
SigLIP-So400m/896): 64× that is still a single 2^16-pixel side."""

MAX_IMAGE_CHANNELS = 1_024
"""Image channels (3 for RGB; 13 for Sentinel-2 multispectral encoders): far beyond either."""

MAX_PARALLEL_NORMS = 2
"""Falcon's num_ln_in_parallel_attn: one shared or two LayerNorms before a parallel block.
Source: transformers 5.17.0 FalconDecoderLayer (num_ln_in_parallel_attn in {None, 1, 2})."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Bound:
    """The integers a config field may hold: `minimum..maximum`, named after the limit that sets the top."""

    minimum: int
    maximum: int
    limit: str                            # the constant's name, e.g. "MAX_NUM_LAYERS", shown in errors

    def admits(self, value: int) -> bool:
        return self.minimum <= value <= self.maximum


def _bound(minimum: int, maximum: int, limit: str, *keys: str) -> dict[str, Bound]:
    return dict.fromkeys(keys, Bound(minimum=minimum, maximum=maximum, limit=limit))


FIELD_BOUNDS: dict[str, Bound] = {
    **_bound(1, MAX_NUM_LAYERS, "MAX_NUM_LAYERS", "num_hidden_layers", "n_layer", "decoder_sparse_step",
             "sliding_window_pattern", "_sliding_window_pattern"),
    **_bound(0, MAX_NUM_LAYERS, "MAX_NUM_LAYERS", "first_k_dense_replace", "max_window_layers"),
    **_bound(1, MAX_HIDDEN_SIZE, "MAX_HIDDEN_SIZE", "hidden_size", "n_embd", "n_embed", "d_model",
             "word_embed_proj_dim", "kv_lora_rank", "q_lora_rank"),
    **_bound(1, MAX_INTERMEDIATE_SIZE, "MAX_INTERMEDIATE_SIZE", "intermediate_size", "moe_intermediate_size",
             "ffn_hidden_size", "n_inner", "ffn_dim"),
    **_bound(0, MAX_INTERMEDIATE_SIZE, "MAX_INTERMEDIATE_SIZE", "shared_expert_intermediate_size"),
    **_bound(1, MAX_NUM_HEADS, "MAX_NUM_HEADS", "num_attention_heads", "n_head", "num_key_value_heads",
             "num_kv_heads", "n_head_kv"),
    **_bound(1, MAX_HEAD_DIM, "MAX_HEAD_DIM", "head_dim", "qk_nope_head_dim", "qk_rope_head_dim",
             "v_head_dim"),
    **_bound(1, MAX_VOCAB_SIZE, "MAX_VOCAB_SIZE", "vocab_size"),
    **_bound(1, MAX_CONTEXT_TOKENS, "MAX_CONTEXT_TOKENS", "max_position_embeddings", "n_positions",
             "seq_length", "sliding_window"),
    **_bound(0, MAX_NUM_EXPERTS, "MAX_NUM_EXPERTS", "num_experts", "num_local_experts", "n_routed_experts",
             "n_shared_experts"),
    # 0 as well: the dense Granite 4.0 releases (granite-4.0-h-micro) publish num_experts_per_tok 0 beside
    # num_local_experts 0; a MoE layer still needs 1..num_experts (MoeSpec.__post_init__)
    **_bound(0, MAX_NUM_EXPERTS, "MAX_NUM_EXPERTS", "num_experts_per_tok"),
    **_bound(1, MAX_NUM_EXPERTS, "MAX_NUM_EXPERTS", "experts_per_token"),
    **_bound(1, MAX_IMAGE_PIXELS, "MAX_IMAGE_PIXELS", "image_size", "patch_size"),
    **_bound(1, MAX_IMAGE_CHANNELS, "MAX_IMAGE_CHANNELS", "num_channels"),
    **_bound(1, MAX_PARALLEL_NORMS, "MAX_PARALLEL_NORMS", "num_ln_in_parallel_attn"),
    # Mamba-2 mixers (bamba, granitemoehybrid, nemotron_h, falcon_h1): heads and groups like attention heads;
    # head width, state size and conv taps like a head dim; the expansion factor and the scan's chunk length
    **_bound(1, MAX_NUM_HEADS, "MAX_NUM_HEADS", "mamba_n_heads", "mamba_num_heads", "mamba_n_groups",
             "n_groups"),
    **_bound(1, MAX_HEAD_DIM, "MAX_HEAD_DIM", "mamba_d_head", "mamba_head_dim", "mamba_d_state",
             "ssm_state_size", "mamba_d_conv", "conv_kernel", "mamba_expand"),
    **_bound(1, MAX_CONTEXT_TOKENS, "MAX_CONTEXT_TOKENS", "mamba_chunk_size", "chunk_size"),
    **_bound(0, MAX_INTERMEDIATE_SIZE, "MAX_INTERMEDIATE_SIZE", "shared_intermediate_size",
             "moe_shared_expert_intermediate_size"),
    **_bound(1, MAX_INTERMEDIATE_SIZE, "MAX_INTERMEDIATE_SIZE", "mamba_d_ssm"),
    # Jamba (Mamba-1 mixers): dt_proj's rank like a hidden size (JambaConfig: "auto" = ceil(hidden / 16));
    # the attention / expert layer periods and offsets like layer numbers (an offset may be 0)
    **_bound(1, MAX_HIDDEN_SIZE, "MAX_HIDDEN_SIZE", "mamba_dt_rank"),
    **_bound(1, MAX_NUM_LAYERS, "MAX_NUM_LAYERS", "attn_layer_period", "expert_layer_period"),
    **_bound(0, MAX_NUM_LAYERS, "MAX_NUM_LAYERS", "attn_layer_offset", "expert_layer_offset"),
    # Qwen3-Next gated DeltaNet mixers: heads like attention heads; head widths and conv taps like a head
    # dim; the full-attention layer spacing like a layer count
    **_bound(1, MAX_NUM_HEADS, "MAX_NUM_HEADS", "linear_num_key_heads", "linear_num_value_heads"),
    **_bound(1, MAX_HEAD_DIM, "MAX_HEAD_DIM", "linear_key_head_dim", "linear_value_head_dim",
             "linear_conv_kernel_dim"),
    **_bound(1, MAX_NUM_LAYERS, "MAX_NUM_LAYERS", "full_attention_interval"),
    # vision towers (qwen2_5_vl, llava, gemma3): blocks like layers, heads like heads, the projector's
    # output width like a hidden size; image tokens, merge and temporal patch like an image dimension
    **_bound(1, MAX_NUM_LAYERS, "MAX_NUM_LAYERS", "depth"),
    **_bound(1, MAX_NUM_HEADS, "MAX_NUM_HEADS", "num_heads"),
    **_bound(1, MAX_HIDDEN_SIZE, "MAX_HIDDEN_SIZE", "out_hidden_size"),
    **_bound(1, MAX_IMAGE_PIXELS, "MAX_IMAGE_PIXELS", "mm_tokens_per_image", "spatial_merge_size",
             "temporal_patch_size"),
    **_bound(1, MAX_IMAGE_CHANNELS, "MAX_IMAGE_CHANNELS", "in_channels"),
    # Qwen3-VL: the learned position table's rows (a square grid, 48² published) like an image dimension
    **_bound(1, MAX_IMAGE_PIXELS, "MAX_IMAGE_PIXELS", "num_position_embeddings"),
    # Llama 4: the dense layers' MLP width; MoE and NoPE layer spacing like layer counts; the attention
    # chunk like a sliding window
    **_bound(1, MAX_INTERMEDIATE_SIZE, "MAX_INTERMEDIATE_SIZE", "intermediate_size_mlp"),
    **_bound(1, MAX_NUM_LAYERS, "MAX_NUM_LAYERS", "interleave_moe_layer_step", "no_rope_layer_interval"),
    **_bound(1, MAX_CONTEXT_TOKENS, "MAX_CONTEXT_TOKENS", "attention_chunk_size"),
}
"""Config field (every spelling a family module reads) → the integers it may hold. Zero is allowed only
where it means "none" (no shared experts, no leading dense layers, no routed experts in a dense model)."""

DEFAULT_BOUND = Bound(minimum=0, maximum=MAX_CONTEXT_TOKENS, limit="MAX_CONTEXT_TOKENS")
"""Any other integer field: a non-negative count no larger than the longest context."""

SHAPE_FIELDS = frozenset({
    "num_hidden_layers", "n_layer", "hidden_size", "n_embd", "n_embed", "d_model", "intermediate_size",
    "num_attention_heads", "n_head", "num_key_value_heads", "head_dim", "vocab_size",
    "max_position_embeddings", "n_positions", "num_experts", "num_local_experts", "n_routed_experts",
    "num_experts_per_tok",
})
"""The fields that mean the same in every transformers config: checked in every config (and its nested
`*_config` objects) before any family mapping or the meta-device build, whatever the model_type."""


def field_bound(key: str) -> Bound:
    """The Bound of config field `key` (DEFAULT_BOUND for a field without its own)."""
    return FIELD_BOUNDS.get(key, DEFAULT_BOUND)


SHOWN_CHARS = 60
"""Characters of a bad value quoted in an error line; a longer repr is cut, so the line stays short."""

SHOWN_DIGITS = 30
"""Digits of a bad integer quoted in full; a longer one is shown by its order of magnitude."""


def shown(value: object) -> str:
    """`value` as quoted in a one-line error: a long repr cut short, a huge integer by its order of magnitude.

    Never raises: str() of an int past Python's 4,300-digit limit and repr() of a list nested past the
    recursion limit both would; those are named by their size or type.
    """
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**SHOWN_DIGITS:
        sign = "-" if value < 0 else ""
        # log10(2) ≈ 30103/100000: the nearest decimal exponent of a number with this many bits
        return f"about {sign}10^{((abs(value).bit_length() - 1) * 30103 + 50000) // 100000}"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"a {type(value).__name__} too large to show"
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}…"
