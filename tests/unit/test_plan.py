"""The planner (core/plan.py) over a hand-made estimator whose figures can be redone by hand."""

from __future__ import annotations

import dataclasses

import pytest

from memfit.core.choices import (
    Checkpointing,
    DeviceMap,
    Engine,
    KvCache,
    Method,
    Optimizer,
    PhaseName,
    Runtime,
)
from memfit.core.errors import InvalidWorkload
from memfit.core.plan import (
    PLAN_SCHEMA,
    num_gpus_split,
    plan,
    plan_changes,
    plan_max_batch,
    plan_max_context,
)
from memfit.core.result import Estimate, Gpu, Phase, Term, memory
from memfit.core.spec import AttentionSpec, LayerSpec, MlpSpec, ModelSource, ModelSpec
from memfit.core.units import GiB, MiB
from memfit.core.workload import Inference, Training

HIDDEN = 64
MAX_POSITIONS = 131_072
LAYER = LayerSpec(
    attention=AttentionSpec(num_heads=4, num_kv_heads=2, head_dim=16),
    mlp=MlpSpec(intermediate_size=128, gated=True),
)
SPEC = ModelSpec(
    name="tiny",
    family="llama",
    vocab_size=256,
    hidden_size=HIDDEN,
    max_position_embeddings=MAX_POSITIONS,
    tie_word_embeddings=True,
    layers=(LAYER, LAYER),
    source=ModelSource(kind="config", ref="tiny"),
)
GPU_40 = Gpu(name="40GiB", memory_bytes=40 * GiB, usable_bytes=40 * GiB)

WEIGHTS_BYTES = 10 * GiB
BYTES_PER_SEQUENCE_TOKEN = MiB
FULL_ADAM_BYTES = 40 * GiB
EIGHT_BIT_ADAM_BYTES = 10 * GiB
LORA_OPTIMIZER_BYTES = 1 * GiB
CHECKPOINTING_DIVISOR = 8


def fake_estimate(spec: ModelSpec, workload: Inference | Training, gpu: Gpu | None) -> Estimate:
    """10 GiB of weights + 1 MiB per sequence-token (÷ 8 with checkpointing) + optimizer states."""
    if isinstance(workload, Training):
        tokens = workload.seq_len
        divisor = CHECKPOINTING_DIVISOR if workload.checkpointing is Checkpointing.FULL else 1
        if workload.method is not Method.FULL:
            optimizer = LORA_OPTIMIZER_BYTES
        elif workload.optimizer is Optimizer.ADAMW_8BIT:
            optimizer = EIGHT_BIT_ADAM_BYTES
        else:
            optimizer = FULL_ADAM_BYTES
    else:
        tokens, divisor, optimizer = workload.total_tokens, 1, 0
    activations = workload.batch_size * tokens * BYTES_PER_SEQUENCE_TOKEN // divisor
    terms = [Term(name="weights", nbytes=WEIGHTS_BYTES), Term(name="activations", nbytes=activations)]
    if optimizer:
        terms.append(Term(name="optimizer_states", nbytes=optimizer))
    phase = Phase(name=PhaseName.FORWARD, memory=memory(terms))
    return Estimate(engine=Engine.ANALYTIC, model=spec, workload=workload, phases=(phase,), gpu=gpu)


def test_max_batch_at_1024_tokens() -> None:
    """40 GiB − 10 GiB of weights leaves 30,720 MiB: 30 sequences of 1,024 tokens fit, 31 do not."""
    # b × 1024 tokens × 1 MiB ≤ 30 × 1024 MiB → b ≤ 30
    assert plan_max_batch(SPEC, Inference(prompt_tokens=1024), GPU_40, estimator=fake_estimate) == 30


def test_max_batch_rounds_down() -> None:
    """At 1,000 tokens per sequence, 30,720 / 1,000 = 30.72 → 30 sequences."""
    assert plan_max_batch(SPEC, Inference(prompt_tokens=1000), GPU_40, estimator=fake_estimate) == 30


def test_max_batch_is_zero_when_nothing_fits() -> None:
    """On an 8 GiB GPU the 10 GiB of weights alone do not fit: the answer is 0."""
    gpu_8 = Gpu(name="8GiB", memory_bytes=8 * GiB, usable_bytes=8 * GiB)
    assert plan_max_batch(SPEC, Inference(prompt_tokens=16), gpu_8, estimator=fake_estimate) == 0


def test_max_context_inference_counts_new_tokens() -> None:
    """Batch 2 with 512 new tokens: 2 × (p + 512) MiB ≤ 30,720 MiB → p ≤ 14,848 tokens."""
    workload = Inference(prompt_tokens=16, new_tokens=512, batch_size=2)
    assert plan_max_context(SPEC, workload, GPU_40, estimator=fake_estimate) == 14_848


def test_max_context_stops_at_max_position_embeddings() -> None:
    """A model with 8,192 positions caps the search even though 30,720 tokens would fit in memory."""
    short = dataclasses.replace(SPEC, max_position_embeddings=8192)
    assert plan_max_context(short, Inference(prompt_tokens=16), GPU_40, estimator=fake_estimate) == 8192


