"""DeepSeek-V2 and V2-Lite: multi-head latent attention (MLA) and shared + routed experts after
`first_k_dense_replace` dense layers.

Source: transformers 5.17.0 models/deepseek_v2: q_proj (q_lora_rank null, V2-Lite) or q_a_proj →
q_a_layernorm → q_b_proj; kv_a_proj_with_mqa (h → kv_lora_rank + qk_rope_head_dim) → kv_a_layernorm →
kv_b_proj; `attention_bias` on q_a_proj, kv_a_proj_with_mqa and o_proj; shared experts are one MLP of
moe_intermediate_size × n_shared_experts; layer i is MoE when i >= first_k_dense_replace.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from memfit.core.families._config import opt_bool, opt_int, req_int
from memfit.core.families._decoder import decoder_spec
from memfit.core.families._moe import mlp_by_layer, moe_block
from memfit.core.spec import AttentionSpec, MlaSpec, MlpSpec, ModelSource, ModelSpec, MoeSpec


def mla(config: Mapping[str, Any], *, name: str) -> MlaSpec:
    """The MLA ranks and head dims of a DeepSeek config."""
    return MlaSpec(
        q_lora_rank=opt_int(config, "q_lora_rank", default=None, name=name),
        kv_lora_rank=req_int(config, "kv_lora_rank", name=name),
        qk_nope_head_dim=req_int(config, "qk_nope_head_dim", name=name),
        qk_rope_head_dim=req_int(config, "qk_rope_head_dim", name=name),
        v_head_dim=req_int(config, "v_head_dim", name=name),
    )


def deepseek_spec(config: Mapping[str, Any], *, name: str, source: ModelSource, family: str,
                  **moe_fields: Any) -> ModelSpec:
    """DeepSeek-V2/V3: MLA attention in every layer, dense MLPs then MoE blocks."""
    latent = mla(config, name=name)
    heads = req_int(config, "num_attention_heads", name=name)
    bias = opt_bool(config, "attention_bias", default=False, name=name)

    def attention(_index: int, base: AttentionSpec) -> AttentionSpec:
        # MLA caches latents, not per-head K/V: num_kv_heads = num_heads, head_dim = the q/k head dim
        return dataclasses.replace(base, num_kv_heads=heads, head_dim=latent.qk_head_dim, mla=latent,
                                   qkv_bias=bias, out_bias=bias)

    expert_width = req_int(config, "moe_intermediate_size", name=name)
    num_shared = opt_int(config, "n_shared_experts", default=0, name=name) or 0
    shared = MlpSpec(intermediate_size=expert_width * num_shared, gated=True) if num_shared else None
    # the gate computes in fp32 and returns fp32 top-k weights, which the experts multiply their rows by
    moe: MoeSpec = moe_block(config, name=name, expert_width=expert_width, shared=shared,
                             num_shared=num_shared, routing_weights_fp32=True, **moe_fields)
    first_moe = opt_int(config, "first_k_dense_replace", default=0, name=name) or 0
    return decoder_spec(config, name=name, source=source, family=family, num_kv_heads=heads,
                        attention_for_layer=attention,
                        mlp_for_layer=mlp_by_layer(config, name=name, moe=moe,
                                                   is_sparse=lambda i: i >= first_moe))


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A DeepSeek-V2 ModelSpec from its config.json."""
    return deepseek_spec(config, name=name, source=source, family="deepseek_v2")
