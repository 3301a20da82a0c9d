"""config.json text → dict → ModelSpec, shared by every source: one-line errors, the meta-device fallback.

Every source (catalog, local files, GGUF, the Hub) ends here: `parse_config` turns JSON text into a dict
with line-numbered errors, and `build_spec` maps it through the family registry
(`memfit.core.families.spec_from_config`). An unmapped `model_type` falls back to transformers on the meta
device (`memfit.trace.meta`) when the [trace] extra is installed, and never runs a repo's own code unless
`trust_remote_code` was asked for.

Every input edge is bounded before work is sized by it: local files are read only when they are regular
files (`regular_file_size`: never a FIFO, a device or a socket, which could block or never end), at most
`MAX_CONFIG_BYTES` of config; JSON (`load_json`) is at most `MAX_JSON_DEPTH` deep, its integers at most
`MAX_JSON_INT_DIGITS` digits and its numbers finite; the model dimensions are then bounded by
`memfit.core.limits` as the family modules read them.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from memfit.core.errors import ConfigError, MemfitError, ModelNotFound, UnsupportedArchitecture
from memfit.core.families import spec_from_config, supported_families
from memfit.core.spec import ModelSource, ModelSpec
from memfit.sources.not_causal import not_causal_line
from memfit.sources.quant_config import checkpoint_quant

LOCAL_HINT = "give a config.json, a model folder or a .gguf file"
"""What a local model reference may be, for not-found messages."""

_META_MODULE = "memfit.trace.meta"
"""The [trace] extra's meta-device builder. Named as a string: sources sits below trace in the layer
contract, so this optional, upward step is a run-time lookup, taken only for an unmapped model_type."""

_META_SPEC_FUNCTION = "spec_on_meta"
"""`spec_on_meta(config, *, name, source, trust_remote_code) -> (ModelSpec, assumptions)` in
`memfit.trace.meta`; the assumptions are kept on `ModelSpec.assumptions`."""


MAX_CONFIG_BYTES = 4 * 2**20
"""Largest config.json read (bytes): 4 MiB. Published configs are 1-20 KB (the largest in the bundled
catalog, Phi-3.5-mini-instruct with its long-RoPE factor lists, is 3.4 KB); 4 MiB is 200× that and parses
in milliseconds."""

MAX_JSON_DEPTH = 64
"""Deepest JSON nesting accepted (objects and arrays): configs nest 2-5 deep (quantization_config →
config_groups → group → weights); 64 is far beyond that and far below Python's recursion limit (1,000)."""

MAX_JSON_INT_DIGITS = 100
"""Most digits of a JSON integer: config integers fit in 64 bits (20 digits); a longer one is refused
before `int()` parses it (Python refuses past 4,300 digits with a ValueError) or arithmetic grows with it."""

