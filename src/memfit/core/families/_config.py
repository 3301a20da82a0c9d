"""Typed reads of config.json fields: each failure is one ConfigError line naming the field.

Family modules read configs only through these helpers, so a missing or ill-typed field always reads
`<model>: config field 'num_attention_heads' is missing` rather than a KeyError or TypeError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.choices import NormKind
from memfit.core.dtypes import DType, parse_dtype
from memfit.core.errors import ConfigError, InvalidWorkload

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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ConfigError(f"{name}: config field {key!r} must be an integer, got {value!r}")
    return int(value)


def opt_bool(config: Mapping[str, Any], *keys: str, default: bool, name: str) -> bool:
    """The first present of `keys` as a bool, or `default`."""
    key, value = _lookup(config, keys)
    if value is _MISSING:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"{name}: config field {key!r} must be true or false, got {value!r}")
    return value


def opt_str(config: Mapping[str, Any], *keys: str, default: str, name: str) -> str:
    """The first present of `keys` as a str, or `default`."""
    key, value = _lookup(config, keys)
    if value is _MISSING:
        return default
    if not isinstance(value, str):
        raise ConfigError(f"{name}: config field {key!r} must be a string, got {value!r}")
    return value


def opt_list(config: Mapping[str, Any], key: str, *, name: str) -> list[Any] | None:
    """`config[key]` as a list, or None when absent or null."""
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise ConfigError(f"{name}: config field {key!r} must be a list, got {type(value).__name__}")
    return value


def checkpoint_dtype(config: Mapping[str, Any], *, name: str, default: DType = DType.FP32) -> DType:
    """The stored weight dtype from `dtype` or `torch_dtype`; fp32 when neither is given.

    Source: transformers PretrainedConfig (`torch_dtype` is the v4 spelling of `dtype`); a checkpoint
    without either was saved in fp32, the torch default (GPT-2, OPT-era configs).
    """
    key, value = _lookup(config, ("dtype", "torch_dtype"))
    if value is _MISSING:
        return default
    try:
        return parse_dtype(str(value), field=key)
    except InvalidWorkload as err:
        raise ConfigError(f"{name}: config field {key!r}={value!r} is not a known dtype") from err


def layer_norm_kind(*, bias: bool) -> NormKind:
    """LayerNorm with or without its bias vector."""
    return NormKind.LAYER if bias else NormKind.LAYER_NO_BIAS
