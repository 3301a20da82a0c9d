"""DeepSeek-V3 / R1 (and Kimi-K2-style configs): DeepSeek-V2's MLA and MoE, a sigmoid router with a
score-correction bias, and the first `first_k_dense_replace` layers dense.

Source: transformers 5.17.0 models/deepseek_v3: e_score_correction_bias is a buffer (num_experts fp32), so
it is not a parameter; the multi-token-prediction layer (num_nextn_predict_layers) is not built by
transformers and is not counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.families.deepseek_v2 import deepseek_spec
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A DeepSeek-V3 ModelSpec from its config.json."""
    return deepseek_spec(config, name=name, source=source, family="deepseek_v3", score_correction_bias=True)
