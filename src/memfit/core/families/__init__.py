"""One module per Hugging Face `model_type`, listed in the explicit `FAMILIES` registry.

`spec_from_config(config, name=..., source=...)` dispatches on `config["model_type"]`; an unknown type raises
`UnsupportedArchitecture` listing the supported ones. `layout(family)` gives the HF module names of a
family's decoder layer (for `params.layer_linears`); families without an entry use Llama's names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from memfit.core.errors import ConfigError, UnsupportedArchitecture
from memfit.core.families import llama, mistral, qwen2
from memfit.core.families._layout import LLAMA, Layout
from memfit.core.spec import ModelSource, ModelSpec

SpecBuilder = Callable[..., ModelSpec]

FAMILIES: dict[str, SpecBuilder] = {
    "llama": llama.spec_from_config,
    "mistral": mistral.spec_from_config,
    "qwen2": qwen2.spec_from_config,
}
"""HF model_type → the function mapping its config.json to a ModelSpec."""

LAYOUTS: dict[str, Layout] = {}
"""HF model_type → module names, for families whose names differ from Llama's."""


def supported_families() -> tuple[str, ...]:
    """Every model_type with a family module, sorted."""
    return tuple(sorted(FAMILIES))


def layout(family: str) -> Layout:
    """The HF module names of `family`'s decoder layer (Llama's when it has no entry)."""
    return LAYOUTS.get(family, LLAMA)


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """The ModelSpec of a config.json (already parsed), dispatched on its `model_type`."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"{name}: config.json must be a JSON object, got {type(config).__name__}")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ConfigError(f"{name}: config field 'model_type' is missing")
    builder = FAMILIES.get(model_type)
    if builder is None:
        supported = ", ".join(supported_families())
        raise UnsupportedArchitecture(
            f"{name}: model_type {model_type!r} is not supported; supported: {supported}")
    return builder(config, name=name, source=source)
