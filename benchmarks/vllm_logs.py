"""vLLM start-up logs against memfit: weights per GPU and KV cache tokens, record by record.

    python benchmarks/vllm_logs.py [--logs ../shared/groundtruth/vllm/startup_logs.jsonl]
                                   [--out benchmarks/results]

Each record (one real `vllm serve` start-up: model, GPU, tp, max_model_len, KV dtype, vLLM version, what the
log reported per GPU; fields in the README beside the file) becomes an `Inference` with runtime vllm, the
record's tp, gpu_memory_utilization, max_model_len (as prompt tokens), enforce_eager, KV cache dtype and
vLLM version. memfit's weights ("Model loading took X GiB") and KV tokens ("GPU KV cache size: N tokens")
are compared with the log; the table, the median and max |error| and the versions go to
results/vllm-logs-<date>.md. A record memfit cannot estimate is listed with its error, not skipped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LOGS = REPO.parent / "shared" / "groundtruth" / "vllm" / "startup_logs.jsonl"
WEIGHTS_TOLERANCE = 0.01
TOKENS_MEDIAN_TOLERANCE = 0.03
TOKENS_MAX_TOLERANCE = 0.08
"""The targets of memfit issue 14: weights within 1 %, KV tokens median ≤ 3 % and max ≤ 8 %."""


def workload_of(record: dict[str, Any]) -> Any:
    """The `Inference` a start-up record describes."""
    from memfit.core.dtypes import DType
    from memfit.core.workload import Inference, Parallelism

    kv_dtype = None if record.get("kv_cache_dtype") in (None, "auto") else DType.FP8_E4M3
    return Inference(
        prompt_tokens=int(record["max_model_len"]), runtime="vllm",
        parallel=Parallelism(tp=int(record["tp"])),
        gpu_memory_utilization=Fraction(str(record["gpu_memory_utilization"])),
        enforce_eager=bool(record.get("enforce_eager")), kv_cache_dtype=kv_dtype,
        vllm_version=record.get("vllm_version"), allow_longer=True,
    )


def compare(record: dict[str, Any]) -> dict[str, Any]:
    """memfit's weights GiB and KV tokens for one record, with the signed errors."""
    from memfit import api

    est = api.estimate(record["model"], workload_of(record), gpu=record["gpu"])
    weights_gib = est.phase("load").memory.bytes_of("weights") / 2**30
    assert est.capacity is not None
    tokens = est.capacity.tokens
    return {
        "weights_gib": weights_gib,
        "weights_error": weights_gib / float(record["model_load_gib"]) - 1,
        "tokens": tokens,
        "tokens_error": tokens / int(record["kv_cache_tokens"]) - 1,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=Path, default=DEFAULT_LOGS)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    records = [json.loads(line) for line in args.logs.read_text().splitlines() if line.strip()]
    rows = ["| model | GPU | tp | vLLM | weights GiB (log) | memfit | error "
            "| KV tokens (log) | memfit | error |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    weight_errors: list[float] = []
    token_errors: list[float] = []
    for record in records:
        head = (f"| {record['model']} | {record['gpu']} | {record['tp']} | {record.get('vllm_version')} "
                f"| {record['model_load_gib']:.2f} ")
        try:
            got = compare(record)
        except Exception as err:  # a record memfit cannot estimate is a result
            rows.append(head + f"| not estimated: {type(err).__name__}: {err} | | | | |")
            continue
        weight_errors.append(abs(got["weights_error"]))
        token_errors.append(abs(got["tokens_error"]))
        rows.append(head + f"| {got['weights_gib']:.2f} | {got['weights_error']:+.2%} "
                    f"| {int(record['kv_cache_tokens']):,} | {got['tokens']:,} "
                    f"| {got['tokens_error']:+.2%} |")
    summary = []
    if token_errors:
        summary = [
            f"- weights: max |error| {max(weight_errors):.2%} (target {WEIGHTS_TOLERANCE:.0%})",
            f"- KV tokens: median |error| {statistics.median(token_errors):.2%} (target "
            f"{TOKENS_MEDIAN_TOLERANCE:.0%}), max {max(token_errors):.2%} "
            f"(target {TOKENS_MAX_TOLERANCE:.0%})",
        ]
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    today = dt.date.today().isoformat()
    text = "\n".join([
        f"# vLLM start-up logs vs memfit ({today})", "",
        f"Logs: `{args.logs}` ({len(records)} records). memfit commit {commit or 'unknown'}, Python "
        f"{sys.version.split()[0]}. Engine: analytic, vLLM runtime (core/vllm.py, core/vllm_profile.py).", "",
        *rows, "", *summary, "",
    ])
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"vllm-logs-{today}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
