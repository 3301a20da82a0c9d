"""OLMo 2: post-norm layers (two RMSNorms after attention and MLP) and RMSNorms over all query/key heads.

Source: transformers 5.17.0 models/olmo2: q_norm is Olmo2RMSNorm(num_heads × head_dim), k_norm
Olmo2RMSNorm(num_kv_heads × head_dim); post_attention_layernorm and post_feedforward_layernorm.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.choices import QkNorm
from memfit.core.families._decoder import decoder_spec
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """An OLMo 2 ModelSpec from its config.json."""
    return decoder_spec(config, name=name, source=source, family="olmo2", qk_norm=QkNorm.FULL, mlp_bias=False,
                        norm_fp32_output=True)
