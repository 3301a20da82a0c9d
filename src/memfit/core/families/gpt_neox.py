"""GPT-NeoX (Pythia, GPT-NeoX-20B): fused query_key_value, parallel residual, LayerNorms, untied embed_out.

Source: transformers 5.17.0 models/gpt_neox: query_key_value Linear(h, 3h) and dense with
`attention_bias` (default true); dense_h_to_4h/dense_4h_to_h always biased; `use_parallel_residual`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.choices import NormKind
from memfit.core.families._config import opt_bool
from memfit.core.families._decoder import decoder_spec, dense_mlp, read_dims
from memfit.core.families._layout import NEOX
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A GPT-NeoX ModelSpec from its config.json."""
    bias = opt_bool(config, "attention_bias", default=True, name=name)
    mlp = dense_mlp(config, name=name, bias=True, gated=False)
    return decoder_spec(config, name=name, source=source, family="gpt_neox", fused_qkv=True, qkv_bias=bias,
                        out_bias=bias, num_kv_heads=read_dims(config, name=name).num_heads,
                        mlp_for_layer=lambda _index: mlp, norm=NormKind.LAYER,
                        final_norm=NormKind.LAYER, modules=NEOX,
                        parallel_block=opt_bool(config, "use_parallel_residual", default=True, name=name))
