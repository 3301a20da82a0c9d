"""Random workloads over the catalog, analytic vs trace: where the everyday engine drifts unwatched.

    .venv/bin/python benchmarks/sweep.py [--seed 7] [--cases 60] [--models gpt2,opt-125m] [--timeout 300]
                                         [--budget-min 60] [--resume] [--report-only] [--out DIR]

benchmarks/calibrate.py checks a fixed grid; this draws `--cases` workloads from `--seed` over every
catalog model (or `--models`) and every setting the trace runs: inference (prompt 128 to 32k tokens, batch,
generation, static cache, fp32/fp16/bf16, bitsandbytes int8/nf4/fp4, eager or SDPA attention) and training
(full, LoRA with all-linear, attention-only or a random subset of the family's own module names including
fused qkv, QLoRA; bf16, fp32, AMP; every optimizer but Lion; checkpointing; grad accumulation; LoRA dropout
or none). The same seed draws the same cases.

Writes results/sweep-seed<seed>-<date>.csv (calibrate.py's columns, one row per case and phase) and .md
(the |error| distribution at the peak: median, 90th percentile, max, count above 1 % and 3 %, then
calibrate.py's report). Failures of either engine are findings, recorded, never fatal.
A small fixed seed on tiny configs runs in CI: tests/crosscheck/test_sweep.py.
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibrate import Case, environment_line, read_csv, report, run_case, write_csv
from memfit.core.choices import AttnImpl, Checkpointing, KvCache, Method, Optimizer, Precision
from memfit.core.dtypes import DType, quant
from memfit.core.errors import InvalidWorkload
from memfit.core.optimizers import decoder_linears
from memfit.core.spec import ModelSpec
from memfit.core.training import validate
from memfit.core.workload import Inference, Lora, Training
from memfit.sources.catalog import catalog_models

PROMPTS = (128, 512, 1024, 2048, 4096, 8192, 16384, 32768)
SEQ_LENS = (256, 512, 1024, 2048, 4096)
INFER_QUANTS = ("none", "none", "none", "int8", "nf4", "nf4-dq", "fp4")
QLORA_QUANTS = ("nf4", "nf4-dq", "fp4")
TRACED_OPTIMIZERS = tuple(o.value for o in Optimizer if o is not Optimizer.LION)
"""Every optimizer but Lion, which torch does not ship (the trace has nothing real to run)."""


@dataclass(frozen=True, slots=True)
class Draw:
    """The settings drawn for one case, before the model caps lengths; `build` turns them into a workload."""

    values: tuple[tuple[str, Any], ...]

    def get(self, key: str) -> Any:
        return dict(self.values)[key]

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.values if k != "subset_seed")


def draw_settings(rng: random.Random) -> Draw:
    """One random workload's settings (model-independent: the same seed gives the same draws)."""
    if rng.random() < 0.45:
        values: dict[str, Any] = {
            "task": "infer", "prompt": rng.choice(PROMPTS), "batch": rng.choice((1, 1, 2, 4, 8)),
            "new": rng.choice((0, 0, 16, 64)), "dtype": rng.choice(("", "", "", "fp16", "fp32")),
            "quant": rng.choice(INFER_QUANTS), "attn": rng.choice(("sdpa", "sdpa", "sdpa", "eager")),
            "kv": rng.choice(("dynamic", "dynamic", "dynamic", "static")),
        }
        if values["quant"] != "none" and values["dtype"] == "fp32":
            values["dtype"] = ""
    else:
        method = rng.choice(("full", "lora", "lora", "qlora"))
        values = {
            "task": "train", "method": method, "seq": rng.choice(SEQ_LENS), "batch": rng.choice((1, 1, 2, 4)),
            "accum": rng.choice((1, 1, 1, 2)),
            "precision": rng.choice(("bf16", "bf16", "fp32", "amp-bf16") if method != "qlora"
                                    else ("bf16", "bf16", "fp16")),
            "optimizer": rng.choice(TRACED_OPTIMIZERS),
            "checkpointing": rng.choice(("none", "none", "full")),
            "attn": rng.choice(("sdpa", "sdpa", "sdpa", "eager")),
            "quant": rng.choice(QLORA_QUANTS) if method == "qlora" else "none",
            "rank": rng.choice((8, 16, 64)), "targets": rng.choice(("all-linear", "attention", "subset")),
            "dropout": rng.choice(("0.05", "0.05", "0")), "subset_seed": rng.randrange(1 << 30),
        }
    return Draw(tuple(values.items()))


