"""benchmarks/calibrate.py: the term diff and error arithmetic behind the calibration report."""

import importlib.util
import sys
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(
    "calibrate", Path(__file__).resolve().parents[2] / "benchmarks" / "calibrate.py")
calibrate = importlib.util.module_from_spec(_SPEC)  # type: ignore[arg-type]
sys.modules["calibrate"] = calibrate                  # dataclasses look their module up while building
_SPEC.loader.exec_module(calibrate)  # type: ignore[union-attr]


def test_term_diffs_sorted_by_size_and_skip_children() -> None:
    """Only differing top-level allocator terms count, largest |analytic − trace| first."""
    analytic = {"weights": 100, "weights/layers": 90, "logits": 50, "activations": 10, "non_torch": 7}
    trace = {"weights": 100, "logits": 20, "activations": 70, "non_torch": 9}
    # activations 10 − 70 = −60; logits 50 − 20 = +30; weights equal; non_torch is not allocated
    assert calibrate._term_diffs(analytic, trace) == [("activations", -60), ("logits", 30)]


def test_pct_signed_against_trace() -> None:
    """Error is (analytic − trace) / trace: 90 vs 100 is −10 %; no reference gives ''."""
    assert calibrate._pct(90, 100) == "-10.00"
    assert calibrate._pct(90, None) == ""
