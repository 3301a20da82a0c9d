"""Qwen3-VL (Qwen3VLForConditionalGeneration) and Qwen3-VL-MoE (Qwen3VLMoeForConditionalGeneration): a Qwen3
decoder (per-head q/k RMSNorms; the -MoE variant with Qwen3-MoE's fused routed experts) plus a
dynamic-resolution ViT whose intermediate layers also feed the decoder ("DeepStack").

Published config.json files are nested: the text fields sit in `text_config`, the tower's in
`vision_config`; `tie_word_embeddings` and the token ids at the top level (Qwen3VLConfig: the top-level
flag decides the tie, default False; Qwen3-VL-4B sets it True). Multimodal RoPE has no parameters.
The vision tower (Qwen3VLVisionModel) is counted as the top-level component `visual`:
- patch_embed: Conv3d with a bias (in_channels × temporal_patch × patch² × hidden + hidden);
- pos_embed: a learned (num_position_embeddings, hidden) table, bilinearly resampled to each image's grid
  (4 taps per patch);
- per block: two LayerNorms (weight and bias), qkv (h → 3h, bias), proj (h → h, bias), fc1 (h → I, bias)
  and fc2 (I → h, bias) with GELU (tanh);
- merger: LayerNorm(h), Linear(4h → 4h) + GELU + Linear(4h → out_hidden_size), both with biases;
- one more merger per `deepstack_visual_indexes` entry, its LayerNorm over 4h (use_postshuffle_norm).
Images: smart_resize to multiples of patch × merge (32) within the processor's pixel budget,
(h/16)·(w/16) patches, 2×2 merged into one token.
Source: transformers 5.17.0 models/qwen3_vl/configuration_qwen3_vl.py, modeling_qwen3_vl.py;
models/qwen3_vl_moe/configuration_qwen3_vl_moe.py, modeling_qwen3_vl_moe.py; models/auto/
image_processing_auto.py (qwen3_vl → Qwen2VLImageProcessor); models/qwen2_vl/image_processing_qwen2_vl.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.choices import QkNorm
from memfit.core.errors import ConfigError
from memfit.core.families._config import checkpoint_dtype, opt_bool, packed_tower_shape, req_int
from memfit.core.families._decoder import decoder_spec
from memfit.core.families._moe import mlp_by_layer, moe_block, sparse_every
from memfit.core.spec import ModelSource, ModelSpec
from memfit.core.vision import ImageSizing, VisionSpec

VISION_DEFAULTS: dict[str, Any] = {
    "depth": 27, "hidden_size": 1152, "hidden_act": "gelu_pytorch_tanh", "intermediate_size": 4304,
    "num_heads": 16, "in_channels": 3, "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
    "out_hidden_size": 3584, "num_position_embeddings": 2304, "deepstack_visual_indexes": [8, 16, 24],
}
"""Source: transformers 5.17.0 Qwen3VLVisionConfig and Qwen3VLMoeVisionConfig field defaults (identical)."""
TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": 128, "max_position_embeddings": 128000,
}
"""Source: transformers 5.17.0 Qwen3VLTextConfig field defaults (not Qwen3-VL-4B's: that checkpoint is
2,560 wide, 36 layers)."""
MOE_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 24,
    "num_attention_heads": 16, "num_key_value_heads": 16, "max_position_embeddings": 128000,
    "moe_intermediate_size": 1408, "num_experts_per_tok": 4, "num_experts": 60, "decoder_sparse_step": 1,
}
"""Source: transformers 5.17.0 Qwen3VLMoeTextConfig field defaults (head_dim None: hidden / heads)."""
MIN_PIXELS = 65536
MAX_PIXELS = 16777216
"""The processor's pixel budget as published: Qwen3-VL's preprocessor_config.json `size` has shortest_edge
65,536 (256² px, 64 merged tokens of 32² px) and longest_edge 16,777,216 (4,096² px, 16,384 tokens), with
patch_size 16 and merge_size 2 (the same file ships with Qwen3.5: file ids 54877551029, 70263102148) -
VERIFY against Qwen/Qwen3-VL-8B-Instruct preprocessor_config.json. transformers 5.17.0's
Qwen2VLImageProcessor class default is narrower (56² to 28²·1280 px, patch 14)."""
DEFAULT_IMAGE_SIDE = 512
"""Image side used when the workload gives no size: 512² = 16·16 merged tokens of 32² px, 256 tokens."""
POSITION_TAPS = 4
"""Bilinear resampling of the learned position table: 4 table rows per patch.
Source: transformers 5.17.0 Qwen3VLVisionModel (interpolation_mode "bilinear") and
vision_utils.get_vision_interpolation_indices_and_weights (n_taps 4 for bilinear)."""


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Qwen3-VL ModelSpec from its config.json: the Qwen3 decoder, `visual` and its VisionSpec."""
    return _spec(config, name=name, source=source, moe=False)


