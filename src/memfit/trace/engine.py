"""The trace engine's parent side: spawn `python -m memfit.trace.worker`, enforce a timeout, parse one line.

A fresh process per trace: the fake-CUDA shim must load before torch, and the patches are process-global.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from typing import Any

from memfit.core.checkpoint_load import with_loaded_quant
from memfit.core.codec import encode
from memfit.core.errors import EngineUnavailable, InvalidWorkload, MissingExtra
from memfit.core.result import Estimate, Gpu, _workload_to_dict
from memfit.core.spec import ModelSpec
from memfit.core.training import validate as validate_training
from memfit.core.workload import Inference, Training
from memfit.trace.compat import check_installed

TRACE_TIMEOUT_S = 600
"""Longest a trace may run (seconds); override with MEMFIT_TRACE_TIMEOUT. A 70B training step takes ~30 s."""

_ERRORS = {"EngineUnavailable": EngineUnavailable, "InvalidWorkload": InvalidWorkload,
           "MissingExtra": MissingExtra}


def trace_estimate(spec: ModelSpec, workload: Inference | Training, gpu: Gpu | None) -> Estimate:
    """The trace engine's Estimate: the real HF code path on fake CUDA tensors, in a child process.

    Raises:
        MissingExtra: torch, transformers or peft is not installed.
        EngineUnavailable: the trace cannot run this workload (the message names what to use instead),
            failed, or timed out; or torch, transformers or peft is outside the verified versions
            (core.versions.TRACE_VERIFIED) and MEMFIT_TRACE_UNVERIFIED=1 is not set.
    """
    for package in ("torch", "transformers", "peft"):
        if importlib.util.find_spec(package) is None:
            raise MissingExtra(f"the trace engine needs {package}: pip install 'memfit[trace]'")
    unverified = check_installed()          # refuses outside the verified versions unless asked not to
    loaded, load_notes = with_loaded_quant(spec, workload, gpu)   # a checkpoint's format as loaded
    if isinstance(loaded, Training):
        validate_training(spec, loaded)     # what peft / transformers cannot run: one line, before the child
    request = {"spec": encode(spec), "workload": _workload_to_dict(loaded),
               "gpu": encode(gpu) if gpu is not None else None, "assumptions": [*load_notes, *unverified]}
    est = Estimate.from_dict(run_worker(request))
    return est if loaded is workload else dataclasses.replace(est, workload=workload)


def run_worker(request: dict[str, Any], *, timeout_s: float | None = None) -> dict[str, Any]:
    """Send `request` to a fresh worker; its Estimate dict, or the MemfitError it reported."""
    timeout = timeout_s or float(os.environ.get("MEMFIT_TRACE_TIMEOUT", TRACE_TIMEOUT_S))
    try:
        done = subprocess.run([sys.executable, "-m", "memfit.trace.worker"], input=json.dumps(request),
                              stdout=subprocess.PIPE, stderr=None if sys.stderr.isatty() else subprocess.PIPE,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise EngineUnavailable(f"the trace took longer than {timeout:.0f} s; use engine=analytic, or set "
                                "MEMFIT_TRACE_TIMEOUT") from err
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        detail = (done.stderr or "").strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        raise EngineUnavailable(f"the trace worker crashed ({detail[0][:200]}); use engine=analytic")
    answer: dict[str, Any] = json.loads(lines[-1])
    if "error" in answer:
        raise _ERRORS.get(answer.get("kind", ""), EngineUnavailable)(answer["error"])
    return answer
