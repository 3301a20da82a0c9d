"""Llama 4 checkpoints (Llama-4-Scout-17B-16E, Llama-4-Maverick-17B-128E): model_type "llama4".

AutoModelForCausalLM maps "llama4" to Llama4ForCausalLM, which builds the text decoder from `text_config`
only: the vision tower and projector of Llama4ForConditionalGeneration are not built, so they are neither
counted nor loaded (transformers 5.17.0 MODEL_FOR_CAUSAL_LM_MAPPING_NAMES; checked on the meta device).
Top-level `tie_word_embeddings` and the dtype fill the text config's gaps, as Llama4Config passes them on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from memfit.core.errors import ConfigError
from memfit.core.families import llama4_text
from memfit.core.families._defaults import CONFIG_DEFAULTS
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Llama 4 ModelSpec from its config.json: the text decoder; images are refused (not built)."""
    text = config.get("text_config") or {}
    if not isinstance(text, Mapping):
        raise ConfigError(f"{name}: config field 'text_config' must be an object")
    # Llama4Config builds a default Llama4TextConfig for fields its text_config omits, even the sizes
    fields = {**CONFIG_DEFAULTS["llama4_text"], **text, "model_type": "llama4_text"}
    for key in ("torch_dtype", "dtype"):
        if key in config and "torch_dtype" not in text and "dtype" not in text:
            fields[key] = config[key]
    spec = llama4_text.spec_from_config(fields, name=name, source=source, family="llama4")
    return dataclasses.replace(spec, images_refused=IMAGES_REFUSED)


IMAGES_REFUSED = ("Llama 4 loads through AutoModelForCausalLM as Llama4ForCausalLM, the text decoder only "
                  "(transformers 5.17): its vision tower is not built, and memfit does not model it")
"""Why --images is refused for model_type llama4."""
