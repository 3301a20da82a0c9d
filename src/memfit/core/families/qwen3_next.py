"""Qwen3-Next (80B-A3B): gated DeltaNet linear-attention mixers with output-gated GQA attention on every
`full_attention_interval`-th layer, and a top-k MoE with a sigmoid-gated shared expert on every layer.

Source: transformers 5.17.0 models/qwen3_next: Qwen3NextConfig.__post_init__ (layer_types default:
"full_attention" where (i + 1) % full_attention_interval == 0, interval 4, else "linear_attention";
partial_rotary_factor 0.25); Qwen3NextAttention: q_proj (h → 2·heads·head_dim: the query and a per-head
output gate), k/v/o, q_norm and k_norm over head_dim; Qwen3NextGatedDeltaNet: in_proj_qkvz, in_proj_ba,
conv1d (no bias), dt_bias, A_log, norm (Qwen3NextRMSNormGated over head_v_dim), out_proj;
Qwen3NextSparseMoeBlock: router `gate` (E, h), fused experts, shared_expert (an MLP of
shared_expert_intermediate_size, run first) gated by sigmoid(shared_expert_gate) (Linear(h, 1));
Qwen3NextDecoderLayer: MoE where not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0, else a
Qwen3NextMLP of intermediate_size. Qwen3NextRMSNorm multiplies by (1 + weight) in fp32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from memfit.core.choices import QkNorm
from memfit.core.errors import ConfigError
from memfit.core.families._config import opt_int, req_int
from memfit.core.families._decoder import decoder_spec
from memfit.core.families._hybrid import ATTENTION, MAMBA, block_types, with_mixers
from memfit.core.families._moe import mlp_by_layer, moe_block, sparse_every
from memfit.core.spec import GatedDeltaNetSpec, MlpSpec, ModelSource, ModelSpec

FULL_ATTENTION_INTERVAL = 4
"""Every 4th layer is full attention when layer_types is absent. Source: Qwen3NextConfig.__post_init__."""
PARTIAL_ROTARY_FACTOR = Fraction(1, 4)
"""kwargs.setdefault("partial_rotary_factor", 0.25). Source: Qwen3NextConfig.__post_init__."""


def _rotary_fraction(config: Mapping[str, Any], *, name: str) -> Fraction:
    """partial_rotary_factor, top-level or in rope_parameters (transformers 5 moves it there)."""
    rope = config.get("rope_parameters")
    raw = config.get("partial_rotary_factor")
    if raw is None and isinstance(rope, Mapping):
        raw = rope.get("partial_rotary_factor")
    if raw is None:
        return PARTIAL_ROTARY_FACTOR
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 < raw <= 1:
        raise ConfigError(f"{name}: config field 'partial_rotary_factor' must be a number in (0, 1]")
    return Fraction(str(raw))


def _mixer(config: Mapping[str, Any], *, name: str) -> GatedDeltaNetSpec:
    return GatedDeltaNetSpec(
        num_key_heads=opt_int(config, "linear_num_key_heads", default=16, name=name) or 16,
        num_value_heads=opt_int(config, "linear_num_value_heads", default=32, name=name) or 32,
        key_head_dim=opt_int(config, "linear_key_head_dim", default=128, name=name) or 128,
        value_head_dim=opt_int(config, "linear_value_head_dim", default=128, name=name) or 128,
        conv_kernel=opt_int(config, "linear_conv_kernel_dim", default=4, name=name) or 4,
    )


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Qwen3-Next ModelSpec from its config.json."""
    num_layers = req_int(config, "num_hidden_layers", name=name)
    interval = opt_int(config, "full_attention_interval", default=FULL_ATTENTION_INTERVAL, name=name) \
        or FULL_ATTENTION_INTERVAL
    types = block_types(config, "layer_types", name=name, allowed=frozenset({MAMBA, ATTENTION}),
                        default=[ATTENTION if (i + 1) % interval == 0 else MAMBA for i in range(num_layers)])
    if len(types) != num_layers:
        raise ConfigError(f"{name}: config field 'layer_types' has {len(types)} entries for "
                          f"num_hidden_layers={num_layers}")
    shared = MlpSpec(intermediate_size=req_int(config, "shared_expert_intermediate_size", name=name),
                     gated=True, activation=str(config.get("hidden_act") or "silu"))
    moe = moe_block(config, name=name, expert_width=req_int(config, "moe_intermediate_size", name=name),
                    shared=shared, num_shared=1, shared_expert_gate=True, shared_expert_first=True)
    base = decoder_spec(config, name=name, source=source, family="qwen3_next", qk_norm=QkNorm.PER_HEAD,
                        mlp_for_layer=mlp_by_layer(config, name=name, moe=moe,
                                                   is_sparse=sparse_every(config, name=name)),
                        attention_for_layer=lambda _i, att: dataclasses.replace(att, output_gate=True),
                        rotary_fraction=_rotary_fraction(config, name=name), norm_fp32_output=True)
    mixer = _mixer(config, name=name)
    return with_mixers(base, mixer, (kind == ATTENTION for kind in types))
