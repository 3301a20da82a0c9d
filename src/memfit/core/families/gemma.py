"""Gemma 1: Llama's shapes with head_dim 256, GeGLU, tied embeddings scaled by sqrt(hidden_size).

Source: transformers 5.17.0 models/gemma: GemmaRMSNorm stores (1 + weight), one weight per feature.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.families._decoder import decoder_spec
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Gemma ModelSpec from its config.json."""
    return decoder_spec(config, name=name, source=source, family="gemma", tie_default=True, mlp_bias=False,
                        embedding_multiplier_is_scaled=True, norm_fp32_output=True)
