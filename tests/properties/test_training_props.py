"""Laws of the analytic training estimate: monotonic in size, checkpointing and LoRA never cost more."""

from __future__ import annotations

import dataclasses

from hypothesis import assume, given
from hypothesis import strategies as st
from tests.strategies import (
    TRAINING_LINEAR_NAMES,
    parallel_settings,
    training_specs,
    training_workloads,
)

from memfit.core.activations import saved_activations, training_flow
from memfit.core.choices import Checkpointing, Method, Optimizer, Precision, ZeroStage
from memfit.core.optimizers import lora_targets
from memfit.core.spec import ModelSpec
from memfit.core.training import training_phases
from memfit.core.workload import Lora, Parallelism, Training

BNB_OPTIMIZERS = (Optimizer.ADAMW_8BIT, Optimizer.PAGED_ADAMW_8BIT, Optimizer.PAGED_ADAMW_32BIT)


def _peak(spec: ModelSpec, wl: Training) -> int:
    return max(p.allocated_bytes for p in training_phases(spec, wl)[0])


def _max_term(spec: ModelSpec, wl: Training, name: str) -> int:
    return max(p.memory.bytes_of(name) for p in training_phases(spec, wl)[0])


@given(spec=training_specs(), wl=training_workloads(), extra=st.integers(1, 8))
def test_more_batch_never_needs_less(spec: ModelSpec, wl: Training, extra: int) -> None:
    """A bigger micro-batch never lowers the peak."""
    assert _peak(spec, dataclasses.replace(wl, batch_size=wl.batch_size + extra)) >= _peak(spec, wl)


@given(spec=training_specs(), wl=training_workloads(), extra=st.integers(1, 512))
def test_longer_sequence_never_needs_less(spec: ModelSpec, wl: Training, extra: int) -> None:
    """More tokens per sequence never lower the peak."""
    assert _peak(spec, dataclasses.replace(wl, seq_len=wl.seq_len + extra)) >= _peak(spec, wl)


@given(spec=training_specs(), wl=training_workloads(method=Method.LORA), extra=st.integers(1, 8))
def test_higher_rank_never_needs_less(spec: ModelSpec, wl: Training, extra: int) -> None:
    """A higher LoRA rank never lowers the peak (bnb optimizers excepted, see below)."""
    assert wl.lora is not None
    # bitsandbytes switches a tensor from fp32 to 8-bit states at 4096 elements and pages it at 1e5:
    # a rank crossing those sizes really does lower device memory, so the law is checked for the others
    assume(wl.optimizer not in BNB_OPTIMIZERS)
    bigger = dataclasses.replace(wl, lora=dataclasses.replace(wl.lora, rank=wl.lora.rank + extra))
    assert _peak(spec, bigger) >= _peak(spec, wl)


@given(spec=training_specs(), wl=training_workloads(method=Method.LORA),
       name=st.sampled_from(TRAINING_LINEAR_NAMES))
def test_more_targets_never_need_less(spec: ModelSpec, wl: Training, name: str) -> None:
    """Adapting one more module never lowers the peak."""
    assert wl.lora is not None
    if "all-linear" in wl.lora.targets:
        return
    more = tuple(dict.fromkeys((*wl.lora.targets, name)))
    assert _peak(spec, dataclasses.replace(wl, lora=dataclasses.replace(wl.lora, targets=more))) \
        >= _peak(spec, wl)


@given(spec=training_specs(), wl=training_workloads())
def test_checkpointing_never_saves_more(spec: ModelSpec, wl: Training) -> None:
    """Checkpointed saved activations never exceed the un-checkpointed ones."""
    targets = lora_targets(spec, wl.lora) if wl.lora is not None and wl.method is not Method.FULL \
        else frozenset()

    def saved(level: Checkpointing) -> int:
        flow = training_flow(spec, dataclasses.replace(wl, checkpointing=level), lora_targets=targets)
        return saved_activations(spec, flow, batch=wl.batch_size, seq_len=wl.seq_len).nbytes

    assert saved(Checkpointing.FULL) <= saved(Checkpointing.NONE)


