"""Laws of the planner over the real analytic estimate: the answer fits and one more does not."""

from __future__ import annotations

import functools
from typing import Any

from hypothesis import given
from tests.strategies import planner_catalog_jobs, planner_gpus, planner_jobs

from memfit.core.estimate import estimate
from memfit.core.plan import (
    MAX_BATCH,
    context_limit,
    plan_changes,
    plan_max_batch,
    plan_max_context,
    with_batch_size,
    with_context,
)
from memfit.core.result import Gpu
from memfit.core.spec import ModelSpec
from memfit.core.workload import Inference, Training
from memfit.sources.catalog import load_catalog_model


@functools.cache
def _catalog(name: str) -> ModelSpec:
    spec = load_catalog_model(name)
    assert spec is not None, name
    return spec


def _fits(spec: ModelSpec, workload: Inference | Training, gpu: Gpu) -> bool:
    return bool(estimate(spec, workload, gpu).fits)


def _check_max_batch(spec: ModelSpec, workload: Inference | Training, gpu: Gpu) -> None:
    n = plan_max_batch(spec, workload, gpu)
    if n >= 1:
        assert _fits(spec, with_batch_size(workload, n), gpu)
    if n < MAX_BATCH:
        assert not _fits(spec, with_batch_size(workload, n + 1), gpu)


def _check_max_context(spec: ModelSpec, workload: Inference | Training, gpu: Gpu) -> None:
    n = plan_max_context(spec, workload, gpu)
    if n >= 1:
        assert _fits(spec, with_context(workload, n), gpu)
    if n < context_limit(spec, workload):
        assert not _fits(spec, with_context(workload, n + 1), gpu)


@given(job=planner_jobs(), gpu=planner_gpus(min_mib=1024, max_mib=4096))
def test_max_batch_fits_and_one_more_does_not(job: tuple[Any, Any], gpu: Gpu) -> None:
    """plan_max_batch returns n: n sequences fit (when n ≥ 1) and n + 1 do not (below the search cap)."""
    _check_max_batch(*job, gpu)


@given(job=planner_catalog_jobs(), gpu=planner_gpus())
def test_max_batch_at_catalog_scale(job: tuple[Any, Any], gpu: Gpu) -> None:
    """The same law on real catalog models (GQA, MHA, sliding windows, MoE, MLA) and real GPU sizes."""
    name, workload = job
    _check_max_batch(_catalog(name), workload, gpu)


@given(job=planner_jobs(), gpu=planner_gpus(min_mib=1024, max_mib=4096))
def test_max_context_fits_and_one_more_does_not_or_hits_the_limit(job: tuple[Any, Any], gpu: Gpu) -> None:
    """plan_max_context returns n: n tokens fit, and n + 1 do not unless n is the model's position limit."""
    _check_max_context(*job, gpu)


@given(job=planner_catalog_jobs(), gpu=planner_gpus())
def test_max_context_at_catalog_scale(job: tuple[Any, Any], gpu: Gpu) -> None:
    """The context law on real catalog models and GPU sizes."""
    name, workload = job
    _check_max_context(_catalog(name), workload, gpu)


@given(job=planner_catalog_jobs(), gpu=planner_gpus())
def test_every_proposed_change_fits(job: tuple[Any, Any], gpu: Gpu) -> None:
    """Each change plan_changes proposes fits the GPU, and none repeats the job as asked."""
    name, workload = job
    for change in plan_changes(_catalog(name), workload, gpu):
        assert change.estimate.fits
        assert change.workload != workload
