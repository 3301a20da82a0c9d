"""Accuracy benchmark: every available engine against every measured case.

    python benchmarks/accuracy.py [--engine analytic|trace] [--out benchmarks/results]

For each case (shared ground truth + our own measurements under benchmarks/results/*.jsonl) it estimates
with the engine, computes the signed error (estimate − measured) / measured of allocated and reserved
bytes, prints a table and a per-category summary (median and max |error|), and writes
results/accuracy-<engine>-<date>.csv and .md with the library versions and the memfit git commit.
A case an engine cannot estimate is reported as "not estimated: <error>" without stopping the run.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.metadata
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from groundtruth import REPO, Case, load_cases
from memfit.core.families import spec_from_config
from memfit.core.spec import ModelSource, ModelSpec

CATEGORIES = ("inference", "quantized", "full fine-tune", "LoRA", "QLoRA")
ALLOCATED_TOLERANCE = 0.03
"""The target |error| of allocated bytes (memfit issue 5)."""
RESERVED_TOLERANCE = 0.05
"""The target |error| of reserved bytes (memfit issue 5)."""


@dataclass(frozen=True)
class Row:
    """One case's result under one engine."""

    case: Case
    engine: str
    allocated_bytes: int | None
    reserved_bytes: int | None
    phase: str
    error: str = ""

    @property
    def allocated_error(self) -> float | None:
        if self.allocated_bytes is None:
            return None
        measured = self.case.measured.allocated_bytes
        return (self.allocated_bytes - measured) / measured

    @property
    def reserved_error(self) -> float | None:
        if self.reserved_bytes is None:
            return None
        return (self.reserved_bytes - self.case.measured.reserved_bytes) / self.case.measured.reserved_bytes


def available_engines() -> list[str]:
    """analytic always; trace when its extra (torch, transformers) and module are importable."""
    engines = ["analytic"]
    if importlib.util.find_spec("torch") and importlib.util.find_spec("memfit.trace.engine"):
        engines.append("trace")
    return engines


def spec_of(case: Case) -> ModelSpec:
    """The ModelSpec of a case: its config.json through the family mapping, or the spec it carries."""
    if case.spec_dict is not None:
        from memfit.core.codec import decode

        return decode(ModelSpec, case.spec_dict)
    if case.config_path is None:
        raise FileNotFoundError(f"no config for model {case.model!r}")
    text = case.config_path.read_text()
    return spec_from_config(json.loads(text), name=case.model,
                            source=ModelSource(kind="config", ref=str(case.config_path), config_json=text))


def run_case(case: Case, engine: str) -> Row:
    """Estimate one case; any failure becomes a row saying why."""
    if case.workload is None:
        return Row(case=case, engine=engine, allocated_bytes=None, reserved_bytes=None, phase="",
                   error=f"unmappable: {case.unmappable}")
    try:
        from memfit.api import estimate

        est = estimate(spec_of(case), case.workload, engine=engine)
        peak = est.peak
        return Row(case=case, engine=engine, allocated_bytes=peak.allocated_bytes,
                   reserved_bytes=peak.reserved_bytes, phase=str(peak.phase))
    except Exception as err:  # report and go on: one broken engine path must not hide the others
        first = str(err).splitlines()[0] if str(err) else ""
        return Row(case=case, engine=engine, allocated_bytes=None, reserved_bytes=None, phase="",
                   error=f"not estimated: {type(err).__name__}: {first}"[:200])


def _pct(value: float | None, *, signed: bool = True) -> str:
    if value is None:
        return ""
    return f"{100 * value:+.2f}%" if signed else f"{100 * value:.2f}%"


def _gib(nbytes: int | None) -> str:
    return "" if nbytes is None else f"{nbytes / 2**30:.3f}"


