"""Images in inference (core/vision.py, core/vision_tower.py): tokens per image, the workload fields, the
vision tower's working set and where the images go in the prefill, all hand-computed."""

from __future__ import annotations

import pytest

from memfit.api import load_model
from memfit.core.choices import AttnImpl, PhaseName
from memfit.core.dtypes import DType
from memfit.core.errors import ConfigError, InvalidWorkload
from memfit.core.estimate import estimate
from memfit.core.inference import inference_phases
from memfit.core.vision import (
    ImageSizing,
    VisionSpec,
    patches_per_image,
    smart_resize,
    tokens_per_image,
    tower_positions,
)
from memfit.core.vision_tower import decoder_workload, image_tokens, tower_layer_peak
from memfit.core.workload import Inference, Parallelism

# Qwen2-VL / Qwen2.5-VL processor defaults: patch 14, merge 2 (factor 28), min 56·56, max 28·28·1280
# Source: transformers 5.17 Qwen2VLImageProcessor.size
FACTOR, MIN_PIXELS, MAX_PIXELS = 28, 56 * 56, 28 * 28 * 1280
DYNAMIC = VisionSpec(tower="qwen2_5_vl", hidden_size=1280, intermediate_size=3420, num_layers=32,
                     num_heads=16, patch_size=14, image_size=448, sizing=ImageSizing.DYNAMIC,
                     spatial_merge_size=2,
                     min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, mlp_gated=True, activation="silu")


def test_gemma3_image_is_256_tokens_whatever_its_size():
    """Gemma 3 resizes every image to 896² and pools its (896/14)² = 4,096 patches to 256 tokens."""
    vision = load_model("gemma-3-4b-it").vision
    assert vision is not None
    assert patches_per_image(vision, (1080, 1920)) == 4096
    assert tokens_per_image(vision, (1080, 1920)) == tokens_per_image(vision, None) == 256