_FILE_KINDS = (
    (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
)
"""What a path that is not a regular file is, for the one-line error."""


def file_kind(mode: int) -> str:
    """What a `stat` mode that is not a regular file is: "a FIFO (named pipe)", "a character device", ..."""
    return next((what for test, what in _FILE_KINDS if test(mode)), "not a regular file")


def regular_file_size(path: Path) -> int | None:
    """The size in bytes of `path`, a regular file after following symlinks; None when nothing is there.

    Only `stat` is called: nothing is opened, so a FIFO, a device or a socket is refused without blocking.

    Raises:
        ConfigError: `path` exists but is not a regular file (a FIFO, a device such as /dev/zero, a socket,
            a folder), or cannot be examined.
    """
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as err:  # a symlink loop, a permission denied on a parent folder, a name too long
        raise ConfigError(f"{path}: cannot examine it ({err.strerror or err})") from err
    if stat.S_ISREG(status.st_mode):
        return status.st_size
    kind = file_kind(status.st_mode)
    target = os.path.realpath(path)
    where = f" ({target})" if target != os.path.abspath(path) else ""
    raise ConfigError(f"{path}: is {kind}{where}, not a regular file; memfit reads model files only")


def read_regular_file(path: Path, *, max_bytes: int, what: str) -> bytes:
    """The bytes of the regular file `path`, refused before reading when larger than `max_bytes`.

    The file is opened non-blocking and checked again once open, so a FIFO swapped in after the first check
    is refused too, never waited on.

    Raises:
        ModelNotFound: nothing is at `path`.
        ConfigError: not a regular file, larger than `max_bytes`, or unreadable.
    """
    size = regular_file_size(path)
    if size is None:
        raise ModelNotFound(f"no such file: {path}; {LOCAL_HINT}")
    if size > max_bytes:
        raise ConfigError(
            f"{path}: {size:,} B is larger than any {what} (limit {max_bytes:,} B); wrong file?"
        )
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it ({err.strerror or err})") from err
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ConfigError(f"{path}: is not a regular file (it changed while memfit opened it)")
        raw = file.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ConfigError(f"{path}: larger than any {what} (limit {max_bytes:,} B); wrong file?")
    return raw


def load_json(text: str | bytes, *, origin: str) -> Any:
    """The JSON value in `text`, bounded: at most MAX_JSON_DEPTH deep, integers of at most
    MAX_JSON_INT_DIGITS digits, finite numbers only (no NaN, Infinity or 1e999).

    A refused number is held as a `_Refused` stand-in until the object holding it is built, so the error
    names its field: `config.json: field 'hidden_size' is Infinity; ...`.

    Raises:
        ConfigError: JSON beyond a bound, naming `origin` (and the field where there is one).
        ValueError: malformed text (json.JSONDecodeError, UnicodeDecodeError), for the caller to word.
    """
    def refuse_in_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in NON_FINITE_FIELDS:
                value = _as_floats(value)
            refused = _refused_in(value)
            if refused is not None:
                raise ConfigError(f"{origin}: field {shown_key(key)} is {refused}; {_NUMBERS_HINT}")
            out[key] = value
        return out

    try:
        value = json.loads(text, parse_int=_bounded_int, parse_float=_finite_float,
                           parse_constant=_NonFinite, object_pairs_hook=refuse_in_object)
    except RecursionError as err:
        raise ConfigError(_too_deep(origin)) from err
    _check_nesting(value, origin=origin)
    return value


_NUMBERS_HINT = f"JSON model files hold finite numbers and integers of at most {MAX_JSON_INT_DIGITS} digits"


class _Refused(str):
    """A JSON number memfit refuses (NaN, Infinity, 1e999, a 5,000-digit integer), as the error shows it."""

    __slots__ = ()


class _NonFinite(_Refused):
    """Python's NaN / Infinity / -Infinity literals: refused as any bad number, but in NON_FINITE_FIELDS."""

    __slots__ = ()


NON_FINITE_FIELDS = frozenset({"time_step_limit"})
"""Config fields transformers writes with an infinite bound, which memfit never reads: Mamba-2 and hybrid
configs (Mamba2Config, BambaConfig, GraniteMoeHybridConfig, NemotronHConfig, FalconH1Config; transformers
5.17) default time_step_limit=(0.0, float("inf")), which json.dumps writes as [0.0, Infinity]. Their
NaN / Infinity literals are read as floats; anywhere else they are refused naming the field."""


def _as_floats(value: Any) -> Any:
    """`value` (a field of NON_FINITE_FIELDS) with its NaN / Infinity literals as floats."""
    if isinstance(value, _NonFinite):
        return float(value)
    if isinstance(value, list):
        return [float(item) if isinstance(item, _NonFinite) else item for item in value]
    return value


def shown_key(key: str) -> str:
    """A JSON key as quoted in an error line, cut short when long."""
    return repr(key) if len(key) <= 60 else f"{key[:60]!r}..."


def _refused_in(value: Any) -> _Refused | None:
    """The refused number `value` is, or the first one directly in the list `value` is."""
    if isinstance(value, _Refused):
        return value
    if isinstance(value, list):
        return next((item for item in value if isinstance(item, _Refused)), None)
    return None


def _bounded_int(digits: str) -> int | _Refused:
    num_digits = len(digits.lstrip("-"))
    if num_digits > MAX_JSON_INT_DIGITS:
        return _Refused(f"an integer of {num_digits:,} digits (limit {MAX_JSON_INT_DIGITS})")
    return int(digits)


def _finite_float(text: str) -> float | _Refused:
    number = float(text)
    return number if math.isfinite(number) else _Refused(f"{text[:40]}, beyond the range of a float")


def _too_deep(origin: str) -> str:
    return f"{origin}: JSON nested deeper than {MAX_JSON_DEPTH} levels; not a model file"


def _check_nesting(value: Any, *, origin: str) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH, and a refused number deep in arrays; no recursion."""
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, _Refused):
            raise ConfigError(f"{origin}: a number in an array is {node}; {_NUMBERS_HINT}")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth >= MAX_JSON_DEPTH:
            raise ConfigError(_too_deep(origin))
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list, _Refused)))


def parse_config(text: str, *, origin: str) -> dict[str, Any]:
    """The JSON object in `text`, bounded as `load_json`; `origin` names the file in the one-line error.

    Raises:
        ConfigError: not JSON, JSON beyond a bound, longer than MAX_CONFIG_BYTES, or not an object.
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{origin}: {len(text):,} characters is larger than any config.json "
                          f"(limit {MAX_CONFIG_BYTES:,} B); wrong file?")
    try:
        config = load_json(text, origin=origin)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{origin} line {err.lineno} column {err.colno}: {err.msg}; fix the JSON") from err
    if not isinstance(config, dict):
        raise ConfigError(f"{origin}: expected a JSON object, got {type(config).__name__}")
    return config


