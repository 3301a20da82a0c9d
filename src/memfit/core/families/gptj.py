"""GPT-J: bias-free q/k/v/out_proj, a biased fc_in/fc_out MLP in parallel, one LayerNorm, biased lm_head.

Source: transformers 5.17.0 models/gptj: `n_inner` null means 4 × n_embd; lm_head = Linear(h, vocab) with
bias; untied by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.choices import NormKind
from memfit.core.families._decoder import decoder_spec, dense_mlp, read_dims
from memfit.core.families._layout import GPTJ
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A GPT-J ModelSpec from its config.json."""
    dims = read_dims(config, name=name)
    mlp = dense_mlp(config, name=name, key="n_inner", bias=True, gated=False, default=4 * dims.hidden_size)
    return decoder_spec(config, name=name, source=source, family="gptj", qkv_bias=False, out_bias=False,
                        num_kv_heads=dims.num_heads, mlp_for_layer=lambda _index: mlp, norm=NormKind.LAYER,
                        norms_per_layer=1, parallel_block=True, final_norm=NormKind.LAYER, lm_head_bias=True,
                        modules=GPTJ, sdpa_supported=False)
