"""config.json text → dict → ModelSpec, shared by every source: one-line errors, the meta-device fallback.

Every source (catalog, local files, GGUF, the Hub) ends here: `parse_config` turns JSON text into a dict
with line-numbered errors, and `build_spec` maps it through the family registry
(`memfit.core.families.spec_from_config`). An unmapped `model_type` falls back to transformers on the meta
device (`memfit.trace.meta`) when the [trace] extra is installed, and never runs a repo's own code unless
`trust_remote_code` was asked for.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

from memfit.core.errors import ConfigError, MemfitError, ModelNotFound, UnsupportedArchitecture
from memfit.core.families import spec_from_config
from memfit.core.spec import ModelSource, ModelSpec

LOCAL_HINT = "give a config.json, a model folder or a .gguf file"
"""What a local model reference may be, for not-found messages."""

_META_MODULE = "memfit.trace.meta"
"""The [trace] extra's meta-device builder. Named as a string: sources sits below trace in the layer
contract, so this optional, upward step is a run-time lookup, taken only for an unmapped model_type."""

_META_SPEC_FUNCTION = "spec_on_meta"
"""`spec_on_meta(config, *, name, source, trust_remote_code) -> (ModelSpec, assumptions)` in
`memfit.trace.meta`; the assumptions are kept on `ModelSpec.assumptions`."""


def parse_config(text: str, *, origin: str) -> dict[str, Any]:
    """The JSON object in `text`; `origin` names the file in the one-line error.

    Raises:
        ConfigError: not JSON, or JSON that is not an object.
    """
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{origin} line {err.lineno} column {err.colno}: {err.msg}; fix the JSON") from err
    if not isinstance(config, dict):
        raise ConfigError(f"{origin}: expected a JSON object, got {type(config).__name__}")
    return config


def read_config(path: Path) -> tuple[dict[str, Any], str]:
    """The parsed config.json at `path` and its text.

    Raises:
        ModelNotFound: the file does not exist.
        ConfigError: unreadable, not UTF-8, or not a JSON object.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ModelNotFound(f"no such file: {path}; {LOCAL_HINT}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); is it really a config.json?") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it ({err.strerror})") from err
    return parse_config(text, origin=str(path)), text


def quant_method(config: dict[str, Any]) -> str | None:
    """config.json's `quantization_config.quant_method` (gptq, awq, fp8, compressed-tensors, ...), if any."""
    quantization = config.get("quantization_config")
    if isinstance(quantization, dict):
        method = quantization.get("quant_method")
        return str(method) if method is not None else None
    return None


def build_spec(
    config: dict[str, Any], *, name: str, source: ModelSource, trust_remote_code: bool = False
) -> ModelSpec:
    """Map a config dict to a ModelSpec: the family registry, else transformers on the meta device.

    Raises:
        ConfigError: no model_type, or a required field missing or of the wrong type.
        UnsupportedArchitecture: an unmapped model_type and no [trace] extra, or a repo that needs its
            own code without `trust_remote_code`.
    """
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ConfigError(f"{name}: config.json has no model_type; is it a transformers model config?")
    try:
        return spec_from_config(config, name=name, source=source)
    except UnsupportedArchitecture as err:
        return _spec_on_meta(config, name=name, source=source, trust_remote_code=trust_remote_code, err=err)
    except MemfitError:
        raise
    except KeyError as err:
        raise ConfigError(f"{name}: config.json ({model_type}) lacks the required field {err}") from err
    except (TypeError, ValueError) as err:
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