def read_config(path: Path, *, origin: str | None = None) -> tuple[dict[str, Any], str]:
    """The parsed config.json at `path` and its text; errors name `origin` (default: the path).

    Raises:
        ModelNotFound: the file does not exist.
        ConfigError: not a regular file, larger than MAX_CONFIG_BYTES, not UTF-8, or not a bounded JSON
            object (`parse_config`).
    """
    raw = read_regular_file(path, max_bytes=MAX_CONFIG_BYTES, what="config.json")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); is it really a config.json?") from err
    return parse_config(text, origin=origin or str(path)), text


def quant_method(config: dict[str, Any]) -> str | None:
    """config.json's `quantization_config.quant_method` (gptq, awq, fp8, compressed-tensors, ...), if any."""
    quantization = config.get("quantization_config")
    if isinstance(quantization, dict):
        method = quantization.get("quant_method")
        return str(method) if method is not None else None
    return None


def build_spec(
    config: dict[str, Any], *, name: str, source: ModelSource, trust_remote_code: bool = False,
    origin: str | None = None,
) -> ModelSpec:
    """Map a config dict to a ModelSpec: the family registry, else transformers on the meta device.

    `origin` (a local file's path) replaces the model name at the head of a ConfigError, so the one line
    names the file to fix; without it the line names the model.

    Raises:
        ConfigError: no model_type, or a required field missing, of the wrong type or beyond its bound.
        UnsupportedArchitecture: an unmapped model_type and no [trace] extra, or a repo that needs its
            own code without `trust_remote_code`.
    """
    try:
        spec = _build_spec(config, name=name, source=source, trust_remote_code=trust_remote_code)
        stored = checkpoint_quant(config, name=name, checkpoint_dtype=spec.checkpoint_dtype)
        return spec if stored is None else dataclasses.replace(spec, stored_quant=stored)
    except ConfigError as err:
        if origin is None:
            raise
        message = str(err).removeprefix(f"{name}: ")
        raise ConfigError(f"{origin}: {message}") from err


def _build_spec(
    config: dict[str, Any], *, name: str, source: ModelSource, trust_remote_code: bool
) -> ModelSpec:
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ConfigError(f"{name}: config.json has no model_type; is it a transformers model config?")
    if model_type not in supported_families():
        refusal = not_causal_line(config, name=name)
        if refusal is not None:  # an encoder or encoder-decoder: say so before any meta-device build
            raise UnsupportedArchitecture(refusal)
    try:
        return spec_from_config(config, name=name, source=source)
    except UnsupportedArchitecture as err:
        return _spec_on_meta(config, name=name, source=source, trust_remote_code=trust_remote_code, err=err)
    except MemfitError:
        raise
    except KeyError as err:
        raise ConfigError(f"{name}: config.json ({model_type}) lacks the required field {err}") from err
    except (TypeError, ValueError, ArithmeticError) as err:
        raise ConfigError(f"{name}: config.json ({model_type}) has a field of the wrong type: {err}") from err


def _spec_on_meta(
    config: dict[str, Any], *, name: str, source: ModelSource, trust_remote_code: bool,
    err: UnsupportedArchitecture,
) -> ModelSpec:
    model_type = config["model_type"]
    if "auto_map" in config and not trust_remote_code:
        raise UnsupportedArchitecture(
            f"{name}: model_type {model_type!r} ships its own code (auto_map in config.json); "
            "pass --trust-remote-code (trust_remote_code=True) to count it with transformers on the meta "
            "device"
        ) from err
    without_trace = UnsupportedArchitecture(
        f"{err}; or pip install 'memfit[trace]' to count it with transformers on the meta device"
    )
    try:
        meta = importlib.import_module(_META_MODULE)
    except ImportError:
        raise without_trace from err
    build = getattr(meta, _META_SPEC_FUNCTION, None)
    if build is None:
        raise without_trace from err
    try:
        built: tuple[ModelSpec, tuple[str, ...]] = build(
            config, name=name, source=source, trust_remote_code=trust_remote_code
        )
    except ImportError as missing:  # MissingExtra is an ImportError: no torch or transformers
        raise without_trace from missing
    spec, assumptions = built
    return dataclasses.replace(spec, assumptions=(*spec.assumptions, *assumptions))
