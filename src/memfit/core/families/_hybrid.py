"""Shared reads for hybrid attention / state-space families: the per-layer block types and Mamba-2 mixers.

transformers 5.17 names a layer's block "linear_attention" (a Mamba mixer), "full_attention", "mlp" or
"moe"; older Hub configs say "mamba" and "attention". Source: transformers 5.17.0 configuration_utils.py
`_LEGACY_LAYER_TYPE_REMAP`; NemotronHConfig._pattern_to_list ("M", "*", "-", "E").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.errors import ConfigError
from memfit.core.families._config import opt_list

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
