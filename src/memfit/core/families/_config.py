"""Typed reads of config.json fields: each failure is one ConfigError line naming the field.

Family modules read configs only through these helpers, so a missing or ill-typed field always reads
`<model>: config field 'num_attention_heads' is missing` rather than a KeyError or TypeError. Every integer
is checked against its field's bound in `memfit.core.limits` as it is read, and `check_shape_fields` checks
the fields every config shares before any family mapping: a config is refused before it sizes any work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from memfit.core.choices import NormKind
from memfit.core.dtypes import DType, parse_dtype
from memfit.core.errors import ConfigError, InvalidWorkload
from memfit.core.limits import MAX_NUM_LAYERS, SHAPE_FIELDS, Bound, field_bound, shown

_MISSING = object()



def _lookup(config: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, Any]:
    for key in keys:
        if key in config and config[key] is not None:
            return key, config[key]
    return keys[0], _MISSING


def req_int(config: Mapping[str, Any], *keys: str, name: str) -> int:
    """The first present of `keys` as a positive int; ConfigError naming the field otherwise."""
    key, value = _lookup(config, keys)
    if value is _MISSING:
        raise ConfigError(f"{name}: config field {key!r} is missing")
    return _as_int(value, key=key, name=name)


def opt_int(config: Mapping[str, Any], *keys: str, default: int | None, name: str) -> int | None:
    """The first present of `keys` as an int, or `default` when none is present (or all are null)."""
    key, value = _lookup(config, keys)
    if value is _MISSING:
        return default
    return _as_int(value, key=key, name=name)


def _as_int(value: Any, *, key: str, name: str) -> int:
    """`value` as the integer config field `key`: an int (not a bool, not a float) within its bound."""
    _check_shape_field(value, key=key, shown_key=key, name=name)
    return int(value)


def _check_bound(value: int, *, key: str, bound: Bound, name: str) -> None:
    if not bound.admits(value):
        raise ConfigError(
            f"{name}: config field {key!r}={shown(value)} is out of range {bound.minimum}..{bound.maximum:,} "
            f"({bound.limit}); a corrupt config?"
        )


def check_shape_fields(config: Mapping[str, Any], *, name: str) -> None:
    """Check the fields every config shares (limits.SHAPE_FIELDS), here and in nested `*_config` objects.

    Runs before any family mapping or the meta-device build, whatever the model_type: an integer must be in
    its bound; a per-layer list (some unmapped families) must hold at most MAX_NUM_LAYERS such integers.

    Raises:
        ConfigError: naming the field and the value.
    """
    scopes = [("", config)] + [
        (f"{key}.", nested) for key, nested in config.items()
        if isinstance(key, str) and key.endswith("_config") and isinstance(nested, Mapping)
    ]
    for prefix, scope in scopes:
        for key in sorted(SHAPE_FIELDS.intersection(scope)):
            value = scope[key]
            values = value if isinstance(value, list) and len(value) <= MAX_NUM_LAYERS else [value]
            for item in values:
                if item is not None:
                    _check_shape_field(item, key=key, shown_key=prefix + key, name=name)


def _check_shape_field(value: Any, *, key: str, shown_key: str, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: config field {shown_key!r} must be an integer, got {shown(value)}")
    _check_bound(value, key=shown_key, bound=field_bound(key), name=name)


def opt_bool(config: Mapping[str, Any], *keys: str, default: bool, name: str) -> bool:
    """The first present of `keys` as a bool, or `default`."""
    key, value = _lookup(config, keys)
    if value is _MISSING:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"{name}: config field {key!r} must be true or false, got {shown(value)}")
    return value


def opt_str(config: Mapping[str, Any], *keys: str, default: str, name: str) -> str:
    """The first present of `keys` as a str, or `default`."""
    key, value = _lookup(config, keys)
    if value is _MISSING:
        return default
    if not isinstance(value, str):
        raise ConfigError(f"{name}: config field {key!r} must be a string, got {shown(value)}")
    return value


def opt_list(config: Mapping[str, Any], key: str, *, name: str) -> list[Any] | None:
    """`config[key]` as a list, or None when absent or null."""
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise ConfigError(f"{name}: config field {key!r} must be a list, got {type(value).__name__}")
    return value


def opt_objects(config: Mapping[str, Any], *keys: str, name: str) -> tuple[Mapping[str, Any] | None, ...]:
    """The nested config objects `keys` (None where absent or null), in order.

    Raises:
        ConfigError: one of them is present but not a JSON object (one line naming all of `keys`).
    """
    values = tuple(config.get(key) for key in keys)
    if any(value is not None and not isinstance(value, Mapping) for value in values):
        fields = " and ".join(repr(key) for key in keys)
        raise ConfigError(f"{name}: config fields {fields} must be objects")
    return values


class TowerShape(TypedDict):
    """The VisionSpec fields `tower_shape` reads."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    patch_size: int
    image_size: int
    num_channels: int


