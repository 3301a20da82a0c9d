"""LLaVA (LlavaForConditionalGeneration): a Llama or Mistral decoder, a CLIP vision tower and a 2-layer MLP
projector.

The text model is mapped by its own family (text_config.model_type, default llama) and renamed; the tower
(CLIPVisionModel) is the top-level component `vision_tower`: class embedding h, a bias-free Conv2d patch
embedding c·p²·h, (image/patch)² + 1 position embeddings, pre LayerNorm 2h, per layer two LayerNorms 4h,
q/k/v/out 4(h² + h), fc1 h·I + I, fc2 I·h + h, post LayerNorm 2h. The projector (`multi_modal_projector`):
linear_1 (h·feature layers → text hidden) and linear_2 (text hidden²), with biases unless
multimodal_projector_bias is false. Every image is resized to image_size², (image/patch)² patch tokens
plus CLS run through the tower; the features of `vision_feature_layer` (-2) lose CLS under the "default"
strategy: (image/patch)² image tokens (576 for 336 px, patch 14). The tower runs with
output_hidden_states=True, so every layer's output stays alive until the projector has run.
Source: transformers 5.17.0 models/llava (LlavaConfig, LlavaModel.get_image_features,
LlavaMultiModalProjector) and models/clip (CLIPVisionConfig defaults, CLIPVisionModel).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from memfit.core.errors import UnsupportedArchitecture
from memfit.core.families import llama, mistral
from memfit.core.families._config import opt_bool, opt_objects, req_int, tower_shape
from memfit.core.families._defaults import with_defaults
from memfit.core.spec import ModelSource, ModelSpec
from memfit.core.vision import ImageSizing, VisionSpec

TEXT_FAMILIES = {"llama": llama.spec_from_config, "mistral": mistral.spec_from_config}
"""Text decoders LLaVA checkpoints pair with (LlavaConfig: text_config.model_type, default llama)."""
TEXT_CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
              "num_attention_heads": 32, "max_position_embeddings": 2048},
    "mistral": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 4096 * 32},
}
"""The sizes a text_config may omit (llava-hf configs list only what differs): LlamaConfig's and
MistralConfig's field defaults. Source: transformers 5.17.0 configuration_llama.py and
configuration_mistral.py."""
VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
    "num_channels": 3, "image_size": 336, "patch_size": 14, "hidden_act": "quick_gelu",
}
"""LlavaConfig's vision_config when none is given (CLIP ViT-L/14-336), over CLIPVisionConfig's defaults
for fields it leaves out. Source: transformers 5.17.0 LlavaConfig.__post_init__, CLIPVisionConfig."""
CLIP_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "num_channels": 3, "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu",
}
"""Source: transformers 5.17.0 CLIPVisionConfig field defaults (a vision_config given as an object)."""


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A LLaVA ModelSpec: the text family's spec plus `vision_tower`, `multi_modal_projector`, VisionSpec."""
    text, vision_config = opt_objects(config, "text_config", "vision_config", name=name)
    text_type = str((text or {}).get("model_type", "llama"))
    builder = TEXT_FAMILIES.get(text_type)
    if builder is None:
        raise UnsupportedArchitecture(f"{name}: LLaVA with a {text_type!r} text model is not supported; "
                                      f"supported: {', '.join(sorted(TEXT_FAMILIES))}")
    text_fields = with_defaults({**TEXT_CLASS_DEFAULTS[text_type], **(text or {}), "model_type": text_type},
                                text_type)
    text_fields["tie_word_embeddings"] = opt_bool(config, "tie_word_embeddings", default=False, name=name) \
        or bool(text_fields.get("tie_word_embeddings", False))
    if "torch_dtype" in config and "torch_dtype" not in (text or {}):
        text_fields["torch_dtype"] = config["torch_dtype"]
    base = VISION_DEFAULTS if vision_config is None else CLIP_DEFAULTS
    vision = {**base, **{k: v for k, v in (vision_config or {}).items() if v is not None}}
    layers = config.get("vision_feature_layer", -2)
    num_feature_layers = len(layers) if isinstance(layers, list) else 1
    text_spec = builder(text_fields, name=name, source=source)
    h, th = req_int(vision, "hidden_size", name=name), text_spec.hidden_size
    bias = opt_bool(config, "multimodal_projector_bias", default=True, name=name)
    projector = h * num_feature_layers * th + th * th + (2 * th if bias else 0)
    full = config.get("vision_feature_select_strategy", "default") == "full"
    return dataclasses.replace(
        text_spec, family="llava",
        extra_params=(*text_spec.extra_params, ("vision_tower", clip_params(vision, name=name)),
                      ("multi_modal_projector", projector)),
        vision=clip_vision(vision, name=name, text_hidden=th, with_cls=full))


def clip_params(vision: Mapping[str, Any], *, name: str) -> int:
    """Parameters of CLIPVisionModel (see the module docstring)."""
    h = req_int(vision, "hidden_size", name=name)
    i = req_int(vision, "intermediate_size", name=name)
    patch = req_int(vision, "patch_size", name=name)
    positions = (req_int(vision, "image_size", name=name) // patch) ** 2 + 1
    per_layer = 4 * h + 4 * (h * h + h) + (h * i + i) + (i * h + h)
    embeddings = h + req_int(vision, "num_channels", name=name) * patch * patch * h + positions * h
    return embeddings + 2 * h + req_int(vision, "num_hidden_layers", name=name) * per_layer + 2 * h


def clip_vision(vision: Mapping[str, Any], *, name: str, text_hidden: int, with_cls: bool) -> VisionSpec:
    """The CLIP tower as LLaVA runs it: fixed image_size², CLS + patches through every layer, all layer
    outputs kept (output_hidden_states=True), the selected layer's patch features (CLS too under "full")."""
    shape = tower_shape(vision, name=name)
    patch, image = shape["patch_size"], shape["image_size"]
    act = vision.get("hidden_act", "quick_gelu")
    return VisionSpec(
        tower="clip_vision_model", **shape,
        sizing=ImageSizing.FIXED, tokens_per_image=(image // patch) ** 2 + (1 if with_cls else 0),
        activation=act if isinstance(act, str) else "quick_gelu", projector_hidden=text_hidden,
        class_token=True, keeps_patch_embeddings=False, keeps_hidden_states=True)
