"""IBM Granite-4.0-H (granitemoehybrid): Mamba-2 mixers interleaved with GQA attention, each layer followed
by a shared gated MLP and, when num_local_experts > 0, routed experts added to it.

Source: transformers 5.17.0 models/granitemoehybrid: GraniteMoeHybridDecoderLayer builds `mamba`
(GraniteMoeHybridMambaLayer) for "linear_attention" layers and `self_attn` otherwise; every layer has
`shared_mlp` (input_linear h → 2·shared_intermediate_size, output_linear) and `block_sparse_moe` (router
`weight` (E, h); experts gate_up_proj (E, 2·I, h), down_proj (E, h, I)) when num_local_experts > 0.
GraniteMoeHybridConfig: layer_types (alias layers_block_type) default all "linear_attention";
mamba_d_head "auto" = mamba_expand·hidden_size // mamba_n_heads; position_embedding_type "rope" adds a
rotary embedding, None (the default) none. GraniteMoeHybridForCausalLM divides the logits by
logits_scaling out of place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from memfit.core.errors import ConfigError
from memfit.core.families._config import opt_int, opt_str, req_int
from memfit.core.families._decoder import decoder_spec
from memfit.core.families._hybrid import ATTENTION, MAMBA, block_types, ibm_mamba
from memfit.core.families._layout import GRANITE_HYBRID
from memfit.core.spec import LayerSpec, MlpSpec, ModelSource, ModelSpec, MoeSpec


def _mlp(config: Mapping[str, Any], *, name: str) -> MlpSpec | MoeSpec:
    activation = opt_str(config, "hidden_act", default="silu", name=name)
    shared = MlpSpec(intermediate_size=opt_int(config, "shared_intermediate_size", default=1024, name=name)
                     or 1024, gated=True, activation=activation)
    num_experts = opt_int(config, "num_local_experts", default=8, name=name) or 0
    if not num_experts:
        return shared
    top_k = opt_int(config, "num_experts_per_tok", default=2, name=name)
    # 0 is not "unset": MoeSpec refuses it for a MoE layer (dense releases publish 0 with 0 experts)
    expert = MlpSpec(intermediate_size=req_int(config, "intermediate_size", name=name), gated=True,
                     activation=activation)
    return MoeSpec(num_experts=num_experts, top_k=2 if top_k is None else top_k, expert=expert,
                   num_shared_experts=1, shared_expert=shared, shared_expert_is_mlp=True)


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Granite-4.0-H ModelSpec from its config.json."""
    num_layers = req_int(config, "num_hidden_layers", name=name)
    types = block_types(config, "layer_types", "layers_block_type", name=name,
                        allowed=frozenset({MAMBA, ATTENTION}), default=[MAMBA] * num_layers)
    if len(types) != num_layers:
        raise ConfigError(f"{name}: config field 'layer_types' has {len(types)} entries for "
                          f"num_hidden_layers={num_layers}")
    rotary = opt_str(config, "position_embedding_type", default="", name=name) == "rope"
    mlp = _mlp(config, name=name)
    base = decoder_spec(config, name=name, source=source, family="granitemoehybrid",
                        mlp_for_layer=lambda _i: mlp, modules=GRANITE_HYBRID, logits_scaled=True,
                        rotary_buffer=rotary,
                        attention_for_layer=lambda _i, att: dataclasses.replace(att, rotary=rotary))
    attention_layer = base.layers[0]      # decoder_spec shares one object among equal layers
    mamba_layer = LayerSpec(attention=None, mamba=ibm_mamba(config, name=name), mlp=mlp)
    return dataclasses.replace(base, layers=tuple(attention_layer if kind == ATTENTION else mamba_layer
                                                  for kind in types))
