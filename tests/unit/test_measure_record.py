"""Measured records (the ground-truth JSONL format): case fields, judged figure, round trip, compare."""

import pytest

from memfit.core.choices import Checkpointing, Engine, KvCache, Method, Optimizer, PhaseName, Precision
from memfit.core.dtypes import quant
from memfit.core.errors import EngineUnavailable, InvalidWorkload
from memfit.core.workload import Inference, Lora, Training
from memfit.measure import comparison, estimate_from_record, record_from_estimate
from memfit.measure.record import case_of, judged_alloc_bytes, memfit_phase
from memfit.sources.resolve import load_model

GIB = 1 << 30
RECORD = {  # a ground-truth-shaped record: load, then two training steps
    "gpu": "NVIDIA H100 80GB HBM3", "versions": {"torch": "2.11.0+cu130"}, "param_bytes": 2 * GIB,
    "nvml_proc_end": 30 * GIB,
    "phases": [
        {"name": "load", "start_alloc": 0, "peak_alloc": 3 * GIB, "end_alloc": 2 * GIB,
         "peak_reserved": 3 * GIB, "end_reserved": 3 * GIB},
        {"name": "fwd1", "start_alloc": 2 * GIB, "peak_alloc": 10 * GIB, "end_alloc": 8 * GIB,
         "peak_reserved": 11 * GIB, "end_reserved": 11 * GIB},
        {"name": "bwd1", "start_alloc": 8 * GIB, "peak_alloc": 12 * GIB, "end_alloc": 4 * GIB,
         "peak_reserved": 13 * GIB, "end_reserved": 13 * GIB},
        {"name": "fwd2", "start_alloc": 4 * GIB, "peak_alloc": 14 * GIB, "end_alloc": 9 * GIB,
         "peak_reserved": 16 * GIB, "end_reserved": 16 * GIB},
    ],
}


def test_case_of_training_uses_ground_truth_fields():
    """A QLoRA workload becomes the ground truth's case fields, defaults left out."""
    workload = Training(seq_len=2048, method=Method.QLORA, lora=Lora(rank=16, alpha=32),
                        quant=quant("nf4-dq"),
                        checkpointing=Checkpointing.FULL, optimizer=Optimizer.PAGED_ADAMW_8BIT)
    case = case_of("Llama-3.1-8B", workload)
    assert {k: case[k] for k in ("task", "method", "r", "quant", "gc", "optim", "seq", "batch")} == {
        "task": "train", "method": "qlora", "r": 16, "quant": "nf4-dq", "gc": True,
        "optim": "paged_adamw8bit",
        "seq": 2048, "batch": 1}
    assert "amp" not in case
    assert "targets" not in case


def test_case_of_generation_with_static_cache():
    """Generation records carry prompt, new tokens and the static cache flag."""
    case = case_of("Llama-3.2-1B", Inference(prompt_tokens=512, new_tokens=256, kv_cache=KvCache.STATIC))
    assert (case["task"], case["prompt"], case["new"], case["cache"]) == ("generate", 512, 256, "static")
    assert case["id"] == "Llama-3.2-1B-generate-static-b1-p512-n256"


def test_case_of_amp():
    """AMP training is `amp: true`, as in the ground truth."""
    assert case_of("m", Training(seq_len=8, precision=Precision.AMP_BF16))["amp"] is True


def test_judged_figure_is_the_largest_work_peak_or_load_end():
    """Judged: max(work peaks 10, 12, 14 GiB; load end 2 GiB) = 14 GiB (load's 3 GiB init peak ignored)."""
    assert judged_alloc_bytes(RECORD) == 14 * GIB


def test_record_phase_names_map_to_memfit_phases():
    """fwd2 → forward, generate → decode; an unknown name is refused."""
    assert (memfit_phase("fwd2"), memfit_phase("opt1"), memfit_phase("generate")) == (
        PhaseName.FORWARD, PhaseName.OPTIMIZER, PhaseName.DECODE)
    with pytest.raises(InvalidWorkload, match="unknown phase"):
        memfit_phase("warmup")


def test_estimate_from_record_takes_the_larger_step():
    """forward = fwd2 (14 > 10 GiB): weights 2 GiB + 12 GiB rest; reserved 16 GiB; load = its end, 2 GiB."""
    spec = load_model("Llama-3.2-1B")
    est = estimate_from_record(spec, Training(seq_len=8), None, RECORD)
    forward = est.phase(PhaseName.FORWARD)
    assert est.engine is Engine.MEASURE
    assert (forward.allocated_bytes, forward.reserved_bytes) == (14 * GIB, 16 * GIB)
    assert forward.memory.bytes_of("weights") == 2 * GIB
    assert est.phase(PhaseName.LOAD).allocated_bytes == 2 * GIB
    # non_torch = NVML end 30 GiB − last end_reserved 16 GiB = 14 GiB
    assert forward.device_bytes == 30 * GIB


def test_record_from_estimate_round_trips_the_judged_figure():
    """A measured Estimate written back as a record is judged the same (14 GiB)."""
    spec = load_model("Llama-3.2-1B")
    record = record_from_estimate(estimate_from_record(spec, Training(seq_len=8), None, RECORD))
    assert judged_alloc_bytes(record) == 14 * GIB
    assert record["case"]["task"] == "train"


def test_comparison_reports_signed_relative_errors():
    """An estimate 10 % over the measured peak reports error 0.1 on allocated bytes."""
    spec = load_model("Llama-3.2-1B")
    measured = estimate_from_record(spec, Training(seq_len=8), None, RECORD)
    bigger = dict(RECORD, phases=[
        dict(p, peak_alloc=p["peak_alloc"] * 11 // 10, end_alloc=p["end_alloc"] * 11 // 10)
        for p in RECORD["phases"]])
    estimate = estimate_from_record(spec, Training(seq_len=8), None, bigger)
    out = comparison(measured, {"analytic": estimate})
    assert out["schema"] == "memfit.comparison/1"
    assert out["engines"]["analytic"]["peak"]["allocated_bytes"]["error"] == pytest.approx(0.1, abs=1e-6)


def test_measure_without_cuda_is_one_line_error():
    """On a machine without a CUDA GPU, measure raises EngineUnavailable with the documented message."""
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    from memfit.measure import measure

    with pytest.raises(EngineUnavailable, match=r"^memfit measure needs a CUDA GPU; none is visible$"):
        measure(load_model("Llama-3.2-1B"), Inference(prompt_tokens=8), None)
