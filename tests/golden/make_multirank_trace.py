"""Regenerate tests/data/multirank_trace.json from the multi-rank trace's per-case JSON files.

    python -m tests.golden.make_multirank_trace DIR

DIR holds the trace engine's outputs (one JSON per case: workload, per-phase allocated bytes, versions,
assumptions). Each row keeps the workload, the per-phase allocated bytes, the peak and where the trace
found it, and a source naming the engine and library versions; the analytic model is checked against them
by tests/golden/test_multirank_trace.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "multirank_trace.json"
PIPELINE_NOTE = ("the traced pipeline stage runs its in-flight micro-batches once, so its forward and "
                 "backward lack the gradients earlier micro-batches leave under 1F1B (grad_accum > "
                 "micro-batches in flight); memfit counts them")
TOLERANCE = "0.03"
"""The issue-11 target: analytic within ±3 % of the traced peak allocated bytes of the most loaded rank."""


def main(folder: str) -> None:
    rows = []
    for path in sorted(Path(folder).glob("*.json")):
        case = json.loads(path.read_text())
        versions = case.get("versions") or {}
        libraries = case["assumptions"][0] if case.get("assumptions") else ""
        phases = {name: p["allocated_bytes"] for name, p in case["phases"].items()}
        peak = max(phases, key=lambda name: phases[name])
        workload = case["workload"]
        pp, micro = workload["parallel"].get("pp", 1), workload.get("grad_accum", 1)
        # the trace runs a stage's in-flight micro-batches once (no 1F1B steady state): with more
        # micro-batches than the last stage holds (one), earlier micro-batches' gradients are missing from
        # its forward and backward (which matters where one of those is the peak)
        short = pp > 1 and micro > 1 and peak != "optimizer"
        rows.append({
            "id": case["case"],
            "status": "xfail" if short else "ok",
            "notes": PIPELINE_NOTE if short else "",
            "source": f"memfit multi-rank trace ({case.get('engine', 'trace')}): {libraries}"
                      + (f"; memfit {versions['memfit commit']}" if "memfit commit" in versions else ""),
            "model": case.get("model") or case["case"].split("_")[0],
            "workload": case["workload"],
            "allocated_bytes": phases,
            "peak_phase": peak,
            "peak_at": case["phases"][peak].get("at", ""),
            "tolerance": TOLERANCE,
        })
    OUT.write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
