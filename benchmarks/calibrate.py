"""Sweep the analytic engine against the trace engine over catalog models and workloads.

    .venv/bin/python benchmarks/calibrate.py [--tiers 1,2,3] [--models gpt2,opt-125m] [--timeout 240]
                                             [--budget-min 45] [--resume] [--report-only] [--out DIR]

The trace engine runs the real transformers code on fake CUDA tensors and matches measured allocator bytes to
~0.1 %, so it stands in for measurements of families and settings the ground truth lacks. Per case (model ×
workload) and phase this records analytic and trace allocated and reserved bytes, the signed error
(analytic − trace) / trace, and the per-term breakdown of both (`Phase.memory.flat()`), so a person can see
which term is off. Cases run one at a time (each trace is its own subprocess with a timeout); an engine's
failure is recorded as a finding, never fatal.

Writes results/calibration-<date>.csv (one row per case and phase, plus a `peak` row per case; written after
every case, so a killed sweep keeps what it did) and results/calibration-<date>.md (rows sorted by |error|,
term diffs of the worst cases, every engine error). `--report-only` rebuilds the .md from the .csv.
Coefficients found here are copied into core/ by hand with the results row as `Source:` (DESIGN.md §9).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memfit.api import estimate, load_model
from memfit.core.choices import AttnImpl, Checkpointing, KvCache, Method, Optimizer, Precision
from memfit.core.dtypes import DType, quant
from memfit.core.errors import MemfitError
from memfit.core.result import ALLOCATED_TERMS, Estimate
from memfit.core.spec import ModelSpec
from memfit.core.workload import Inference, Lora, Training

MIB = 1 << 20

MODELS = (
    # ordered small to large so a time-boxed sweep covers every family first
    "gpt2", "SmolLM2-135M-Instruct", "opt-125m", "pythia-160m", "gemma-3-270m", "opt-350m", "bloom-560m",
    "Qwen3-0.6B", "gemma-3-1b-it", "starcoderbase-1b", "TinyLlama-1.1B-Chat-v1.0", "falcon-rw-1b",
    "Qwen2.5-1.5B", "Qwen3-1.7B", "gemma-2b", "granite-3.1-2b-base", "gemma-2-2b-it", "phi-2",
    "starcoder2-3b", "Phi-4-mini-instruct", "Phi-3-mini-4k-instruct", "Mistral-7B-v0.1",
    "c4ai-command-r7b-12-2024", "OLMo-2-1124-7B", "DeepSeek-V2-Lite", "Qwen1.5-MoE-A2.7B-Chat",
    "gpt-oss-20b", "Qwen3-30B-A3B",
)

LONG_CONTEXT_MODELS = frozenset({
    "SmolLM2-135M-Instruct", "gemma-3-270m", "Qwen3-0.6B", "gemma-3-1b-it", "Qwen2.5-1.5B", "Qwen3-1.7B",
    "granite-3.1-2b-base", "gemma-2-2b-it", "Phi-4-mini-instruct",
})
"""Small models whose max_position_embeddings reach 8,192: the long-context cases stay cheap."""


@dataclass(frozen=True, slots=True)
class Case:
    """One sweep point: a catalog model and a workload built from its spec (lengths capped at its context)."""

    tier: int
    name: str
    model: str
    build: Callable[[ModelSpec], Inference | Training | None]

    @property
    def case_id(self) -> str:
        return f"{self.model}|{self.name}"


def _cap(spec: ModelSpec, tokens: int) -> int:
    return min(tokens, spec.max_position_embeddings)


def _lora(rank: int = 16) -> Lora:
    return Lora(rank=rank, alpha=2 * rank)


WORKLOADS: tuple[tuple[int, str, Callable[[ModelSpec], Inference | Training | None]], ...] = (
    (1, "prefill b1 s2048", lambda s: Inference(prompt_tokens=_cap(s, 2048))),
    (1, "generate b4 p512 n64", lambda s: Inference(prompt_tokens=512, new_tokens=64, batch_size=4)),
    (1, "train full adamw b1 s1024", lambda s: Training(seq_len=_cap(s, 1024))),
    (1, "train lora r16 b1 s1024", lambda s: Training(seq_len=_cap(s, 1024), method=Method.LORA,
                                                     lora=_lora())),
    (2, "generate static b4 p512 n64", lambda s: Inference(prompt_tokens=512, new_tokens=64, batch_size=4,
                                                           kv_cache=KvCache.STATIC)),
    (2, "prefill fp32 b1 s1024", lambda s: Inference(prompt_tokens=_cap(s, 1024), dtype=DType.FP32)),
    (2, "prefill eager b1 s1024", lambda s: Inference(prompt_tokens=_cap(s, 1024), attn=AttnImpl.EAGER)),
    (2, "train qlora nf4-dq gc b1 s1024", lambda s: Training(
        seq_len=_cap(s, 1024), method=Method.QLORA, lora=_lora(), quant=quant("nf4-dq"),
        checkpointing=Checkpointing.FULL)),
    (2, "train full adafactor b1 s1024", lambda s: Training(seq_len=_cap(s, 1024),
                                                           optimizer=Optimizer.ADAFACTOR)),
    (2, "train full adamw-8bit b1 s1024", lambda s: Training(seq_len=_cap(s, 1024),
                                                            optimizer=Optimizer.ADAMW_8BIT)),
    (2, "train full amp-bf16 b1 s1024", lambda s: Training(seq_len=_cap(s, 1024),
                                                          precision=Precision.AMP_BF16)),
    (3, "prefill b1 s8192", lambda s: Inference(prompt_tokens=8192) if s.max_position_embeddings >= 8192
     and s.name in LONG_CONTEXT_MODELS else None),
    (3, "generate b8 p1024 n32", lambda s: Inference(prompt_tokens=_cap(s, 1024) - 32, new_tokens=32,
                                                     batch_size=8)),
    (3, "train full gc b2 s1024", lambda s: Training(seq_len=_cap(s, 1024), batch_size=2,
                                                    checkpointing=Checkpointing.FULL)),
    (3, "train lora r16 gc b1 s2048", lambda s: Training(seq_len=_cap(s, 2048), method=Method.LORA,
                                                        lora=_lora(), checkpointing=Checkpointing.FULL)),
)

FIELDS = (
    "case", "model", "family", "workload", "phase", "is_peak", "analytic_alloc", "trace_alloc",
    "alloc_err_pct", "analytic_reserved", "trace_reserved", "reserved_err_pct", "worst_term",
    "worst_term_diff", "term_diffs", "analytic_at", "trace_at", "analytic_error", "trace_error",
    "trace_seconds", "breakdown",
)


REPRESENTATIVE = (
    "gpt2", "gemma-3-270m", "Qwen3-0.6B", "bloom-560m", "falcon-rw-1b", "phi-2",
    "opt-125m", "pythia-160m", "gemma-2-2b-it", "Phi-3-mini-4k-instruct", "DeepSeek-V2-Lite",
    "Qwen1.5-MoE-A2.7B-Chat",
)
"""Tiers 2 and 3 run on these (one or two per family) unless --all-models: a sweep takes ~10 s per case."""


def cases(tiers: set[int], models: list[str], *, all_models: bool = False) -> Iterator[Case]:
    """Tier 1 over every model (small first); later tiers workload by workload over the representative
    models, the first half of them for every workload before the second half, so a time-boxed sweep
    covers every setting."""
    for tier in sorted(tiers):
        chosen = models if tier == 1 or all_models else [m for m in REPRESENTATIVE if m in models]
        if tier == 1:
            for model in chosen:
                for t, name, build in WORKLOADS:
                    if t == tier:
                        yield Case(tier=t, name=name, model=model, build=build)
            continue
        half = (len(chosen) + 1) // 2
        for group in (chosen[:half], chosen[half:]):
            for t, name, build in WORKLOADS:
                if t == tier:
                    for model in group:
                        yield Case(tier=t, name=name, model=model, build=build)


def _pct(est: int | None, ref: int | None) -> str:
    if est is None or ref is None or ref == 0:
        return ""
    return f"{100 * (est - ref) / ref:+.2f}"


def _top_terms(flat: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in flat.items() if "/" not in k and k in ALLOCATED_TERMS}


def _term_diffs(a_flat: dict[str, int], t_flat: dict[str, int]) -> list[tuple[str, int]]:
    """(allocated term, analytic − trace bytes) for the top-level terms that differ, largest |diff| first."""
    a, t = _top_terms(a_flat), _top_terms(t_flat)
    diffs = [(k, a.get(k, 0) - t.get(k, 0)) for k in ALLOCATED_TERMS if a.get(k, 0) != t.get(k, 0)]
    return sorted(diffs, key=lambda kv: -abs(kv[1]))


def merged_diffs(breakdown: str) -> list[tuple[str, int]]:
    """Top-level term diffs with `activations` and `logits` merged: the engines file the training loss's fp32
    buffers under different terms (trace: activations; analytic: logits), so their sum is what compares."""
    pairs = json.loads(breakdown or "{}")
    a = {k: v[0] or 0 for k, v in pairs.items()}
    t = {k: v[1] or 0 for k, v in pairs.items()}
    for flat in (a, t):
        flat["activations+logits"] = flat.pop("activations", 0) + flat.pop("logits", 0)
    terms = [k for k in (*ALLOCATED_TERMS, "activations+logits") if k not in ("activations", "logits")]
    diffs = [(k, a.get(k, 0) - t.get(k, 0)) for k in terms if a.get(k, 0) != t.get(k, 0)]
    return sorted(diffs, key=lambda kv: -abs(kv[1]))


def _fmt_mib(nbytes: int) -> str:
    return f"{nbytes / MIB:+,.1f} MiB"


def rows_for(case: Case, spec: ModelSpec | None, analytic: Estimate | None, trace: Estimate | None,
             a_err: str, t_err: str, seconds: float, label: str) -> list[dict[str, Any]]:
    """CSV rows: one per phase either engine reports, plus a `peak` row."""
    base = {"case": case.case_id, "model": case.model, "family": spec.family if spec else "",
            "workload": label, "analytic_error": a_err, "trace_error": t_err,
            "trace_seconds": f"{seconds:.1f}"}
    if analytic is None and trace is None:
        return [{**base, "phase": "peak"}]
    names: list[str] = []
    for est in (analytic, trace):
        for p in est.phases if est else ():
            if str(p.name) not in names:
                names.append(str(p.name))
    peak_name = str((trace or analytic).peak.phase)  # type: ignore[union-attr]
    out = []
    for name in [*names, "peak"]:
        a_phase = _find(analytic, name)
        t_phase = _find(trace, name)
        a_flat = a_phase.memory.flat() if a_phase else {}
        t_flat = t_phase.memory.flat() if t_phase else {}
        row = dict(base, phase=name, is_peak=int(name == peak_name))
        if name == "peak":
            row.update(analytic_alloc=analytic.peak.allocated_bytes if analytic else "",
                       trace_alloc=trace.peak.allocated_bytes if trace else "",
                       analytic_reserved=analytic.peak.reserved_bytes if analytic else "",
                       trace_reserved=trace.peak.reserved_bytes if trace else "",
                       analytic_at=str(analytic.peak.phase) if analytic else "",
                       trace_at=str(trace.peak.phase) if trace else "")
            a_phase = _find(analytic, str(analytic.peak.phase)) if analytic else None
            t_phase = _find(trace, str(trace.peak.phase)) if trace else None
            a_flat = a_phase.memory.flat() if a_phase else {}
            t_flat = t_phase.memory.flat() if t_phase else {}
        else:
            row.update(analytic_alloc=a_phase.allocated_bytes if a_phase else "",
                       trace_alloc=t_phase.allocated_bytes if t_phase else "",
                       analytic_reserved=a_phase.reserved_bytes if a_phase else "",
                       trace_reserved=t_phase.reserved_bytes if t_phase else "",
                       analytic_at=a_phase.at if a_phase else "", trace_at=t_phase.at if t_phase else "")
        row["alloc_err_pct"] = _pct(_int(row["analytic_alloc"]), _int(row["trace_alloc"]))
        row["reserved_err_pct"] = _pct(_int(row["analytic_reserved"]), _int(row["trace_reserved"]))
        if a_phase and t_phase:
            diffs = _term_diffs(a_flat, t_flat)
            row["term_diffs"] = "; ".join(f"{k} {_fmt_mib(d)}" for k, d in diffs)
            if diffs:
                row["worst_term"], row["worst_term_diff"] = diffs[0]
            keys = sorted(set(a_flat) | set(t_flat))
            row["breakdown"] = json.dumps({k: [a_flat.get(k), t_flat.get(k)] for k in keys},
                                          separators=(",", ":"))
        out.append(row)
    return out


def _find(est: Estimate | None, name: str) -> Any:
    if est is None:
        return None
    try:
        return est.phase(name)
    except KeyError:
        return None


def _int(value: Any) -> int | None:
    return int(value) if value not in ("", None) else None


def describe(workload: Inference | Training) -> str:
    """A short workload label with the capped lengths actually run."""
    if isinstance(workload, Inference):
        parts = [f"infer b{workload.batch_size} p{workload.prompt_tokens} n{workload.new_tokens}",
                 f"kv={workload.kv_cache}", f"attn={workload.attn}"]
        if workload.dtype:
            parts.append(f"dtype={workload.dtype}")
        return " ".join(parts)
    parts = [f"train b{workload.batch_size} s{workload.seq_len}", str(workload.method),
             str(workload.optimizer), str(workload.precision)]
    if workload.quant.is_quantized:
        parts.append(workload.quant.name)
    if workload.checkpointing is not Checkpointing.NONE:
        parts.append("gc")
    return " ".join(parts)


def run_case(case: Case) -> list[dict[str, Any]]:
    """Both engines on one case; each engine's failure becomes its error column."""
    spec: ModelSpec | None = None
    try:
        spec = load_model(case.model)
        workload = case.build(spec)
    except MemfitError as err:
        return rows_for(case, spec, None, None, f"load: {err}", "", 0.0, case.name)
    if workload is None:
        return []
    label = describe(workload)
    analytic = trace = None
    a_err = t_err = ""
    try:
        analytic = estimate(spec, workload, engine="analytic")
    except Exception as err:  # an analytic crash on a catalog model is itself a finding
        a_err = f"{type(err).__name__}: {err}"
    started = time.perf_counter()
    try:
        trace = estimate(spec, workload, engine="trace")
    except Exception as err:
        t_err = f"{type(err).__name__}: {err}"
    return rows_for(case, spec, analytic, trace, a_err, t_err, time.perf_counter() - started, label)


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines(keepends=True) if not line.startswith("#")]
    return list(csv.DictReader(lines))


