"""Qwen1.5-MoE / Qwen2-MoE: routed experts plus one gated shared expert, q/k/v biases.

Source: transformers 5.17.0 models/qwen2_moe: `qkv_bias` (default true) on q/k/v; shared_expert is an MLP of
shared_expert_intermediate_size gated by shared_expert_gate = Linear(h, 1); dense layers (mlp_only_layers,
decoder_sparse_step) use intermediate_size.
Qwen2MoeModel builds its "sliding_attention" mask on every forward; without use_sliding_window the
config's window becomes 0, so that bool (b, 1, s, kv) mask is never skipped though no layer reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.families._config import opt_bool, opt_int, req_int
from memfit.core.families._decoder import decoder_spec, qwen_moe_windows
from memfit.core.families._moe import mlp_by_layer, moe_block, sparse_every
from memfit.core.spec import MlpSpec, ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Qwen2-MoE ModelSpec from its config.json."""
    shared_width = opt_int(config, "shared_expert_intermediate_size", default=0, name=name) or 0
    shared = MlpSpec(intermediate_size=shared_width, gated=True) if shared_width else None
    moe = moe_block(config, name=name, expert_width=req_int(config, "moe_intermediate_size", name=name),
                    shared=shared, num_shared=1 if shared else 0, shared_expert_gate=shared is not None,
                    shared_expert_first=True)   # Qwen2MoeSparseMoeBlock runs shared_expert before experts
    is_sparse = sparse_every(config, name=name)
    bias = opt_bool(config, "qkv_bias", default=True, name=name)
    return decoder_spec(config, name=name, source=source, family="qwen2_moe", qkv_bias=bias, out_bias=False,
                        windows=qwen_moe_windows(config, name=name, every_other=True),
                        mlp_for_layer=mlp_by_layer(config, name=name, moe=moe, is_sparse=is_sparse),
                        unused_sliding_mask=not opt_bool(config, "use_sliding_window", default=False,
                                                         name=name))
