"""The analytic per-rank model against recorded multi-rank traces (tests/data/multirank_trace.json).

Each row is one rank's real training step traced on torch's fake process group (FSDP2 full, shard-grad-op
and hybrid, DDP; full fine-tuning and LoRA; with and without checkpointing), its per-phase allocated bytes
recorded with the engine and library versions. The analytic estimate of the same workload must hold the
most loaded rank's peak allocated bytes within the row's tolerance (±3 %, memfit issue 11). Pipeline traces
that ran fewer micro-batches than the job are left out of the file (its "left_out" says which and why).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from memfit.core.codec import decode
from memfit.core.estimate import estimate
from memfit.core.workload import Training
from memfit.sources.resolve import load_model

ROOT = Path(__file__).resolve().parents[2]
ROWS = json.loads((ROOT / "tests" / "data" / "multirank_trace.json").read_text())["rows"]


def _workload(row: dict[str, object]) -> Training:
    fields = {k: v for k, v in dict(row["workload"]).items() if k != "task"}  # type: ignore[call-overload]
    fields["parallel"] = {k: v for k, v in fields["parallel"].items() if v is not None}
    return decode(Training, fields)


@pytest.mark.parametrize("row", ROWS, ids=[str(r["id"]) for r in ROWS])
def test_peak_within_tolerance_of_the_trace(row: dict[str, object]) -> None:
    """The analytic peak allocated bytes of the most loaded rank are within the row's tolerance."""
    traced = max(dict(row["allocated_bytes"]).values())  # type: ignore[call-overload]
    ours = estimate(load_model(str(row["model"])), _workload(row)).peak.allocated_bytes
    assert abs(Fraction(ours - traced, traced)) <= Fraction(str(row["tolerance"]))
