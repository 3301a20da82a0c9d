"""NVIDIA Nemotron-H (Nemotron-Nano-9B-v2, Nemotron-H-8B/47B/56B, Nemotron-3-Nano): single-block layers, each
one norm and one mixer: a Mamba-2 mixer ("M"), GQA attention without positional rotation ("*"), a
non-gated squared-ReLU MLP ("-") or routed non-gated experts with a shared expert ("E").

Source: transformers 5.17.0 models/nemotron_h: NemotronHBlock (norm + MIXER_TYPES[block_type]);
NemotronHMamba2Mixer (d_inner = mamba_num_heads × mamba_head_dim; in_proj/out_proj bias `use_bias`; a
grouped gated RMSNorm over d_inner); NemotronHAttention (q/k/v/o without bias, no rotary embedding);
NemotronHMLP (up_proj, down_proj, mlp_bias); NemotronHMoE (experts up_proj (E, I, h), down_proj (E, h, I);
router `gate` (E, h) with an fp32 e_score_correction_bias buffer; shared_experts an NemotronHMLP of
moe_shared_expert_intermediate_size). NemotronHConfig: the layer list comes from layers_block_type /
layer_types, else hybrid_override_pattern, else ["linear_attention", "moe", "full_attention", "mlp"];
num_hidden_layers is ignored; mamba_* spellings are aliases of n_groups, conv_kernel, chunk_size,
use_conv_bias.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.errors import ConfigError
from memfit.core.families._config import checkpoint_dtype, opt_bool, opt_int, opt_str, req_int
from memfit.core.families._decoder import config_dropouts, default_attention
from memfit.core.families._hybrid import ATTENTION, MAMBA, MLP, MOE, block_types, pattern_types
from memfit.core.families._layout import NEMOTRON_H
from memfit.core.spec import AttentionSpec, LayerSpec, MambaSpec, MlpSpec, ModelSource, ModelSpec, MoeSpec

DEFAULT_LAYER_TYPES = [MAMBA, MOE, ATTENTION, MLP]
"""NemotronHConfig's layer list when the config gives none. Source: NemotronHConfig.__post_init__."""


def _types(config: Mapping[str, Any], *, name: str) -> tuple[str, ...]:
    if "hybrid_override_pattern" in config and not any(k in config for k in ("layers_block_type",
                                                                             "layer_types")):
        return pattern_types(config["hybrid_override_pattern"], name=name)
    return block_types(config, "layers_block_type", "layer_types", name=name,
                       allowed=frozenset({MAMBA, ATTENTION, MLP, MOE}), default=DEFAULT_LAYER_TYPES)


def _mamba(config: Mapping[str, Any], *, name: str) -> MambaSpec:
    return MambaSpec(
        num_heads=opt_int(config, "mamba_num_heads", default=128, name=name) or 128,
        head_dim=opt_int(config, "mamba_head_dim", default=64, name=name) or 64,
        d_state=opt_int(config, "ssm_state_size", default=128, name=name) or 128,
        n_groups=opt_int(config, "mamba_n_groups", "n_groups", default=8, name=name) or 8,
        conv_kernel=opt_int(config, "mamba_d_conv", "conv_kernel", default=4, name=name) or 4,
        chunk_size=opt_int(config, "mamba_chunk_size", "chunk_size", default=128, name=name) or 128,
        conv_bias=opt_bool(config, "mamba_conv_bias", "use_conv_bias", default=True, name=name),
        proj_bias=opt_bool(config, "use_bias", default=False, name=name),
    )


def _top_k(config: Mapping[str, Any], *, name: str) -> int:
    """Experts per token; 0 is kept (not read as unset), so MoeSpec refuses it in one line."""
    top_k = opt_int(config, "num_experts_per_tok", default=2, name=name)
    return 2 if top_k is None else top_k


def _moe(config: Mapping[str, Any], *, name: str, activation: str, bias: bool) -> MoeSpec:
    if config.get("moe_latent_size") is not None:
        raise ConfigError(f"{name}: moe_latent_size (latent MoE projections) is not modelled yet")
    shared_width = opt_int(config, "moe_shared_expert_intermediate_size", default=7688, name=name) or 0
    num_shared = opt_int(config, "n_shared_experts", default=1, name=name) or 0
    shared = MlpSpec(intermediate_size=shared_width, gated=False, bias=bias, activation=activation)
    return MoeSpec(
        num_experts=opt_int(config, "n_routed_experts", "num_local_experts", default=8, name=name) or 8,
        top_k=_top_k(config, name=name),
        expert=MlpSpec(intermediate_size=opt_int(config, "moe_intermediate_size", default=7688, name=name)
                       or 7688, gated=False, activation=activation),
        num_shared_experts=num_shared, shared_expert=shared if num_shared else None,
        score_correction_bias=True, routing_weights_fp32=True,
    )


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Nemotron-H ModelSpec from its config.json."""
    hidden = req_int(config, "hidden_size", name=name)
    heads = opt_int(config, "num_attention_heads", default=32, name=name) or 32
    kv_heads = opt_int(config, "num_key_value_heads", default=8, name=name) or heads
    attention = AttentionSpec(num_heads=heads, num_kv_heads=kv_heads, rotary=False,
                              head_dim=opt_int(config, "head_dim", default=128, name=name) or 128)
    activation = opt_str(config, "mlp_hidden_act", default="relu2", name=name)
    bias = opt_bool(config, "mlp_bias", default=False, name=name)
    kinds = _types(config, name=name)
    by_kind: dict[str, LayerSpec] = {}
    for kind in set(kinds):
        match kind:
            case "linear_attention":
                layer = LayerSpec(attention=None, mamba=_mamba(config, name=name), mlp=None,
                                  norms_per_layer=1)
            case "full_attention":
                layer = LayerSpec(attention=attention, mlp=None, norms_per_layer=1)
            case "mlp":
                width = req_int(config, "intermediate_size", name=name)
                layer = LayerSpec(attention=None, norms_per_layer=1,
                                  mlp=MlpSpec(intermediate_size=width, gated=False, bias=bias,
                                              activation=activation))
            case _:
                moe = _moe(config, name=name, activation=activation, bias=bias)
                layer = LayerSpec(attention=None, mlp=moe, norms_per_layer=1)
        by_kind[kind] = layer
    hidden_dropout, attention_dropout = config_dropouts(config)
    return ModelSpec(
        name=name, family="nemotron_h", vocab_size=req_int(config, "vocab_size", name=name),
        hidden_size=hidden,
        max_position_embeddings=opt_int(config, "max_position_embeddings", default=4096, name=name) or 4096,
        tie_word_embeddings=opt_bool(config, "tie_word_embeddings", default=False, name=name),
        layers=tuple(by_kind[kind] for kind in kinds), source=source,
        checkpoint_dtype=checkpoint_dtype(config, name=name), modules=NEMOTRON_H,
        default_attention=default_attention(config, sdpa_supported=True), rotary_buffer=False,
        hidden_dropout=hidden_dropout, attention_dropout=attention_dropout,
    )
