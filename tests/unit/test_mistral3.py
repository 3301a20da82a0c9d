"""Mistral 3 (Mistral-Small-3.1): a Mistral decoder whose LM head follows Mistral3Config's tie default, a
Pixtral tower and patch-merging projector counted as extra components, and Pixtral's image sizing."""

import json
from pathlib import Path

import pytest

from memfit.core.dtypes import DType
from memfit.core.errors import UnsupportedArchitecture
from memfit.core.families import spec_from_config
from memfit.core.families.mistral3 import pixtral_params
from memfit.core.params import count_params
from memfit.core.spec import ModelSource, ModelSpec
from memfit.core.vision import longest_edge_resize, patches_per_image, tokens_per_image
from memfit.core.vision_tower import tower_layer_peak
from memfit.core.workload import Inference
from memfit.sources.resolve import load_model

CONFIGS = Path(__file__).parents[1] / "data" / "configs"
TINY = json.loads((CONFIGS / "tiny-mistral3-two-feature-layers.json").read_text())


def _spec(config: dict[str, object]) -> ModelSpec:
    return spec_from_config(config, name="tiny-mistral3", source=ModelSource(kind="config", ref="tiny"))


def test_mistral_small_3_1_components():
    """Mistral-Small-3.1-24B: a 24-layer Pixtral tower of 403,305,472 parameters and a 35,652,608-parameter
    projector beside a tied 40-layer decoder."""
    # tower: conv 3·14²·1,024 = 602,112 + ln_pre 1,024 + 24 × (2,048 + 4·1,024² + 3·1,024·4,096) = 403,305,472
    # projector: norm 1,024 + merger 4,096·1,024 + linear_1 1,024·5,120 + linear_2 5,120² = 35,652,608
    spec = load_model("Mistral-Small-3.1-24B-Instruct-2503", offline=True)
    tree = {node.name: node.num_params for node in count_params(spec).children}
    assert tree["vision_tower"] == 403_305_472
    assert tree["multi_modal_projector"] == 35_652_608
    assert "lm_head" not in tree


def test_top_level_tie_decides_the_head():
    """tie_word_embeddings is read at the top level (Mistral3Config), default true; false adds the head."""
    untied, tied = _spec(TINY), _spec({k: v for k, v in TINY.items() if k != "tie_word_embeddings"})
    # the tiny head: vocab 256 × hidden 64
    assert count_params(untied).num_params - count_params(tied).num_params == 16_384
    assert tied.tie_word_embeddings


def test_pixtral_class_defaults_apply_to_a_given_vision_config():
    """A vision_config object takes PixtralVisionConfig's defaults (patch 16, 24 layers of 1,024)."""
    # conv 3·16²·1,024 = 786,432 + 1,024 + 24 × 16,779,264 = 403,489,792
    assert pixtral_params({"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                           "num_channels": 3, "patch_size": 16}, name="x") == 403_489_792


def test_pixtral_resize_keeps_the_aspect_ratio_within_the_longest_edge():
    """A 1080 × 1920 image: scaled by 1,540 / 1,920 (floor) to 866 × 1,540, sides rounded up to 28 (patch 14 ×
    merge 2): 868 × 1,540; a small image is only rounded up."""
    # 1,080 · 1,540 // 1,920 = 866 → ⌈866 / 28⌉ · 28 = 31 · 28 = 868; 1,540 = 55 · 28
    assert longest_edge_resize(1080, 1920, longest=1540, factor=28) == (868, 1540)
    # 100 → 4 · 28 = 112; 60 → 3 · 28 = 84
    assert longest_edge_resize(100, 60, longest=1540, factor=28) == (112, 84)


def test_image_tokens_add_a_break_per_row():
    """Mistral-Small-3.1, a 1080 × 1920 image: 31 rows of 55 merged patches, one break (or end) per row."""
    # 868 / 28 = 31 rows, 1,540 / 28 = 55 columns: 31 · 55 + 31 = 1,736 tokens; 62 · 110 = 6,820 patches
    spec = load_model("Mistral-Small-3.1-24B-Instruct-2503", offline=True)
    assert spec.vision is not None
    assert tokens_per_image(spec.vision, (1080, 1920)) == 1_736
    assert patches_per_image(spec.vision, (1080, 1920)) == 6_820


def test_block_mask_and_rotary_tables_are_sized_over_all_images():
    """Two images of 256 patches in the tiny tower (32 wide, 2 heads of 16), bf16: one block mask over all
    512 patches, and bf16 cos / sin tables for every patch."""
    # mask 512² × 2 B = 524,288 B; tables 2 × 512 × 16 × 2 B = 32,768 B
    spec = _spec(TINY)
    assert spec.vision is not None
    layer = tower_layer_peak(spec.vision, Inference(prompt_tokens=16, images=2), patches=256, num_images=2,
                             dtype=DType.BF16)
    assert layer.bytes_of("block_mask") == 524_288
    assert layer.bytes_of("rotary_tables") == 32_768


def test_other_text_models_are_refused():
    """Only a Mistral text_config is mapped."""
    with pytest.raises(UnsupportedArchitecture, match="Mistral 3 with a 'ministral3' text model"):
        _spec({**TINY, "text_config": {**TINY["text_config"], "model_type": "ministral3"}})
