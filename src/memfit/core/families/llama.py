"""Llama 1-3 (and Llama-architecture models: TinyLlama, SmolLM, DeepSeek-R1-Distill-Llama, ...).

Source: transformers 5.17.0 models/llama: q/k/v/o and gate/up/down projections, biases from
`attention_bias` and `mlp_bias`, two RMSNorms per layer, untied LM head unless `tie_word_embeddings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.families._decoder import decoder_spec
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Llama-architecture ModelSpec from its config.json."""
    return decoder_spec(config, name=name, source=source, family="llama")