def write_csv(path: Path, rows: list[dict[str, Any]], header: str,
              fields: tuple[str, ...] = FIELDS) -> None:
    """`rows` under a `# header` line, written to a temporary file renamed over `path`."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        fh.write(header + "\n")
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def environment_line() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    versions = []
    for package in ("torch", "transformers", "peft"):
        try:
            from importlib.metadata import version
            versions.append(f"{package} {version(package)}")
        except Exception:
            versions.append(f"{package} absent")
    return (f"# device: CPU ({platform.machine()}), trace on fake CUDA; memfit {commit}; "
            f"python {platform.python_version()}; {', '.join(versions)}; "
            f"{datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}")


def report(rows: list[dict[str, str]], header: str, worst: int = 25) -> str:
    """The Markdown summary: peak errors sorted by |error|, phase errors, term diffs of the worst, errors."""
    def err(r: dict[str, str]) -> float:
        return abs(float(r["alloc_err_pct"])) if r.get("alloc_err_pct") else -1.0

    compared = [r for r in rows if r.get("alloc_err_pct")]
    peaks = sorted((r for r in compared if r["phase"] == "peak"), key=err, reverse=True)
    phases = sorted((r for r in compared if r["phase"] != "peak"), key=err, reverse=True)
    n_cases = len({r["case"] for r in rows})
    lines = [f"# Calibration: analytic vs trace ({header.lstrip('# ')})", "",
             f"{n_cases} cases, {len(peaks)} compared at the peak. Error = (analytic − trace) / trace of "
             "allocated bytes; negative = analytic under-estimates. Reserved is compared too but both "
             "engines derive it from the same fragmentation model, so allocated is the calibrated "
             "figure.", ""]
    abs_errs = sorted(abs(float(r["alloc_err_pct"])) for r in peaks)
    if abs_errs:
        median = abs_errs[len(abs_errs) // 2]
        within = sum(e <= 5 for e in abs_errs)
        lines += [f"Peak |error|: median {median:.2f} %, max {abs_errs[-1]:.2f} %; "
                  f"{within}/{len(abs_errs)} within 5 %.", ""]
    lines += ["## Per family (peak allocated)", "", "| family | cases | median abs err % | max abs err % |",
              "|---|---:|---:|---:|"]
    fams: dict[str, list[float]] = {}
    for r in peaks:
        fams.setdefault(r["family"], []).append(abs(float(r["alloc_err_pct"])))
    for fam, errs in sorted(fams.items(), key=lambda kv: -max(kv[1])):
        errs.sort()
        lines.append(f"| {fam} | {len(errs)} | {errs[len(errs) // 2]:.2f} | {errs[-1]:.2f} |")
    lines += ["", f"## {worst} worst phase gaps (allocated)", "",
              "| case | workload | phase | analytic MiB | trace MiB | error % | "
              "largest diff (act+logits merged) | "
              "all term diffs (analytic − trace) |", "|---|---|---|---:|---:|---:|---|---|"]
    for r in phases[:worst]:
        merged = merged_diffs(r["breakdown"])
        worst_diff = f"{merged[0][0]} {_fmt_mib(merged[0][1])}" if merged else ""
        lines.append(f"| {r['case']} | {r['workload']} | {r['phase']} | "
                     f"{int(r['analytic_alloc']) / MIB:,.1f} | "
                     f"{int(r['trace_alloc']) / MIB:,.1f} | {float(r['alloc_err_pct']):+.2f} | "
                     f"{worst_diff} | "
                     f"{r['term_diffs']} |")
    lines += ["", "## All cases at the peak, by |error|", "",
              "| case | workload | analytic peak (phase) MiB | trace peak (phase) MiB | error % | "
              "reserved err % | "
              "term diffs at the peak phase |", "|---|---|---:|---:|---:|---:|---|"]
    for r in peaks:
        lines.append(f"| {r['case']} | {r['workload']} | {int(r['analytic_alloc']) / MIB:,.1f} "
                     f"({r['analytic_at']}) | {int(r['trace_alloc']) / MIB:,.1f} ({r['trace_at']}) | "
                     f"{float(r['alloc_err_pct']):+.2f} | {r['reserved_err_pct']} | {r['term_diffs']} |")
    lines += ["", "## Breakdown of the 10 worst phase gaps", "",
              "Every path of `Phase.memory.flat()` from either engine (MiB; blank: the engine has no such "
              "path).",
              ""]
    for r in phases[:10]:
        lines += [f"### {r['case']} — {r['phase']} ({float(r['alloc_err_pct']):+.2f} %)", "",
                  f"analytic at `{r['analytic_at']}`, trace at `{r['trace_at']}`", "",
                  "| path | analytic | trace | diff |", "|---|---:|---:|---:|"]
        for path, (a, t) in json.loads(r["breakdown"] or "{}").items():
            if path.startswith(("fragmentation", "non_torch")):
                continue
            diff = "" if a is None or t is None else f"{(a - t) / MIB:+,.1f}"
            cell_a = "" if a is None else f"{a / MIB:,.1f}"
            cell_t = "" if t is None else f"{t / MIB:,.1f}"
            lines.append(f"| {path} | {cell_a} | {cell_t} | {diff} |")
        lines.append("")
    failed = [r for r in rows if r["phase"] == "peak" and (r.get("analytic_error") or r.get("trace_error"))]
    lines += ["## Engine errors", "", "| case | workload | analytic error | trace error |",
              "|---|---|---|---|"]
    for r in failed:
        lines.append(f"| {r['case']} | {r['workload']} | {_cell(r['analytic_error'])} | "
                     f"{_cell(r['trace_error'])} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:400]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiers", default="1,2,3")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per trace")
    parser.add_argument("--budget-min", type=float, default=0.0, help="stop starting cases after this")
    parser.add_argument("--resume", action="store_true", help="skip cases already in today's CSV")
    parser.add_argument("--retry-failed", action="store_true", help="with --resume: rerun failed cases")
    parser.add_argument("--all-models", action="store_true", help="tiers 2 and 3 over every model too")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--date", default=datetime.date.today().isoformat())
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / f"calibration-{args.date}.csv", out / f"calibration-{args.date}.md"
    header = environment_line()
    rows: list[dict[str, Any]] = read_csv(csv_path) if (args.resume or args.report_only) else []
    if not args.report_only:
        os.environ["MEMFIT_TRACE_TIMEOUT"] = str(args.timeout)
        if args.retry_failed:
            failed = {r["case"] for r in rows if r.get("trace_error") or r.get("analytic_error")}
            rows = [r for r in rows if r["case"] not in failed]
        done = {r["case"] for r in rows}
        started = time.monotonic()
        for case in cases({int(t) for t in args.tiers.split(",")}, args.models.split(","),
                          all_models=args.all_models):
            if case.case_id in done:
                continue
            if args.budget_min and time.monotonic() - started > 60 * args.budget_min:
                print("budget spent; stopping", file=sys.stderr)
                break
            new = run_case(case)
            rows.extend(new)
            for r in new:
                if r["phase"] == "peak":
                    print(f"{r['case']:60s} {r.get('alloc_err_pct', ''):>8s} {r.get('term_diffs', '')[:90]} "
                          f"{r.get('analytic_error', '')[:80]} {r.get('trace_error', '')[:80]} "
                          f"{r.get('trace_seconds')}s", file=sys.stderr, flush=True)
            write_csv(csv_path, rows, header)
    if not rows:
        print("no rows", file=sys.stderr)
        return 1
    md_path.write_text(report([{k: str(r.get(k, "")) for k in FIELDS} for r in rows], header))
    print(f"wrote {csv_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