def tower_shape(vision: Mapping[str, Any], *, name: str) -> TowerShape:
    """A vision tower's sizes as VisionSpec fields, from the vision_config keys CLIP, SigLIP and Pixtral
    share (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, patch_size, image_size,
    num_channels), each bounded as any config integer."""
    return TowerShape(hidden_size=req_int(vision, "hidden_size", name=name),
                      intermediate_size=req_int(vision, "intermediate_size", name=name),
                      num_layers=req_int(vision, "num_hidden_layers", name=name),
                      num_heads=req_int(vision, "num_attention_heads", name=name),
                      patch_size=req_int(vision, "patch_size", name=name),
                      image_size=req_int(vision, "image_size", name=name),
                      num_channels=req_int(vision, "num_channels", name=name))


class PackedTowerShape(TypedDict):
    """The VisionSpec fields `packed_tower_shape` reads."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    patch_size: int
    spatial_merge_size: int
    num_channels: int
    temporal_patch_size: int


def packed_tower_shape(vision: Mapping[str, Any], *, name: str) -> PackedTowerShape:
    """A Qwen-VL tower's sizes as VisionSpec fields, from the vision_config keys Qwen2.5-VL and Qwen3-VL
    share (hidden_size, intermediate_size, depth, num_heads, patch_size, spatial_merge_size, in_channels,
    temporal_patch_size), each bounded as any config integer."""
    return PackedTowerShape(hidden_size=req_int(vision, "hidden_size", name=name),
                            intermediate_size=req_int(vision, "intermediate_size", name=name),
                            num_layers=req_int(vision, "depth", name=name),
                            num_heads=req_int(vision, "num_heads", name=name),
                            patch_size=req_int(vision, "patch_size", name=name),
                            spatial_merge_size=req_int(vision, "spatial_merge_size", name=name),
                            num_channels=req_int(vision, "in_channels", name=name),
                            temporal_patch_size=req_int(vision, "temporal_patch_size", name=name))


def checkpoint_dtype(config: Mapping[str, Any], *, name: str, default: DType = DType.FP32) -> DType:
    """The stored weight dtype from `dtype` or `torch_dtype`; fp32 when neither is given.

    Source: transformers PretrainedConfig (`torch_dtype` is the v4 spelling of `dtype`); a checkpoint
    without either was saved in fp32, the torch default (GPT-2, OPT-era configs).
    """
    key, value = _lookup(config, ("dtype", "torch_dtype"))
    if value is _MISSING:
        return default
    try:
        if not isinstance(value, str):
            raise InvalidWorkload(f"{key} must be a string")
        return parse_dtype(value, field=key)
    except InvalidWorkload as err:
        raise ConfigError(f"{name}: config field {key!r}={shown(value)} is not a known dtype") from err


def layer_norm_kind(*, bias: bool) -> NormKind:
    """LayerNorm with or without its bias vector."""
    return NormKind.LAYER if bias else NormKind.LAYER_NO_BIAS
