"""Plain-data encoding of core dataclasses for JSON: enums as values, Fractions as "p/q" strings, Quants
by name, tuples as lists; and the typed decoding back, driven by the dataclasses' own type hints.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from fractions import Fraction
from typing import Any, TypeVar

from memfit.core.dtypes import DType, Quant, parse_dtype, quant
from memfit.core.errors import InvalidWorkload

T = TypeVar("T")


def encode(value: Any) -> Any:
    """JSON-ready plain data for a core value (dataclass, enum, Fraction, Quant, tuple, scalar)."""
    if isinstance(value, Quant) and not value.checkpoint:
        return value.name     # a named format; a checkpoint's format is encoded field by field
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Fraction):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [encode(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(encode(v) for v in value)
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    return value


def decode(cls: type[T], data: Any) -> T:
    """The instance of dataclass `cls` encoded as `data`; unknown keys raise InvalidWorkload."""
    return typing.cast(T, _decode_as(cls, data, cls.__name__))


def _decode_dataclass(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise InvalidWorkload(f"{where} must be an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise InvalidWorkload(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    kwargs = {k: _decode_as(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise InvalidWorkload(f"{where}: {err}") from err


def _decode_as(hint: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if data is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _decode_as(option, data, where)
            except (InvalidWorkload, ValueError, TypeError) as err:
                errors.append(str(err))
        raise InvalidWorkload(errors[0] if errors else f"{where}: bad value {data!r}")
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(data, (list, tuple)):
            raise InvalidWorkload(f"{where} must be a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode_as(args[0], v, where) for v in data)
        return tuple(_decode_as(a, v, where) for a, v in zip(args, data, strict=True))
    if origin is frozenset:
        if not isinstance(data, (list, tuple)):
            raise InvalidWorkload(f"{where} must be a list")
        return frozenset(_decode_as(typing.get_args(hint)[0], v, where) for v in data)
    if hint is Quant:
        return _decode_dataclass(Quant, data, where) if isinstance(data, dict) else quant(data)
    if hint is DType:       # the aliases the CLI takes too (float16, bfloat16, ...)
        if not isinstance(data, str):
            raise InvalidWorkload(f"{where} must be a dtype name such as bf16")
        return parse_dtype(data, field=where)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        parse = getattr(hint, "parse", None)
        return parse(data, field=where) if parse else hint(data)
    if hint is Fraction:    # bounded: Fraction("1e999999999") would build a billion-digit integer
        from memfit.core.workload import parse_fraction

        return parse_fraction(data, where)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _decode_dataclass(hint, data, where)
    if hint is bool:
        if not isinstance(data, bool):
            raise InvalidWorkload(f"{where}={data!r} must be true or false")
        return data
    if hint is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise InvalidWorkload(f"{where}={data!r} must be an integer")
        return data
    if hint is str:
        if not isinstance(data, str):
            raise InvalidWorkload(f"{where}={data!r} must be a string")
        return data
    if hint is Any or hint is object:
        return data
    raise InvalidWorkload(f"{where}: cannot decode {hint!r}")
