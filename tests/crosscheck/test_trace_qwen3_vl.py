"""Qwen3-VL against transformers on a tiny config (tests/data/configs/tiny-qwen3_vl.json): text prompts
analytic vs the trace; images analytic vs the real model on CPU tensors (the trace cannot feed the packed
tower); the image resize against transformers' own smart_resize at Qwen3-VL's factor and budget. The
real-shaped figures are in benchmarks/results/qwen3-vl-*.md (benchmarks/qwen3_vl_check.py)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
from tests.crosscheck.test_trace_vision import _reference_smart_resize
from tests.helpers import requires_transformers

from memfit.core.choices import AttnImpl, PhaseName
from memfit.core.errors import EngineUnavailable
from memfit.core.estimate import estimate
from memfit.core.families import spec_from_config
from memfit.core.families.qwen3_vl import MAX_PIXELS, MIN_PIXELS
from memfit.core.result import Phase
from memfit.core.spec import ModelSource, ModelSpec
from memfit.core.vision import smart_resize
from memfit.core.workload import Inference

pytestmark = requires_transformers

CONFIG = Path(__file__).resolve().parents[1] / "data" / "configs" / "tiny-qwen3_vl.json"
TOLERANCE = Fraction(3, 100)
TOWER = {"hidden_size": 128, "intermediate_size": 256, "num_heads": 4, "depth": 4}
"""A tower-heavy variant of tiny-qwen3_vl: 4 blocks 128 wide (deepstack after blocks 0 and 1)."""


def _spec(config: dict[str, object]) -> ModelSpec:
    text = json.dumps(config)
    return spec_from_config(config, name="tiny-qwen3_vl",
                            source=ModelSource(kind="config", ref=str(CONFIG), config_json=text))


def _working_set(phase: Phase) -> int:
    """Allocated bytes less the weights and the cuBLAS workspace (which swamp a 64-wide model)."""
    fixed = phase.memory.bytes_of("weights") + phase.memory.bytes_of("runtime_overhead")
    return phase.allocated_bytes - fixed


def test_text_prompt_matches_the_trace() -> None:
    """512 text tokens through the tiny Qwen3-VL decoder (mrope positions, q/k norms): the prefill's working
    set is within 3 % of the traced one (measured -0.05 %; at published widths cut to 4 layers -0.001 %,
    benchmarks/results/qwen3-vl-*.md)."""
    from memfit.trace.engine import trace_estimate

    spec = _spec(json.loads(CONFIG.read_text()))
    workload = Inference(prompt_tokens=512)
    ours = estimate(spec, workload).phase(PhaseName.PREFILL)
    traced = trace_estimate(spec, workload, None).phase(PhaseName.PREFILL)
    assert abs(Fraction(_working_set(ours) - _working_set(traced), _working_set(traced))) <= TOLERANCE


def test_images_are_refused_by_the_trace_in_one_line() -> None:
    """The trace cannot run the packed tower on fake tensors; it says so and names the analytic engine."""
    from memfit.trace.engine import trace_estimate

    spec = _spec(json.loads(CONFIG.read_text()))
    with pytest.raises(EngineUnavailable, match="fixed-size towers only"):
        trace_estimate(spec, Inference(prompt_tokens=32, images=1), None)


def test_tower_matches_real_cpu_tensors() -> None:
    """2 images of 256² px (256 patches each, one packed sequence of 512) and 32 text tokens, eager
    attention in fp32 (CPU and CUDA allocate alike there): the analytic prefill peaks in the tower's last
    block (two deepstack features and the fp32 resampled position table alive) within 3 % of the real
    model's working set (measured +1.58 %; one 512×384 image +1.40 %, 4 images scaled up from 128² to 256²
    +0.85 %, 2 of 300×700 +1.02 %)."""
    import torch

    from memfit.core.dtypes import DType
    from memfit.core.vision_tower import decoder_workload, image_tokens
    from memfit.trace import harness
    from memfit.trace.tracker import real_prefill_bytes

    config = json.loads(CONFIG.read_text())
    config["vision_config"].update(TOWER)
    config["text_config"]["dtype"] = "float32"
    spec = _spec(config)
    workload = Inference(prompt_tokens=32, images=2, image_size=(256, 256), attn=AttnImpl.EAGER)
    torch.manual_seed(0)
    model = harness.build_model(json.dumps(config), decoder_workload(spec, workload), DType.FP32, "cpu")
    per_image = image_tokens(spec, workload) // 2
    image_id, end_id = config["image_token_id"], config["vision_end_token_id"]
    # each image's 64 placeholders closed by <|vision_end|> as the processor writes them, then text
    ids = torch.cat([torch.full((1, per_image), image_id), torch.full((1, 1), end_id),
                     torch.full((1, per_image), image_id), torch.full((1, 1), end_id),
                     torch.randint(0, 100, (1, 30))], dim=1)
    grid = torch.tensor([[1, 16, 16]] * 2)                  # (t, h/16, w/16) per image

    def forward() -> object:
        pixels = torch.randn(2 * 16 * 16, 3 * 2 * 16 * 16)  # (patches, channels · temporal · patch²)
        return model(input_ids=ids, pixel_values=pixels, image_grid_thw=grid,
                     mm_token_type_ids=(ids == image_id).long(), use_cache=True, logits_to_keep=1)

    real = real_prefill_bytes(model, forward)
    ours = estimate(spec, workload).phase(PhaseName.PREFILL)
    assert ours.at == "vision tower"
    assert abs(Fraction(_working_set(ours) - real, real)) <= TOLERANCE


@pytest.mark.parametrize(("height", "width"), [(1080, 1920), (100, 100), (512, 768), (5000, 5000),
                                               (333, 77), (64, 6400), (4096, 4096)])
def test_smart_resize_at_qwen3_vl_budget_matches_transformers(height: int, width: int) -> None:
    """memfit's exact smart_resize gives transformers' result at factor 32 within 65,536..16,777,216 px."""
    budget = {"factor": 32, "min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS}
    assert smart_resize(height, width, **budget) == _reference_smart_resize()(height, width, **budget)
