"""Falcon: classic multi-query (7B) and the new decoder architecture with KV groups (40B, 180B).

Source: transformers 5.17.0 models/falcon: query_key_value is FalconLinear(h, (heads + 2·kv)·head_dim) with
kv = num_kv_heads (new_decoder_architecture), 1 (multi_query) or heads; `bias` gates every Linear bias;
MLP width `ffn_hidden_size` (default 4h). Norms: two (ln_attn, ln_mlp) when num_ln_in_parallel_attn is 2
(the default with the new architecture) or when attention is not parallel, else one input_layernorm.
How it runs: with config `alibi` (Falcon-RW), FalconModel.forward folds ALiBi and the causal mask into one
float (b, heads, s, kv) bias passed to every layer (SDPA takes the memory-efficient kernel with it); eager
upcasts the scores to fp32 for the bias; without ALiBi eager's softmax stays in the compute dtype. The model
loop keeps each block's outputs until the next returns. FalconAttention calls torch's SDPA itself, without
enable_gqa, so multi-query and grouped layers (falcon-7b, 40b) broadcast K/V in the math kernel. Eager takes
the softmax in the compute dtype (dtype=hidden_states.dtype), after the fp32 ALiBi sum. query_key_value and
the rest are FalconLinear, an nn.Linear subclass bitsandbytes leaves unconverted (replace_with_bnb_linear
converts `type(m) is nn.Linear`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.choices import EagerScores, NormKind, SoftmaxDtype
from memfit.core.families._config import opt_bool, opt_int
from memfit.core.families._decoder import decoder_spec, dense_mlp, read_dims
from memfit.core.families._layout import NEOX
from memfit.core.spec import ModelSource, ModelSpec

FALCON_DEFAULT_CONTEXT_TOKENS = 2048
"""Source: transformers 5.17.0 FalconConfig.max_position_embeddings default."""


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Falcon ModelSpec from its config.json."""
    dims = read_dims(config, name=name, max_positions_default=FALCON_DEFAULT_CONTEXT_TOKENS)
    new_arch = opt_bool(config, "new_decoder_architecture", default=False, name=name)
    if new_arch:
        kv_heads = opt_int(config, "num_kv_heads", "n_head_kv", default=dims.num_heads, name=name)
    elif opt_bool(config, "multi_query", default=True, name=name):
        kv_heads = 1
    else:
        kv_heads = dims.num_heads
    bias = opt_bool(config, "bias", default=False, name=name)
    parallel = opt_bool(config, "parallel_attn", default=True, name=name)
    num_ln = opt_int(config, "num_ln_in_parallel_attn", default=2 if new_arch else None, name=name)
    norms = 2 if (not parallel or num_ln == 2) else 1
    mlp = dense_mlp(config, name=name, key="ffn_hidden_size", bias=bias, gated=False,
                    default=4 * dims.hidden_size)
    alibi = opt_bool(config, "alibi", default=False, name=name)
    return decoder_spec(config, name=name, source=source, family="falcon", tie_default=True, fused_qkv=True,
                        qkv_bias=bias, out_bias=bias, num_kv_heads=kv_heads,
                        max_positions_default=FALCON_DEFAULT_CONTEXT_TOKENS, mlp_for_layer=lambda _index: mlp,
                        norm=NormKind.LAYER, norms_per_layer=norms, parallel_block=parallel,
                        final_norm=NormKind.LAYER, modules=NEOX, alibi=alibi, alibi_float_bias=alibi,
                        rotary=not alibi, sdpa_gqa=False, softmax_dtype=SoftmaxDtype.HIDDEN,
                        eager_scores=EagerScores.FLOAT_ALIBI if alibi else EagerScores.SOFTMAX_IN_DTYPE,
                        keeps_previous_attn_probs=True, bnb_skips_layer_linears=True)
