"""memfit's public API: resolve names, dispatch to an engine. trace and measure are imported lazily."""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
from typing import TYPE_CHECKING, Any

from memfit.core.choices import Engine
from memfit.core.device_support import workload_for_gpu
from memfit.core.errors import InvalidWorkload, MissingExtra
from memfit.core.params import count_params
from memfit.core.result import PARAMS_SCHEMA, Estimate, Gpu
from memfit.core.spec import ModelSpec
from memfit.core.workload import Inference, Training
from memfit.sources.catalog import get_gpu
from memfit.sources.resolve import load_model

if TYPE_CHECKING:
    from memfit.core.dtypes import Quant
    from memfit.core.plan import Plan

__all__ = [
    "catalog_gpus",
    "catalog_models",
    "catalog_quants",
    "compare",
    "count_params",
    "dumps",
    "estimate",
    "get_gpu",
    "load_model",
    "params_report",
    "plan",
]


def _model(model: str | ModelSpec) -> ModelSpec:
    return model if isinstance(model, ModelSpec) else load_model(model)


def _gpu(gpu: str | Gpu | None) -> Gpu | None:
    return gpu if gpu is None or isinstance(gpu, Gpu) else get_gpu(gpu)


@functools.cache
def _installed_transformers() -> str | None:
    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return None


def _with_installed_note(est: Estimate) -> Estimate:
    """An analytic transformers estimate made where another transformers is installed says so: its figures
    follow core.versions.MODELED, whatever this machine has (the job may run elsewhere)."""
    from memfit.core.runtimes import PROFILES
    from memfit.core.versions import MODELED

    installed = _installed_transformers()
    if installed is None or installed == MODELED["transformers"] or \
            not PROFILES[est.workload.runtime].follows_modeled_versions:
        return est
    note = (f"transformers {installed} is installed here; these figures follow {MODELED['transformers']} "
            "whatever is installed (later changes known to touch this model are listed above)")
    return dataclasses.replace(est, assumptions=(*est.assumptions, note))


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
        engine: "analytic" (default, milliseconds), "trace" (real model code on fake tensors, needs the
            [trace] extra) or "measure" (a real CUDA run, needs the [measure] extra and a GPU).

    Returns:
        The same `Estimate` type from every engine.

    Raises:
        MemfitError: a subclass naming what is wrong with the input, or a missing extra.
    """
    spec = _model(model)
    chosen_gpu = _gpu(gpu)
    chosen_engine = Engine.parse(engine, field="engine")
    if chosen_engine is Engine.ANALYTIC:
        from memfit.core.estimate import estimate as analytic

        return _with_installed_note(analytic(spec, workload, chosen_gpu))
    # the analytic estimate applies workload_for_gpu itself; the others get the same workload and notes
    workload, gpu_notes = workload_for_gpu(spec, workload, chosen_gpu)
    if chosen_engine is Engine.TRACE:
        try:
            from memfit.trace.engine import trace_estimate
        except ImportError as err:
            raise MissingExtra("the trace engine needs torch: pip install 'memfit[trace]'") from err
        est = trace_estimate(spec, workload, chosen_gpu)
    else:
        try:
            from memfit.measure import measure
        except ImportError as err:
            raise MissingExtra("memfit measure needs torch: pip install 'memfit[measure]'") from err
        est = measure(spec, workload, chosen_gpu)
    return dataclasses.replace(est, assumptions=(*gpu_notes, *est.assumptions)) if gpu_notes else est


def plan(
    model: str | ModelSpec,
    workload: Inference | Training,
    *,
    gpu: str | Gpu,
    maximize: str | None = None,
    gpu_counts: tuple[int, ...] = (),
) -> Plan:
    """What fits `gpu`: the largest batch or context, or the least invasive changes that make the job fit.

    Args:
        model: a catalog name, local path, Hub id, or a ModelSpec.
        workload: the job as the user would run it.
        gpu: a catalog GPU name, a size such as "24GiB", or a `Gpu`.
        maximize: "batch" (largest batch size that fits), "context" (longest prompt or sequence that
            fits), or None: try an ordered list of changes and keep the least invasive ones that fit.

    Returns:
        A `Plan` (`to_dict()` is the `memfit.plan/1` JSON) built on analytic estimates.

    Raises:
        MemfitError: a subclass naming what is wrong with the input.
    """
    from memfit.core.plan import plan as plan_job

    chosen = _gpu(gpu)
    if chosen is None:
        raise InvalidWorkload("plan needs a GPU: give --gpu NAME or a size such as 24GiB")
    return plan_job(_model(model), workload, chosen, maximize=maximize, gpu_counts=tuple(gpu_counts))


def compare(
    model: str | ModelSpec,
    workload: Inference | Training,
    *,
    gpu: str | Gpu | None = None,
) -> Any:
    """Estimate engines beside a real measurement of the same job (needs [measure] and a CUDA GPU).

    Returns:
        A `Comparison` whose `to_dict()` is the `memfit.comparison/1` JSON.

    Raises:
        MissingExtra: torch or bitsandbytes is not installed.
        EngineUnavailable: no CUDA GPU on this machine.
    """
    try:
        from memfit.measure import compare as compare_engines
    except ImportError as err:
        raise MissingExtra("memfit compare needs torch: pip install 'memfit[measure]'") from err
    return compare_engines(_model(model), workload, _gpu(gpu))


def launch_command(model: str | ModelSpec, workload: Inference | Training) -> str:
    """The command line (vLLM, llama.cpp) or from_pretrained / TrainingArguments call (transformers) that
    runs `workload` on `model` as estimated; `memfit plan --emit` prints it for the plan's chosen job."""
    from memfit.core.launch import launch_command as build

    return build(_model(model), workload)


