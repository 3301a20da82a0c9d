"""Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration): a Qwen2 decoder plus a dynamic-resolution ViT.

Published config.json files are flat: the text fields sit at the top level beside `vision_config`
(Qwen2_5_VLConfig moves them into text_config); a `text_config` object, when present, wins.
The decoder is Qwen2's (q/k/v biases, no o_proj bias, no MLP biases, RMSNorm; multimodal RoPE has no
parameters). The vision tower (Qwen2_5_VisionTransformerPretrainedModel) is counted as the top-level
component `visual`: a bias-free Conv3d patch embedding (in_channels × temporal_patch × patch² × hidden),
per block two RMSNorms, qkv (h → 3h, bias) and proj (h → h, bias), a SwiGLU MLP with biases; then the
patch merger: RMSNorm(h), Linear(4h → 4h) + GELU + Linear(4h → out_hidden_size), both with biases.
Images: smart_resize to multiples of patch × merge (28) within the published [min_pixels, max_pixels],
(h/14)·(w/14) patches, 2×2 merged into one token.
Source: transformers 5.17.0 models/qwen2_5_vl/configuration_qwen2_5_vl.py, modeling_qwen2_5_vl.py;
models/qwen2_vl/image_processing_qwen2_vl.py (Qwen2VLImageProcessor size and smart_resize).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.errors import ConfigError
from memfit.core.families._config import checkpoint_dtype, opt_bool, packed_tower_shape, req_int
from memfit.core.families._decoder import decoder_spec, qwen_windows
from memfit.core.spec import ModelSource, ModelSpec
from memfit.core.vision import ImageSizing, VisionSpec

VISION_DEFAULTS: dict[str, Any] = {
    "depth": 32, "hidden_size": 3584, "intermediate_size": 3420, "num_heads": 16, "in_channels": 3,
    "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 3584,
    "hidden_act": "silu",
}
"""Source: transformers 5.17.0 Qwen2_5_VLVisionConfig field defaults."""
TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 152064, "hidden_size": 8192, "intermediate_size": 29568, "num_hidden_layers": 80,
    "num_attention_heads": 64, "num_key_value_heads": 8, "max_position_embeddings": 32768,
}
"""Source: transformers 5.17.0 Qwen2_5_VLTextConfig field defaults."""
MIN_PIXELS = 3136
MAX_PIXELS = 12845056
"""The processor's pixel budget as published: Qwen/Qwen2.5-VL-7B-Instruct preprocessor_config.json has
min_pixels 3,136 and max_pixels 12,845,056 (16,384 merged tokens of 28² px), which AutoProcessor loads
(a vendored copy "Trimmed from Qwen/Qwen2.5-VL-7B-Instruct", file id 69393411951). transformers 5.17.0's
Qwen2VLImageProcessor class default is narrower (longest_edge 28·28·1280 = 1,003,520)."""
DEFAULT_IMAGE_SIDE = 448
"""Image side used when the workload gives no size: 448² = 16·16 merged tokens of 28² px, 256 tokens."""


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Qwen2.5-VL ModelSpec from its config.json: the text decoder, `visual` and its VisionSpec."""
    text = config.get("text_config")
    vision_config = config.get("vision_config") or {}
    if (text is not None and not isinstance(text, Mapping)) or not isinstance(vision_config, Mapping):
        raise ConfigError(f"{name}: config fields 'text_config' and 'vision_config' must be objects")
    flat = {k: v for k, v in config.items() if k not in ("text_config", "vision_config")}
    text_fields = {**TEXT_DEFAULTS, **flat, **(text or {})}
    # Qwen2_5_VLConfig: tie_word_embeddings (default False) at the top level, or a pre-v5 text_config's True
    tied = opt_bool(config, "tie_word_embeddings", default=False, name=name) or bool(
        (text or {}).get("tie_word_embeddings", False))
    text_fields["tie_word_embeddings"] = tied
    vision = {**VISION_DEFAULTS, **{k: v for k, v in vision_config.items() if v is not None}}
    if "in_chans" in vision_config and "in_channels" not in vision_config:   # published configs' spelling
        vision["in_channels"] = vision_config["in_chans"]
    return decoder_spec(
        text_fields, name=name, source=source, family="qwen2_5_vl", qkv_bias=True, out_bias=False,
        mlp_bias=False, windows=qwen_windows(text_fields, name=name),
        default_dtype=checkpoint_dtype(config, name=name),
        extra_params=(("visual", vision_params(vision, name=name)),),
        vision=vision_spec(vision, name=name, text_hidden=req_int(text_fields, "hidden_size", name=name)),
    )


def vision_params(vision: Mapping[str, Any], *, name: str) -> int:
    """Parameters of Qwen2_5_VisionTransformerPretrainedModel (see the module docstring)."""
    shape = packed_tower_shape(vision, name=name)
    h, i, depth = shape["hidden_size"], shape["intermediate_size"], shape["num_layers"]
    patch, temporal = shape["patch_size"], shape["temporal_patch_size"]
    merged = h * shape["spatial_merge_size"] ** 2
    out = req_int(vision, "out_hidden_size", name=name)
    per_block = 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + 2 * (h * i + i) + (i * h + h)
    merger = h + (merged * merged + merged) + (merged * out + out)
    conv = shape["num_channels"] * temporal * patch * patch * h
    return conv + depth * per_block + merger


def vision_spec(vision: Mapping[str, Any], *, name: str, text_hidden: int) -> VisionSpec:
    """The tower as the processor and the model run it: dynamic resolution, 2×2 merge, SwiGLU blocks."""
    act = vision.get("hidden_act", "silu")
    return VisionSpec(
        tower="qwen2_5_vl", **packed_tower_shape(vision, name=name), image_size=DEFAULT_IMAGE_SIDE,
        sizing=ImageSizing.DYNAMIC, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, mlp_gated=True,
        packed=True, keeps_patch_embeddings=False, rotary=True,
        activation=act if isinstance(act, str) else "silu", projector_hidden=text_hidden)
