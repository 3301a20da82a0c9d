"""Cohere Command-R / R+: parallel attention and MLP after one bias-free LayerNorm, optional QK LayerNorms.

Source: transformers 5.17.0 models/cohere: CohereLayerNorm has a weight and no bias; with `use_qk_norm`,
q_norm and k_norm are CohereLayerNorm((heads, head_dim)) — a weight per head and feature; tied embeddings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.choices import NormKind, QkNorm
from memfit.core.families._config import opt_bool
from memfit.core.families._decoder import decoder_spec
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Cohere (Command-R) ModelSpec from its config.json."""
    qk_norm = QkNorm.FULL if opt_bool(config, "use_qk_norm", default=False, name=name) else QkNorm.NONE
    # CohereForCausalLM multiplies the logits out of place (`logits * logit_scale`): one more copy
    return decoder_spec(config, name=name, source=source, family="cohere", tie_default=True, mlp_bias=False,
                        logits_scaled=True,
                        qk_norm=qk_norm, qk_norm_kind=NormKind.LAYER_NO_BIAS, norm=NormKind.LAYER_NO_BIAS,
                        norms_per_layer=1, parallel_block=True, final_norm=NormKind.LAYER_NO_BIAS,
                        norm_in_python=True)
