"""Qwen3-MoE (30B-A3B, 235B-A22B): Qwen3 attention (per-head QK norms) with routed experts, no shared expert.

Source: transformers 5.17.0 models/qwen3_moe: experts of moe_intermediate_size as fused 3-D Parameters;
router `gate` (E, h); dense layers (mlp_only_layers, decoder_sparse_step) use intermediate_size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.choices import QkNorm
from memfit.core.families._config import req_int
from memfit.core.families._decoder import decoder_spec, qwen_moe_windows
from memfit.core.families._moe import mlp_by_layer, moe_block, sparse_every
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Qwen3-MoE ModelSpec from its config.json."""
    moe = moe_block(config, name=name, expert_width=req_int(config, "moe_intermediate_size", name=name))
    is_sparse = sparse_every(config, name=name)
    return decoder_spec(config, name=name, source=source, family="qwen3_moe", qk_norm=QkNorm.PER_HEAD,
                        windows=qwen_moe_windows(config, name=name, every_other=False),
                        mlp_for_layer=mlp_by_layer(config, name=name, moe=moe, is_sparse=is_sparse))
