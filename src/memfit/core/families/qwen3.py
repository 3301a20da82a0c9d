"""Qwen3 (dense): Llama's shapes with per-head RMSNorms on queries and keys, no biases by default.

Source: transformers 5.17.0 models/qwen3: q_norm and k_norm are Qwen3RMSNorm(head_dim); `attention_bias`
gates all four attention biases; sliding windows as Qwen2 (use_sliding_window, max_window_layers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.choices import QkNorm
from memfit.core.families._decoder import decoder_spec, qwen_windows
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Qwen3 ModelSpec from its config.json."""
    return decoder_spec(config, name=name, source=source, family="qwen3", qk_norm=QkNorm.PER_HEAD,
                        mlp_bias=False, windows=qwen_windows(config, name=name))
