"""Multi-rank trace vs the analytic engine, per term of the most loaded rank, over a data-parallel matrix.

    PYTHONPATH=src .venv/bin/python benchmarks/parallel_trace.py [--quick] [--models a,b] [--json-dir DIR]

Each case traces one rank's training step on torch's fake process group (FSDP2 full / shard-grad-op /
hybrid, DDP) in a fresh worker, timed with its own max RSS (os.wait4), and puts the analytic engine's
figure beside it at the trace's peak phase. Writes results/parallel-trace-<date>.csv (one row per case and
term: trace bytes, analytic bytes) and .md (per case: peak allocated of both engines, signed error, the
trace's model-state terms, wall time and RSS), and each case's trace as JSON under --json-dir.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import functools
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from memfit import load_model
from memfit.api import estimate
from memfit.core.codec import encode
from memfit.core.errors import MemfitError
from memfit.core.families import spec_from_config
from memfit.core.params import count_params
from memfit.core.result import Estimate, _workload_to_dict
from memfit.core.spec import ModelSource, ModelSpec
from memfit.core.workload import Lora, Parallelism, Training

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
GIB = 2**30

SEQ_LEN = 2048
"""Tokens per sequence, batch 1 per rank, bf16 parameters, AdamW (foreach): the issue's setting."""

STRATEGIES = (("fsdp-full", "full"), ("fsdp-shard-grad-op", "shard-grad-op"), ("fsdp-hybrid", "hybrid"),
              ("ddp", None))
"""The data-parallel strategies of the dp matrix (name → Parallelism.fsdp); tp, tp-sp and pp run alone."""


@dataclass(frozen=True)
class Case:
    model: str
    strategy: str
    dp: int
    method: str
    checkpointing: str
    precision: str = "bf16"
    offload: str = "none"
    tp: int = 1
    pp: int = 1
    micro_batches: int = 1
    schedule: str = "1f1b"
    ep: int = 1
    layers: int = 0
    """Decoder layers of a layer-reduced config (0: as published)."""
    virtual: int = 1

    @property
    def name(self) -> str:
        extra = f"_offload-{self.offload}" if self.offload != "none" else ""
        schedule = f"_{self.schedule}" if self.schedule != "1f1b" else ""
        schedule += f"-v{self.virtual}" if self.virtual > 1 else ""
        degrees = f"tp{self.tp}" if self.tp > 1 else f"pp{self.pp}_mb{self.micro_batches}{schedule}" \
            if self.pp > 1 else f"dp{self.dp}"
        degrees += f"_ep{self.ep}" if self.ep > 1 else ""
        return (f"{self.label}_{self.strategy}_{degrees}_{self.method}_ckpt-{self.checkpointing}_"
                f"{self.precision}_b1_s{SEQ_LEN}_adamw{extra}")

    @property
    def label(self) -> str:
        return f"{self.model}-L{self.layers}" if self.layers else self.model

    def spec(self) -> ModelSpec:
        return model_spec(self.model, self.layers)

    def workload(self) -> Training:
        fsdp = dict(STRATEGIES).get(self.strategy)
        lora = {"method": "lora", "lora": lora_config(self.model)} if self.method == "lora" else {}
        return Training(seq_len=SEQ_LEN, batch_size=1, precision=self.precision,
                        checkpointing=self.checkpointing, grad_accum=self.micro_batches, **lora,
                        parallel=Parallelism(dp=self.dp, fsdp=fsdp, offload_optimizer=self.offload,
                                             offload_params=self.offload, tp=self.tp, pp=self.pp,
                                             sequence_parallel=self.strategy == "tp-sp",
                                             pp_schedule=self.schedule, ep=self.ep,
                                             pp_virtual_stages=self.virtual))


@functools.cache
def model_spec(model: str, layers: int = 0) -> ModelSpec:
    """The catalog model, or its config with `layers` decoder layers (the first ones: DeepSeek's dense
    first layer stays) for a faster trace."""
    spec = load_model(model)
    if not layers:
        return spec
    config = {**json.loads(spec.source.config_json), "num_hidden_layers": layers}
    text = json.dumps(config)
    return spec_from_config(config, name=f"{model}-L{layers}",
                            source=ModelSource(kind="config", ref=f"{model}-L{layers}", config_json=text))


