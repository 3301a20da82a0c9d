"""Shared reads for mixture-of-experts families: expert counts, top-k and which layers are sparse."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from memfit.core.families._config import opt_int, opt_list, req_int
from memfit.core.spec import MlpSpec, MoeSpec

PEFT_FUSED_EXPERT_FAMILIES = frozenset({
    "mixtral", "minimax", "minimax_m2",
    "afmoe", "deepseek_v2", "deepseek_v3", "deepseek_v32", "dots1", "ernie4_5_moe", "glm4_moe",
    "glm4_moe_lite", "glm_moe_dsa", "glm4v_moe", "longcat_flash", "solar_open", "mellum", "qwen3_moe",
    "qwen3_omni_moe", "qwen3_omni_moe_thinker", "qwen3_next", "hunyuan_v1_moe", "flex_olmo", "olmoe",
    "exaone_moe", "cohere2_moe",
})
"""HF model_types whose fused 3-D experts (and router) peft's target_modules="all-linear" adapts with
lora.ParamWrapper, which refuses lora_dropout != 0 (MoeSpec.peft_wraps_experts). Every other family
(qwen2_moe itself, gpt_oss, ...) keeps its experts frozen and un-adapted under all-linear. Source: peft 0.21
utils/transformers_weight_conversion.py `_MODEL_TO_CONVERSION_PATTERN` keys whose base is "mixtral" or
"qwen2_moe" (the `_MOE_TARGET_MODULE_MAPPING` bases; "qwen2_moe" is no key of its own); checked with
get_peft_model on meta tiny configs: Qwen3-MoE, DeepSeek-V2, Mixtral, OLMoE wrap; Qwen2-MoE, gpt-oss
do not."""


def sparse_every(config: Mapping[str, Any], *, name: str) -> Callable[[int], bool]:
    """Qwen-MoE rule: layer i is sparse when not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0.

    Source: transformers 5.17.0 Qwen2MoeDecoderLayer / Qwen3MoeDecoderLayer.__init__.
    """
    dense_only = set(opt_list(config, "mlp_only_layers", name=name) or [])
    step = opt_int(config, "decoder_sparse_step", default=1, name=name) or 1
    num_experts = opt_int(config, "num_experts", "num_local_experts", default=0, name=name) or 0
    return lambda i: i not in dense_only and num_experts > 0 and (i + 1) % step == 0


def moe_block(config: Mapping[str, Any], *, name: str, expert_width: int, shared: MlpSpec | None = None,
              num_shared: int = 0, **fields: Any) -> MoeSpec:
    """A MoeSpec with SwiGLU experts of `expert_width` from num_experts/num_local_experts/n_routed_experts."""
    activation = str(config.get("hidden_act") or "silu")
    return MoeSpec(
        num_experts=req_int(config, "num_experts", "num_local_experts", "n_routed_experts", name=name),
        top_k=req_int(config, "num_experts_per_tok", "experts_per_token", name=name),
        expert=MlpSpec(intermediate_size=expert_width, gated=True, activation=activation),
        num_shared_experts=num_shared, shared_expert=shared, **fields,
    )


def mlp_by_layer(config: Mapping[str, Any], *, name: str, moe: MoeSpec,
                 is_sparse: Callable[[int], bool]) -> Callable[[int], MlpSpec | MoeSpec]:
    """Layer index → `moe` for sparse layers, else the dense MLP of intermediate_size (read when needed)."""
    num_layers = req_int(config, "num_hidden_layers", name=name)
    if all(is_sparse(i) for i in range(num_layers)):
        return lambda _index: moe
    dense = MlpSpec(intermediate_size=req_int(config, "intermediate_size", name=name), gated=True,
                    activation=str(config.get("hidden_act") or "silu"))
    return lambda i: moe if is_sparse(i) else dense
