"""Regenerate tests/data/multirank_trace.json from the multi-rank trace's per-case JSON files.

    python -m tests.golden.make_multirank_trace DIR

DIR holds the trace engine's outputs (one JSON per case: workload, per-phase allocated bytes, versions,
assumptions). Each row keeps the workload, the per-phase allocated bytes, the peak and where the trace
found it, and a source naming the engine and library versions; the analytic model is checked against them
by tests/golden/test_multirank_trace.py.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "multirank_trace.json"
PIPELINE_NOTE = ("the traced pipeline stage ran its in-flight micro-batches once, so its forward and "
                 "backward lack the gradients earlier micro-batches leave under 1F1B (grad_accum > "
                 "micro-batches in flight); memfit counts them")
TOLERANCE = "0.03"
"""The issue-11 target: analytic within ±3 % of the traced peak allocated bytes of the most loaded rank."""


def _reported_stage(case: dict[str, object]) -> int:
    """The pipeline stage the trace reports (its assumption 'pipeline stage S of P is the most loaded')."""
    for line in case.get("assumptions", []):  # type: ignore[attr-defined]
        match = re.search(r"pipeline stage (\d+) of \d+", str(line))
        if match:
            return int(match.group(1))
    return 0


def main(folder: str) -> None:
    rows = []
    skipped: list[str] = []
    for path in sorted(Path(folder).glob("*.json")):
        case = json.loads(path.read_text())
        versions = case.get("versions") or {}
        libraries = case["assumptions"][0] if case.get("assumptions") else ""
        phases = {name: p["allocated_bytes"] for name, p in case["phases"].items()}
        peak = max(phases, key=lambda name: phases[name])
        workload = case["workload"]
        pp, micro = workload["parallel"].get("pp", 1), workload.get("grad_accum", 1)
        # the trace runs a stage's in-flight micro-batches once (no 1F1B steady state): with more
        # micro-batches than the reported stage holds in flight, its forward and backward lack the
        # gradients earlier micro-batches leave, and another stage may then be the most loaded; such a
        # row does not state the job memfit estimates, so it is left out (listed in the benchmark table)
        stage = _reported_stage(case) if pp > 1 else 0
        if pp > 1 and micro > min(pp - stage, micro):
            skipped.append(case["case"])
            continue
        rows.append({
            "id": case["case"],
            "source": f"memfit multi-rank trace ({case.get('engine', 'trace')}): {libraries}"
                      + (f"; memfit {versions['memfit commit']}" if "memfit commit" in versions else ""),
            "model": case.get("model") or case["case"].split("_")[0],
            "workload": case["workload"],
            "allocated_bytes": phases,
            "peak_phase": peak,
            "peak_at": case["phases"][peak].get("at", ""),
            "tolerance": TOLERANCE,
        })
    OUT.write_text(json.dumps({"rows": rows, "left_out": {"reason": PIPELINE_NOTE, "cases": skipped}},
                              indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