@functools.cache
def lora_config(model: str) -> Lora:
    """r16, alpha 32 on all linear layers, dropout 0.05; 0 on MoE models, whose fused expert weights peft
    wraps in lora.ParamWrapper, which refuses dropout (peft 0.21: "does not work with lora_dropout != 0")."""
    moe = load_model(model).is_moe
    return Lora(rank=16, alpha=32, dropout=Fraction(0) if moe else Fraction(1, 20))


def tp_pp_matrix(models: list[str]) -> list[Case]:
    """TP 2/4/8 with and without sequence parallelism, PP 2/4 with 1, 4 and 8 micro-batches (1F1B) and with 4
    under GPipe, full fine-tunes with and without checkpointing (the TP plan splits plain Linears, so no
    LoRA)."""
    cases: list[Case] = []
    for model in models:
        for checkpointing in ("none", "full"):
            cases += [Case(model, strategy, 1, "full", checkpointing, tp=tp)
                      for strategy in ("tp", "tp-sp") for tp in (2, 4, 8)]
            cases += [Case(model, "pp", 1, "full", checkpointing, pp=pp, micro_batches=m)
                      for pp in (2, 4) for m in (1, 4, 8)]
            cases += [Case(model, "pp", 1, "full", checkpointing, pp=pp, micro_batches=4, schedule="gpipe")
                      for pp in (2, 4)]
    return cases


def ep_matrix(models: list[str]) -> list[Case]:
    """Expert parallelism on MoE models, layer-reduced to 4 decoder layers: FSDP full at dp 8 with ep 2, 4
    and 8 (experts sharded over dp / ep = 4, 2 and 1 ranks), full and LoRA, checkpointing on and off; DDP
    with ep = dp = 2; at the published depth, ep = dp = 8 full and LoRA without checkpointing; and, for MLA
    models at their published depth, TP 2 and 4 (full fine-tunes; the TP plan splits plain Linears, so no
    LoRA)."""
    cases: list[Case] = []
    for model in models:
        for ep in (2, 4, 8):
            cases += [Case(model, "fsdp-full", 8, method, checkpointing, ep=ep, layers=EP_LAYERS)
                      for method in ("full", "lora") for checkpointing in ("none", "full")]
        cases += [Case(model, "ddp", 2, method, "full", ep=2, layers=EP_LAYERS)
                  for method in ("full", "lora")]
        cases += [Case(model, "fsdp-full", 8, method, "none", ep=8) for method in ("full", "lora")]
        if any(att.mla is not None for att in load_model(model).attention_specs):
            cases += [Case(model, "tp", 1, "full", checkpointing, tp=tp)
                      for tp in (2, 4) for checkpointing in ("none", "full")]
    return cases


EP_LAYERS = 4
"""Decoder layers of the expert-parallel matrix's configs (DeepSeek-V2-Lite: one dense, three MoE)."""


def interleaved_matrix(models: list[str]) -> list[Case]:
    """Interleaved 1F1B with 2 model chunks per rank: PP 2 and 4 with 4 and 8 micro-batches, full fine-tunes
    with and without checkpointing."""
    return [Case(model, "pp", 1, "full", checkpointing, pp=pp, micro_batches=m, schedule="interleaved",
                 virtual=2)
            for model in models for checkpointing in ("none", "full") for pp in (2, 4) for m in (4, 8)]