def catalog_models() -> list[dict[str, Any]]:
    """The bundled catalog's models: name, repo id, revision, gated flag (offline, no login)."""
    from memfit.sources.catalog import catalog_models as models

    return models()


def catalog_gpus() -> list[Gpu]:
    """The bundled catalog's GPUs with board and CUDA-usable memory in bytes."""
    from memfit.sources.catalog import catalog_gpus as gpus

    return gpus()


def catalog_quants() -> list[Quant]:
    """Every named weight format with its exact bits per weight."""
    from memfit.core.quants import ALL_QUANTS

    return list(ALL_QUANTS.values())


def params_report(model: str | ModelSpec) -> dict[str, Any]:
    """The `memfit.params/1` report: the model, its total parameter count and counts by flat path."""
    spec = _model(model)
    tree = count_params(spec)
    return {
        "schema": PARAMS_SCHEMA,
        "model": {
            "name": spec.name,
            "family": spec.family,
            "num_params": tree.num_params,
            "source": spec.source.ref,
        },
        "num_params": tree.num_params,
        "tree": tree.flat(),
    }


CATALOG_KINDS = ("models", "gpus", "quants")


def catalog_report(kind: str) -> dict[str, Any]:
    """The catalog listing the CLI prints with `catalog KIND --json` and the web app serves.

    Raises:
        InvalidWorkload: `kind` is not models, gpus or quants.
    """
    from memfit.core.codec import encode

    wanted = kind.strip().lower()
    if wanted == "models":
        return {"schema": "memfit.catalog.models/1", "models": catalog_models()}
    if wanted == "gpus":
        return {"schema": "memfit.catalog.gpus/1", "gpus": [encode(g) for g in catalog_gpus()]}
    if wanted == "quants":
        rows = [
            {
                "name": q.name,
                "kind": q.kind,
                "bits_per_weight": str(q.bits_per_weight),
                "runtimes": sorted(str(r) for r in q.runtimes),
                "keeps": sorted(q.keeps),
                "note": q.note,
            }
            for q in catalog_quants()
        ]
        return {"schema": "memfit.catalog.quants/1", "quants": rows}
    raise InvalidWorkload(f"catalog {kind!r} is not valid; use one of: {', '.join(CATALOG_KINDS)}")


def dumps(data: Any) -> str:
    """The JSON text the CLI prints and the web app returns for the same result, byte for byte."""
    import json

    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
