"""Regenerate tests/data/memory_golden.json from benchmarks/sweep.py results (trace engine figures).

    python -m tests.golden.make_memory_golden benchmarks/results/sweep-seed2-<date>.csv [...]

Each sweep row whose trace ran becomes a golden row: the catalog model, the workload (rebuilt from the
sweep's seed and case number, so the row needs no trace to check), the trace's per-phase allocated bytes,
and a source naming the engine, the library versions and the commit of the sweep. The analytic engine is
checked against them by tests/golden/test_memory_golden.py (±3 %, memfit issue 12), except the rows listed
in OPEN_GAPS there with what was measured.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "memory_golden.json"
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(paths: list[str]) -> None:
    from memfit.core.codec import encode
    from memfit.sources.catalog import catalog_models
    from memfit.sources.resolve import load_model
    from sweep import sweep_cases  # the same draws, from the same seed

    models = sorted(m["name"] for m in catalog_models())
    rows = []
    for path in paths:
        text = Path(path).read_text()
        header = text.splitlines()[0].lstrip("# ")
        seed = int(re.search(r"seed(\d+)", path).group(1))  # type: ignore[union-attr]
        table = list(csv.DictReader(text.splitlines()[1:]))
        cases = sweep_cases(seed, 1 + max(int(r["case"].split("#")[1].split()[0]) for r in table), models)
        by_case: dict[str, dict[str, int]] = {}
        for r in table:
            if r["phase"] != "peak" and r["trace_alloc"]:
                by_case.setdefault(r["case"], {})[r["phase"]] = int(r["trace_alloc"])
        for case_id, phases in by_case.items():
            index = int(case_id.split("#")[1].split()[0])
            case = cases[index]
            workload = case.build(load_model(case.model))
            kind = "train" if type(workload).__name__ == "Training" else "infer"
            rows.append({"id": f"seed{seed}#{index} {case.model}", "model": case.model, "task": kind,
                         "workload": encode(workload), "allocated_bytes": phases,
                         "source": f"memfit trace engine (benchmarks/sweep.py seed {seed}): {header}"})
    OUT.write_text(json.dumps({"schema": "memfit.memory_golden/1", "rows": rows}, indent=1) + "\n")
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1:])
