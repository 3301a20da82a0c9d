"""IBM Bamba: Mamba-2 mixers with GQA attention at `attn_layer_indices`, every layer followed by a gated MLP.

Source: transformers 5.17.0 models/bamba: BambaDecoderLayer builds `mamba` (BambaMixer, the same Mamba-2
mixer and torch-path scan as Granite-4.0-H) or `self_attn` (q/k/v/o with attention_bias), then
`feed_forward` (BambaMLP: gate, up, down with mlp_bias); BambaConfig.layers_block_type marks
attn_layer_indices "full_attention" and every other layer "linear_attention"; __post_init__ hard-codes
partial_rotary_factor 0.5 (BambaRotaryEmbedding rotates half of head_dim).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from memfit.core.errors import ConfigError
from memfit.core.families._config import opt_list, req_int
from memfit.core.families._decoder import decoder_spec
from memfit.core.families._hybrid import ibm_mamba
from memfit.core.spec import LayerSpec, ModelSource, ModelSpec

PARTIAL_ROTARY_FACTOR = Fraction(1, 2)
"""BambaConfig.__post_init__: kwargs["partial_rotary_factor"] = 0.5 ("hardcode for BC")."""


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Bamba ModelSpec from its config.json."""
    num_layers = req_int(config, "num_hidden_layers", name=name)
    indices = opt_list(config, "attn_layer_indices", name=name) or []
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise ConfigError(f"{name}: config field 'attn_layer_indices' must list layer numbers")
    base = decoder_spec(config, name=name, source=source, family="bamba",
                        rotary_fraction=PARTIAL_ROTARY_FACTOR)
    attention_layer = base.layers[0]      # decoder_spec shares one object among equal layers
    mamba_layer = LayerSpec(attention=None, mamba=ibm_mamba(config, name=name), mlp=attention_layer.mlp)
    return dataclasses.replace(base, layers=tuple(attention_layer if i in indices else mamba_layer
                                                  for i in range(num_layers)))
