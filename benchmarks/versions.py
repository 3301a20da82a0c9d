"""The trace engine under two library versions: the same catalog sweep, traced in each, compared case by case.

    .venv/bin/python benchmarks/versions.py run [--tiers 1,2] [--models gpt2,opt-125m] [--resume]
    .venv/bin/python benchmarks/versions.py compare OLD.csv NEW.csv [--out results/versions-<date>.md]

`run` traces the calibration sweep's cases (benchmarks/calibrate.py) with whatever torch / transformers / peft
are installed (MEMFIT_TRACE_UNVERIFIED=1, so a version being verified runs) and writes
results/versions-trace-transformers<version>-<date>.csv: per case and phase the allocated and reserved bytes,
or the engine's refusal. `compare` joins two such files and writes a Markdown report: every case whose peak
moved, every refusal, so an upgrade of the supported range is a deliberate step with a result file.
The ground-truth half of the check is benchmarks/trace_check.py, run under each version.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibrate import MODELS, cases, environment_line, read_csv, write_csv
from memfit.api import estimate, load_model
from memfit.core.errors import MemfitError

FIELDS = ("case", "phase", "allocated", "reserved", "error", "seconds", "unverified")
"""`unverified`: 1 when the trace ran a path it refuses without MEMFIT_TRACE_UNVERIFIED=1 (a version range
or a code path the installed release runs differently), else empty."""
RESULTS = Path(__file__).resolve().parent / "results"
MOVED_PCT = 0.1
"""A peak that moves by more than this (percent of allocated) between versions is listed as moved."""


def _installed(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def run(tiers: set[int], models: list[str], out: Path, *, resume: bool) -> Path:
    os.environ.setdefault("MEMFIT_TRACE_UNVERIFIED", "1")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"versions-trace-transformers{_installed('transformers')}-{datetime.date.today()}.csv"
    rows: list[dict[str, Any]] = read_csv(path) if resume else []
    done = {r["case"] for r in rows}
    header = environment_line()
    for case in cases(tiers, models):
        if case.case_id in done:
            continue
        started = time.perf_counter()
        try:
            spec = load_model(case.model)
            workload = case.build(spec)
            if workload is None:
                continue
            est = estimate(spec, workload, engine="trace")
        except MemfitError as err:
            rows.append({"case": case.case_id, "phase": "peak", "allocated": "", "reserved": "",
                         "error": str(err), "seconds": f"{time.perf_counter() - started:.1f}"})
        else:
            seconds = f"{time.perf_counter() - started:.1f}"
            for phase in est.phases:
                rows.append({"case": case.case_id, "phase": str(phase.name),
                             "allocated": phase.allocated_bytes, "reserved": phase.reserved_bytes,
                             "error": "", "seconds": ""})
            unverified = any(a.startswith("UNVERIFIED") for a in est.assumptions)
            rows.append({"case": case.case_id, "phase": "peak", "allocated": est.peak.allocated_bytes,
                         "reserved": est.peak.reserved_bytes, "error": "", "seconds": seconds,
                         "unverified": 1 if unverified else ""})
        write_csv(path, rows, header, FIELDS)
        print(f"{case.case_id}: {rows[-1]['allocated'] or rows[-1]['error'][:100]}", file=sys.stderr)
    return path


def _header(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    return first.lstrip("# ").strip()


def compare(old: Path, new: Path) -> str:
    """A Markdown report: peaks that moved by more than MOVED_PCT, refusals and failures on either side."""
    a = {(r["case"], r["phase"]): r for r in read_csv(old)}
    b = {(r["case"], r["phase"]): r for r in read_csv(new)}
    peaks = sorted({case for case, phase in a if phase == "peak"}
                   & {case for case, phase in b if phase == "peak"})
    same, moved, refused = [], [], []
    for case in peaks:
        ra, rb = a[(case, "peak")], b[(case, "peak")]
        if ra["error"] or rb["error"]:
            refused.append((case, ra["error"] or "ok", rb["error"] or "ok"))
            continue
        old_bytes, new_bytes = int(ra["allocated"]), int(rb["allocated"])
        pct = 100 * (new_bytes - old_bytes) / old_bytes
        served = "refused unless MEMFIT_TRACE_UNVERIFIED=1" if rb.get("unverified") else "served"
        (moved if abs(pct) > MOVED_PCT else same).append((case, old_bytes, new_bytes, pct, served))
    lines = [f"# Trace under two library versions ({datetime.date.today()})", "",
             f"- old: `{old.name}`: {_header(old)}", f"- new: `{new.name}`: {_header(new)}", "",
             f"{len(peaks)} cases in both; peak allocated within {MOVED_PCT} %: {len(same)}; moved: "
             f"{len(moved)}; refused or failed on either side: {len(refused)}.", ""]
    served_moved = [m for m in moved if m[4] == "served"]
    lines += [f"Moved and still served by default (no MEMFIT_TRACE_UNVERIFIED): {len(served_moved)}, largest "
              f"{max((abs(m[3]) for m in served_moved), default=0.0):.3f} %; the new side's trace refuses "
              f"{sum(1 for m in same + moved if m[4] != 'served')} cases by default (its figures were taken "
              "with MEMFIT_TRACE_UNVERIFIED=1).", ""]
    if moved:
        lines += ["## Peaks that moved", "", "| case | old (B) | new (B) | change | new side, by default |",
                  "|---|---:|---:|---:|---|"]
        moved.sort(key=lambda m: -abs(m[3]))
        lines += [f"| {c} | {o} | {n} | {p:+.3f} % | {s} |" for c, o, n, p, s in moved]
        lines.append("")
    if refused:
        lines += ["## Refused or failed", "", "| case | old | new |", "|---|---|---|"]
        lines += [f"| {c} | {o[:160]} | {n[:160]} |" for c, o, n in refused]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--tiers", default="1")
    r.add_argument("--models", default=",".join(MODELS))
    r.add_argument("--resume", action="store_true")
    r.add_argument("--out", default=str(RESULTS))
    c = sub.add_parser("compare")
    c.add_argument("old")
    c.add_argument("new")
    c.add_argument("--out", default="")
    args = parser.parse_args()
    if args.command == "run":
        path = run({int(t) for t in args.tiers.split(",")}, args.models.split(","), Path(args.out),
                   resume=args.resume)
        print(f"wrote {path}")
        return 0
    text = compare(Path(args.old), Path(args.new))
    out = Path(args.out) if args.out else RESULTS / f"versions-{datetime.date.today()}.md"
    out.write_text(text + "\n")
    print(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
