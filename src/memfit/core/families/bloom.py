"""BLOOM: ALiBi (no position table), a LayerNorm on the embeddings, fused query_key_value, 4×hidden MLP.

Source: transformers 5.17.0 models/bloom: every Linear and LayerNorm biased; dense_h_to_4h is
Linear(h, 4h); tied embeddings. BLOOM has no max_position_embeddings (ALiBi); we record its training
context `seq_length` when given, else 2048 (BLOOM's training length), for the context-length checks only.
How it runs (transformers 5.17): BloomPreTrainedModel refuses SDPA, so eager runs; ALiBi always, added with
baddbmm ((b·heads, 1, kv)); `_reshape` copies q, k, v out of the fused output; BloomModel.forward keeps each
block's `outputs` (with the probabilities) until the next block returns; no rotary buffer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.choices import EagerScores, NormKind
from memfit.core.families._decoder import decoder_spec, read_dims
from memfit.core.families._layout import NEOX
from memfit.core.spec import MlpSpec, ModelSource, ModelSpec

BLOOM_TRAINING_CONTEXT_TOKENS = 2048
"""Source: BigScience BLOOM model card (training sequence length 2048 tokens)."""
BLOOM_GELU_LIVE = 5
"""Intermediates alive at once in BLOOM's own Python GELU under no_grad (bloom_gelu_forward holds x, 0.5·x,
0.798·x, 0.044715·x and its product with x). Source: transformers 5.17 modeling_bloom.py; measured on real
CPU tensors (5)."""


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A BLOOM ModelSpec from its config.json."""
    dims = read_dims(config, name=name, max_positions_default=BLOOM_TRAINING_CONTEXT_TOKENS)
    mlp = MlpSpec(intermediate_size=4 * dims.hidden_size, gated=False, bias=True, activation="gelu",
                  no_grad_live=BLOOM_GELU_LIVE)
    return decoder_spec(config, name=name, source=source, family="bloom", tie_default=True, fused_qkv=True,
                        qkv_bias=True, out_bias=True, num_kv_heads=dims.num_heads,
                        max_positions_default=BLOOM_TRAINING_CONTEXT_TOKENS, mlp_for_layer=lambda _index: mlp,
                        norm=NormKind.LAYER, final_norm=NormKind.LAYER, embedding_norm=NormKind.LAYER,
                        modules=NEOX, sdpa_supported=False, alibi=True, qkv_copies=True, rotary=False,
                        eager_scores=EagerScores.BADDBMM_ALIBI, keeps_previous_attn_probs=True,
                        rotary_buffer=False)
