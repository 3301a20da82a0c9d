"""Shared reads for hybrid attention / state-space families: the per-layer block types and Mamba-2 mixers.

transformers 5.17 names a layer's block "linear_attention" (a Mamba mixer), "full_attention", "mlp" or
"moe"; older Hub configs say "mamba" and "attention". Source: transformers 5.17.0 configuration_utils.py
`_LEGACY_LAYER_TYPE_REMAP`; NemotronHConfig._pattern_to_list ("M", "*", "-", "E").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from memfit.core.errors import ConfigError
from memfit.core.families._config import opt_bool, opt_int, opt_list, req_int
from memfit.core.spec import LayerSpec, MambaSpec, MixerSpec, ModelSpec

MAMBA = "linear_attention"
ATTENTION = "full_attention"
MLP = "mlp"
MOE = "moe"
LEGACY_LAYER_TYPES = {"mamba": MAMBA, "attention": ATTENTION}
"""Hub spellings transformers 5.17 remaps (remap_legacy_layer_types)."""
PATTERN_LAYER_TYPES = {"M": MAMBA, "*": ATTENTION, "-": MLP, "E": MOE}
"""Nemotron-H's hybrid_override_pattern characters. Source: NemotronHConfig._pattern_to_list."""


def block_types(config: Mapping[str, Any], *keys: str, name: str, allowed: frozenset[str],
                default: list[str]) -> tuple[str, ...]:
    """Each layer's block type from the first of `keys` present (legacy names remapped), else `default`."""
    for key in keys:
        listed = opt_list(config, key, name=name)
        if listed is None:
            continue
        types = tuple(LEGACY_LAYER_TYPES.get(str(kind), str(kind)) for kind in listed)
        unknown = sorted(set(types) - allowed)
        if unknown:
            raise ConfigError(f"{name}: config field {key!r} has unknown layer types {unknown}; "
                              f"expected {sorted(allowed)}")
        if not types:
            raise ConfigError(f"{name}: config field {key!r} is empty")
        return types
    return tuple(default)


def pattern_types(pattern: Any, *, name: str) -> tuple[str, ...]:
    """Nemotron-H's hybrid_override_pattern ("M-M*-E...") as block types."""
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"{name}: config field 'hybrid_override_pattern' must be a non-empty string")
    unknown = sorted(set(pattern) - set(PATTERN_LAYER_TYPES))
    if unknown:
        raise ConfigError(f"{name}: hybrid_override_pattern has unknown characters {unknown}; "
                          f"expected {''.join(PATTERN_LAYER_TYPES)}")
    return tuple(PATTERN_LAYER_TYPES[char] for char in pattern)


def ibm_mamba(config: Mapping[str, Any], *, name: str) -> MambaSpec:
    """The Mamba-2 mixer of Bamba and Granite-4.0-H from their mamba_* fields (shared defaults).

    mamba_d_head "auto" = mamba_expand × hidden_size // mamba_n_heads. Source: transformers 5.17.0
    BambaConfig / GraniteMoeHybridConfig (field defaults, __post_init__, validate_architecture).
    """
    d_inner = (opt_int(config, "mamba_expand", default=2, name=name) or 2) * req_int(config, "hidden_size",
                                                                                      name=name)
    return mamba2_from_fields(config, name=name, d_inner=d_inner, width="mamba_expand × hidden_size")


def mamba2_from_fields(config: Mapping[str, Any], *, name: str, d_inner: int, width: str,
                       **quirks: Any) -> MambaSpec:
    """A Mamba-2 mixer of width `d_inner` from the mamba_* fields the IBM and TII configs share (their
    defaults: 128 heads, d_head "auto" = d_inner // heads, d_state 256, 1 group, 4 conv taps, chunk 256,
    conv bias, no projection bias); `width` names where d_inner came from, for the error; `quirks` are the
    family's own MambaSpec fields. Source: transformers 5.17.0 BambaConfig, GraniteMoeHybridConfig,
    FalconH1Config field defaults."""
    heads = opt_int(config, "mamba_n_heads", default=128, name=name) or 128
    raw_head = config.get("mamba_d_head", "auto")
    head_dim = d_inner // heads if raw_head in ("auto", None) else req_int(config, "mamba_d_head", name=name)
    if head_dim * heads != d_inner:
        raise ConfigError(f"{name}: mamba_d_head={head_dim} × mamba_n_heads={heads} must equal {width} = "
                          f"{d_inner}")
    return MambaSpec(
        num_heads=heads, head_dim=head_dim,
        d_state=opt_int(config, "mamba_d_state", default=256, name=name) or 256,
        n_groups=opt_int(config, "mamba_n_groups", default=1, name=name) or 1,
        conv_kernel=opt_int(config, "mamba_d_conv", default=4, name=name) or 4,
        chunk_size=opt_int(config, "mamba_chunk_size", default=256, name=name) or 256,
        conv_bias=opt_bool(config, "mamba_conv_bias", default=True, name=name),
        proj_bias=opt_bool(config, "mamba_proj_bias", default=False, name=name),
        **quirks,
    )


def with_mixers(base: ModelSpec, mixer: MixerSpec, keeps_attention: Iterable[bool]) -> ModelSpec:
    """`base` with every layer whose `keeps_attention` entry is False turned into a `mixer` layer (no
    attention, the same MLP). The mixer layers share one object per MLP kind, as decoder_spec shares
    its layers."""
    layers: list[LayerSpec] = []
    mixer_layers: dict[int, LayerSpec] = {}
    for keeps, layer in zip(keeps_attention, base.layers, strict=True):
        if keeps:
            layers.append(layer)
        else:
            key = id(layer.mlp)
            mixer_layers.setdefault(key, dataclasses.replace(layer, attention=None, mamba=mixer))
            layers.append(mixer_layers[key])
    return dataclasses.replace(base, layers=tuple(layers))
