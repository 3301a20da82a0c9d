"""Vision towers of vision-language models: their shapes (`VisionSpec`, set by the family mappers) and how
many patches and prompt tokens an image becomes.

Two image-size policies (transformers 5.17 image processors):
- `ImageSizing.FIXED`: every image is resized to `image_size` × `image_size` (SigLIP in Gemma 3:
  Gemma3ImageProcessor resizes to 896 × 896 without pan-and-scan), so its patch count and its token count
  (Gemma 3: `mm_tokens_per_image`, the projector's average pool) do not depend on the input size;
- `ImageSizing.DYNAMIC`: the image keeps its aspect ratio, resized to multiples of patch × merge within
  [min_pixels, max_pixels] (`smart_resize`, Qwen2-VL / Qwen2.5-VL), then (h/patch)·(w/patch) patches, and
  spatial_merge_size² patches merge into one token;
- `ImageSizing.LONGEST_EDGE`: the image keeps its aspect ratio, scaled down (floor) until its longest edge is
  at most `image_size`, then each side rounded up to a multiple of patch × merge (Pixtral in Mistral 3:
  PixtralImageProcessor.get_resize_output_image_size); each row of merged patches ends with a break token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from memfit.core.choices import Choice
from memfit.core.errors import ConfigError


class ImageSizing(Choice):
    """How a model's processor sizes an image before its vision tower."""

    FIXED = "fixed"          # resized to image_size × image_size
    DYNAMIC = "dynamic"      # aspect ratio kept, smart_resize within [min_pixels, max_pixels]
    LONGEST_EDGE = "longest-edge"  # aspect ratio kept, longest edge at most image_size, sides rounded up


