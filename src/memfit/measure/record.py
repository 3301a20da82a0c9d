"""Measured runs as records (the ground-truth JSONL format) and as Estimates. Pure Python: no torch.

A record is what `memfit measure` writes and `benchmarks/accuracy.py` reads, field for field like
../shared/groundtruth/h100-2026-11.jsonl: `case` (the workload in ground-truth fields), `phases` (per phase
start/peak/end allocated and peak/end reserved bytes), `peak_alloc`, `peak_reserved`, NVML figures,
`gpu`, `gpu_total_bytes`, `versions`, `n_params`, `param_bytes`, `ok`.
"""

from __future__ import annotations

from typing import Any

from memfit.core.choices import Checkpointing, Engine, KvCache, Method, Optimizer, PhaseName, Precision
from memfit.core.errors import InvalidWorkload
from memfit.core.result import Estimate, Gpu, Phase, Term, memory
from memfit.core.spec import ModelSpec
from memfit.core.workload import Inference, Training

RECORD_PHASES = {
    "load": PhaseName.LOAD, "prefill": PhaseName.PREFILL, "generate": PhaseName.DECODE,
    "decode": PhaseName.DECODE, "fwd": PhaseName.FORWARD, "bwd": PhaseName.BACKWARD,
    "opt": PhaseName.OPTIMIZER,
}
"""Record phase names (fwd1, bwd2, ... drop their step number) → memfit phases."""

OPTIMIZER_NAMES = {
    Optimizer.ADAMW: "adamw", Optimizer.ADAMW_FUSED: "adamw_fused", Optimizer.ADAMW_LOOP: "adamw_loop",
    Optimizer.ADAM: "adam", Optimizer.SGD: "sgd", Optimizer.SGD_MOMENTUM: "sgd_momentum",
    Optimizer.ADAFACTOR: "adafactor", Optimizer.LION: "lion", Optimizer.ADAMW_8BIT: "adamw8bit",
    Optimizer.PAGED_ADAMW_8BIT: "paged_adamw8bit", Optimizer.PAGED_ADAMW_32BIT: "paged_adamw32bit",
}
"""memfit optimizers → the ground-truth `optim` spelling."""


def case_of(model: str, workload: Inference | Training) -> dict[str, Any]:
    """The ground-truth `case` fields for a workload (defaults left out, as the ground truth does)."""
    case: dict[str, Any] = {"model": model}
    if isinstance(workload, Inference):
        case["task"] = "prefill" if workload.new_tokens == 0 else "generate"
        case["batch"], case["prompt"] = workload.batch_size, workload.prompt_tokens
        if workload.new_tokens:
            case["new"] = workload.new_tokens
        if workload.kv_cache is KvCache.STATIC:
            case["cache"] = "static"
        if workload.dtype is not None:
            case["dtype"] = str(workload.dtype)
    else:
        case["task"] = "train"
        case["batch"], case["seq"] = workload.batch_size, workload.seq_len
        case["optim"] = OPTIMIZER_NAMES[workload.optimizer]
        if workload.method is not Method.FULL and workload.lora is not None:
            case["method"], case["r"] = str(workload.method), workload.lora.rank
            if "all-linear" not in workload.lora.targets:
                case["targets"] = list(workload.lora.targets)
            if not workload.lora.prepare_kbit:
                case["prepare_kbit"] = False
        if workload.precision.is_amp:
            case["amp"] = True
        elif workload.precision is not Precision.BF16:
            case["dtype"] = str(workload.precision)
        if workload.checkpointing is Checkpointing.FULL:
            case["gc"] = True
    if workload.quant.is_quantized:
        case["quant"] = workload.quant.name
    if str(workload.attn) != "sdpa":
        case["attn"] = str(workload.attn)
    case["id"] = case_id(case)
    return case


def case_id(case: dict[str, Any]) -> str:
    """A readable id in the ground truth's style: model-task-settings."""
    parts = [str(case["model"]).split("/")[-1], case["task"]]
    for key in ("method", "quant", "optim", "dtype", "attn", "cache"):
        if key in case:
            parts.append(str(case[key]))
    if case.get("amp"):
        parts.append("amp")
    if case.get("gc"):
        parts.append("gc")
    parts.append(f"b{case['batch']}")
    parts.append(f"s{case['seq']}" if "seq" in case else f"p{case['prompt']}")
    if "new" in case:
        parts.append(f"n{case['new']}")
    return "-".join(parts)


