"""One module per Hugging Face `model_type`, listed in the explicit `FAMILIES` registry.

`spec_from_config(config, name=..., source=...)` dispatches on `config["model_type"]`; an unknown type raises
`UnsupportedArchitecture` listing the supported ones. Every family quirk the formulas need is a typed field
the mapper sets on the spec (module names, SDPA support, ALiBi, norm upcasts, ...): no formula outside this
package tests a family name or reads config.json.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from memfit.core.errors import ConfigError, UnsupportedArchitecture
from memfit.core.families import (
    bamba,
    bloom,
    cohere,
    cohere2,
    deepseek_v2,
    deepseek_v3,
    falcon,
    falcon_h1,
    gemma,
    gemma2,
    gemma3,
    gemma3_text,
    gpt2,
    gpt_bigcode,
    gpt_neox,
    gpt_oss,
    gptj,
    granite,
    granitemoehybrid,
    jamba,
    llama,
    llama4,
    llama4_text,
    llava,
    mistral,
    mistral3,
    mixtral,
    nemotron_h,
    olmo2,
    opt,
    phi,
    phi3,
    qwen2,
    qwen2_5_vl,
    qwen2_moe,
    qwen3,
    qwen3_moe,
    qwen3_next,
    qwen3_vl,
    qwen3_vl_moe,
    starcoder2,
)
from memfit.core.families._config import check_shape_fields
from memfit.core.families._defaults import with_defaults
from memfit.core.spec import ModelSource, ModelSpec

SpecBuilder = Callable[..., ModelSpec]

FAMILIES: dict[str, SpecBuilder] = {
    "bamba": bamba.spec_from_config,
    "bloom": bloom.spec_from_config,
    "cohere": cohere.spec_from_config,
    "cohere2": cohere2.spec_from_config,
    "deepseek_v2": deepseek_v2.spec_from_config,
    "deepseek_v3": deepseek_v3.spec_from_config,
    "falcon": falcon.spec_from_config,
    "falcon_h1": falcon_h1.spec_from_config,
    "gemma": gemma.spec_from_config,
    "gemma2": gemma2.spec_from_config,
    "gemma3": gemma3.spec_from_config,
    "gemma3_text": gemma3_text.spec_from_config,
    "gpt2": gpt2.spec_from_config,
    "gpt_bigcode": gpt_bigcode.spec_from_config,
    "gpt_neox": gpt_neox.spec_from_config,
    "gpt_oss": gpt_oss.spec_from_config,
    "gptj": gptj.spec_from_config,
    "granite": granite.spec_from_config,
    "granitemoehybrid": granitemoehybrid.spec_from_config,
    "jamba": jamba.spec_from_config,
    "llama": llama.spec_from_config,
    "llama4": llama4.spec_from_config,
    "llama4_text": llama4_text.spec_from_config,
    "llava": llava.spec_from_config,
    "mistral": mistral.spec_from_config,
    "mistral3": mistral3.spec_from_config,
    "mixtral": mixtral.spec_from_config,
    "nemotron_h": nemotron_h.spec_from_config,
    "olmo2": olmo2.spec_from_config,
    "opt": opt.spec_from_config,
    "phi": phi.spec_from_config,
    "phi3": phi3.spec_from_config,
    "qwen2": qwen2.spec_from_config,
    "qwen2_5_vl": qwen2_5_vl.spec_from_config,
    "qwen2_moe": qwen2_moe.spec_from_config,
    "qwen3": qwen3.spec_from_config,
    "qwen3_moe": qwen3_moe.spec_from_config,
    "qwen3_next": qwen3_next.spec_from_config,
    "qwen3_vl": qwen3_vl.spec_from_config,
    "qwen3_vl_moe": qwen3_vl_moe.spec_from_config,
    "starcoder2": starcoder2.spec_from_config,
}
"""HF model_type → the function mapping its config.json to a ModelSpec."""

def supported_families() -> tuple[str, ...]:
    """Every model_type with a family module, sorted."""
    return tuple(sorted(FAMILIES))


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """The ModelSpec of a config.json (already parsed), dispatched on its `model_type`.

    The shape fields every config shares are checked against `memfit.core.limits` first, whatever the
    model_type, so a hostile config is refused before a family (or the meta-device build) sizes anything.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"{name}: config.json must be a JSON object, got {type(config).__name__}")
    check_shape_fields(config, name=name)
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ConfigError(f"{name}: config field 'model_type' is missing")
    builder = FAMILIES.get(model_type)
    if builder is None:
        supported = ", ".join(supported_families())
        raise UnsupportedArchitecture(
            f"{name}: model_type {model_type!r} is not supported; supported: {supported}")
    return builder(with_defaults(config, model_type), name=name, source=source)