@dataclass(frozen=True, slots=True, kw_only=True)
class VisionSpec:
    """A vision tower and projector as the family's code builds them (HF vision_config names)."""

    tower: str                            # HF model_type of the vision model (siglip_vision_model, ...)
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    patch_size: int
    image_size: int                       # FIXED: the side every image is resized to; DYNAMIC: default side
    sizing: ImageSizing = ImageSizing.FIXED
    tokens_per_image: int | None = None   # FIXED: a fixed token count (Gemma 3 mm_tokens_per_image)
    spatial_merge_size: int = 1           # DYNAMIC: merge² patches become one token
    min_pixels: int | None = None         # DYNAMIC: the processor's pixel budget
    max_pixels: int | None = None
    num_channels: int = 3
    temporal_patch_size: int = 1          # frames per patch: an image is repeated this many times (Qwen2-VL)
    mlp_gated: bool = False               # SwiGLU MLP (Qwen2.5-VL) or fc1-act-fc2 (SigLIP)
    activation: str = "gelu_pytorch_tanh"
    projector_hidden: int = 0             # the decoder width the projector writes (image features' width)
    # how the tower's forward runs (set by the family mappers from their transformers source)
    packed: bool = False                  # all images as one sequence, attention chunk by chunk (one image
                                          # or window at a time); False: a batch of images at once (SigLIP)
    keeps_patch_embeddings: bool = True   # the tower's forward keeps its embeddings output referenced
                                          # while the encoder runs (SiglipVisionTransformer.forward)
    class_token: bool = False             # a CLS position joins the patches in the tower (CLIP)
    rotary: bool = False                  # 2-D RoPE on q and k: rotated copies of both, and fp32 cos/sin
                                          # tables (positions × head_dim) for the whole tower (Qwen2.5-VL)
    keeps_hidden_states: bool = False     # the tower runs with output_hidden_states=True: every layer's
                                          # output stays alive until the projector ran (LLaVA)
    row_break_tokens: bool = False        # one more prompt token per row of merged patches ([IMG_BREAK],
                                          # the last one [IMG_END]: Pixtral)
    block_mask: bool = False              # all images in one sequence, attended at once behind a (N, N)
                                          # additive block mask in the compute dtype built once for the
                                          # tower (Pixtral generate_block_attention_mask)
    rotary_tables_fp32: bool = True       # the 2-D RoPE cos / sin tables stay fp32; False: cast to the
                                          # compute dtype (PixtralRotaryEmbedding)
    position_taps: int = 0                # a learned position table resampled to each image's grid with
                                          # this many table rows per patch, gathered in the compute dtype
                                          # and weighted in fp32 (Qwen3-VL: 4, bilinear); 0: none
    deepstack_layers: tuple[int, ...] = ()  # tower blocks whose output a deepstack merger also projects
                                          # to the decoder width: one image-token-sized feature each, kept
                                          # through the later blocks and the decoder (Qwen3-VL)
    keeps_tower_output: bool = False      # the tower's output object (its last hidden state, the merger
                                          # output the model concatenates a copy of) stays referenced
                                          # through the decoder (Qwen3VLModel.forward's image_outputs)

    def __post_init__(self) -> None:
        for name in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "patch_size",
                     "image_size", "spatial_merge_size", "num_channels", "temporal_patch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"vision {name}={getattr(self, name)} must be at least 1")
        if self.position_taps < 0 or any(i < 0 or i >= self.num_layers for i in self.deepstack_layers):
            raise ConfigError(f"vision position_taps={self.position_taps} and deepstack_layers="
                              f"{self.deepstack_layers} must be non-negative block numbers below "
                              f"num_layers={self.num_layers}")
        if self.sizing is ImageSizing.DYNAMIC and (self.min_pixels is None or self.max_pixels is None):
            raise ConfigError("a dynamic-resolution vision tower needs min_pixels and max_pixels")

    @property
    def head_dim(self) -> int:
        """hidden / heads (a config whose heads do not divide hidden builds, but cannot run images)."""
        return max(1, self.hidden_size // self.num_heads)

    @property
    def default_size(self) -> tuple[int, int]:
        """(height, width) in pixels when the workload gives none."""
        return self.image_size, self.image_size


def smart_resize(height: int, width: int, *, factor: int, min_pixels: int,
                 max_pixels: int) -> tuple[int, int]:
    """(height, width) after Qwen2-VL's resize: each a multiple of `factor` (patch × merge), rounded to the
    nearest; scaled down by sqrt(h·w / max_pixels) (floor) when above max_pixels, up by
    sqrt(min_pixels / (h·w)) (ceil) when below min_pixels; never below `factor`.
    Exact arithmetic (Fractions and integer square roots) where the source uses floats: the same result
    except where a float lands exactly on a multiple.
    Source: transformers 5.17 models/qwen2_vl/image_processing_qwen2_vl.py smart_resize.
    """
    h_bar = round(Fraction(height, factor)) * factor
    w_bar = round(Fraction(width, factor)) * factor
    if h_bar * w_bar > max_pixels:
        # floor(side / sqrt(h·w / max) / factor) = isqrt(floor(side² · max / (h·w · factor²)))
        def down(side: int) -> int:
            root = math.isqrt(side * side * max_pixels // (height * width * factor * factor))
            return max(factor, root * factor)
        return down(height), down(width)
    if h_bar * w_bar < min_pixels:
        def up(side: int) -> int:
            square = Fraction(side * side * min_pixels, height * width * factor * factor)
            root = math.isqrt(math.floor(square))
            return (root if root * root == square else root + 1) * factor
        return up(height), up(width)
    return h_bar, w_bar


def longest_edge_resize(height: int, width: int, *, longest: int, factor: int) -> tuple[int, int]:
    """(height, width) after Pixtral's resize: scaled by 1 / ratio (floor) when ratio = max(h, w) / longest
    exceeds 1, then each side rounded up to a multiple of `factor` (patch × merge).
    Exact arithmetic where the source divides floats: floor(h / (max(h, w) / longest)) = h·longest // max.
    Source: transformers 5.17 models/pixtral/image_processing_pixtral.py get_resize_output_image_size,
    _num_image_tokens ((side − 1) // factor + 1)."""
    edge = max(height, width)
    if edge > longest:
        height, width = height * longest // edge, width * longest // edge
    return (-(-height // factor) * factor, -(-width // factor) * factor)


def resized(vision: VisionSpec, size: tuple[int, int] | None) -> tuple[int, int]:
    """(height, width) of an image of `size` (None: the default size) as the tower sees it."""
    height, width = size or vision.default_size
    if vision.sizing is ImageSizing.FIXED:
        return vision.image_size, vision.image_size
    if vision.sizing is ImageSizing.LONGEST_EDGE:
        return longest_edge_resize(height, width, longest=vision.image_size,
                                   factor=vision.patch_size * vision.spatial_merge_size)
    # both set for DYNAMIC (checked in __post_init__)
    assert vision.min_pixels is not None
    assert vision.max_pixels is not None
    return smart_resize(height, width, factor=vision.patch_size * vision.spatial_merge_size,
                        min_pixels=vision.min_pixels, max_pixels=vision.max_pixels)


def patches_per_image(vision: VisionSpec, size: tuple[int, int] | None) -> int:
    """Patches (tower sequence positions) of one image: (h / patch) · (w / patch) after resizing."""
    height, width = resized(vision, size)
    return (height // vision.patch_size) * (width // vision.patch_size)


def tower_positions(vision: VisionSpec, size: tuple[int, int] | None) -> int:
    """Sequence positions per image inside the tower: the patches, plus CLS where the tower has one."""
    return patches_per_image(vision, size) + (1 if vision.class_token else 0)


def tokens_per_image(vision: VisionSpec, size: tuple[int, int] | None) -> int:
    """Prompt tokens one image becomes: the fixed count when the family sets one (Gemma 3: 256), else the
    patches over spatial_merge_size² (Qwen2.5-VL: (h/14)·(w/14)/4).
    Source: transformers 5.17 Gemma3Processor (image_seq_length = mm_tokens_per_image);
    Qwen2VLProcessor (image_grid_thw.prod() // merge_size**2 placeholder tokens)."""
    if vision.tokens_per_image is not None:
        return vision.tokens_per_image
    merged = patches_per_image(vision, size) // (vision.spatial_merge_size ** 2)
    if vision.row_break_tokens:   # Source: transformers 5.17 PixtralProcessor (replace_tokens per row)
        height, _ = resized(vision, size)
        return merged + height // (vision.patch_size * vision.spatial_merge_size)
    return merged
