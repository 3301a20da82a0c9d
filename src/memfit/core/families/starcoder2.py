"""StarCoder2: GQA with biases everywhere, LayerNorms with bias, a plain (ungated) c_fc/c_proj MLP.

Source: transformers 5.17.0 models/starcoder2: `use_bias` gates every Linear bias; nn.LayerNorm norms;
tied embeddings by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.choices import NormKind
from memfit.core.families._config import opt_bool
from memfit.core.families._decoder import decoder_spec, dense_mlp
from memfit.core.families._layout import STARCODER2
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A StarCoder2 ModelSpec from its config.json."""
    bias = opt_bool(config, "use_bias", default=True, name=name)
    mlp = dense_mlp(config, name=name, bias=bias, gated=False)
    return decoder_spec(config, name=name, source=source, family="starcoder2", tie_default=True,
                        qkv_bias=bias, out_bias=bias, mlp_for_layer=lambda _index: mlp, norm=NormKind.LAYER,
                        final_norm=NormKind.LAYER, window_on_every_layer=True, modules=STARCODER2)