def judged_alloc_bytes(record: dict[str, Any]) -> int:
    """What an estimate is judged on: the largest work-phase peak_alloc, or load end_alloc if larger."""
    work = [int(p["peak_alloc"]) for p in record["phases"] if p["name"] != "load"]
    load = [int(p["end_alloc"]) for p in record["phases"] if p["name"] == "load"]
    if not work and not load:
        raise InvalidWorkload("the measured record has no phases")
    return max(work + load)


def memfit_phase(record_phase: str) -> PhaseName:
    """The memfit phase a record phase belongs to (fwd2 → forward)."""
    base = record_phase.rstrip("0123456789")
    if base not in RECORD_PHASES:
        raise InvalidWorkload(f"unknown phase {record_phase!r} in a measured record")
    return RECORD_PHASES[base]


def estimate_from_record(spec: ModelSpec, workload: Inference | Training, gpu: Gpu | None,
                         record: dict[str, Any]) -> Estimate:
    """The `engine="measure"` Estimate of a record: per memfit phase, the record phase with the largest peak.

    allocated = peak_alloc (load: end_alloc, the loaded model without from_config's init temporaries),
    split into weights (param_bytes) and the rest under activations; fragmentation = peak_reserved −
    peak_alloc; non_torch = NVML process memory at the end − reserved at the end (never negative).
    """
    best: dict[PhaseName, dict[str, Any]] = {}
    for raw in record["phases"]:
        name = memfit_phase(raw["name"])
        if name not in best or raw["peak_alloc"] > best[name]["peak_alloc"]:
            best[name] = raw
    weights = int(record.get("param_bytes", 0))
    non_torch = max(0, int(record.get("nvml_proc_end", 0)) - int(record["phases"][-1].get("end_reserved", 0)))
    phases = []
    for name, raw in best.items():
        allocated = raw["end_alloc"] if name is PhaseName.LOAD else raw["peak_alloc"]
        held_weights = min(weights, allocated)
        terms = [Term(name="weights", nbytes=held_weights),
                 Term(name="activations", nbytes=allocated - held_weights,
                      note="measured: everything allocated beyond the loaded weights, not split"),
                 Term(name="fragmentation", nbytes=max(0, raw["peak_reserved"] - raw["peak_alloc"])),
                 Term(name="non_torch", nbytes=non_torch, note="NVML process memory − reserved, at the end")]
        phases.append(Phase(name=name, memory=memory(terms), at=raw["name"]))
    assumptions = [f"measured on {record.get('gpu', 'a CUDA GPU')} with "
                   + ", ".join(f"{k} {v}" for k, v in sorted(record.get("versions", {}).items()))]
    if record.get("oom"):
        assumptions.append(f"the run ran out of GPU memory in phase {record['oom']}: figures are up to there")
    if isinstance(workload, Inference) and workload.new_tokens:
        assumptions.append("decode is one generate() call, its prefill included")
    return Estimate(engine=Engine.MEASURE, model=spec, workload=workload, phases=tuple(phases), gpu=gpu,
                    assumptions=tuple(assumptions))


def record_from_estimate(estimate: Estimate) -> dict[str, Any]:
    """A ground-truth-style record from a measure Estimate (per memfit phase; start/end not kept)."""
    if estimate.engine is not Engine.MEASURE:
        raise InvalidWorkload(f"only measured estimates are records, not engine={estimate.engine}")
    phases: list[dict[str, Any]] = []
    for phase in estimate.phases:
        phases.append({"name": str(phase.name), "peak_alloc": phase.allocated_bytes,
                       "end_alloc": phase.allocated_bytes, "peak_reserved": phase.reserved_bytes})
    return {"case": case_of(estimate.model.name, estimate.workload), "phases": phases,
            "peak_alloc": max(p.allocated_bytes for p in estimate.phases),
            "peak_reserved": max(p.reserved_bytes for p in estimate.phases),
            "gpu": estimate.gpu.name if estimate.gpu else None, "ok": True}