def _attention_names(spec: ModelSpec) -> tuple[str, ...]:
    """The family's own names of the attention projections (q_proj, qkv_proj, c_attn, query_key_value...)."""
    names = {lin.name for _, lin in decoder_linears(spec) if lin.is_module and lin.role == "attention"}
    return tuple(sorted(names))


def _targets(spec: ModelSpec, d: Draw) -> tuple[str, ...]:
    kind = d.get("targets")
    if kind == "all-linear":
        return ("all-linear",)
    names = _attention_names(spec)
    if kind == "subset":
        every = sorted({lin.name for _, lin in decoder_linears(spec) if lin.is_module})
        sub = random.Random(d.get("subset_seed"))
        names = tuple(sorted(sub.sample(every, sub.randint(1, len(every)))))
    return names or ("all-linear",)


def build(spec: ModelSpec, d: Draw) -> Inference | Training | None:
    """The workload for `spec`: lengths capped at its context; None when the draw cannot run on it."""
    limit = spec.max_position_embeddings
    attn = AttnImpl(d.get("attn"))
    try:
        if d.get("task") == "infer":
            new = d.get("new")
            prompt = min(d.get("prompt"), limit - new)
            if prompt < 16:
                return None
            return Inference(prompt_tokens=prompt, new_tokens=new, batch_size=d.get("batch"),
                             dtype=DType(d.get("dtype")) if d.get("dtype") else None,
                             quant=quant(d.get("quant")), attn=attn, kv_cache=KvCache(d.get("kv")))
        method = Method(d.get("method"))
        lora = None if method is Method.FULL else Lora(rank=d.get("rank"), alpha=2 * d.get("rank"),
                                                       targets=_targets(spec, d),
                                                       dropout=Fraction(d.get("dropout")))
        workload = Training(seq_len=min(d.get("seq"), limit), batch_size=d.get("batch"),
                        grad_accum=d.get("accum"), method=method, lora=lora, quant=quant(d.get("quant")),
                        precision=Precision(d.get("precision")), optimizer=Optimizer(d.get("optimizer")),
                        checkpointing=Checkpointing(d.get("checkpointing")), attn=attn)
        validate(spec, workload)       # what transformers / peft refuse is no case (ParamWrapper + dropout)
        return workload
    except InvalidWorkload:
        return None


def sweep_cases(seed: int, count: int, models: list[str]) -> list[Case]:
    """`count` cases drawn from `seed`: a model and a setting each."""
    rng = random.Random(seed)
    out = []
    for index in range(count):
        model = rng.choice(models)
        d = draw_settings(rng)
        out.append(Case(tier=0, name=f"#{index} {d.label()}", model=model,
                        build=lambda spec, d=d: build(spec, d)))
    return out


def distribution(rows: list[dict[str, str]]) -> str:
    """Markdown lines: the |error| distribution of the peak over compared cases."""
    errs = sorted(abs(float(r["alloc_err_pct"])) for r in rows
                  if r["phase"] == "peak" and r.get("alloc_err_pct"))
    if not errs:
        return "No case was compared.\n"
    def pct(q: float) -> float:
        return errs[min(len(errs) - 1, int(q * len(errs)))]
    failed = sum(1 for r in rows
                 if r["phase"] == "peak" and (r.get("analytic_error") or r.get("trace_error")))
    return (f"Peak allocated, analytic vs trace, {len(errs)} cases compared ({failed} with an engine error): "
            f"|error| median {pct(0.5):.2f} %, 90th percentile {pct(0.9):.2f} %, max {errs[-1]:.2f} %; "
            f"{sum(e > 1 for e in errs)} above 1 %, {sum(e > 3 for e in errs)} above 3 %.\n")