@given(spec=training_specs(), wl=training_workloads(method=Method.FULL), rank=st.integers(1, 8))
def test_lora_grads_and_states_never_exceed_full(spec: ModelSpec, wl: Training, rank: int) -> None:
    """LoRA's gradients and optimizer states never exceed full fine-tuning's for the same optimizer."""
    lora = dataclasses.replace(wl, method=Method.LORA, lora=Lora(rank=rank, alpha=2 * rank))
    if wl.precision is Precision.FP32 or wl.precision.is_amp:
        lora = dataclasses.replace(lora, precision=wl.precision)
    for term in ("gradients", "optimizer_states"):
        assert _max_term(spec, lora, term) <= _max_term(spec, wl, term)


@given(spec=training_specs(), wl=training_workloads())
def test_parents_sum_children_and_phases_exist(spec: ModelSpec, wl: Training) -> None:
    """Every phase is present once, and every parent term equals the sum of its children."""
    phases, _ = training_phases(spec, wl)
    assert [str(p.name) for p in phases] == ["load", "forward", "backward", "optimizer"]
    stack = [p.memory for p in phases]
    while stack:
        term = stack.pop()
        if term.children:
            assert term.nbytes == sum(c.nbytes for c in term.children)
            stack.extend(term.children)


def _max_of(spec: ModelSpec, wl: Training, names: tuple[str, ...]) -> int:
    """The most the breakdown entries `names` take together at any phase (bytes)."""
    return max(sum(p.memory.flat().get(n, 0) for n in names) for p in training_phases(spec, wl)[0])


@given(spec=training_specs(), wl=training_workloads(), stage=st.sampled_from([2, 3]), dp=st.integers(1, 8))
def test_zero_stages_never_need_more(spec: ModelSpec, wl: Training, stage: int, dp: int) -> None:
    """ZeRO 3 ≤ 2 ≤ 1 per GPU up to what each stage preallocates, and more ranks never need more under ZeRO.

    (ZeRO-1 vs no ZeRO is no law: DeepSpeed adds fp32 master weights, which one rank does not amortise.)
    """
    def workload(zero: int, ranks: int) -> Training:
        return dataclasses.replace(wl, parallel=Parallelism(dp=ranks, zero=ZeroStage(str(zero))))

    def at(zero: int, ranks: int) -> int:
        return _peak(spec, workload(zero, ranks))

    # ZeRO-2 keeps its flat gradient partition from the first step on (through forward, where ZeRO-1 has
    # no gradients) and one tensor's gradient beside it; ZeRO-3 gathers a live window and the head or
    # embedding with its unsharded gradient, and keeps small parameters whole. On tiny models those can
    # outweigh what sharding saves.
    names = ("gradients/trainable", "gradients/unsharded_unit") if stage == 2 else (
        "weights/gathered_unit", "weights/gathered_head", "gradients/unsharded_head",
        "gradients/unsharded_unit", "weights/persistent_params")
    slack = _max_of(spec, workload(stage, dp), names)
    assert at(stage, dp) <= at(stage - 1, dp) + slack
    assert at(stage, dp + 1) <= at(stage, dp)


@given(spec=training_specs(), wl=training_workloads())
def test_tensor_parallel_never_needs_more(spec: ModelSpec, wl: Training) -> None:
    """Splitting over every head count's divisor never raises the per-GPU peak."""
    heads = spec.layers[0].attention.num_kv_heads
    assert _peak(spec, dataclasses.replace(wl, parallel=Parallelism(tp=heads))) <= _peak(spec, wl)


@given(spec=training_specs(), wl=training_workloads(), data=st.data())
def test_multi_gpu_trees_sum_and_offload_empties_the_gpu(spec: ModelSpec, wl: Training,
                                                        data: st.DataObject) -> None:
    """Under any runnable multi-GPU setting every parent term sums its children, and offloaded optimizer
    states leave no optimizer state on the GPU (ZeRO offload, FSDP CPU offload)."""
    par: Parallelism = data.draw(parallel_settings(heads=spec.layers[0].attention.num_heads,
                                                   layers=spec.num_layers))
    phases, _ = training_phases(spec, dataclasses.replace(wl, parallel=par))
    stack = [p.memory for p in phases]
    while stack:
        term = stack.pop()
        if term.children:
            assert term.nbytes == sum(c.nbytes for c in term.children)
            stack.extend(term.children)
    fsdp_offload = par.fsdp is not None and par.offload_params.value != "none"
    offloaded = par.offload_optimizer.value != "none" or fsdp_offload
    if offloaded:
        assert all(p.memory.bytes_of("optimizer_states") == 0 for p in phases)
        assert max(p.host_bytes for p in phases) > 0