def large_matrix(models: list[str]) -> list[Case]:
    """The subset of the issue's matrix run for the largest models (Llama-3.1-70B, DeepSeek-V2-Lite) on a
    2-core machine: FSDP full and shard-grad-op at dp 8 and 64, HSDP at dp 64 (at dp 8 it is FSDP full within
    one node), full and LoRA, checkpointing on and off; DDP with LoRA only on models whose bf16 weights and a
    full step fit one 80 GB GPU's order of memory (DDP keeps every weight on every rank); TP 2 and 8, with
    and without sequence parallelism, full fine-tunes."""
    cases: list[Case] = []
    for model in models:
        weights = count_params(load_model(model)).num_params * 2
        for strategy, dp in (("fsdp-full", 8), ("fsdp-full", 64), ("fsdp-shard-grad-op", 8),
                             ("fsdp-shard-grad-op", 64), ("fsdp-hybrid", 64)):
            cases += [Case(model, strategy, dp, method, checkpointing)
                      for method in ("full", "lora") for checkpointing in ("none", "full")]
        if weights < 40 * 10**9:
            cases += [Case(model, "ddp", 8, "lora", checkpointing) for checkpointing in ("none", "full")]
        cases += [Case(model, strategy, 1, "full", checkpointing, tp=tp)
                  for strategy in ("tp", "tp-sp") for tp in (2, 8) for checkpointing in ("none", "full")]
    return cases


def matrix(models: list[str], quick: bool) -> list[Case]:
    """The issue's data-parallel matrix, trimmed for a 2-core machine: the first model gets every
    combination; larger ones FSDP full and shard-grad-op at dp 8, HSDP at 64, DDP at 8, both methods and
    checkpointing; plus dp 2 / 64 full fine-tunes and an AMP + CPU-offload case."""
    cases: list[Case] = []
    for index, model in enumerate(models):
        full_grid = index == 0 and not quick
        for strategy, _ in STRATEGIES:
            degrees = {"fsdp-hybrid": (16, 64), "ddp": (2, 8)}.get(strategy, (2, 8, 64))
            if not full_grid:
                degrees = {"fsdp-hybrid": (64,), "ddp": (8,)}.get(strategy, (8,))
            for dp in degrees:
                for method in ("full", "lora"):
                    for checkpointing in ("none", "full"):
                        if quick and (method, checkpointing) not in (("full", "none"), ("lora", "full")):
                            continue
                        cases.append(Case(model, strategy, dp, method, checkpointing))
        if not quick:
            cases += [Case(model, "fsdp-full", dp, "full", "full") for dp in (2, 64) if not full_grid]
            cases.append(Case(model, "fsdp-full", 8, "full", "full", precision="amp-bf16", offload="cpu"))
    return cases


@dataclass
class Result:
    case: Case | None
    name: str = ""
    trace: dict[str, Any] | None = None
    analytic: Estimate | None = None
    wall_s: float = 0.0
    max_rss_mib: float = 0.0
    error: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)


def run_trace(case: Case) -> tuple[dict[str, Any], float, float]:
    """The worker's Estimate dict for `case`, its wall seconds and max RSS (MiB)."""
    spec = case.spec()
    request = {"spec": encode(spec), "workload": _workload_to_dict(case.workload()), "gpu": None}
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "memfit.trace.worker"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.write(json.dumps(request))
    child.stdin.close()
    out = child.stdout.read()
    _, _, usage = os.wait4(child.pid, 0)
    child.returncode = 0
    wall = time.perf_counter() - started
    answer = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    if "error" in answer:
        raise RuntimeError(answer["error"])
    return answer, wall, usage.ru_maxrss / 1024


def run_case(case: Case, json_dir: Path | None) -> Result:
    result = Result(case, name=case.name)
    try:
        result.trace, result.wall_s, result.max_rss_mib = run_trace(case)
    except (RuntimeError, MemfitError, IndexError) as err:
        result.error = f"trace: {err}"
        return result
    try:
        result.analytic = estimate(case.spec(), case.workload(), engine="analytic")
    except MemfitError as err:
        result.error = f"analytic: {err}"
    trace = Estimate.from_dict(result.trace)
    peak = max(trace.phases, key=lambda p: p.allocated_bytes)
    ordered = [peak, *(p for p in trace.phases if p is not peak)]
    for phase in ordered:                                   # the peak phase first: the table reads it
        mine = _flat(phase)
        other = result.analytic.phase(phase.name) if result.analytic else None
        theirs = _flat(other) if other else {}
        result.rows.append({"case": case.name, "phase": phase.name.value, "term": "allocated",
                            "trace_bytes": phase.allocated_bytes,
                            "analytic_bytes": other.allocated_bytes if other else ""})
        for term in sorted(set(mine) | set(theirs)):
            result.rows.append({"case": case.name, "phase": phase.name.value, "term": term,
                                "trace_bytes": mine.get(term, ""), "analytic_bytes": theirs.get(term, "")})
    if json_dir is not None:
        json_dir.mkdir(parents=True, exist_ok=True)
        record = {"case": case.name, "engine": "trace (multi-rank)", "versions": versions(),
                  "model": case.model, "num_hidden_layers": case.layers or None,
                  "workload": _workload_to_dict(case.workload()), "wall_s": round(result.wall_s, 1),
                  "max_rss_mib": round(result.max_rss_mib),
                  "phases": {p.name.value: {"allocated_bytes": p.allocated_bytes, "at": p.at,
                                            "terms": p.memory.flat(), "host_bytes": p.host_bytes,
                                            "host_terms": p.host.flat() if p.host else {}}
                             for p in trace.phases},
                  "assumptions": list(trace.assumptions)}
        (json_dir / f"{case.name}.json").write_text(json.dumps(record, indent=1))
    return result


