"""Gemma 3 text-only models (gemma-3-1b, and the text tower of the larger ones).

Source: transformers 5.17.0 models/gemma3: per-head q_norm/k_norm (Gemma3RMSNorm(head_dim)), four norms per
layer, every `sliding_window_pattern`-th layer global (default 6). Missing fields take Gemma3TextConfig's
defaults (published multimodal configs list only the fields that differ). Gemma3TextModel computes one
(cos, sin) pair per layer type (local and global rope bases) and keeps both through the layer loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.choices import QkNorm
from memfit.core.dtypes import DType
from memfit.core.families._config import opt_int
from memfit.core.families._decoder import decoder_spec, layer_windows, read_dims
from memfit.core.families._defaults import CONFIG_DEFAULTS
from memfit.core.families.gemma2 import alternating
from memfit.core.spec import ModelSource, ModelSpec

TEXT_DEFAULTS: dict[str, Any] = CONFIG_DEFAULTS["gemma3_text"]
"""Gemma3TextConfig field defaults, for the text_config of multimodal Gemma 3 checkpoints."""


def text_spec(config: Mapping[str, Any], *, name: str, source: ModelSource, family: str,
              default_dtype: DType = DType.FP32, **spec_fields: Any) -> ModelSpec:
    """The Gemma 3 decoder from a text config (its omitted fields already filled with class defaults)."""
    merged = config
    pattern = opt_int(merged, "sliding_window_pattern", "_sliding_window_pattern", default=6, name=name) or 6
    windows = layer_windows(merged, name=name, num_layers=read_dims(merged, name=name).num_layers,
                            default_types=alternating(pattern))
    return decoder_spec(merged, name=name, source=source, family=family, tie_default=True, mlp_bias=False,
                        qk_norm=QkNorm.PER_HEAD, norms_per_layer=4, windows=windows, norm_fp32_output=True,
                        rotary_per_layer_type=True,
                        embedding_multiplier_is_scaled=True, default_dtype=default_dtype,
                        final_logit_softcapping=merged.get("final_logit_softcapping") is not None,
                        **spec_fields)


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A text-only Gemma 3 ModelSpec from its config.json."""
    return text_spec(config, name=name, source=source, family="gemma3_text")