def rescore(rows: list[dict[str, Any]], seed: int, models: list[str]) -> list[dict[str, Any]]:
    """`rows` with the analytic side re-estimated by the code as it is now, against the recorded traces
    (no trace reruns): after a fix, the same cases' errors in seconds."""
    from calibrate import _pct
    from memfit.api import estimate, load_model
    from memfit.core.errors import MemfitError

    count = 1 + max(int(r["case"].split("#")[1].split()[0]) for r in rows)
    cases = {c.case_id: c for c in sweep_cases(seed, count, models)}
    out = []
    for row in rows:
        case = cases.get(row["case"])
        if case is None or not row.get("trace_alloc"):
            out.append(row)
            continue
        try:
            spec = load_model(case.model)
            analytic = estimate(spec, case.build(spec), engine="analytic")
        except MemfitError as err:
            out.append({**row, "analytic_error": str(err)})
            continue
        if row["phase"] == "peak":
            phase = analytic.peak.phase
            alloc, at = analytic.peak.allocated_bytes, str(phase)
        else:
            try:
                found = analytic.phase(row["phase"])
            except KeyError:
                out.append(row)
                continue
            alloc, at = found.allocated_bytes, found.at
        out.append({**row, "analytic_alloc": alloc, "analytic_at": at, "term_diffs": "", "breakdown": "",
                    "alloc_err_pct": _pct(alloc, int(row["trace_alloc"]))})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument("--models", default="", help="comma-separated catalog names (default: all)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per trace")
    parser.add_argument("--budget-min", type=float, default=0.0, help="stop starting cases after this")
    parser.add_argument("--resume", action="store_true", help="skip cases already in the CSV")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--rescore", action="store_true",
                        help="re-estimate the analytic side of the CSV's cases against its recorded traces")
    parser.add_argument("--date", default=datetime.date.today().isoformat())
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    models = args.models.split(",") if args.models else sorted(m["name"] for m in catalog_models())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"sweep-seed{args.seed}-{args.date}"
    csv_path, md_path = out / f"{stem}.csv", out / f"{stem}.md"
    header = environment_line()
    reuse = args.resume or args.report_only or args.rescore
    rows: list[dict[str, Any]] = read_csv(csv_path) if reuse else []
    if args.rescore:
        traced = csv_path.read_text().splitlines()[0].lstrip("# ").split("; analytic rescored at ")[0]
        commit = header.split("memfit ", 1)[1].split(";", 1)[0]
        rows = rescore(rows, args.seed, models)
        header = f"# {traced}; analytic rescored at memfit {commit} against these traces"
        write_csv(csv_path, rows, header)
    elif not args.report_only:
        os.environ["MEMFIT_TRACE_TIMEOUT"] = str(args.timeout)
        done = {r["case"] for r in rows}
        started = time.monotonic()
        for case in sweep_cases(args.seed, args.cases, models):
            if case.case_id in done:
                continue
            if args.budget_min and time.monotonic() - started > 60 * args.budget_min:
                print("budget spent; stopping", file=sys.stderr)
                break
            new = run_case(case)
            rows.extend(new)
            write_csv(csv_path, rows, header)
            peak = next((r for r in new if r["phase"] == "peak"), {})
            print(f"{case.case_id}: {peak.get('alloc_err_pct') or peak.get('trace_error', '')[:120]}",
                  file=sys.stderr)
    text = report(rows, header)
    title, rest = text.split("\n", 1)
    md_path.write_text(f"{title.replace('Calibration', f'Sweep, seed {args.seed}')}\n\n"
                       f"{distribution(rows)}{rest}")
    print(md_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
