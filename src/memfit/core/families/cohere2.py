"""Cohere 2 (Command R7B, Command A): Cohere's parallel block, every 4th layer global, the rest sliding.

Source: transformers 5.17.0 models/cohere2: Cohere2Config.layer_types defaults to sliding for i where
(i + 1) % sliding_window_pattern != 0 (pattern 4); no QK norms; one bias-free LayerNorm per layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.choices import NormKind
from memfit.core.families._config import opt_int
from memfit.core.families._decoder import decoder_spec, layer_windows, read_dims
from memfit.core.families.gemma2 import alternating
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Cohere 2 ModelSpec from its config.json."""
    pattern = opt_int(config, "sliding_window_pattern", default=4, name=name) or 4
    windows = layer_windows(config, name=name, num_layers=read_dims(config, name=name).num_layers,
                            default_types=alternating(pattern))
    # Cohere2ForCausalLM multiplies the logits out of place (`logits * logit_scale`): one more copy
    return decoder_spec(config, name=name, source=source, family="cohere2", tie_default=True, mlp_bias=False,
                        logits_scaled=True,
                        norm=NormKind.LAYER_NO_BIAS, norms_per_layer=1, parallel_block=True,
                        final_norm=NormKind.LAYER_NO_BIAS, windows=windows, norm_in_python=True)
