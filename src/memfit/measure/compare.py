"""Estimates vs a measurement: per phase and per figure (allocated, reserved, device) and per top-level term.

`comparison()` is pure (Estimates in, the `memfit.comparison/1` dict out); `memfit.measure.compare` runs the
measurement and the engines, then calls it.
"""

from __future__ import annotations

from typing import Any

from memfit.core.result import Estimate, Phase

COMPARISON_SCHEMA = "memfit.comparison/1"
FIGURES = ("allocated_bytes", "reserved_bytes", "device_bytes")


def relative_error(estimate: int, measured: int) -> float | None:
    """(estimate − measured) / measured, rounded to 6 digits; None when nothing was measured."""
    if measured == 0:
        return None
    return round((estimate - measured) / measured, 6)


def _figures(estimated: Phase | None, measured: Phase | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for figure in FIGURES:
        est = getattr(estimated, figure) if estimated else None
        got = getattr(measured, figure) if measured else None
        out[figure] = {"estimate": est, "measured": got,
                       "error": relative_error(est, got) if est is not None and got is not None else None}
    return out


def _terms(estimated: Phase | None, measured: Phase | None) -> dict[str, Any]:
    """Top-level terms side by side; measured terms are only what a real run can attribute."""
    names = [t.name for t in estimated.memory.children] if estimated else []
    names += [t.name for t in measured.memory.children if t.name not in names] if measured else []
    return {name: {"estimate": estimated.memory.bytes_of(name) if estimated else None,
                   "measured": measured.memory.bytes_of(name) if measured else None} for name in names}


def comparison(measured: Estimate, estimates: dict[str, Estimate]) -> dict[str, Any]:
    """The `memfit.comparison/1` dict: for each engine, its peak and phases against the measured ones."""
    engines: dict[str, Any] = {}
    got_peak = measured.peak
    for name, est in estimates.items():
        phases = []
        for phase in est.phases:
            try:
                real: Phase | None = measured.phase(phase.name)
            except KeyError:
                real = None
            phases.append({"name": str(phase.name), **_figures(phase, real), "terms": _terms(phase, real)})
        peak = est.peak
        engines[name] = {
            "peak": {figure: {"estimate": getattr(peak, figure), "measured": getattr(got_peak, figure),
                              "error": relative_error(getattr(peak, figure), getattr(got_peak, figure))}
                     for figure in FIGURES},
            "phases": phases, "assumptions": list(est.assumptions),
        }
    return {"schema": COMPARISON_SCHEMA, "model": measured.model.name,
            "workload": measured.to_dict()["workload"],
            "measured": {"peak": {"phase": str(got_peak.phase), **{f: getattr(got_peak, f) for f in FIGURES}},
                         "assumptions": list(measured.assumptions)},
            "engines": engines}
