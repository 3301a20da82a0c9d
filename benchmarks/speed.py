"""Speed: CLI cold start, analytic estimate(), plan() and trace runs → results/speed-<date>.{csv,md}.

    python benchmarks/speed.py                 # everything (trace only when memfit[trace] is installed)
    python benchmarks/speed.py --quick         # fewer repetitions, no trace
    python benchmarks/speed.py --no-trace

Targets (DESIGN §9): `memfit --help` and `memfit params Llama-3.1-405B` under 0.3 s cold; analytic
`estimate()` under 1 ms; `plan()` under 100 ms; a trace under 30 s and 1 GiB RSS at 70B. Timings are
medians (and p99 for estimate) over repeated runs; cold starts are fresh subprocesses of the installed
`memfit` console script. Every results file records the machine, library versions and the git commit.
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
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent

COLD_START_TARGET_S = 0.3
ESTIMATE_TARGET_MS = 1.0
PLAN_TARGET_MS = 100.0
TRACE_RSS_TARGET_MIB = 1024.0

_FULL = {"task": "train", "seq_len": 2048}
_LORA = {"task": "train", "seq_len": 2048, "method": "lora", "lora": {"rank": 16, "alpha": 32}}
TRACE_CASES = (
    ("Llama-3.1-8B", "full bf16 AdamW", _FULL, 10.0),
    ("Llama-3.1-70B", "full bf16 AdamW", _FULL, 30.0),
    ("Llama-3.1-70B", "LoRA r16", _LORA, 30.0),
)
"""(model, label, workload, target seconds): one training step of 2,048 tokens. Targets from issue 7:
a Llama-3.1-8B step under 10 s, a Llama-3.1-70B step under 30 s, each under 1 GiB of RAM."""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _row(
    bench: str,
    case: str,
    samples: list[float],
    *,
    unit: str,
    target: float | None,
    rss_mib: float | None = None,
) -> dict[str, Any]:
    median = statistics.median(samples)
    return {
        "benchmark": bench,
        "case": case,
        "n": len(samples),
        "unit": unit,
        "median": round(median, 4),
        "p99": round(_percentile(samples, 0.99), 4),
        "min": round(min(samples), 4),
        "max_rss_mib": None if rss_mib is None else round(rss_mib, 1),
        "target": target,
        "meets_target": None if target is None else median < target,
    }


def _memfit_executable() -> list[str]:
    script = shutil.which("memfit", path=str(Path(sys.executable).parent)) or shutil.which("memfit")
    return [script] if script else [sys.executable, "-m", "memfit"]


def _run_timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds user + system) of one child process."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cold_start(repeats: int) -> list[dict[str, Any]]:
    """Fresh `memfit` processes, stdout discarded: wall seconds (the target) and CPU seconds (what the
    process itself costs; on a loaded shared machine wall time also counts waiting for a core)."""
    rows = []
    commands = {
        "memfit --help": [*_memfit_executable(), "--help"],
        "memfit params Llama-3.1-405B": [*_memfit_executable(), "params", "Llama-3.1-405B"],
        "python -c pass (interpreter floor)": [sys.executable, "-c", "pass"],
    }
    for case, command in commands.items():
        _run_timed(command)  # warm the OS file cache
        walls, cpus = zip(*(_run_timed(command) for _ in range(repeats)), strict=True)
        target = None if case.startswith("python") else COLD_START_TARGET_S
        rows.append(_row("cold_start", case, list(walls), unit="s", target=target))
        rows.append(_row("cold_start_cpu", case, list(cpus), unit="s", target=target))
    return rows


def _time_ms(call: Callable[[], Any], repeats: int) -> list[float]:
    call()  # first call pays imports and caches
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def analytic(repeats: int) -> list[dict[str, Any]]:
    """estimate() and plan() in-process (milliseconds), on loaded specs."""
    from memfit.core.choices import Method
    from memfit.core.estimate import estimate
    from memfit.core.plan import plan
    from memfit.core.workload import Inference, Lora, Training
    from memfit.sources.catalog import catalog_models, get_gpu, load_catalog_model

    h100 = get_gpu("H100-SXM-80GB")
    infer = Inference(prompt_tokens=4096, new_tokens=256)
    train = Training(seq_len=2048, method=Method.LORA, lora=Lora(rank=16, alpha=32))
    big = load_catalog_model("Llama-3.1-405B")
    assert big is not None
    rows = [
        _row(
            "estimate",
            "Llama-3.1-405B inference 4096+256",
            _time_ms(lambda: estimate(big, infer, h100), repeats),
            unit="ms",
            target=ESTIMATE_TARGET_MS,
        ),
        _row(
            "estimate",
            "Llama-3.1-405B LoRA training 2048",
            _time_ms(lambda: estimate(big, train, h100), repeats),
            unit="ms",
            target=ESTIMATE_TARGET_MS,
        ),
    ]
    catalog_samples: list[float] = []
    for entry in catalog_models():
        spec = load_catalog_model(str(entry["name"]))
        if spec is None:
            continue
        for workload in (infer, Training(seq_len=2048)):
            try:
                catalog_samples.extend(_time_ms(functools.partial(estimate, spec, workload, h100), 5))
            except Exception:  # a model the analytic engine refuses is not a timing
                continue
    if catalog_samples:
        rows.append(
            _row(
                "estimate",
                "whole catalog, inference and full training",
                catalog_samples,
                unit="ms",
                target=ESTIMATE_TARGET_MS,
            )
        )
    eight = load_catalog_model("Llama-3.1-8B")
    assert eight is not None
    plan_repeats = max(5, repeats // 20)
    rows.append(
        _row(
            "plan",
            "Llama-3.1-8B full training on 24GiB: changes that fit",
            _time_ms(lambda: plan(eight, Training(seq_len=2048), get_gpu("24GiB")), plan_repeats),
            unit="ms",
            target=PLAN_TARGET_MS,
        )
    )
    rows.append(
        _row(
            "plan",
            "Llama-3.1-8B LoRA on H100: --maximize batch",
            _time_ms(lambda: plan(eight, train, h100, maximize="batch"), plan_repeats),
            unit="ms",
            target=PLAN_TARGET_MS,
        )
    )
    rows.append(
        _row(
            "plan",
            "Llama-3.1-8B inference on H100: --maximize context",
            _time_ms(lambda: plan(eight, infer, h100, maximize="context"), plan_repeats),
            unit="ms",
            target=PLAN_TARGET_MS,
        )
    )
    return rows


def _trace_one(model: str, workload: dict[str, Any]) -> dict[str, Any]:
    """Child mode: one trace estimate; prints wall seconds and the max RSS of this process and its worker."""
    import resource

    from memfit import api
    from memfit.core.result import workload_from_dict

    start = time.perf_counter()
    est = api.estimate(model, workload_from_dict(workload), engine="trace")
    wall = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"wall_s": wall, "max_rss_mib": max(own, children), "peak_allocated": est.peak.allocated_bytes}


def trace(repeats: int) -> list[dict[str, Any]]:
    """Trace runs, each in a fresh process (seconds, MiB of RSS: the worker's, which holds torch)."""
    try:
        from memfit.trace import engine  # noqa: F401
    except ImportError:
        return []
    rows = []
    for model, label, workload, target_s in TRACE_CASES:
        walls, rss = [], []
        for _ in range(repeats):
            result = subprocess.run(
                [sys.executable, __file__, "--trace-one", model, json.dumps(workload)],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if result.returncode != 0:
                tail = (result.stderr.strip().splitlines() or ["?"])[-1]
                rows.append(
                    {
                        "benchmark": "trace",
                        "case": f"{model} {label} training step, 2048 tokens",
                        "n": 0,
                        "unit": "s",
                        "median": None,
                        "p99": None,
                        "min": None,
                        "max_rss_mib": None,
                        "target": target_s,
                        "meets_target": None,
                        "error": tail,
                    }
                )
                break
            data = json.loads(result.stdout.strip().splitlines()[-1])
            walls.append(data["wall_s"])
            rss.append(data["max_rss_mib"])
        if walls:
            row = _row(
                "trace",
                f"{model} {label} training step, 2048 tokens",
                walls,
                unit="s",
                target=target_s,
                rss_mib=max(rss),
            )
            row["meets_target"] = row["meets_target"] and max(rss) < TRACE_RSS_TARGET_MIB
            rows.append(row)
    return rows


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return out.stdout.strip() + (" (src has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    versions = {}
    for package in ("memfit", "typer", "rich", "torch", "transformers", "peft"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git_commit(),
        "cpu": _cpu_model(),
        "cpu_count": str(os.cpu_count()),
        "load_average_1min_at_start": f"{load:.2f}",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": "none (CPU-only machine)",
        **{f"version_{k}": v for k, v in versions.items()},
    }


def _cell(value: Any, unit: str) -> str:
    return "-" if value is None else f"{value} {unit}"


def write(rows: list[dict[str, Any]], info: dict[str, str]) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    csv_path, md_path = RESULTS / f"speed-{day}.csv", RESULTS / f"speed-{day}.md"
    fields = [
        "benchmark",
        "case",
        "n",
        "unit",
        "median",
        "p99",
        "min",
        "max_rss_mib",
        "target",
        "meets_target",
        "error",
    ]
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        handle.write("".join(f"# {k}: {v}\n" for k, v in info.items()))
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# memfit speed benchmark",
        "",
        *(f"- {k}: {v}" for k, v in info.items()),
        "",
        "| benchmark | case | n | median | p99 | max RSS (MiB) | target | meets |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        meets = {True: "yes", False: "**no**", None: "-"}[r.get("meets_target")]
        lines.append(
            f"| {r['benchmark']} | {r['case']} | {r['n']} | {_cell(r['median'], r['unit'])} | "
            f"{_cell(r['p99'], r['unit'])} | "
            f"{'-' if r.get('max_rss_mib') is None else r['max_rss_mib']} | "
            f"{'-' if r['target'] is None else str(r['target']) + ' ' + r['unit']} | {meets} |"
            + (f" error: {r['error']}" if r.get("error") else "")
        )
    lines += [
        "",
        "Cold starts are fresh processes of the `memfit` console script (median of n). estimate() and",
        "plan() run in-process on specs already loaded. A shared machine's load shows in the spread",
        "between min and median; the load average at start is recorded above.",
        "",
    ]
    md_path.write_text("\n".join(lines), encoding="utf-8")
    return csv_path, md_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and no trace")
    parser.add_argument("--no-trace", action="store_true", help="skip the trace runs")
    parser.add_argument("--trace-one", nargs=2, metavar=("MODEL", "WORKLOAD_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trace_one:
        print(json.dumps(_trace_one(args.trace_one[0], json.loads(args.trace_one[1]))))
        return
    info = machine()
    rows = cold_start(5 if args.quick else 21)
    rows += analytic(50 if args.quick else 500)
    if not (args.quick or args.no_trace):
        rows += trace(1)
    for r in rows:
        print(
            f"{r['benchmark']:<11} {r['case']:<58} median {r['median']} {r['unit']}  p99 {r['p99']}"
            + (f"  rss {r['max_rss_mib']} MiB" if r.get("max_rss_mib") else "")
            + (f"  error {r['error']}" if r.get("error") else "")
        )
    csv_path, md_path = write(rows, info)
    print(f"wrote {csv_path.relative_to(REPO)} and {md_path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
