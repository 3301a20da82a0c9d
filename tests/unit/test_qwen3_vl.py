"""Qwen3-VL (qwen3_vl, qwen3_vl_moe): image tokens under the published processor budget, the tower's
position-table resampling and the features the decoder keeps, all hand-computed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memfit.api import load_model
from memfit.core.choices import PhaseName
from memfit.core.dtypes import DType
from memfit.core.errors import ConfigError
from memfit.core.estimate import estimate
from memfit.core.families import spec_from_config
from memfit.core.spec import ModelSource
from memfit.core.vision import patches_per_image, resized, tokens_per_image
from memfit.core.vision_tower import image_tokens, position_resample, vision_load
from memfit.core.workload import Inference

TINY = Path(__file__).resolve().parents[1] / "data" / "configs" / "tiny-qwen3_vl.json"


@pytest.mark.parametrize(("size", "side", "patches", "tokens"), [
    # 512²: 16·32 each side, 262,144 px within [65,536, 16,777,216]: (512/16)² = 1,024 patches / 4 = 256
    ((512, 512), (512, 512), 1024, 256),
    # 1080×1920: round(1080/32) = round(33.75) = 34 → 1,088; 1920 = 60·32; 2,088,960 px within the budget:
    # 68·120 = 8,160 patches → 2,040 tokens
    ((1080, 1920), (1088, 1920), 8160, 2040),
    # 100×100: rounds to 96² = 9,216 px < 65,536, beta = sqrt(65,536 / 10,000) = 2.56: ceil(256 / 32) = 8
    # → 256² px, 16² = 256 patches → 64 tokens (the processor's floor: shortest_edge 65,536 = 256²)
    ((100, 100), (256, 256), 256, 64),
    # 5000²: rounds to 4,992² = 24,920,064 px > 16,777,216, beta = sqrt(25,000,000 / 16,777,216) = 1.2207:
    # floor(5000 / 1.2207 / 32) = floor(4096 / 32) = 128 → 4,096² px, 256² = 65,536 patches → 16,384 tokens
    ((5000, 5000), (4096, 4096), 65536, 16384),
])
def test_qwen3_vl_image_tokens(size: tuple[int, int], side: tuple[int, int], patches: int,
                               tokens: int) -> None:
    """Qwen3-VL resizes with factor 32 (16² patches, 2×2 merge) within 256² to 4,096² px."""
    vision = load_model("Qwen3-VL-8B-Instruct").vision
    assert vision is not None
    assert resized(vision, size) == side
    assert patches_per_image(vision, size) == patches
    assert tokens_per_image(vision, size) == tokens


def test_qwen3_vl_default_image_is_256_tokens() -> None:
    """Without --image-size an image is 512² px: 32² patches of 16² → 256 tokens; three images add 768."""
    spec = load_model("Qwen3-VL-4B-Instruct")
    assert spec.vision is not None
    assert tokens_per_image(spec.vision, None) == 256
    assert image_tokens(spec, Inference(prompt_tokens=100, images=3)) == 768


def test_qwen3_vl_tower_fields_follow_the_config() -> None:
    """Qwen3-VL-8B: 27 blocks of 1,152 (16 heads of 72), deepstack after blocks 8, 16 and 24, 4 position
    taps, the projector writing the decoder's 4,096; Qwen3-VL-4B: 24 blocks of 1,024, deepstack 5, 11, 17."""
    big = load_model("Qwen3-VL-8B-Instruct").vision
    small = load_model("Qwen3-VL-4B-Instruct").vision
    assert big is not None
    assert small is not None
    assert (big.num_layers, big.hidden_size, big.head_dim, big.deepstack_layers, big.position_taps,
            big.projector_hidden) == (27, 1152, 72, (8, 16, 24), 4, 4096)
    assert (small.num_layers, small.hidden_size, small.deepstack_layers) == (24, 1024, (5, 11, 17))


def test_qwen3_vl_kept_features_and_the_tower_moment() -> None:
    """Qwen3-VL-8B, one 512² image (1,024 patches, 256 tokens) in bf16, 64 text tokens:
    - kept through the decoder: the projected copy 256·4,096·2 = 2,097,152, the mask 320, the tower's last
      hidden state 1,024·1,152·2 = 2,359,296, the merger's output 2,097,152 and three deepstack features
      6,291,456;
    - the position resample: gather 1,024·4·1,152·2 = 9,437,184 beside the fp32 product 18,874,368 (above
      product + fp32 sum 4,718,592), the patch embeddings 2,359,296 and the taps' int64 indices and fp32
      weights 1,024·4·12 = 49,152 → 30,720,000;
    - the last block runs beside the three deepstack features 6,291,456 and the fp32 resampled table with
      its taps 1,024·(1,152·4 + 4·12) = 4,767,744; that layer moment is the larger here."""
    spec = load_model("Qwen3-VL-8B-Instruct")
    load = vision_load(spec, Inference(prompt_tokens=64, images=1, image_size=(512, 512)))
    assert load is not None
    assert spec.vision is not None
    assert load.features.flat() == {"projected": 2_097_152, "placeholder_mask": 320,
                                    "tower_output": 2_359_296, "merger_output": 2_097_152,
                                    "deepstack_features": 6_291_456}
    assert position_resample(spec.vision, rows=1024, dtype=DType.BF16).nbytes == 30_720_000
    tower = load.tower.flat()
    assert tower["layer/deepstack_features"] == 6_291_456
    assert tower["layer/position_embeddings"] == 4_767_744
    assert tower["layer"] > 30_720_000


def test_qwen3_vl_layer_moment_keeps_positions_and_deepstack_features() -> None:
    """The tiny config's tower (h 32, 2 heads, I 48, 3 blocks, deepstack after 0 and 1), 2 images of 256²
    (256 patches each, 512 rows) in bf16: the last block runs beside two deepstack features
    2·(512/4)·64·2 = 32,768 B and the fp32 resampled table with its taps 512·(32·4 + 4·12) = 90,112 B."""
    text = TINY.read_text()
    spec = spec_from_config(json.loads(text), name="tiny", source=ModelSource(kind="config", ref="t"))
    load = vision_load(spec, Inference(prompt_tokens=16, images=2, image_size=(256, 256)))
    assert load is not None
    flat = load.tower.flat()
    assert flat["layer/deepstack_features"] == 32_768
    assert flat["layer/position_embeddings"] == 90_112


def test_qwen3_vl_prefill_with_images_is_positive_and_text_only_has_no_vision_terms() -> None:
    """Images add the tower moment or kept features to the prefill; a text-only job has neither."""
    spec = load_model("Qwen3-VL-30B-A3B-Instruct")
    text_only = estimate(spec, Inference(prompt_tokens=4096)).phase(PhaseName.PREFILL)
    with_images = estimate(spec, Inference(prompt_tokens=4096, images=2)).phase(PhaseName.PREFILL)
    assert not any("image_features" in k or "vision_tower" in k for k in text_only.memory.flat())
    assert with_images.allocated_bytes > text_only.allocated_bytes


def test_qwen3_vl_deepstack_index_out_of_range_is_one_config_error() -> None:
    """A deepstack index past the tower's blocks names the field and the valid range."""
    config = json.loads(TINY.read_text())
    config["vision_config"]["deepstack_visual_indexes"] = [0, 3]
    with pytest.raises(ConfigError, match=r"deepstack_visual_indexes' must list block numbers in 0\.\.2"):
        spec_from_config(config, name="tiny", source=ModelSource(kind="config", ref="t"))