def test_smart_resize_rounds_to_the_nearest_multiple_within_the_budget():
    """1080×1920: round(1080/28) = 39 → 1,092, round(1920/28) = 69 → 1,932; 1,092·1,932 = 2,109,744 px is
    above min 3,136 but above max 1,003,520 too, so it is scaled by beta = sqrt(2,073,600 / 1,003,520)
    = 1.4375: floor(1080 / 1.4375 / 28) = floor(26.83) = 26 → 728; floor(1920 / 1.4375 / 28) = 47 → 1,316."""
    resized = smart_resize(1080, 1920, factor=FACTOR, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    assert resized == (728, 1316)


def test_smart_resize_within_budget_keeps_the_rounded_size():
    """448×672: 16·28 and 24·28 exactly; 301,056 px lies within [3,136, 1,003,520]: unchanged."""
    assert smart_resize(448, 672, factor=FACTOR, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS) == (448, 672)


def test_smart_resize_scales_a_small_image_up_to_min_pixels():
    """20×30: rounds to 28×28 = 784 px < 3,136, so beta = sqrt(3,136 / 600) = 2.2862:
    ceil(20·2.2862/28) = ceil(1.633) = 2 → 56, ceil(30·2.2862/28) = ceil(2.449) = 3 → 84."""
    assert smart_resize(20, 30, factor=FACTOR, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS) == (56, 84)


def test_dynamic_tokens_are_patches_over_merge_squared():
    """728×1316 (1080p after smart_resize): (728/14)·(1316/14) = 52·94 = 4,888 patches; / 2² = 1,222."""
    assert patches_per_image(DYNAMIC, (1080, 1920)) == 4888
    assert tokens_per_image(DYNAMIC, (1080, 1920)) == 1222


def test_image_tokens_join_the_decoder_prompt():
    """Two Gemma 3 images add 2 × 256 = 512 tokens to a 100-token prompt: the decoder runs 612."""
    spec = load_model("gemma-3-4b-it")
    workload = Inference(prompt_tokens=100, new_tokens=8, images=2)
    assert image_tokens(spec, workload) == 512
    decoder = decoder_workload(spec, workload)
    assert (decoder.prompt_tokens, decoder.images, decoder.new_tokens) == (612, 0, 8)


def test_images_on_a_text_only_model_are_refused():
    """Llama-3.1-8B has no vision tower: one line naming images."""
    with pytest.raises(InvalidWorkload, match=r"^images=1: Llama-3\.1-8B is a text-only model"):
        inference_phases(load_model("Llama-3.1-8B"), Inference(prompt_tokens=8, images=1))


@pytest.mark.parametrize(("fields", "message"), [
    ({"images": -1}, "images=-1 must be at least 0"),
    ({"images": 1, "image_size": "0x896"}, "image_size=0x896: height=0 must be at least 1"),
    ({"images": 1, "image_size": "896x40000"}, "896x40000: width=40000 is more than 32,768 pixels"),
    ({"images": 1, "image_size": "wide"}, "image_size='wide' must be HEIGHTxWIDTH"),
    ({"image_size": 896}, "image_size=896x896 needs images >= 1"),
])
def test_bad_image_fields_are_one_line(fields, message):
    """Non-positive or oversized image settings are refused with the field named."""
    with pytest.raises(InvalidWorkload, match=message):
        Inference(prompt_tokens=8, **fields)


def test_image_size_takes_strings_ints_and_pairs():
    """"1080x1920", [1080, 1920] and 1080 (square) all normalise to (height, width)."""
    assert Inference(images=1, image_size="1080x1920").image_size == (1080, 1920)
    assert Inference(images=1, image_size=[1080, 1920]).image_size == (1080, 1920)
    assert Inference(images=1, image_size=1080).image_size == (1080, 1080)


def test_images_beyond_the_context_and_on_other_runtimes_are_refused():
    """Image tokens count against max_position_embeddings; vLLM and tp are not modelled with images."""
    spec = load_model("gemma-3-4b-it")
    with pytest.raises(InvalidWorkload, match=r"images=2 add 512 image tokens: .* = 131084 exceeds"):
        inference_phases(spec, Inference(prompt_tokens=131072 - 500, images=2))
    with pytest.raises(InvalidWorkload, match="images=1 is modelled for runtime=transformers only"):
        inference_phases(spec, Inference(prompt_tokens=8, images=1, runtime="vllm"))
    with pytest.raises(InvalidWorkload, match="images=1 is modelled on one GPU only"):
        inference_phases(spec, Inference(prompt_tokens=8, images=1, parallel=Parallelism(tp=2)))


def test_siglip_layer_peak_gemma3_sdpa():
    """Gemma 3's SigLIP (hidden 1,152, intermediate 4,304, gelu_pytorch_tanh) on 2 bf16 images of 4,096
    patches: x = 2·4,096·1,152·2 = 18,874,368 B; fc1 out I = 2·4,096·4,304·2 = 70,516,736 B.
    MLP: residual + normed + max(2 I, I + x) = 2x + 141,033,472; attention: normed + 3 qkv + 2 output
    = 6x = 113,246,208 < MLP's 178,782,208. Plus patch embeddings and layer input: 2x = 37,748,736.
    Total 216,530,944 B."""
    vision = load_model("gemma-3-4b-it").vision
    assert vision is not None
    term = tower_layer_peak(vision, Inference(images=2), patches=4096, num_images=2, dtype=DType.BF16)
    assert term.nbytes == 216_530_944
    assert term.child("mlp") is not None


def test_siglip_eager_scores_dominate():
    """Eager: (2 images, 16 heads, 4,096²) = 536,870,912 scores at bf16 + fp32 copy + fp32 softmax
    = 10 B each: 5,368,709,120 B, beside normed, 3 qkv and the output (5x = 94,371,840) and 2x persistent
    (37,748,736): 5,500,829,696 B."""
    vision = load_model("gemma-3-4b-it").vision
    assert vision is not None
    term = tower_layer_peak(vision, Inference(images=2, attn=AttnImpl.EAGER), patches=4096, num_images=2,
                            dtype=DType.BF16)
    assert term.nbytes == 5_500_829_696


def test_many_eager_images_peak_in_the_vision_tower():
    """With 8 eager images the tower's fp32 softmax outweighs the decoder: the prefill peaks there, with no
    KV cache yet; text-only, the same prompt peaks elsewhere."""
    spec = load_model("gemma-3-4b-it")
    with_images = estimate(spec, Inference(prompt_tokens=64, images=8, attn=AttnImpl.EAGER))
    prefill = with_images.phase(PhaseName.PREFILL)
    assert prefill.at == "vision tower"
    assert prefill.memory.bytes_of("kv_cache") == 0
    assert estimate(spec, Inference(prompt_tokens=64)).phase(PhaseName.PREFILL).at != "vision tower"


def test_text_only_estimates_have_no_image_terms():
    """Without images the inputs stay one leaf and no image term appears."""
    est = estimate(load_model("gemma-3-4b-it"), Inference(prompt_tokens=64))
    flat = est.phase(est.peak.phase).memory.flat()
    assert "activations/inputs/pixel_values" not in flat
    assert not any("image" in key for key in flat)


def test_vision_spec_checks_its_shapes():
    """A dynamic tower without a pixel budget is a config error."""
    with pytest.raises(ConfigError, match="needs min_pixels and max_pixels"):
        VisionSpec(tower="t", hidden_size=64, intermediate_size=64, num_layers=1, num_heads=4, patch_size=14,
                   image_size=448, sizing=ImageSizing.DYNAMIC)


def test_qwen2_5_vl_1080p_image_under_the_published_budget():
    """Qwen2.5-VL-7B-Instruct (max_pixels 12,845,056): 1080×1920 rounds to 1,092×1,932 = 2,109,744 px,
    within budget: (1,092/14)·(1,932/14) = 78·138 = 10,764 patches, / 2² = 2,691 tokens."""
    vision = load_model("Qwen2.5-VL-7B-Instruct").vision
    assert vision is not None
    assert patches_per_image(vision, (1080, 1920)) == 10_764
    assert tokens_per_image(vision, (1080, 1920)) == 2_691


def test_packed_tower_attends_one_image_at_a_time():
    """Qwen2.5-VL's tower (h 1,280, 16 heads) runs its attention chunk by chunk: eager scores for one
    image of 1,024 patches, 16·1,024² = 16,777,216 scores × 10 B = 167,772,160 B, whatever the image count."""
    vision = load_model("Qwen2.5-VL-7B-Instruct").vision
    assert vision is not None
    eager = Inference(images=4, attn=AttnImpl.EAGER)
    term = tower_layer_peak(vision, eager, patches=1024, num_images=4, dtype=DType.BF16)
    assert term.flat()["attention/scores"] == 167_772_160



def test_llava_image_is_576_patch_tokens():
    """llava-1.5-7b-hf: 336² px of 14² patches = 24² = 576 patches (+ CLS in the tower: 577 positions);
    the "default" strategy drops CLS, so 576 image tokens."""
    vision = load_model("llava-1.5-7b-hf").vision
    assert vision is not None
    assert tokens_per_image(vision, (1080, 1920)) == 576
    assert tower_positions(vision, None) == 577


def test_clip_last_layer_runs_beside_every_kept_hidden_state():
    """CLIP ViT-L/14-336 (24 layers, h 1,024, I 4,096, quick_gelu) on one fp16 image of 577 positions:
    x = 577·1,024·2 = 1,181,696 B, I = 577·4,096·2 = 4,726,784 B. The last layer runs beside the 23 earlier
    outputs (23x = 27,179,008) and its own input x; MLP: residual + normed + max(3 I, I + x) (quick_gelu
    holds 3) = 2x + 14,180,352 = 16,543,744; attention 6x = 7,090,176 is smaller.
    Total 27,179,008 + 1,181,696 + 16,543,744 = 44,904,448 B."""
    vision = load_model("llava-1.5-7b-hf").vision
    assert vision is not None
    term = tower_layer_peak(vision, Inference(images=1), patches=577, num_images=1, dtype=DType.FP16)
    assert term.nbytes == 44_904_448
    assert term.flat()["hidden_states"] == 27_179_008