def test_max_context_may_go_longer_when_allowed() -> None:
    """With allow_longer the cap is memory alone: 30,720 tokens at batch 1."""
    short = dataclasses.replace(SPEC, max_position_embeddings=8192)
    workload = Inference(prompt_tokens=16, allow_longer=True)
    assert plan_max_context(short, workload, GPU_40, estimator=fake_estimate) == 30_720


def test_max_context_training_is_the_sequence_length() -> None:
    """Training batch 4 with checkpointing: 4 × s / 8 MiB + 10 GiB + 40 GiB Adam > 40 GiB → nothing fits;
    with LoRA (1 GiB of optimizer state): 4 × s / 8 ≤ 29 GiB = 29,696 MiB → s ≤ 59,392."""
    full = Training(seq_len=512, batch_size=4, checkpointing=Checkpointing.FULL)
    assert plan_max_context(SPEC, full, GPU_40, estimator=fake_estimate) == 0
    from memfit.core.workload import Lora

    lora = dataclasses.replace(full, method=Method.LORA, lora=Lora(rank=8, alpha=16))
    assert plan_max_context(SPEC, lora, GPU_40, estimator=fake_estimate) == 59_392


def test_changes_ladder_keeps_the_least_invasive_that_fit_in_order() -> None:
    """Full fine-tune, batch 4 × 4,096: 10 + 40 + 16 GiB = 66 GiB does not fit 40 GiB, nor does
    checkpointing alone (10 + 40 + 2 = 52 GiB); LoRA (10 + 1 + 16 = 27 GiB) is the first that fits, then
    LoRA + checkpointing (13 GiB), QLoRA, 8-bit Adam (10 + 10 + 16 = 36 GiB), 8-bit Adam + checkpointing."""
    workload = Training(seq_len=4096, batch_size=4)
    changes = plan_changes(SPEC, workload, GPU_40, estimator=fake_estimate)
    assert len(changes) == 5
    trainings = [change.workload for change in changes if isinstance(change.workload, Training)]
    assert len(trainings) == 5
    assert (trainings[0].method, trainings[0].checkpointing) == (Method.LORA, Checkpointing.NONE)
    assert changes[0].estimate.peak.device_bytes == 27 * GiB
    assert changes[1].estimate.peak.device_bytes == 13 * GiB
    assert trainings[2].method is Method.QLORA
    assert trainings[3].optimizer is Optimizer.ADAMW_8BIT
    assert changes[3].estimate.peak.device_bytes == 36 * GiB
    assert all(change.estimate.fits for change in changes)


def test_plan_maximize_batch_carries_the_best_estimate() -> None:
    """plan(maximize="batch") reports 30 and the estimate at batch 30 (10 + 30 GiB = the whole GPU)."""
    result = plan(SPEC, Inference(prompt_tokens=1024), GPU_40, maximize="batch", estimator=fake_estimate)
    assert result.max_value == 30
    assert result.best is not None
    assert result.best.peak.device_bytes == 40 * GiB
    assert result.to_dict()["schema"] == PLAN_SCHEMA
    assert result.to_dict()["field"] == "batch_size"


def test_plan_rejects_an_unknown_maximize() -> None:
    """maximize must be batch or context."""
    with pytest.raises(InvalidWorkload, match="maximize"):
        plan(SPEC, Inference(prompt_tokens=8), GPU_40, maximize="speed", estimator=fake_estimate)


@pytest.mark.parametrize(
    ("workload", "expected"),
    [
        (Training(seq_len=8), {"dp": 4}),
        (Inference(prompt_tokens=8, runtime=Runtime.VLLM), {"tp": 4}),
        (Inference(prompt_tokens=8), {"pp": 4, "device_map": DeviceMap.AUTO}),
        (Inference(prompt_tokens=8, runtime=Runtime.LLAMA_CPP), {"pp": 4}),
    ],
)
def test_num_gpus_split_follows_the_runtime(
    workload: Inference | Training, expected: dict[str, object]
) -> None:
    """4 GPUs: data parallel for training, tensor parallel for vLLM, layer splits otherwise."""
    assert num_gpus_split(4, workload) == expected


def test_max_batch_honours_a_capacity_limit_below_the_memory_budget() -> None:
    """vLLM: 8B on an H100 at 0.9 holds 214 sequences of 2,048 tokens, though the peak stays in budget."""
    # capacity 440,208 tokens (tests/unit/test_inference.py VLLM_8B_TOKENS) // 2,048 tokens per sequence = 214
    from memfit.sources.catalog import get_gpu, load_catalog_model

    spec = load_catalog_model("Llama-3.1-8B")
    assert spec is not None
    job = Inference(prompt_tokens=1024, new_tokens=1024, runtime=Runtime.VLLM, kv_cache=KvCache.PAGED)
    assert plan_max_batch(spec, job, get_gpu("H100-SXM-80GB")) == 214
