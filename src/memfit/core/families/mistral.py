"""Mistral 7B / Mistral-Nemo / Mistral-Small: Llama's shapes, a sliding window on every layer when set.

Source: transformers 5.17.0 models/mistral: no biases, `sliding_window` (null in v0.2+ configs) applies to
all layers, `head_dim` may differ from hidden_size // num_attention_heads (Nemo: 128 with hidden 5120).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.families._decoder import decoder_spec, layer_windows, read_dims
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Mistral ModelSpec from its config.json."""
    num_layers = read_dims(config, name=name).num_layers
    # MistralConfig ignores layer_types: every layer slides when sliding_window is set
    windows = layer_windows({k: v for k, v in config.items() if k != "layer_types"}, name=name,
                            num_layers=num_layers)
    return decoder_spec(config, name=name, source=source, family="mistral", qkv_bias=False, out_bias=False,
                        mlp_bias=False, windows=windows)
