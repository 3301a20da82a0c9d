"""Analytic vs trace on Mistral 3 text prompts: the Mistral decoder inside Mistral3ForConditionalGeneration,
with the Pixtral tower and projector loaded beside it (their weights only: no images). A tiny config and
four layers at Mistral-Small-3.1's shapes."""

import json
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import requires_transformers

from memfit.core.choices import PhaseName
from memfit.core.dtypes import DType
from memfit.core.estimate import estimate
from memfit.core.families import spec_from_config
from memfit.core.result import Phase
from memfit.core.spec import ModelSource
from memfit.core.workload import Inference

pytestmark = requires_transformers

CONFIGS = Path(__file__).parents[1] / "data" / "configs"
CATALOG = Path(__file__).resolve().parents[2] / "src" / "memfit" / "catalog" / "models"
TOLERANCE = {PhaseName.LOAD: 0.01, PhaseName.PREFILL: 0.01, PhaseName.DECODE: 0.01}
"""Measured at Mistral-Small-3.1 shapes: load −0.000 %, prefill −0.000 %, decode +0.003 %."""
TINY_TOLERANCE = 0.03
"""The tiny model's tensors are a few KiB each, where the trace's 512-byte rounding shows: measured load
−2.6 %, prefill −0.3 %, decode −2.0 %."""


def _four_layers() -> dict[str, Any]:
    config = json.loads((CATALOG / "Mistral-Small-3.1-24B-Instruct-2503.json").read_text())
    return {**config, "text_config": {**config["text_config"], "num_hidden_layers": 4}}


def _without_workspace(phase: Phase) -> int:
    """Allocated bytes less the cuBLAS workspace, which both engines add alike and would hide the rest."""
    return phase.allocated_bytes - phase.memory.bytes_of("runtime_overhead")


@pytest.mark.parametrize(("config", "batch", "prompt", "tolerance"), [
    (json.loads((CONFIGS / "tiny-mistral3-two-feature-layers.json").read_text()), 2, 200, TINY_TOLERANCE),
    (_four_layers(), 1, 4000, TOLERANCE[PhaseName.PREFILL]),
], ids=["tiny-mistral3", "mistral-small-3.1-4-layer-shapes"])
def test_analytic_follows_the_trace_on_mistral3_text(config: dict[str, Any], batch: int, prompt: int,
                                                     tolerance: float) -> None:
    """Load, prefill and decode of a text prompt match the trace."""
    from memfit.trace.engine import trace_estimate

    spec = spec_from_config(config, name="mistral3", source=ModelSource(kind="config", ref="mistral3",
                                                                        config_json=json.dumps(config)))
    workload = Inference(prompt_tokens=prompt, new_tokens=4, batch_size=batch, dtype=DType.BF16)
    ours, traced = estimate(spec, workload), trace_estimate(spec, workload, None)
    for phase in (PhaseName.LOAD, PhaseName.PREFILL, PhaseName.DECODE):
        expected = _without_workspace(traced.phase(phase))
        assert abs(_without_workspace(ours.phase(phase)) - expected) <= tolerance * expected, phase


PIXTRAL_TOWER = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4,
                 "num_hidden_layers": 4, "image_size": 448}
"""A tower-heavy variant of tiny-mistral3: 4 Pixtral layers 128 wide, images up to 448 px."""


@pytest.mark.parametrize(("images", "height", "width"), [(2, 224, 224), (1, 448, 336), (3, 600, 900)])
def test_pixtral_tower_matches_real_cpu_tensors(images: int, height: int, width: int) -> None:
    """Pixtral builds its block mask with data-dependent slices, which fake tensors cannot run, so the real
    model runs on CPU tensors under the same tracker: eager attention in fp32 (CPU and CUDA allocate alike
    there), 32 text tokens. The analytic prefill peaks in the tower and is within 1 % of the real working
    set (measured −0.07 %, −0.05 %, −0.02 %; 4 images of 100 × 60 px −0.16 %)."""
    import torch

    from memfit.core.choices import AttnImpl
    from memfit.core.vision import resized
    from memfit.core.vision_tower import decoder_workload
    from memfit.trace import harness
    from memfit.trace.tracker import real_prefill_bytes

    config = json.loads((CONFIGS / "tiny-mistral3-two-feature-layers.json").read_text())
    config["vision_config"].update(PIXTRAL_TOWER)
    # one feature layer: transformers 5.17's projector norm is over one layer's width
    config.update(torch_dtype="float32", image_token_index=10, vision_feature_layer=-1)
    text = json.dumps(config)
    spec = spec_from_config(config, name="tiny-mistral3-tower",
                            source=ModelSource(kind="config", ref="tiny", config_json=text))
    assert spec.vision is not None
    workload = Inference(prompt_tokens=32, images=images, image_size=(height, width), attn=AttnImpl.EAGER)
    h, w = resized(spec.vision, (height, width))
    cols = w // 28
    row = [10] * cols + [12]                                      # [IMG] × cols, [IMG_BREAK]
    placeholders = [*(row * (h // 28))[:-1], 13]                  # the last break is [IMG_END]
    torch.manual_seed(0)
    model = harness.build_model(text, decoder_workload(spec, workload), DType.FP32, "cpu")
    ids = torch.tensor([placeholders * images + torch.randint(14, 100, (32,)).tolist()])

    def forward() -> object:
        pixels = torch.randn(images, 3, h, w)
        return model(input_ids=ids, pixel_values=pixels, image_sizes=torch.tensor([[h, w]] * images),
                     use_cache=True)

    real = real_prefill_bytes(model, forward)
    ours = estimate(spec, workload).phase(PhaseName.PREFILL)
    assert ours.at == "vision tower"
    working_set = ours.allocated_bytes - ours.memory.bytes_of("weights") - ours.memory.bytes_of(
        "runtime_overhead")
    assert abs(working_set - real) <= TOLERANCE[PhaseName.PREFILL] * real


@pytest.mark.parametrize(("height", "width"),
                         [(1080, 1920), (1540, 1540), (100, 60), (4000, 333), (29, 3000)])
def test_longest_edge_resize_matches_transformers(height: int, width: int) -> None:
    """memfit's integer resize gives PixtralImageProcessor's float result."""
    import ast
    import importlib.util
    import math

    from memfit.core.vision import longest_edge_resize

    source = importlib.util.find_spec("transformers.models.pixtral.image_processing_pixtral")
    assert source is not None
    assert source.origin is not None
    tree = ast.parse(Path(source.origin).read_text())
    wanted = {"get_resize_output_image_size", "_num_image_tokens"}
    nodes = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    namespace: dict[str, Any] = {"math": math, "get_image_size": lambda image, fmt=None: image,
                                 "ImageInput": Any, "ChannelDimension": Any}
    exec(compile(ast.Module(body=nodes, type_ignores=[]), source.origin, "exec"), namespace)
    theirs = namespace["get_resize_output_image_size"]((height, width), 1540, 28)
    assert longest_edge_resize(height, width, longest=1540, factor=28) == tuple(theirs)
