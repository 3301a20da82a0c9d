"""IBM Granite 3.x (dense): Llama's shapes; the embedding/residual/logit multipliers add no parameters.

Source: transformers 5.17.0 models/granite: `attention_bias` and `mlp_bias` as Llama;
GraniteForCausalLM.forward `logits = logits / self.config.logits_scaling` (a new tensor).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.families._decoder import decoder_spec
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Granite ModelSpec from its config.json."""
    # GraniteForCausalLM divides the logits out of place (`logits / logits_scaling`): one more full copy
    return decoder_spec(config, name=name, source=source, family="granite", logits_scaled=True)
