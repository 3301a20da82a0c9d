"""Analytic vs trace on Llama 4: chunked attention cached as a window of the chunk, its mask alive through
the layer loop, dense-dispatch experts beside a shared expert, interleaved dense layers; prefill, decode and
a training step. A tiny config, and four layers at Llama-4-Scout's shapes (fake tensors cost the trace
nothing at that size) with a prompt past the chunk."""

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
from memfit.core.spec import ModelSource, ModelSpec
from memfit.core.workload import Inference, Training

pytestmark = requires_transformers

CONFIGS = Path(__file__).parents[1] / "data" / "configs"
SCOUT_4_LAYER_SHAPES = {
    "model_type": "llama4_text", "vocab_size": 202048, "hidden_size": 5120, "intermediate_size": 8192,
    "intermediate_size_mlp": 16384, "num_hidden_layers": 4, "num_attention_heads": 40,
    "num_key_value_heads": 8, "head_dim": 128, "num_local_experts": 16, "num_experts_per_tok": 1,
    "interleave_moe_layer_step": 2, "no_rope_layers": [1, 1, 1, 0], "attention_chunk_size": 1024,
    "use_qk_norm": True, "max_position_embeddings": 262144, "torch_dtype": "bfloat16",
}
"""Llama-4-Scout's layer shapes, four layers (dense and MoE, chunked and NoPE), a 1,024-token chunk so a
9,000-token prompt crosses it: synthetic, not a catalog entry."""
TOLERANCE = 0.01
"""Measured: prefill +0.001 %, decode +0.25 % at Scout shapes; the tiny prefill −0.2 %."""
TINY_DECODE_TOLERANCE = 0.03
"""The tiny model's decode step is a few hundred KiB, where the trace's 512-byte rounding of each tiny
tensor shows: measured −1.8 %."""


def _spec(config: dict[str, Any]) -> ModelSpec:
    name = str(config["model_type"])
    return spec_from_config(config, name=name, source=ModelSource(kind="config", ref=name,
                                                                  config_json=json.dumps(config)))


def _without_workspace(phase: Phase) -> int:
    """Allocated bytes less the cuBLAS workspace, which both engines add alike and would hide the rest."""
    return phase.allocated_bytes - phase.memory.bytes_of("runtime_overhead")


@pytest.mark.parametrize(("config", "batch", "prompt", "decode_tolerance"), [
    (json.loads((CONFIGS / "tiny-llama4_text-interleaved.json").read_text()), 2, 100, TINY_DECODE_TOLERANCE),
    (SCOUT_4_LAYER_SHAPES, 1, 9000, TOLERANCE),
], ids=["tiny-llama4_text", "scout-4-layer-shapes"])
def test_analytic_follows_the_trace_on_llama4_inference(config: dict[str, Any], batch: int, prompt: int,
                                                        decode_tolerance: float) -> None:
    """Prefill and decode match the trace."""
    from memfit.trace.engine import trace_estimate

    spec = _spec(config)
    workload = Inference(prompt_tokens=prompt, new_tokens=4, batch_size=batch, dtype=DType.BF16)
    ours, traced = estimate(spec, workload), trace_estimate(spec, workload, None)
    for phase, tolerance in ((PhaseName.PREFILL, TOLERANCE), (PhaseName.DECODE, decode_tolerance)):
        expected = _without_workspace(traced.phase(phase))
        assert abs(_without_workspace(ours.phase(phase)) - expected) <= tolerance * expected, phase


def test_analytic_follows_the_trace_on_a_llama4_training_step() -> None:
    """A full fine-tuning step at Scout's shapes (every expert saves its rows for backward): forward and
    backward peaks within 1 % (measured +0.08 %, −0.02 %)."""
    from memfit.trace.engine import trace_estimate

    spec = _spec(SCOUT_4_LAYER_SHAPES)
    workload = Training(seq_len=1024)
    ours, traced = estimate(spec, workload), trace_estimate(spec, workload, None)
    for phase in (PhaseName.FORWARD, PhaseName.BACKWARD):
        expected = traced.phase(phase).allocated_bytes
        assert abs(ours.phase(phase).allocated_bytes - expected) <= TOLERANCE * expected, phase