def _flat(phase: Any) -> dict[str, int]:
    """A phase's terms by path, host RAM ones under `host/`."""
    out = dict(phase.memory.flat())
    if phase.host is not None:
        out["host"] = phase.host.nbytes
        out.update({f"host/{path}": nbytes for path, nbytes in phase.host.flat().items()})
    return out


@functools.cache
def versions() -> dict[str, str]:
    """Python, library versions and the memfit git commit the figures come from (read once, at the start)."""
    out = {"python": platform.python_version(), "machine": f"CPU {platform.machine()}, fake CUDA"}
    for dist in ("torch", "transformers", "peft"):
        out[dist] = importlib.metadata.version(dist)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
                           capture_output=True, text=True, check=False).stdout.strip()
    out["memfit commit"] = (commit or "unknown") + (" (src modified)" if dirty else "")
    return out


MODEL_STATE = ("weights", "weights/local_shards", "weights/unsharded_params", "weights/all_gather_buffers",
               "gradients", "gradients/reduce_scatter_buffers", "gradients/ddp_buckets", "optimizer_states",
               "activations")


def write(results: list[Result], out_dir: Path, stamp: str, rerun: frozenset[str] = frozenset()) \
        -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"parallel-trace-{stamp}.csv", out_dir / f"parallel-trace-{stamp}.md"
    header = "; ".join(f"{k} {v}" for k, v in versions().items())
    if rerun and csv_path.exists():                 # the first run's versions and commit
        header = csv_path.read_text().splitlines()[0].removeprefix("# ")
    with csv_path.open("w", newline="") as fh:
        fh.write(f"# {header}\n")
        writer = csv.DictWriter(fh, fieldnames=["case", "phase", "term", "trace_bytes", "analytic_bytes"])
        writer.writeheader()
        for result in results:
            writer.writerows(result.rows)
    lines = [f"# Multi-rank trace vs analytic, {stamp}", "",
             "One rank's training step on torch's fake process group (trace) beside the analytic engine as "
             "it stands, at the trace's peak phase; batch 1 × 2,048 tokens per rank, AdamW. "
             + header.replace("; ", ", ") + ".", "",
             "| case | peak phase | trace GiB | analytic GiB | error | " + " | ".join(
                 t.replace("weights/", "w/").replace("gradients/", "g/") for t in MODEL_STATE)
             + " | wall s | RSS MiB |",
             "|---|---|---|---|---|" + "---|" * len(MODEL_STATE) + "---|---|"]
    for result in results:
        if result.error and not result.rows:
            lines.append(f"| {result.name} | failed: {result.error[:160]} |")
            continue
        peak_phase = result.rows[0]["phase"]
        by_term = {row["term"]: row for row in result.rows if row["phase"] == peak_phase}
        trace_alloc = by_term["allocated"]["trace_bytes"]
        analytic_alloc = by_term["allocated"]["analytic_bytes"]
        error = f"{(analytic_alloc - trace_alloc) / trace_alloc:+.1%}" if analytic_alloc != "" else "-"
        terms = " | ".join(_gib(by_term.get(t, {}).get("trace_bytes", "")) for t in MODEL_STATE)
        lines.append(f"| {result.name} | {by_term['allocated']['phase']} | {_gib(trace_alloc)} | "
                     f"{_gib(analytic_alloc)} | {error} | {terms} | {result.wall_s:.1f} | "
                     f"{result.max_rss_mib:.0f} |")
    lines += ["", "error = (analytic − trace) / trace of peak allocated bytes. Terms are the trace's at its "
              "peak, in GiB; the CSV has every phase and term of both engines."]
    lines += ["", "LoRA: rank 16, alpha 32, all linear layers, dropout 0.05; 0 on MoE models (peft's "
              "ParamWrapper over fused experts refuses dropout)."]
    if rerun:
        lines += ["", "Re-run later with `--cases` (each case's JSON names its commit), the rest from the "
                  "first run: " + ", ".join(sorted(rerun)) + "."]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def _previous(csv_path: Path, json_dir: Path) -> list[Result]:
    """The results of an earlier run of the same matrix: rows from its CSV, wall time and RSS from its
    per-case JSON (cases that failed then have no rows and come back as "not run")."""
    results: dict[str, Result] = {}
    with csv_path.open() as fh:
        for row in csv.DictReader(line for line in fh if not line.startswith("#")):
            for key in ("trace_bytes", "analytic_bytes"):
                row[key] = int(row[key]) if row[key] else ""
            results.setdefault(row["case"], Result(None, name=row["case"])).rows.append(row)
    for name, result in results.items():
        record = json_dir / f"{name}.json"
        if record.exists():
            data = json.loads(record.read_text())
            result.wall_s, result.max_rss_mib = data["wall_s"], data["max_rss_mib"]
    return list(results.values())


