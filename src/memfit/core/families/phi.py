"""Phi-1, Phi-1.5 and Phi-2: biased q/k/v/dense, fc1/fc2 MLP in parallel after one LayerNorm, biased lm_head.

Source: transformers 5.17.0 models/phi: every Linear biased (lm_head too); with `qk_layernorm`, q_layernorm
and k_layernorm are LayerNorm(head_dim) with bias; untied by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.choices import NormKind, QkNorm
from memfit.core.families._config import opt_bool
from memfit.core.families._decoder import decoder_spec, dense_mlp
from memfit.core.families._layout import PHI
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Phi (1, 1.5, 2) ModelSpec from its config.json."""
    mlp = dense_mlp(config, name=name, bias=True, gated=False)
    qk_norm = QkNorm.PER_HEAD if opt_bool(config, "qk_layernorm", default=False, name=name) else QkNorm.NONE
    return decoder_spec(config, name=name, source=source, family="phi", qkv_bias=True, out_bias=True,
                        qk_norm=qk_norm, qk_norm_kind=NormKind.LAYER, mlp_for_layer=lambda _index: mlp,
                        norm=NormKind.LAYER, norms_per_layer=1, parallel_block=True,
                        final_norm=NormKind.LAYER, lm_head_bias=True, modules=PHI)
