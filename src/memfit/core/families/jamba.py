"""AI21 Jamba: Mamba-1 mixers with GQA attention every `attn_layer_period` layers (from
`attn_layer_offset`), and a top-k MoE in place of the MLP every `expert_layer_period` layers (from
`expert_layer_offset`).

Source: transformers 5.17.0 models/jamba: JambaConfig.layers_block_type ("attention" where
i % attn_layer_period == attn_layer_offset, else "mamba") and layers_num_experts (num_experts where
i % expert_layer_period == expert_layer_offset, else 1: a JambaMLP); mamba_dt_rank "auto" =
ceil(hidden_size / 16) (__post_init__). JambaAttention: q/k/v/o without bias and without any position
embedding (no rotary); JambaMambaMixer: in_proj (h → 2·d_inner), conv1d, x_proj, dt_proj, A_log, D,
dt/b/c_layernorm, out_proj (mamba_proj_bias on in_proj and out_proj); JambaSparseMoeBlock: `router` an
nn.Linear (h → E, no bias), softmax in fp32, top-k weights cast back; JambaExperts fused gate_up_proj
(E, 2·I, h) and down_proj (E, h, I). Norms: input_layernorm and pre_ff_layernorm per layer, final_layernorm.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.errors import ConfigError
from memfit.core.families._config import opt_bool, opt_int, req_int
from memfit.core.families._decoder import decoder_spec
from memfit.core.families._hybrid import with_mixers
from memfit.core.families._moe import moe_block
from memfit.core.spec import Mamba1Spec, MlpSpec, ModelSource, ModelSpec, ModuleNames, MoeSpec

DT_RANK_DIVISOR = 16
"""mamba_dt_rank "auto" = ceil(hidden_size / 16). Source: JambaConfig.__post_init__."""
JAMBA_MODULES = ModuleNames(router="router")
"""JambaSparseMoeBlock names its router `router` (an nn.Linear)."""


def _period(config: Mapping[str, Any], period_key: str, offset_key: str, *, default: tuple[int, int],
            name: str) -> tuple[int, int]:
    """(period, offset) of a layer pattern; JambaConfig.validate_architecture requires offset < period."""
    period = opt_int(config, period_key, default=default[0], name=name) or default[0]
    offset = opt_int(config, offset_key, default=default[1], name=name)
    offset = default[1] if offset is None else offset
    if offset >= period:
        raise ConfigError(f"{name}: {offset_key}={offset} must be smaller than {period_key}={period}")
    return period, offset


def _mixer(config: Mapping[str, Any], *, name: str) -> Mamba1Spec:
    hidden = req_int(config, "hidden_size", name=name)
    raw_rank = config.get("mamba_dt_rank", "auto")
    dt_rank = -(-hidden // DT_RANK_DIVISOR) if raw_rank in ("auto", None) else \
        req_int(config, "mamba_dt_rank", name=name)
    return Mamba1Spec(
        d_inner=(opt_int(config, "mamba_expand", default=2, name=name) or 2) * hidden,
        d_state=opt_int(config, "mamba_d_state", default=16, name=name) or 16,
        conv_kernel=opt_int(config, "mamba_d_conv", default=4, name=name) or 4,
        dt_rank=dt_rank,
        conv_bias=opt_bool(config, "mamba_conv_bias", default=True, name=name),
        proj_bias=opt_bool(config, "mamba_proj_bias", default=False, name=name),
    )


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Jamba ModelSpec from its config.json."""
    attn_period, attn_offset = _period(config, "attn_layer_period", "attn_layer_offset", default=(8, 4),
                                       name=name)
    expert_period, expert_offset = _period(config, "expert_layer_period", "expert_layer_offset",
                                           default=(2, 1), name=name)
    num_experts = opt_int(config, "num_experts", "num_local_experts", default=16, name=name) or 0
    dense = MlpSpec(intermediate_size=req_int(config, "intermediate_size", name=name), gated=True,
                    activation=str(config.get("hidden_act") or "silu"))
    moe: MlpSpec | MoeSpec = dense
    if num_experts > 1:
        moe = moe_block(config, name=name, expert_width=dense.intermediate_size, router_is_module=True)

    def mlp_for_layer(index: int) -> MlpSpec | MoeSpec:
        return moe if index % expert_period == expert_offset else dense

    base = decoder_spec(config, name=name, source=source, family="jamba", qkv_bias=False, out_bias=False,
                        mlp_for_layer=mlp_for_layer, modules=JAMBA_MODULES, rotary=False,
                        rotary_buffer=False)
    mixer = _mixer(config, name=name)
    return with_mixers(base, mixer, (index % attn_period == attn_offset for index in range(len(base.layers))))
