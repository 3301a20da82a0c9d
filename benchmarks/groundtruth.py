"""Measured cases → (model config, Workload, measured figures), for the accuracy benchmark.

Reads the shared ground truth (`../shared/groundtruth/*.jsonl`, fields in its README) and our own
measurements under `benchmarks/results/*.jsonl` (same record format, or `memfit.estimate/1` lines from
`memfit measure --json`). One function, `to_workload`, maps a record's `case` fields to a core workload.

What a case is judged on (the groundtruth README): allocated = the largest `peak_alloc` of the work phases,
or the `load` phase's `end_alloc` if larger; reserved likewise from `peak_reserved` / `end_reserved`.
Training phases fwd/bwd/opt are the maximum over the two measured steps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from memfit.core.choices import AttnImpl, Checkpointing, KvCache, Method, Optimizer, PhaseName, Precision
from memfit.core.dtypes import DType, parse_dtype, quant
from memfit.core.workload import Inference, Lora, Training

REPO = Path(__file__).resolve().parents[1]
SHARED_GROUNDTRUTH = REPO.parent / "shared" / "groundtruth"
OUR_RESULTS = REPO / "benchmarks" / "results"

_OPTIMIZERS = {
    "adamw": Optimizer.ADAMW, "adamw_fused": Optimizer.ADAMW_FUSED, "adamw_loop": Optimizer.ADAMW_LOOP,
    "adamw8bit": Optimizer.ADAMW_8BIT, "adamw_8bit": Optimizer.ADAMW_8BIT,
    "paged_adamw8bit": Optimizer.PAGED_ADAMW_8BIT, "paged_adamw_8bit": Optimizer.PAGED_ADAMW_8BIT,
    "paged_adamw32bit": Optimizer.PAGED_ADAMW_32BIT, "paged_adamw_32bit": Optimizer.PAGED_ADAMW_32BIT,
    "adafactor": Optimizer.ADAFACTOR, "sgd": Optimizer.SGD, "sgd_momentum": Optimizer.SGD_MOMENTUM,
    "lion": Optimizer.LION, "adam": Optimizer.ADAM,
}
_TRAIN_PHASES = {"fwd": PhaseName.FORWARD, "bwd": PhaseName.BACKWARD, "opt": PhaseName.OPTIMIZER}


@dataclass(frozen=True)
class Measured:
    """The figures a case is judged on, in bytes, and the phase holding the allocated peak."""

    allocated_bytes: int
    reserved_bytes: int
    device_bytes: int | None
    phase: str
    phases: dict[str, tuple[int, int]]   # phase → (peak allocated, peak reserved)


@dataclass(frozen=True)
class Case:
    """One measured job: where it came from, its model config, its workload and what was measured."""

    case_id: str
    source: str
    model: str
    config_path: Path | None
    workload: Inference | Training | None
    measured: Measured
    category: str
    unmappable: str = ""          # why no workload could be built
    spec_dict: dict[str, Any] | None = None   # memfit.estimate/1 records carry their spec


def to_workload(case: dict[str, Any], *, attn_used: str | None = None) -> Inference | Training:
    """The core workload of a groundtruth `case` object (task, batch, prompt, new, seq, dtype, quant, ...).

    Without an `attn` field the run used HF's default attention, which the record names in
    `attn_impl_used` (pass it as `attn_used`); SDPA otherwise.
    """
    task = case["task"]
    dtype = parse_dtype(case.get("dtype", "bf16"))
    batch = int(case.get("batch", 1))
    attn_name = case.get("attn") or attn_used
    attn = AttnImpl.parse(attn_name) if attn_name else AttnImpl.SDPA
    q = quant(case["quant"]) if case.get("quant") else quant("none")
    if task in ("prefill", "generate"):
        return Inference(
            prompt_tokens=int(case["prompt"]),
            new_tokens=int(case.get("new", 0)) if task == "generate" else 0,
            batch_size=batch, dtype=dtype, quant=q, attn=attn,
            kv_cache=KvCache.parse(case.get("cache", "dynamic")),
        )
    if task != "train":
        raise ValueError(f"task {task!r} is not a workload")
    method = Method.parse(case.get("method", "full"))
    lora = None
    if method is not Method.FULL:
        rank = int(case.get("r", 16))
        targets = lora_targets(case.get("targets"))
        lora = Lora(rank=rank, alpha=2 * rank, targets=targets, dropout=Fraction(1, 20),
                    prepare_kbit=bool(case.get("prepare_kbit", True)))
    if case.get("amp"):
        precision = Precision.AMP_BF16 if dtype is not DType.FP16 else Precision.AMP_FP16
    else:
        precision = Precision.parse(str(dtype))
    return Training(
        seq_len=int(case["seq"]), batch_size=batch, method=method, lora=lora, quant=q, precision=precision,
        optimizer=_OPTIMIZERS[case.get("optim", "adamw")],
        checkpointing=Checkpointing.FULL if case.get("gc") else Checkpointing.NONE, attn=attn,
    )


def lora_targets(value: str | list[str] | None) -> tuple[str, ...]:
    """LoRA target modules of a case's `targets`: "q_proj,v_proj" or a list; none means "all-linear"."""
    if not value:
        return ("all-linear",)
    items = value.split(",") if isinstance(value, str) else value
    names = tuple(name.strip() for name in items if name.strip())
    return names or ("all-linear",)


