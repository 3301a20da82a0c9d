"""The fuzz suite at benchmark scale: the CLI, the API, the web server and model configs, 10^4+ inputs.

    .venv/bin/python benchmarks/fuzz.py [--examples 1700] [--out benchmarks/results]

Runs the suite's own fuzz properties (tests/properties/test_workload_fuzz.py, test_cli_fuzz.py,
tests/shells/test_web_hardening.py::test_no_json_body_is_a_server_error, tests/unit/test_hostile_inputs.py's
config fuzz) with MEMFIT_FUZZ_EXAMPLES raised from the suite's 200 and Hypothesis randomised (profile "dev"),
so the benchmark and CI check the very same properties: only memfit's own errors, no 500s, int bytes only,
one error line. Writes results/fuzz-<date>.csv and .md: per property the inputs tried, failures, seconds.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROPERTIES = (
    ("api", "tests/properties/test_workload_fuzz.py"),
    ("cli", "tests/properties/test_cli_fuzz.py"),
    ("web", "tests/shells/test_web_hardening.py::test_no_json_body_is_a_server_error"),
    ("configs", "tests/unit/test_hostile_inputs.py::test_fuzzed_configs_raise_only_memfit_errors"),
)
"""(surface, pytest node) of every fuzz property."""
STAT_LINE = re.compile(r"(\d+) passing, (\d+) failing, and (\d+) invalid")
TEST_NAME = re.compile(r"^(\S+::\S+):$", re.MULTILINE)


def run(surface: str, node: str, examples: int) -> list[dict[str, object]]:
    """One pytest run of `node` with `examples` per property; a row per property it ran."""
    env = {**os.environ, "MEMFIT_FUZZ_EXAMPLES": str(examples), "HYPOTHESIS_PROFILE": "dev",
           "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node,
                           "--hypothesis-show-statistics"], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)
    seconds = time.perf_counter() - started
    rows = []
    names = TEST_NAME.findall(done.stdout)
    for name, stats in zip(names, STAT_LINE.findall(done.stdout), strict=False):
        passing, failing, invalid = (int(x) for x in stats)
        rows.append({"surface": surface, "property": name.split("::")[-1], "inputs": passing + failing,
                     "failing": failing, "invalid": invalid, "pytest_exit": done.returncode,
                     "seconds": f"{seconds:.1f}"})
    if not rows:
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
        rows.append({"surface": surface, "property": node, "inputs": 0, "failing": "", "invalid": "",
                     "pytest_exit": done.returncode, "seconds": f"{seconds:.1f}", "note": tail[0]})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--examples", type=int, default=1700,
                        help="examples per property (the CLI property takes half); default 1700")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    rows = []
    for surface, node in PROPERTIES:
        rows += run(surface, node, args.examples)
        print(rows[-1], file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.date.today().isoformat()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=False).stdout.strip()
    fields = ["surface", "property", "inputs", "failing", "invalid", "pytest_exit", "seconds", "note"]
    with (out / f"fuzz-{stamp}.csv").open("w", newline="") as fh:
        fh.write(f"# memfit {commit}, python {sys.version.split()[0]}, "
                 f"{args.examples} examples per property\n")
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows(rows)
    total = sum(int(r["inputs"]) for r in rows)
    failing = sum(int(r["failing"] or 0) for r in rows)
    lines = [f"# Fuzz run ({stamp}, memfit {commit})", "",
             f"{total:,} inputs over {len(rows)} properties, {failing} failing "
             f"({args.examples} examples per property, the CLI property half; Hypothesis randomised).", "",
             "| surface | property | inputs | failing | invalid (filtered) | pytest exit | s (file) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['surface']} | {r['property']} | {r['inputs']} | {r['failing']} | {r['invalid']} | "
              f"{r['pytest_exit']} | {r['seconds']} |" for r in rows]
    (out / f"fuzz-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if failing == 0 and all(r["pytest_exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