def moe_spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Qwen3-VL-MoE ModelSpec: Qwen3-MoE's routed experts in the decoder, the same tower."""
    return _spec(config, name=name, source=source, moe=True)


def _spec(config: Mapping[str, Any], *, name: str, source: ModelSource, moe: bool) -> ModelSpec:
    text = config.get("text_config") or {}
    vision_config = config.get("vision_config") or {}
    if not isinstance(text, Mapping) or not isinstance(vision_config, Mapping):
        raise ConfigError(f"{name}: config fields 'text_config' and 'vision_config' must be objects")
    text_fields = {**(MOE_TEXT_DEFAULTS if moe else TEXT_DEFAULTS), **text}
    text_fields["tie_word_embeddings"] = opt_bool(config, "tie_word_embeddings", default=False, name=name)
    vision = {**VISION_DEFAULTS, **{k: v for k, v in vision_config.items() if v is not None}}
    family = "qwen3_vl_moe" if moe else "qwen3_vl"
    mlp_for_layer = None
    if moe:
        experts = moe_block(text_fields, name=name,
                            expert_width=req_int(text_fields, "moe_intermediate_size", name=name))
        mlp_for_layer = mlp_by_layer(text_fields, name=name, moe=experts,
                                     is_sparse=sparse_every(text_fields, name=name))
    # the stored dtype: top level, else the text_config's (the published files carry it there)
    dtype_fields = config if ("dtype" in config or "torch_dtype" in config) else text
    return decoder_spec(
        text_fields, name=name, source=source, family=family, qk_norm=QkNorm.PER_HEAD, mlp_bias=False,
        mlp_for_layer=mlp_for_layer, default_dtype=checkpoint_dtype(dtype_fields, name=name),
        extra_params=(("visual", vision_params(vision, name=name)),),
        vision=vision_spec(vision, name=name, text_hidden=req_int(text_fields, "hidden_size", name=name)),
    )


def deepstack_indexes(vision: Mapping[str, Any], *, name: str) -> tuple[int, ...]:
    """The tower blocks whose output a deepstack merger also projects (each index a block number)."""
    indexes = vision.get("deepstack_visual_indexes") or ()
    depth = req_int(vision, "depth", name=name)
    if not isinstance(indexes, list | tuple) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < depth for i in indexes):
        raise ConfigError(f"{name}: config field 'deepstack_visual_indexes' must list block numbers in "
                          f"0..{depth - 1}")
    return tuple(indexes)


def vision_params(vision: Mapping[str, Any], *, name: str) -> int:
    """Parameters of Qwen3VLVisionModel (see the module docstring)."""
    shape = packed_tower_shape(vision, name=name)
    h, i, depth = shape["hidden_size"], shape["intermediate_size"], shape["num_layers"]
    patch, temporal = shape["patch_size"], shape["temporal_patch_size"]
    merged = h * shape["spatial_merge_size"] ** 2
    out = req_int(vision, "out_hidden_size", name=name)
    positions = req_int(vision, "num_position_embeddings", name=name)
    per_block = 2 * 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + (h * i + i) + (i * h + h)
    projection = (merged * merged + merged) + (merged * out + out)
    merger = 2 * h + projection
    deepstack = len(deepstack_indexes(vision, name=name)) * (2 * merged + projection)
    conv = shape["num_channels"] * temporal * patch * patch * h + h
    return conv + positions * h + depth * per_block + merger + deepstack


def vision_spec(vision: Mapping[str, Any], *, name: str, text_hidden: int) -> VisionSpec:
    """The tower as the processor and the model run it: dynamic resolution, 2×2 merge, GELU blocks, the
    resampled position table, deepstack features kept for the decoder."""
    act = vision.get("hidden_act", "gelu_pytorch_tanh")
    return VisionSpec(
        tower="qwen3_vl", **packed_tower_shape(vision, name=name), image_size=DEFAULT_IMAGE_SIDE,
        sizing=ImageSizing.DYNAMIC, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, mlp_gated=False,
        packed=True, keeps_patch_embeddings=False, rotary=True,
        activation=act if isinstance(act, str) else "gelu_pytorch_tanh", projector_hidden=text_hidden,
        position_taps=POSITION_TAPS, deepstack_layers=deepstack_indexes(vision, name=name),
        keeps_tower_output=True)
