"""Mistral 3 vision-language checkpoints (Mistral-Small-3.1-24B): a Mistral decoder, a Pixtral vision tower
and a patch-merging projector (Mistral3ForConditionalGeneration).

AutoModelForImageTextToText builds the whole model for model_type "mistral3" (it has no causal-LM mapping in
transformers 5.17.0), so the tower and projector are two extra top-level components:
- `vision_tower` (PixtralVisionModel): a bias-free Conv2d patch embedding c·p²·h, an RMSNorm ln_pre h, and per
  layer two RMSNorms 2h, bias-free q/k/v/o 4h² and a SwiGLU MLP 3·h·I;
- `multi_modal_projector`: an RMSNorm over the tower's width h, the patch merger Linear(h·merge², h) without
  bias, linear_1 (h·feature layers → text hidden) and linear_2 (text hidden²), with biases when
  multimodal_projector_bias.
The LM head follows the top-level `tie_word_embeddings`, whose Mistral3Config default is true: a published
config without the key (Mistral-Small-3.1's) is built with the head tied to the embeddings.
Source: transformers 5.17.0 models/mistral3 (Mistral3Config, Mistral3MultiModalProjector,
Mistral3PatchMerger) and models/pixtral (PixtralVisionConfig, PixtralVisionModel); checked on the meta device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from memfit.core.errors import UnsupportedArchitecture
from memfit.core.families import mistral
from memfit.core.families._config import opt_bool, opt_int, opt_objects, req_int, tower_shape
from memfit.core.spec import ModelSource, ModelSpec
from memfit.core.vision import ImageSizing, VisionSpec

TEXT_DEFAULTS: dict[str, Any] = {
    "head_dim": 128, "hidden_act": "silu", "hidden_size": 5120, "intermediate_size": 32768,
    "max_position_embeddings": 131072, "num_attention_heads": 32, "num_hidden_layers": 40,
    "num_key_value_heads": 8, "sliding_window": None, "vocab_size": 131072,
}
"""Mistral3Config's text_config when none is given (Mistral-Small's decoder). Source: transformers 5.17.0
Mistral3Config.__post_init__."""
VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
    "num_channels": 3, "image_size": 1540, "patch_size": 14, "hidden_act": "gelu",
}
"""Mistral3Config's vision_config when none is given. Source: transformers 5.17.0 Mistral3Config."""
PIXTRAL_DEFAULTS: dict[str, Any] = {
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
    "num_channels": 3, "image_size": 1024, "patch_size": 16, "hidden_act": "gelu",
}
"""PixtralVisionConfig's field defaults (a vision_config given as an object). Source: transformers 5.17.0."""
TIE_DEFAULT = True
"""Mistral3Config.tie_word_embeddings when the config omits it. Source: transformers 5.17.0."""


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Mistral 3 ModelSpec: the Mistral decoder plus `vision_tower` and `multi_modal_projector`."""
    text, vision_config = opt_objects(config, "text_config", "vision_config", name=name)
    text_type = str((text or {}).get("model_type", "mistral"))
    if text_type != "mistral":
        raise UnsupportedArchitecture(f"{name}: Mistral 3 with a {text_type!r} text model is not supported; "
                                      "supported: mistral")
    fields = {**TEXT_DEFAULTS, **(text or {}), "model_type": "mistral",
              "tie_word_embeddings": opt_bool(config, "tie_word_embeddings", default=TIE_DEFAULT, name=name)}
    for key in ("torch_dtype", "dtype"):
        if key in config and "torch_dtype" not in (text or {}) and "dtype" not in (text or {}):
            fields[key] = config[key]
    base = VISION_DEFAULTS if vision_config is None else PIXTRAL_DEFAULTS
    vision = {**base, **{k: v for k, v in (vision_config or {}).items() if v is not None}}
    text_spec = mistral.spec_from_config(fields, name=name, source=source)
    return dataclasses.replace(
        text_spec, family="mistral3",
        vision=pixtral_vision(vision, name=name, text_hidden=text_spec.hidden_size,
                              merge=opt_int(config, "spatial_merge_size", default=2, name=name) or 2),
        extra_params=(*text_spec.extra_params, ("vision_tower", pixtral_params(vision, name=name)),
                      ("multi_modal_projector",
                       projector_params(config, vision, name=name, text_hidden=text_spec.hidden_size))))


def pixtral_vision(vision: Mapping[str, Any], *, name: str, text_hidden: int, merge: int) -> VisionSpec:
    """The Pixtral tower as Mistral 3 runs it: each image keeps its aspect ratio, its longest edge at most
    image_size and its sides multiples of patch × merge (PixtralImageProcessor; the published processors set
    longest_edge to the tower's image_size); all images' patches in one sequence behind a block mask, 2-D RoPE
    tables in the compute dtype, a gated MLP; merge² patches become one token, and each row of merged patches
    one more ([IMG_BREAK] / [IMG_END]).
    Source: transformers 5.17.0 PixtralVisionModel.forward, generate_block_attention_mask and
    PixtralProcessor."""
    act = vision.get("hidden_act", "gelu")
    return VisionSpec(
        tower="pixtral", **tower_shape(vision, name=name),
        sizing=ImageSizing.LONGEST_EDGE, spatial_merge_size=merge, mlp_gated=True,
        activation=act if isinstance(act, str) else "gelu", projector_hidden=text_hidden,
        rotary=True, rotary_tables_fp32=False, block_mask=True, row_break_tokens=True)


def pixtral_params(vision: Mapping[str, Any], *, name: str) -> int:
    """Parameters of PixtralVisionModel (see the module docstring)."""
    h = req_int(vision, "hidden_size", name=name)
    i = req_int(vision, "intermediate_size", name=name)
    patch = req_int(vision, "patch_size", name=name)
    per_layer = 2 * h + 4 * h * h + 3 * h * i
    embeddings = req_int(vision, "num_channels", name=name) * patch * patch * h + h
    return embeddings + req_int(vision, "num_hidden_layers", name=name) * per_layer


def projector_params(config: Mapping[str, Any], vision: Mapping[str, Any], *, name: str,
                     text_hidden: int) -> int:
    """Parameters of Mistral3MultiModalProjector (see the module docstring)."""
    h = req_int(vision, "hidden_size", name=name)
    merge = opt_int(config, "spatial_merge_size", default=2, name=name) or 2
    layers = config.get("vision_feature_layer", -1)
    num_feature_layers = len(layers) if isinstance(layers, list) else 1
    bias = opt_bool(config, "multimodal_projector_bias", default=False, name=name)
    biases = 2 * text_hidden if bias else 0
    linears = h * num_feature_layers * text_hidden + text_hidden * text_hidden + biases
    return h + h * merge * merge * h + linears
