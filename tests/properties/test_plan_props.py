"""Laws of the planner over the real analytic estimate: the answer fits and one more does not."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from memfit.core.estimate import estimate
from memfit.core.plan import MAX_BATCH, context_limit, plan_changes, plan_max_batch, plan_max_context
from memfit.core.result import Gpu
from memfit.core.units import GiB
from memfit.core.workload import Inference, Training
from memfit.sources.catalog import load_catalog_model

PLANNER_MODELS = (
    "SmolLM2-135M-Instruct",
    "Qwen2.5-0.5B",
    "Llama-3.2-1B",
    "gemma-2-2b-it",
    "Qwen3-4B",
    "Llama-3.1-8B",
    "Mixtral-8x7B-v0.1",
    "DeepSeek-V2-Lite",
)
"""Catalog models covering GQA, MHA, sliding windows, MoE and MLA; loaded once each."""
SPECS = {name: load_catalog_model(name) for name in PLANNER_MODELS}

# These draw only catalog names and plain integers; they move to tests/strategies.py once that module
# offers model and workload strategies (it is empty as this is written).
names = st.sampled_from(PLANNER_MODELS)
gpus = st.integers(min_value=4, max_value=192).map(
    lambda gib: Gpu(name=f"{gib}GiB", memory_bytes=gib * GiB, usable_bytes=gib * GiB)
)
inference = st.builds(
    Inference,
    prompt_tokens=st.integers(1, 8192),
    new_tokens=st.integers(0, 512),
    batch_size=st.integers(1, 8),
)
training = st.builds(Training, seq_len=st.integers(1, 4096), batch_size=st.integers(1, 4))
workloads = st.one_of(inference, training)


def _fits(spec, workload, gpu) -> bool:
    return bool(estimate(spec, workload, gpu).fits)


@given(name=names, workload=workloads, gpu=gpus)
def test_max_batch_fits_and_one_more_does_not(name, workload, gpu):
    """plan_max_batch returns n: n sequences fit (when n ≥ 1) and n + 1 do not (below the search cap)."""
    spec = SPECS[name]
    n = plan_max_batch(spec, workload, gpu)
    if n >= 1:
        assert _fits(spec, dataclasses.replace(workload, batch_size=n), gpu)
    if n < MAX_BATCH:
        assert not _fits(spec, dataclasses.replace(workload, batch_size=n + 1), gpu)


@given(name=names, workload=workloads, gpu=gpus)
def test_max_context_fits_and_one_more_does_not_or_hits_the_limit(name, workload, gpu):
    """plan_max_context returns n: n tokens fit, and n + 1 do not unless n is the model's position limit."""
    spec = SPECS[name]
    field = "seq_len" if isinstance(workload, Training) else "prompt_tokens"
    n = plan_max_context(spec, workload, gpu)
    if n >= 1:
        assert _fits(spec, dataclasses.replace(workload, **{field: n}), gpu)
    if n < context_limit(spec, workload):
        assert not _fits(spec, dataclasses.replace(workload, **{field: n + 1}), gpu)


@given(name=names, workload=training, gpu=gpus)
def test_every_proposed_change_fits(name, workload, gpu):
    """Each change plan_changes proposes fits the GPU, and none repeats the job as asked."""
    spec = SPECS[name]
    for change in plan_changes(spec, workload, gpu):
        assert change.estimate.fits
        assert change.workload != workload
