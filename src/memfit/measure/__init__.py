"""The measure engine (extra [measure]): the workload for real on a CUDA GPU, in a fresh process.

`measure()` returns an `Estimate` with engine="measure"; `measure_record()` the ground-truth-style record
(what `memfit measure` can write under benchmarks/results/); `compare()` estimates vs measurement as
`memfit.comparison/1`. Nothing here imports torch at import time: the run happens in
`python -m memfit.measure.run`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from typing import Any

from memfit.core.errors import EngineUnavailable, InvalidWorkload, MissingExtra
from memfit.core.result import Estimate, Gpu, _workload_to_dict
from memfit.core.spec import ModelSpec
from memfit.core.workload import Inference, Training
from memfit.measure.compare import comparison
from memfit.measure.record import estimate_from_record, record_from_estimate

__all__ = ["compare", "comparison", "estimate_from_record", "measure", "measure_record",
           "record_from_estimate"]

MEASURE_TIMEOUT_S = 1800
"""Longest a measured run may take (seconds); override with MEMFIT_MEASURE_TIMEOUT."""

_ERRORS = {"EngineUnavailable": EngineUnavailable, "InvalidWorkload": InvalidWorkload,
           "MissingExtra": MissingExtra}


def measure_record(spec: ModelSpec, workload: Inference | Training) -> dict[str, Any]:
    """Run the workload on this machine's GPU in a fresh process; the ground-truth-style record.

    Raises:
        MissingExtra: torch is not installed.
        EngineUnavailable: no CUDA GPU is visible, or the run crashed or timed out.
    """
    if importlib.util.find_spec("torch") is None:
        raise MissingExtra("memfit measure needs torch: pip install 'memfit[measure]'")
    if not spec.source.config_json:
        raise EngineUnavailable(f"{spec.name} has no config.json text to build the model from")
    if isinstance(workload, Inference) and workload.images:
        raise EngineUnavailable(f"images={workload.images}: memfit measure does not feed images yet; "
                                "use engine=analytic or trace")
    config_json = spec.source.config_json
    if spec.stored_quant is not None:
        from memfit.core.checkpoint_load import with_loaded_quant

        workload, _ = with_loaded_quant(spec, workload)
        if workload.quant.is_quantized and not workload.quant.kind.startswith("bnb"):
            raise EngineUnavailable(
                f"measure builds random weights from config.json; a {workload.quant.name} checkpoint as "
                "stored needs its real files: pass --quant dequantized to measure the dequantized model")
        config = json.loads(config_json)
        config.pop("quantization_config", None)   # random weights in the compute dtype, quantized by bnb
        config_json = json.dumps(config)
    request = {"model": spec.name, "config_json": config_json,
               "checkpoint_dtype": str(spec.checkpoint_dtype), "workload": _workload_to_dict(workload)}
    timeout = float(os.environ.get("MEMFIT_MEASURE_TIMEOUT", MEASURE_TIMEOUT_S))
    try:
        done = subprocess.run([sys.executable, "-m", "memfit.measure.run"], input=json.dumps(request),
                              capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as err:
        raise EngineUnavailable(f"the measured run took longer than {timeout:.0f} s") from err
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        detail = (done.stderr or "").strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        raise EngineUnavailable(f"the measured run crashed ({detail[0][:200]})")
    answer: dict[str, Any] = json.loads(lines[-1])
    if "error" in answer:
        raise _ERRORS.get(answer.get("kind", ""), EngineUnavailable)(answer["error"])
    return answer


def measure(spec: ModelSpec, workload: Inference | Training, gpu: Gpu | None) -> Estimate:
    """The measured Estimate (engine="measure") of `workload` on this machine's GPU."""
    return estimate_from_record(spec, workload, gpu, measure_record(spec, workload))


def compare(spec: ModelSpec, workload: Inference | Training, gpu: Gpu | None,
            engines: tuple[str, ...] = ("analytic", "trace")) -> dict[str, Any]:
    """Measure, then estimate with each engine; the `memfit.comparison/1` dict (per phase, figure, term)."""
    measured = measure(spec, workload, gpu)
    return comparison(measured, {name: _estimate(name, spec, workload, gpu) for name in engines})


def _estimate(engine: str, spec: ModelSpec, workload: Inference | Training, gpu: Gpu | None) -> Estimate:
    """One engine's Estimate (measure sits below api in the layers, so it dispatches itself)."""
    if engine == "analytic":
        from memfit.core.estimate import estimate as analytic

        return analytic(spec, workload, gpu)
    if engine == "trace":
        from memfit.trace.engine import trace_estimate

        return trace_estimate(spec, workload, gpu)
    raise InvalidWorkload(f"engine={engine!r} cannot be compared; use analytic or trace")
