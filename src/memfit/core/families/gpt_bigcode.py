"""GPT-BigCode (StarCoder 1, SantaCoder): GPT-2's layout with multi-query attention.

Source: transformers 5.17.0 models/gpt_bigcode: c_attn is Linear(h, h + 2·head_dim) when `multi_query`
(the default), else Linear(h, 3h); all Linears biased; learned positions; LayerNorms with bias.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.choices import NormKind
from memfit.core.families._config import opt_bool, req_int
from memfit.core.families._decoder import decoder_spec, dense_mlp, read_dims
from memfit.core.families._layout import GPT2
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A GPT-BigCode ModelSpec from its config.json."""
    dims = read_dims(config, name=name)
    mlp = dense_mlp(config, name=name, key="n_inner", bias=True, gated=False, default=4 * dims.hidden_size)
    multi_query = opt_bool(config, "multi_query", default=True, name=name)
    return decoder_spec(config, name=name, source=source, family="gpt_bigcode", tie_default=True,
                        fused_qkv=True, qkv_bias=True, out_bias=True, num_kv_heads=1 if multi_query else None,
                        mlp_for_layer=lambda _index: mlp, norm=NormKind.LAYER, final_norm=NormKind.LAYER,
                        modules=GPT2, rotary_buffer=False, rotary=False, causal_mask_buffer=True,
                        learned_positions=req_int(config, "n_positions", "max_position_embeddings",
                                                  name=name))
