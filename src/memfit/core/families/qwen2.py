"""Qwen2 and Qwen2.5 (dense): Llama's shapes with q/k/v biases.

Source: transformers 5.17.0 models/qwen2: q_proj, k_proj, v_proj with bias=True, o_proj without; MLP
without biases; with `use_sliding_window`, layers from `max_window_layers` on slide (Qwen2Config).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.families._decoder import decoder_spec, qwen_windows
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Qwen2/Qwen2.5 ModelSpec from its config.json."""
    windows = qwen_windows(config, name=name)
    return decoder_spec(config, name=name, source=source, family="qwen2", qkv_bias=True, out_bias=False,
                        mlp_bias=False, windows=windows)
