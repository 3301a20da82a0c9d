"""Multi-GPU strategy search: which ways of spreading a training job over N GPUs fit, per GPU and node.

`plan_strategies` tries, for each GPU count, the strategies people run (DDP, DeepSpeed ZeRO-1/2/3 with and
without CPU offload, FSDP2 full and hybrid, expert parallelism for MoE models, tensor parallel × FSDP with
sequence parallelism, pipeline × FSDP), each as given and with activation checkpointing, and returns every
one with its analytic estimate of the most loaded GPU and the host RAM per node it needs. Every probe is
one analytic estimate (about a millisecond), so a search over two GPU counts takes tens of milliseconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from memfit.core.choices import Checkpointing, FsdpStrategy, Offload, ZeroStage
from memfit.core.errors import InvalidWorkload
from memfit.core.result import Estimate, Gpu
from memfit.core.spec import ModelSpec
from memfit.core.workload import Parallelism, Training

Estimator = Callable[[ModelSpec, Training, Gpu | None], Estimate]
TP_DEGREES = (2, 4, 8)
"""Tensor-parallel degrees tried (within a node, as NVLink-connected ranks)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyFit:
    """One way to spread the job: its label, workload and estimate (most loaded GPU), host RAM per node."""

    label: str
    num_gpus: int
    workload: Training
    estimate: Estimate

    @property
    def fits(self) -> bool:
        return bool(self.estimate.fits)

    @property
    def host_bytes_per_node(self) -> int:
        return max(phase.host_bytes for phase in self.estimate.phases)

    def to_dict(self) -> dict[str, object]:
        peak = self.estimate.peak
        return {"label": self.label, "num_gpus": self.num_gpus, "fits": self.fits,
                "device_bytes": peak.device_bytes, "allocated_bytes": peak.allocated_bytes,
                "host_bytes_per_node": self.host_bytes_per_node,
                "parallel": self.estimate.to_dict()["workload"]["parallel"]}


def _candidates(spec: ModelSpec, n: int, gpus_per_node: int) -> Iterator[tuple[str, Parallelism]]:
    base = Parallelism(dp=n, gpus_per_node=gpus_per_node)
    rep = dataclasses.replace
    yield "DDP", base
    for stage in (ZeroStage.OPTIMIZER, ZeroStage.GRADIENTS, ZeroStage.PARAMETERS):
        yield f"ZeRO-{stage}", rep(base, zero=stage)
    zero3 = rep(base, zero=ZeroStage.PARAMETERS)
    yield "ZeRO-3 + optimizer offload (cpu)", rep(zero3, offload_optimizer=Offload.CPU)
    yield ("ZeRO-3 + optimizer and parameter offload (cpu)",
           rep(zero3, offload_optimizer=Offload.CPU, offload_params=Offload.CPU))
    yield "FSDP full", rep(base, fsdp=FsdpStrategy.FULL)
    if n > gpus_per_node:
        yield f"FSDP hybrid (shard within {gpus_per_node})", rep(base, fsdp=FsdpStrategy.HYBRID)
    yield "FSDP full + CPU offload", rep(base, fsdp=FsdpStrategy.FULL, offload_params=Offload.CPU)
    if spec.is_moe:
        # expert parallelism over every data-parallel rank (refused where n does not divide the experts)
        yield f"DDP + EP {n}", rep(base, ep=n)
        yield f"FSDP full + EP {n}", rep(base, fsdp=FsdpStrategy.FULL, ep=n)
    for tp in TP_DEGREES:
        if tp <= min(n, gpus_per_node) and n % tp == 0:
            fsdp = FsdpStrategy.FULL if n > tp else None
            yield (f"TP {tp} + SP" + (f" × FSDP {n // tp}" if fsdp else ""),
                   rep(base, dp=n // tp, tp=tp, sequence_parallel=True, fsdp=fsdp))
    for pp in (2, 4):
        if n % pp == 0 and n > pp:
            yield f"PP {pp} × FSDP {n // pp}", rep(base, dp=n // pp, pp=pp, fsdp=FsdpStrategy.FULL)


def plan_strategies(spec: ModelSpec, workload: Training, gpu: Gpu, *, gpu_counts: tuple[int, ...],
                    gpus_per_node: int = 8, estimator: Estimator) -> tuple[StrategyFit, ...]:
    """Every strategy of `_candidates` for each GPU count, as given and (if not already) with activation
    checkpointing, that the runtime can run; fitting ones first, then by GPU count and per-GPU peak.

    Pipeline strategies run `workload.grad_accum` micro-batches (at least the stage count).
    """
    found: list[StrategyFit] = []
    variants = [("", workload)]
    if workload.checkpointing is Checkpointing.NONE:
        variants.append((" + checkpointing", dataclasses.replace(workload, checkpointing=Checkpointing.FULL)))
    for n in gpu_counts:
        for label, par in _candidates(spec, n, gpus_per_node):
            for suffix, base in variants:
                accum = max(base.grad_accum, par.pp) if par.pp > 1 else base.grad_accum
                try:
                    changed = dataclasses.replace(base, parallel=par, grad_accum=accum)
                    est = estimator(spec, changed, gpu)
                except InvalidWorkload:
                    continue
                found.append(StrategyFit(label=label + suffix, num_gpus=n, workload=changed, estimate=est))
    return tuple(sorted(found, key=lambda s: (not s.fits, s.num_gpus, s.estimate.peak.device_bytes)))
