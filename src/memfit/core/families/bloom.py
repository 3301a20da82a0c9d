"""BLOOM: ALiBi (no position table), a LayerNorm on the embeddings, fused query_key_value, 4×hidden MLP.

Source: transformers 5.17.0 models/bloom: every Linear and LayerNorm biased; dense_h_to_4h is
Linear(h, 4h); tied embeddings. BLOOM has no max_position_embeddings (ALiBi); we record its training
context `seq_length` when given, else 2048 (BLOOM's training length), for the context-length checks only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.choices import NormKind
from memfit.core.families._decoder import decoder_spec, read_dims
from memfit.core.spec import MlpSpec, ModelSource, ModelSpec

BLOOM_TRAINING_CONTEXT_TOKENS = 2048
"""Source: BigScience BLOOM model card (training sequence length 2048 tokens)."""


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A BLOOM ModelSpec from its config.json."""
    dims = read_dims(config, name=name, max_positions_default=BLOOM_TRAINING_CONTEXT_TOKENS)
    mlp = MlpSpec(intermediate_size=4 * dims.hidden_size, gated=False, bias=True, activation="gelu")
    return decoder_spec(config, name=name, source=source, family="bloom", tie_default=True, fused_qkv=True,
                        qkv_bias=True, out_bias=True, num_kv_heads=dims.num_heads,
                        max_positions_default=BLOOM_TRAINING_CONTEXT_TOKENS, mlp_for_layer=lambda _index: mlp,
                        norm=NormKind.LAYER, final_norm=NormKind.LAYER, embedding_norm=NormKind.LAYER)