def measured_figures(record: dict[str, Any]) -> Measured:
    """The judged allocated and reserved bytes of a groundtruth record (README definition)."""
    phases = {p["name"]: p for p in record["phases"]}
    load = phases.get("load")
    per_phase: dict[str, tuple[int, int]] = {}
    for name, p in phases.items():
        if name == "load":
            continue
        key = str(_TRAIN_PHASES.get(name.rstrip("0123456789"), name))
        old = per_phase.get(key, (0, 0))
        per_phase[key] = (max(old[0], p["peak_alloc"]), max(old[1], p["peak_reserved"]))
    phase, (alloc, reserved) = ("load", (0, 0))
    if per_phase:
        phase, (alloc, reserved) = max(per_phase.items(), key=lambda kv: kv[1][0])
    if load is not None and load["end_alloc"] > alloc:
        phase, alloc = "load", load["end_alloc"]
    if load is not None:
        reserved = max(reserved, load["end_reserved"])
    return Measured(allocated_bytes=alloc, reserved_bytes=reserved, device_bytes=record.get("nvml_proc_end"),
                    phase=phase, phases=per_phase)


def category(case: dict[str, Any]) -> str:
    """inference | quantized | full fine-tune | LoRA | QLoRA."""
    if case["task"] in ("prefill", "generate"):
        return "quantized" if case.get("quant") else "inference"
    method = str(case.get("method", "full"))
    return {"full": "full fine-tune", "lora": "LoRA", "qlora": "QLoRA"}.get(method, method)


def load_cases(paths: list[Path] | None = None) -> list[Case]:
    """Every case of the shared ground truth and of our own results, in file order; context rows skipped."""
    if paths is None:
        paths = sorted(SHARED_GROUNDTRUTH.glob("*.jsonl")) + sorted(OUR_RESULTS.glob("*.jsonl"))
    return [case for path in paths for case in _read(path)]


def _read(path: Path) -> Iterator[Case]:
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("schema", "").startswith("memfit.estimate/"):
            yield _from_estimate(record, path)
            continue
        case = record["case"]
        if case.get("task") == "context" or not record.get("ok", True):
            continue
        config = path.parent / "configs" / f"{case['model']}.json"
        try:
            workload: Inference | Training | None = to_workload(case, attn_used=record.get("attn_impl_used"))
            why = ""
        except Exception as err:  # an unmappable case is listed, not fatal
            workload, why = None, f"{type(err).__name__}: {err}"
        yield Case(case_id=case["id"], source=path.name, model=case["model"],
                   config_path=config if config.exists() else None, workload=workload,
                   measured=measured_figures(record), category=category(case), unmappable=why)


def _from_estimate(record: dict[str, Any], path: Path) -> Case:
    from memfit.core.result import workload_from_dict

    workload = workload_from_dict(record["workload"])
    peak = record["peak"]
    phases = {p["name"]: (p["allocated_bytes"], p["reserved_bytes"]) for p in record["phases"]}
    measured = Measured(allocated_bytes=peak["allocated_bytes"], reserved_bytes=peak["reserved_bytes"],
                        device_bytes=peak.get("device_bytes"), phase=peak["phase"], phases=phases)
    if isinstance(workload, Inference):
        cat = "quantized" if workload.quant.is_quantized else "inference"
    else:
        cat = {"full": "full fine-tune", "lora": "LoRA", "qlora": "QLoRA"}[str(workload.method)]
    name = record["model"]["name"]
    return Case(case_id=f"{name}:{path.stem}", source=path.name, model=name, config_path=None,
                workload=workload, measured=measured, category=cat, spec_dict=record["model"].get("spec"))
