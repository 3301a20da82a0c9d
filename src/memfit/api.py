"""memfit's public API: resolve names, dispatch to an engine. trace and measure are imported lazily."""

from __future__ import annotations

from memfit.core.choices import Engine
from memfit.core.errors import MissingExtra
from memfit.core.params import count_params
from memfit.core.result import Estimate, Gpu
from memfit.core.spec import ModelSpec
from memfit.core.workload import Inference, Training
from memfit.sources.catalog import get_gpu
from memfit.sources.resolve import load_model

__all__ = ["count_params", "estimate", "get_gpu", "load_model"]


def _model(model: str | ModelSpec) -> ModelSpec:
    return model if isinstance(model, ModelSpec) else load_model(model)


def _gpu(gpu: str | Gpu | None) -> Gpu | None:
    return gpu if gpu is None or isinstance(gpu, Gpu) else get_gpu(gpu)


def estimate(
    model: str | ModelSpec,
    workload: Inference | Training,
    *,
    gpu: str | Gpu | None = None,
    engine: Engine | str = Engine.ANALYTIC,
) -> Estimate:
    """Estimate the GPU memory of `workload` on `model`, per phase.

    Args:
        model: a catalog name, local path, Hub id, or a ModelSpec from `load_model`.
        workload: an `Inference` or `Training` job.
        gpu: a GPU name from the catalog, a size such as "24GiB", or a `Gpu`; None: no fit check.
        engine: "analytic" (default, microseconds), "trace" (real model code on fake tensors, needs the
            [trace] extra) or "measure" (a real CUDA run, needs the [measure] extra and a GPU).

    Returns:
        The same `Estimate` type from every engine.

    Raises:
        MemfitError: a subclass naming what is wrong with the input, or a missing extra.
    """
    spec = _model(model)
    chosen_gpu = _gpu(gpu)
    match Engine.parse(engine, field="engine"):
        case Engine.ANALYTIC:
            from memfit.core.estimate import estimate as analytic

            return analytic(spec, workload, chosen_gpu)
        case Engine.TRACE:
            try:
                from memfit.trace.engine import trace_estimate
            except ImportError as err:
                raise MissingExtra("the trace engine needs torch: pip install 'memfit[trace]'") from err
            return trace_estimate(spec, workload, chosen_gpu)
        case Engine.MEASURE:
            try:
                from memfit.measure import measure
            except ImportError as err:
                raise MissingExtra("memfit measure needs torch: pip install 'memfit[measure]'") from err
            return measure(spec, workload, chosen_gpu)