def table_lines(rows: list[Row]) -> list[str]:
    """A Markdown table: case, category, measured and estimated allocated/reserved (GiB), signed errors;
    under-estimates first (by allocated error), cases not estimated last."""
    lines = ["| case | category | meas. alloc GiB | est. alloc GiB | alloc err | meas. reserved GiB | "
             "est. reserved GiB | reserved err | note |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    ordered = sorted(rows, key=lambda r: (r.allocated_error is None, r.allocated_error or 0.0))
    for r in ordered:
        m = r.case.measured
        lines.append(f"| {r.case.case_id} | {r.case.category} | {_gib(m.allocated_bytes)} | "
                     f"{_gib(r.allocated_bytes)} | {_pct(r.allocated_error)} | {_gib(m.reserved_bytes)} | "
                     f"{_gib(r.reserved_bytes)} | {_pct(r.reserved_error)} | {r.error} |")
    return lines


def summary_lines(rows: list[Row]) -> list[str]:
    """Median and max |error| per category, allocated and reserved; failures counted."""
    lines = ["| category | cases | estimated | median abs alloc err | max abs alloc err | "
             "median abs reserved err | max abs reserved err | within targets (3 % / 5 %) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for cat in CATEGORIES:
        group = [r for r in rows if r.case.category == cat]
        if not group:
            continue
        done = [r for r in group if r.allocated_error is not None]
        alloc = [abs(r.allocated_error or 0) for r in done]
        res = [abs(r.reserved_error or 0) for r in done]
        within = sum(1 for r in done if abs(r.allocated_error or 0) <= ALLOCATED_TOLERANCE
                     and abs(r.reserved_error or 0) <= RESERVED_TOLERANCE)
        lines.append(
            f"| {cat} | {len(group)} | {len(done)} | "
            f"{_pct(statistics.median(alloc), signed=False) if alloc else ''} | "
            f"{_pct(max(alloc), signed=False) if alloc else ''} | "
            f"{_pct(statistics.median(res), signed=False) if res else ''} | "
            f"{_pct(max(res), signed=False) if res else ''} | "
            f"{within}/{len(group)} |")
    return lines


def versions() -> dict[str, str]:
    """Python, library versions and the memfit git commit the numbers come from."""
    out = {"python": platform.python_version()}
    for dist in ("memfit", "torch", "transformers", "peft"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, check=True).stdout.strip()
        out["memfit commit"] = commit + (" (src modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        out["memfit commit"] = "unknown"
    return out


def write(rows: list[Row], engine: str, out_dir: Path) -> tuple[Path, Path]:
    """results/accuracy-<engine>-<date>.csv (one line per case and figure) and .md (tables, versions)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    csv_path = out_dir / f"accuracy-{engine}-{stamp}.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case", "source", "category", "engine", "figure", "measured_bytes", "estimate_bytes",
                         "signed_error", "measured_phase", "estimated_phase", "note"])
        for r in rows:
            m = r.case.measured
            figures = (("allocated", m.allocated_bytes, r.allocated_bytes, r.allocated_error),
                       ("reserved", m.reserved_bytes, r.reserved_bytes, r.reserved_error))
            for figure, meas, est, err in figures:
                writer.writerow([r.case.case_id, r.case.source, r.case.category, engine, figure, meas,
                                 "" if est is None else est, "" if err is None else f"{err:.6f}", m.phase,
                                 r.phase, r.error])
    md_path = out_dir / f"accuracy-{engine}-{stamp}.md"
    body = [f"# Accuracy of the {engine} engine ({stamp})", "",
            "Signed error = (estimate − measured) / measured. Targets: allocated ±3 %, reserved ±5 %.", "",
            "## Summary", "", *summary_lines(rows), "", "## Cases", "", *table_lines(rows), "",
            "## Versions", "", *(f"- {k}: {v}" for k, v in versions().items()), ""]
    md_path.write_text("\n".join(body))
    return csv_path, md_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["analytic", "trace"], action="append",
                        help="engine to check (repeatable); default: every available one")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    engines = args.engine or available_engines()
    cases = load_cases()
    for engine in engines:
        rows = [run_case(case, engine) for case in cases]
        print(f"\n## {engine}: {len(cases)} cases\n")
        print("\n".join(summary_lines(rows)))
        print()
        print("\n".join(table_lines(rows)))
        if not args.no_write:
            for path in write(rows, engine, args.out):
                print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
