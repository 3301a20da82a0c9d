"""Phi-3, Phi-3.5 and Phi-4 (mini and 14B): fused qkv_proj and gate_up_proj, no biases.

Source: transformers 5.17.0 models/phi3: qkv_proj is Linear(hidden, (heads + 2·kv_heads)·head_dim),
gate_up_proj Linear(hidden, 2·intermediate); `sliding_window` (Phi-3-mini: 2047) applies to every layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.families._decoder import decoder_spec
from memfit.core.families._layout import PHI3
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Phi-3/Phi-4 ModelSpec from its config.json."""
    return decoder_spec(config, name=name, source=source, family="phi3", fused_qkv=True, qkv_bias=False,
                        out_bias=False, mlp_bias=False, window_on_every_layer=True,
                        modules=PHI3)