def _gib(value: Any) -> str:
    return f"{value / GIB:.2f}" if isinstance(value, int) else "-"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="Llama-3.2-1B,Llama-3.1-8B,Qwen3-30B-A3B")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cases", default="", help="only these case names (comma-separated), merged into "
                        "an existing results file of the same matrix and date")
    parser.add_argument("--matrix", choices=("dp", "tp-pp", "pp-interleaved", "large", "ep"), default="dp",
                        help="dp: FSDP/DDP (results/parallel-trace-<date>); tp-pp: tensor and pipeline "
                             "parallelism (results/parallel-trace-tp-pp-<date>); pp-interleaved: interleaved "
                             "1F1B, 2 chunks per rank (results/parallel-trace-pp-interleaved-<date>); "
                             "large: the subset run for the largest models, FSDP/HSDP/DDP and TP "
                             "(results/parallel-trace-large-<date>); ep: expert parallelism on layer-reduced "
                             "MoE models (results/parallel-trace-ep-<date>)")
    parser.add_argument("--json-dir", default="/tmp/mr-trace-results")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--date", default=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"))
    args = parser.parse_args()
    versions()
    results = []
    models = args.models.split(",")
    cases = {"dp": lambda: matrix(models, args.quick), "tp-pp": lambda: tp_pp_matrix(models),
             "pp-interleaved": lambda: interleaved_matrix(models),
             "large": lambda: large_matrix(models), "ep": lambda: ep_matrix(models)}[args.matrix]()
    stamp = args.date if args.matrix == "dp" else f"{args.matrix}-{args.date}"
    wanted = set(filter(None, args.cases.split(",")))
    if wanted:
        previous = {r.name: r for r in _previous(Path(args.out) / f"parallel-trace-{stamp}.csv",
                                                 Path(args.json_dir))}
        results = [previous.get(case.name, Result(None, name=case.name, error="not run"))
                   for case in cases]
    for case in cases:
        if wanted and case.name not in wanted:
            continue
        result = run_case(case, Path(args.json_dir) if args.json_dir else None)
        print(f"{case.name}: {result.error or 'ok'} ({result.wall_s:.1f} s, {result.max_rss_mib:.0f} MiB)",
              flush=True)
        if wanted:
            results[[r.name for r in results].index(case.name)] = result
        else:
            results.append(result)
        write(results, Path(args.out), stamp, frozenset(wanted))
    csv_path, md_path = write(results, Path(args.out), stamp, frozenset(wanted))
    print(f"wrote {csv_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
