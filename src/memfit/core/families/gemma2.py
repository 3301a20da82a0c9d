"""Gemma 2: four RMSNorms per layer, alternating sliding-window (even layers) and global attention.

Source: transformers 5.17.0 models/gemma2: input, post_attention, pre_feedforward and post_feedforward
norms; Gemma2Config.layer_types defaults to sliding for i where (i + 1) % 2 != 0; final logits soft-capped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.families._decoder import FULL, SLIDING, decoder_spec, layer_windows, read_dims
from memfit.core.spec import ModelSource, ModelSpec


def alternating(pattern: int) -> Any:
    """The layer_types rule of Gemma 2/3 and Cohere 2: every `pattern`-th layer global, the rest sliding."""
    return lambda n: [SLIDING if (i + 1) % pattern else FULL for i in range(n)]


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Gemma 2 ModelSpec from its config.json."""
    windows = layer_windows(config, name=name, num_layers=read_dims(config, name=name).num_layers,
                            default_types=alternating(2))
    return decoder_spec(config, name=name, source=source, family="gemma2", tie_default=True, mlp_bias=False,
                        norms_per_layer=4, windows=windows, embedding_multiplier_is_scaled=True,
                        norm_fp32_output=True,
                        final_logit_softcapping=config.get("final_logit_softcapping") is not None)
