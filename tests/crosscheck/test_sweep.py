"""benchmarks/sweep.py in small: random workloads from a fixed seed on tiny configs of every family kind,
analytic vs trace (the trace is the reference the analytic engine is calibrated against)."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
from tests.helpers import requires_transformers

from memfit.api import estimate
from memfit.core.families import spec_from_config
from memfit.core.spec import ModelSource, ModelSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from sweep import build, draw_settings

pytestmark = requires_transformers

BASE = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 8,
        "vocab_size": 512, "max_position_embeddings": 512, "torch_dtype": "bfloat16"}
TINY = {
    "llama (GQA)": {**BASE, "model_type": "llama", "num_key_value_heads": 2},
    # no activation_function: GPT2Config's default gelu_new applies (a config that omits it once got silu)
    "gpt2 (fused qkv, learned positions)": {"model_type": "gpt2", "n_embd": 256, "n_layer": 2, "n_head": 8,
                                             "vocab_size": 512, "n_positions": 512},
    "mistral (sliding window)": {**BASE, "model_type": "mistral", "num_key_value_heads": 4,
                                 "sliding_window": 128},
    "qwen3_moe (MoE, QK norm)": {**BASE, "model_type": "qwen3_moe", "num_key_value_heads": 2, "head_dim": 32,
                                 "moe_intermediate_size": 128, "num_experts": 8, "num_experts_per_tok": 2},
    "phi3 (fused qkv and gate_up)": {**BASE, "model_type": "phi3", "num_key_value_heads": 8,
                                     "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2},
}
SEED = 20261204
CASES = 6
TOLERANCE_PCT = 3.0
"""The issue's bound for random workloads: analytic within 3 % of the trace at the peak."""
OPEN_GAPS: dict[tuple[str, int], str] = {}
"""Draws where the analytic engine is known to miss the trace, each with what was measured; strict, so a fix
turns them into failures that ask for this entry's removal."""


def _spec(name: str) -> ModelSpec:
    config = TINY[name]
    return spec_from_config(config, name=name, source=ModelSource(kind="config", ref=name,
                                                                  config_json=json.dumps(config)))


def _cases() -> list[tuple[str, int]]:
    rng = random.Random(SEED)
    return [(rng.choice(sorted(TINY)), index) for index in range(CASES)]


def _params() -> list[object]:
    return [pytest.param(model, index, marks=pytest.mark.xfail(reason=OPEN_GAPS[(model, index)], strict=True))
            if (model, index) in OPEN_GAPS else (model, index) for model, index in _cases()]


@pytest.mark.parametrize(("model", "index"), _params())
def test_analytic_follows_the_trace_on_a_random_workload(model: str, index: int) -> None:
    """Draw `index` of the fixed seed: both engines' peak allocated agree within TOLERANCE_PCT."""
    rng = random.Random(SEED * 100 + index)
    spec = _spec(model)
    workload = build(spec, draw_settings(rng))
    if workload is None:
        pytest.skip("the draw is not a workload this tiny model runs")
    analytic = estimate(spec, workload, engine="analytic").peak.allocated_bytes
    traced = estimate(spec, workload, engine="trace").peak.allocated_bytes
    error = 100 * (analytic - traced) / traced
    assert abs(error) <= TOLERANCE_PCT, f"analytic {analytic:,} B vs trace {traced:,} B ({error:+.2f} %)"
