"""Gemma 3 multimodal checkpoints (gemma-3-4b/12b/27b): the Gemma 3 decoder plus a SigLIP vision tower.

AutoModelForCausalLM builds Gemma3ForConditionalGeneration for model_type "gemma3" (transformers 5.17.0),
so the vision tower and the multimodal projector are counted as two extra top-level components.
Source: transformers 5.17.0 models/gemma3 (Gemma3MultiModalProjector) and models/siglip (SiglipVisionModel).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.errors import ConfigError
from memfit.core.families._config import checkpoint_dtype, opt_bool, opt_int, req_int, tower_shape
from memfit.core.families.gemma3_text import TEXT_DEFAULTS, text_spec
from memfit.core.spec import ModelSource, ModelSpec
from memfit.core.vision import ImageSizing, VisionSpec

VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_channels": 3,
    "image_size": 224, "patch_size": 16, "num_attention_heads": 12, "hidden_act": "gelu_pytorch_tanh",
}
"""Source: transformers 5.17.0 SiglipVisionConfig field defaults."""
MM_TOKENS_PER_IMAGE = 256
"""Image tokens per image when the config omits mm_tokens_per_image: the projector average-pools the
(image/patch)² patches to this many. Source: transformers 5.17.0 Gemma3Config.mm_tokens_per_image."""


def siglip_params(vision: Mapping[str, Any], *, name: str) -> int:
    """Parameters of a SigLIP vision tower (SiglipVisionTransformer).

    patch Conv2d h·c·p² + h; positions (image/p)²·h; per layer two LayerNorms 4h, q/k/v/out 4(h² + h),
    fc1 h·I + I, fc2 I·h + h; post LayerNorm 2h; with vision_use_head (default) the attention-pooling head:
    probe h, in_proj 3h² + 3h, out_proj h² + h, LayerNorm 2h and an MLP h·I + I + I·h + h.
    """
    h = req_int(vision, "hidden_size", name=name)
    i = req_int(vision, "intermediate_size", name=name)
    layers = req_int(vision, "num_hidden_layers", name=name)
    channels = req_int(vision, "num_channels", name=name)
    image, patch = req_int(vision, "image_size", name=name), req_int(vision, "patch_size", name=name)
    mlp = h * i + i + i * h + h
    per_layer = 4 * h + 4 * (h * h + h) + mlp
    total = h * channels * patch * patch + h + (image // patch) ** 2 * h + layers * per_layer + 2 * h
    if opt_bool(vision, "vision_use_head", default=True, name=name):
        total += h + 3 * h * h + 3 * h + h * h + h + 2 * h + mlp
    return total


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Gemma 3 (multimodal) ModelSpec from its config.json: text decoder + vision extras."""
    text = config.get("text_config") or {}
    vision_config = config.get("vision_config") or {}
    if not isinstance(text, Mapping) or not isinstance(vision_config, Mapping):
        raise ConfigError(f"{name}: config fields 'text_config' and 'vision_config' must be objects")
    vision = {**VISION_DEFAULTS, **{k: v for k, v in vision_config.items() if v is not None}}
    # published multimodal configs omit text fields equal to Gemma3TextConfig's defaults (even the heads)
    text_fields = {**TEXT_DEFAULTS, **text}
    if "tie_word_embeddings" in config:
        text_fields["tie_word_embeddings"] = config["tie_word_embeddings"]
    hidden = req_int(text_fields, "hidden_size", name=name)
    vision_hidden = req_int(vision, "hidden_size", name=name)
    projector = vision_hidden * hidden + vision_hidden  # mm_input_projection_weight + mm_soft_emb_norm
    return text_spec(
        text_fields, name=name, source=source, family="gemma3",
        default_dtype=checkpoint_dtype(config, name=name),
        extra_params=(("vision_tower", siglip_params(vision, name=name)),
                      ("multi_modal_projector", projector)),
        vision=siglip_vision(vision, name=name, text_hidden=hidden,
                             tokens=opt_int(config, "mm_tokens_per_image", default=MM_TOKENS_PER_IMAGE,
                                            name=name) or MM_TOKENS_PER_IMAGE),
    )


def siglip_vision(vision: Mapping[str, Any], *, name: str, text_hidden: int, tokens: int) -> VisionSpec:
    """The SigLIP tower as Gemma 3 runs it: every image resized to image_size² (Gemma3ImageProcessor,
    pan-and-scan off by default), (image/patch)² patches, average-pooled by the projector to `tokens`.
    Source: transformers 5.17.0 Gemma3MultiModalProjector (kernel = patches_per_side / sqrt(tokens))."""
    act = vision.get("hidden_act", "gelu_pytorch_tanh")
    return VisionSpec(
        tower="siglip_vision_model", **tower_shape(vision, name=name),
        sizing=ImageSizing.FIXED, tokens_per_image=tokens,
        activation=act if isinstance(act, str) else "gelu_pytorch_tanh", projector_hidden=text_hidden)
