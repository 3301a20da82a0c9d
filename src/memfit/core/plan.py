"""The planner: the largest batch or context that fits a GPU, or the least invasive changes that fit.

Pure functions over the analytic estimate. `plan_max_batch` and `plan_max_context` search for n such
that n fits and n + 1 does not (0 when even 1 does not fit), interpolating the bytes over the GPU with
bisection as a safeguard; this relies on the law that more sequences or tokens never need less memory
(tests/properties). `plan_changes` tries an ordered ladder of changes, least invasive first, and keeps the
first `MAX_CHANGES` that fit, each with its estimate. Every probe is one analytic estimate (about a
millisecond), so a plan takes tens of milliseconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from memfit.core.choices import Checkpointing, DeviceMap, Method, Offload, Optimizer, Runtime, ZeroStage
from memfit.core.errors import InvalidWorkload, MemfitError
from memfit.core.result import Estimate, Gpu
from memfit.core.spec import ModelSpec
from memfit.core.strategies import StrategyFit, plan_strategies
from memfit.core.workload import Inference, Lora, Training

Workload = Inference | Training
Estimator = Callable[[ModelSpec, Workload, Gpu | None], Estimate]

PLAN_SCHEMA = "memfit.plan/1"
MAX_BATCH = 1 << 16
"""Largest batch size the search probes (sequences per GPU)."""
MAX_LONGER_CONTEXT = 1 << 24
"""Largest context probed when the workload allows going past max_position_embeddings (tokens)."""
MAX_CHANGES = 5
"""Changes that fit kept by `plan_changes`, least invasive first."""
PLAN_LORA_RANK = 16
"""LoRA rank the planner proposes (alpha 2 × rank): the common peft default for chat fine-tunes."""
PLAN_QLORA_QUANT = "nf4"
"""4-bit format the planner proposes for QLoRA: bitsandbytes' NF4 (QLoRA paper, §3)."""
MORE_GPUS = (2, 4, 8)
"""GPU counts the planner tries when one GPU is not enough."""
MAXIMIZE_FIELDS = {"batch": "batch_size", "context": "context", "n-gpu-layers": "n_gpu_layers"}
"""What `plan --maximize` searches: batch size, context (prompt or sequence tokens), llama.cpp's
--n-gpu-layers (the output layer and the last blocks on the GPU)."""


def _default_estimator(spec: ModelSpec, workload: Workload, gpu: Gpu | None) -> Estimate:
    from memfit.core.estimate import estimate

    return estimate(spec, workload, gpu)


def _fits(spec: ModelSpec, workload: Workload, gpu: Gpu, estimator: Estimator) -> Estimate | None:
    """The estimate when `workload` fits `gpu`, else None (an impossible workload does not fit)."""
    try:
        est = estimator(spec, workload, gpu)
    except InvalidWorkload:
        return None
    return est if est.fits else None


def _over(spec: ModelSpec, workload: Workload, gpu: Gpu, estimator: Estimator) -> int | None:
    """Bytes by which `workload` exceeds the GPU (≤ 0: it fits, as `Estimate.fits` decides); None if it
    cannot run at all."""
    try:
        est = estimator(spec, workload, gpu)
    except InvalidWorkload:
        return None
    over = est.peak.device_bytes - est.peak.evictable_bytes - gpu.usable_bytes
    if est.fits is False and over <= 0:
        # within the memory budget but short of something else the runtime needs (vLLM: KV capacity for
        # batch_size sequences): treat as just over, so the search stays below it
        return 1
    return over


def _next_probe(
    good: tuple[int, int], bad: tuple[int, int | None], previous: tuple[int, int] | None, bisect: bool
) -> int:
    """Where to look next between a fitting `good` (n, over) and a failing `bad` (n, over or None).

    Interpolates the bytes over the GPU linearly (memory is close to linear in batch and context), from
    the two ends when both were measured, else from the last two fitting points; doubles when nothing is
    known yet; bisects when asked (the last step did not halve the interval).
    """
    (good_n, good_over), (bad_n, bad_over) = good, bad
    if bisect:
        probe = (good_n + bad_n) // 2
    elif bad_over is not None:
        probe = good_n + (bad_n - good_n) * -good_over // (bad_over - good_over)
    elif previous is not None and good_over > previous[1]:
        probe = good_n + (good_n - previous[0]) * -good_over // (good_over - previous[1])
    else:
        probe = 2 * good_n
    return min(max(probe, good_n + 1), bad_n - 1)


def _largest(over: Callable[[int], int | None], limit: int) -> int:
    """Largest n in 1..limit with over(n) ≤ 0, `over` growing with n; 0 if over(1) > 0.

    A safeguarded secant search: on near-linear memory it needs about four probes (1, 2, the
    extrapolated answer and one past it); bisection steps keep the worst case logarithmic.
    """
    first = over(1) if limit >= 1 else None
    if first is None or first > 0:
        return 0
    good: tuple[int, int] = (1, first)
    bad: tuple[int, int | None] = (limit + 1, None)
    previous: tuple[int, int] | None = None
    bisect = False
    while bad[0] - good[0] > 1:
        width = bad[0] - good[0]
        probe = _next_probe(good, bad, previous, bisect)
        value = over(probe)
        if value is not None and value <= 0:
            previous, good = good, (probe, value)
        else:
            bad = (probe, value)
        bisect = bad[0] <= limit and 2 * (bad[0] - good[0]) > width
    return good[0]


def with_batch_size(workload: Workload, batch_size: int) -> Workload:
    return dataclasses.replace(workload, batch_size=batch_size)


def with_context(workload: Workload, tokens: int) -> Workload:
    """Inference: the prompt length; training: the sequence length."""
    if isinstance(workload, Training):
        return dataclasses.replace(workload, seq_len=tokens)
    return dataclasses.replace(workload, prompt_tokens=tokens)


def context_limit(spec: ModelSpec, workload: Workload) -> int:
    """Longest context the search may probe: max_position_embeddings (less new tokens for inference)."""
    if isinstance(workload, Inference):
        if workload.allow_longer:
            return MAX_LONGER_CONTEXT
        return spec.max_position_embeddings - workload.new_tokens
    return spec.max_position_embeddings


def plan_max_batch(
    spec: ModelSpec, workload: Workload, gpu: Gpu, *, estimator: Estimator = _default_estimator
) -> int:
    """Largest batch size (sequences per GPU) that fits `gpu`; batch + 1 does not. 0: not even one fits."""
    return _largest(lambda n: _over(spec, with_batch_size(workload, n), gpu, estimator), MAX_BATCH)


def plan_max_context(
    spec: ModelSpec, workload: Workload, gpu: Gpu, *, estimator: Estimator = _default_estimator
) -> int:
    """Longest prompt (inference) or sequence (training) in tokens that fits `gpu`; one more does not.

    Capped at the model's max_position_embeddings (less new tokens) unless the workload allows longer.
    """
    limit = context_limit(spec, workload)
    return _largest(lambda n: _over(spec, with_context(workload, n), gpu, estimator), limit)


def plan_max_gpu_layers(
    spec: ModelSpec, workload: Workload, gpu: Gpu, *, estimator: Estimator = _default_estimator
) -> int:
    """llama.cpp: the largest --n-gpu-layers L in 1 … layers + 1 (the output layer counts) that fits `gpu`;
    L + 1 does not. 0: not even the output layer fits.

    Raises:
        InvalidWorkload: the runtime is not llama.cpp.
    """
    if not isinstance(workload, Inference) or workload.runtime is not Runtime.LLAMA_CPP:
        raise InvalidWorkload("maximize=n-gpu-layers applies to runtime=llama.cpp inference")
    return _largest(lambda n: _over(spec, dataclasses.replace(workload, n_gpu_layers=n), gpu, estimator),
                    spec.num_layers + 1)


def plan_min_cpu_moe(
    spec: ModelSpec, workload: Inference, gpu: Gpu, *, estimator: Estimator = _default_estimator
) -> int | None:
    """llama.cpp on a MoE model: the fewest leading layers N whose experts stay on the CPU
    (--n-cpu-moe N) for the job to fit `gpu`; None when even every layer's experts on the CPU do not fit."""
    n = spec.num_layers

    def over(kept: int) -> int | None:   # `kept` trailing layers keep their experts on the GPU
        return _over(spec, dataclasses.replace(workload, n_cpu_moe=n - kept), gpu, estimator)

    everything = over(0)
    if everything is None or everything > 0:
        return None
    return n - _largest(over, n)


def with_num_gpus(workload: Workload, num_gpus: object) -> Workload:
    """`workload` over `num_gpus` GPUs, as the CLI's --num-gpus and the web API's num_gpus mean it: alone it
    spreads the job the way its runtime does (`num_gpus_split`); with dp/tp/pp set it must equal their
    product.

    Raises:
        InvalidWorkload: num_gpus is not an integer of at least 1, or differs from dp × tp × pp.
    """
    from memfit.core.limits import shown

    if num_gpus is None:
        return workload
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, int) or num_gpus < 1:
        raise InvalidWorkload(f"num_gpus={shown(num_gpus)} must be an integer of at least 1")
    par = workload.parallel
    if par.num_gpus != 1:
        if par.num_gpus != num_gpus:
            raise InvalidWorkload(f"num_gpus={num_gpus} must equal dp × tp × pp = {par.num_gpus}")
        return workload
    spread = dataclasses.replace(par, **num_gpus_split(num_gpus, workload))
    return dataclasses.replace(workload, parallel=spread)


def num_gpus_split(num_gpus: int, workload: Workload) -> dict[str, Any]:
    """Parallelism fields that spread a job over `num_gpus` the way its runtime does by default.

    Training: data parallel. Inference follows `RuntimeProfile.num_gpus_split`: "tensor_parallel" (vLLM)
    sets tp; "device_map" (transformers, accelerate's device_map="auto") and "layers" (llama.cpp) split the
    layers in order over the GPUs, modelled as pipeline stages (pp).
    """
    if num_gpus == 1:
        return {}
    if isinstance(workload, Training):
        return {"dp": num_gpus}
    from memfit.core.runtimes import profile

    split = profile(workload.runtime).num_gpus_split
    if split == "tensor_parallel":
        # vLLM's expert-parallel group follows its tensor- and data-parallel ranks (ep = tp × dp)
        ep = {"ep": num_gpus * workload.parallel.dp} if workload.parallel.ep > 1 else {}
        return {"tp": num_gpus, **ep}
    if split == "device_map":
        return {"pp": num_gpus, "device_map": DeviceMap.AUTO}
    return {"pp": num_gpus}


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One candidate change to the job, the workload it gives, and that workload's estimate."""

    label: str
    workload: Inference | Training
    estimate: Estimate


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """The planner's answer for one GPU: the job as asked, then the largest batch/context or the changes that
    fit.

    `baseline` is the estimate of the job as given. With `maximize` ("batch" or "context"), `max_value` is
    the largest `maximize_field` value that fits (0: not even 1) and `best` its estimate; without it,
    `changes` lists up to MAX_CHANGES changes that fit, least invasive first, each with its workload and
    estimate. `to_dict()` is the `memfit.plan/1` JSON; `str(plan)` is a short summary in GiB.
    """

    baseline: Estimate
    gpu: Gpu
    maximize: str | None = None  # "batch" | "context" | None
    max_value: int | None = None  # with maximize: the largest value that fits (0: none)
    best: Estimate | None = None  # with maximize: the estimate at max_value
    changes: tuple[Change, ...] = ()  # without maximize: least invasive changes that fit
    strategies: tuple[StrategyFit, ...] = ()  # with gpu_counts: multi-GPU strategies, fitting ones first

    @property
    def maximize_field(self) -> str:
        """The workload field maximized: batch_size, n_gpu_layers, prompt_tokens or seq_len."""
        if self.maximize == "batch":
            return "batch_size"
        if self.maximize == "n-gpu-layers":
            return "n_gpu_layers"
        return "seq_len" if isinstance(self.baseline.workload, Training) else "prompt_tokens"

    @property
    def chosen(self) -> Estimate | None:
        """The estimate a launch line should realise: the maximized job, else the job as asked when it fits,
        else the least invasive change that fits; None when nothing fits."""
        if self.maximize is not None:
            return self.best
        if self.baseline.fits:
            return self.baseline
        return self.changes[0].estimate if self.changes else None

    def __str__(self) -> str:
        """The baseline's summary (see `Estimate.__str__`), then the largest value that fits or the changes.

        e.g. "largest batch_size that fits 24GiB: 12 (23.71 GiB on device)", or
        "changes that fit 24GiB, least invasive first:" and one "  label: 21.40 GiB on device" per change.
        """
        from memfit.core.units import format_bytes

        lines = [str(self.baseline)]
        if self.maximize is not None:
            found = (f"{self.max_value} ({format_bytes(self.best.peak.device_bytes)} on device)"
                     if self.max_value and self.best is not None else "none (not even 1)")
            lines.append(f"largest {self.maximize_field} that fits {self.gpu.name}: {found}")
        elif self.changes:
            lines.append(f"changes that fit {self.gpu.name}, least invasive first:")
            lines += [f"  {c.label}: {format_bytes(c.estimate.peak.device_bytes)} on device"
                      for c in self.changes]
        else:
            lines.append(f"no change the planner tries fits {self.gpu.name}")
        fitting = [s for s in self.strategies if s.fits]
        if self.strategies:
            lines.append(f"multi-GPU strategies that fit {self.gpu.name}: {len(fitting)} of "
                         f"{len(self.strategies)}")
            lines += [f"  {s.num_gpus} GPUs, {s.label}: {format_bytes(s.estimate.peak.device_bytes)} per "
                      f"GPU, {format_bytes(s.host_bytes_per_node)} host RAM per node" for s in fitting]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The `memfit.plan/1` JSON contract: every estimate in `memfit.estimate/1` form."""
        baseline = self.baseline.to_dict()
        return {
            "schema": PLAN_SCHEMA,
            "model": {k: v for k, v in baseline["model"].items() if k != "spec"},
            "gpu": baseline["gpu"],
            "baseline": baseline,
            "maximize": self.maximize,
            "field": self.maximize_field if self.maximize else None,
            "max_value": self.max_value,
            "best": self.best.to_dict() if self.best else None,
            "changes": [
                {
                    "label": c.label,
                    "workload": c.estimate.to_dict()["workload"],
                    "estimate": c.estimate.to_dict(),
                }
                for c in self.changes
            ],
            "strategies": [s.to_dict() for s in self.strategies],
        }


def _training_ladder(spec: ModelSpec, wl: Training) -> Iterator[tuple[str, Training]]:
    """Training changes, least invasive first: each heavier change also keeps the lighter ones that
    cost nothing in quality (checkpointing), so a later rung is never weaker than an earlier one."""
    from memfit.core.dtypes import quant

    rep = dataclasses.replace
    ckpt = rep(wl, checkpointing=Checkpointing.FULL)
    lora = Lora(rank=PLAN_LORA_RANK, alpha=2 * PLAN_LORA_RANK)   # dropout: the model's default (0 on
                                                                 # fused experts: workload_for_gpu)
    as_lora = rep(ckpt, method=Method.LORA, lora=lora) if wl.method is Method.FULL else ckpt
    as_qlora = rep(ckpt, method=Method.QLORA, lora=wl.lora or lora, quant=quant(PLAN_QLORA_QUANT))
    if wl.optimizer in (Optimizer.ADAMW, Optimizer.ADAM, Optimizer.ADAMW_LOOP):
        yield "fused AdamW: no foreach copy at the step (--optimizer adamw-fused)", rep(
            wl, optimizer=Optimizer.ADAMW_FUSED)
    yield "activation checkpointing (--grad-checkpointing)", ckpt
    yield "chunked cross-entropy (--chunked-loss)", rep(wl, chunked_loss=True)
    yield "chunked cross-entropy + checkpointing", rep(ckpt, chunked_loss=True)
    if wl.method is Method.FULL:
        yield (
            f"LoRA r{PLAN_LORA_RANK} on all linear layers (--method lora)",
            rep(wl, method=Method.LORA, lora=lora),
        )
        yield "LoRA + checkpointing", as_lora
    if wl.method is not Method.QLORA:
        yield f"QLoRA ({PLAN_QLORA_QUANT} weights) + checkpointing (--method qlora)", as_qlora
    if wl.optimizer in (Optimizer.ADAMW, Optimizer.ADAMW_FUSED, Optimizer.ADAMW_LOOP, Optimizer.ADAM):
        yield "8-bit AdamW (--optimizer adamw-8bit)", rep(wl, optimizer=Optimizer.ADAMW_8BIT)
        yield "8-bit AdamW + checkpointing", rep(ckpt, optimizer=Optimizer.ADAMW_8BIT)
    yield from _sharding(wl, ckpt, as_lora, as_qlora)
    yield from _smaller_batches(wl)
    if wl.method is Method.FULL:
        yield from _smaller_batches(as_lora, prefix="LoRA, ")
    if wl.method is not Method.QLORA:
        yield from _smaller_batches(as_qlora, prefix="QLoRA, ")


def _sharding(
    wl: Training, ckpt: Training, as_lora: Training, as_qlora: Training
) -> Iterator[tuple[str, Training]]:
    """ZeRO over the GPUs the job already has, optimizer offload, then more GPUs with ZeRO-3."""
    rep = dataclasses.replace
    par = wl.parallel
    if par.dp > 1 and par.zero is ZeroStage.NONE and par.fsdp is None:
        for stage in (ZeroStage.OPTIMIZER, ZeroStage.GRADIENTS, ZeroStage.PARAMETERS):
            yield (
                f"ZeRO-{stage} over the {par.dp} GPUs (--zero {stage})",
                rep(wl, parallel=rep(par, zero=stage)),
            )
        yield (
            f"ZeRO-3 + checkpointing over the {par.dp} GPUs",
            rep(ckpt, parallel=rep(par, zero=ZeroStage.PARAMETERS)),
        )
        yield (
            f"LoRA + ZeRO-3 + checkpointing over the {par.dp} GPUs",
            rep(as_lora, parallel=rep(par, zero=ZeroStage.PARAMETERS)),
        )
    if par.offload_optimizer is Offload.NONE:
        zero = par.zero if par.zero.level >= 1 or par.fsdp is not None else ZeroStage.OPTIMIZER
        offload = rep(par, offload_optimizer=Offload.CPU, zero=zero)
        yield "optimizer states offloaded to CPU RAM (--offload-optimizer cpu)", rep(wl, parallel=offload)
        yield "optimizer offload + checkpointing", rep(ckpt, parallel=offload)
    zero3 = ZeroStage.PARAMETERS if par.fsdp is None else ZeroStage.NONE
    for n in MORE_GPUS:
        if n > par.dp and n % par.ep == 0:     # expert groups are carved out of the dp ranks
            more = rep(par, dp=n, zero=zero3)
            yield f"{n} GPUs, ZeRO-3 + checkpointing (--num-gpus {n} --zero 3)", rep(ckpt, parallel=more)
            yield f"{n} GPUs, LoRA + ZeRO-3 + checkpointing", rep(as_lora, parallel=more)
            yield f"{n} GPUs, QLoRA + ZeRO-3 + checkpointing", rep(as_qlora, parallel=more)


def _inference_ladder(spec: ModelSpec, wl: Inference, *,
                      same_gpus: Iterable[tuple[str, Inference]] = ()) -> Iterator[tuple[str, Inference]]:
    """Inference changes, least invasive first: the cache and weight formats, then `same_gpus` (the runtime's
    own offloads, which keep the hardware), then more GPUs, then smaller batches."""
    rep = dataclasses.replace
    if wl.kv_cache_dtype is None and wl.runtime is not Runtime.LLAMA_CPP:
        from memfit.core.dtypes import DType

        yield "fp8 KV cache (--kv-cache-dtype fp8)", rep(wl, kv_cache_dtype=DType.FP8_E4M3)
    if not wl.quant.is_quantized and spec.stored_quant is None:   # a pre-quantized checkpoint keeps its own
        for name, label in _QUANT_STEPS[wl.runtime]:
            quantized = _with_quant(wl, name)
            if quantized is not None:
                yield f"{label} (--quant {name})", quantized
    yield from same_gpus
    for n in MORE_GPUS:
        if n > wl.parallel.num_gpus:
            yield f"{n} GPUs (--num-gpus {n})", rep(wl, parallel=rep(wl.parallel, **num_gpus_split(n, wl)))
    yield from _smaller_batches(wl)


_QUANT_STEPS: dict[Runtime, tuple[tuple[str, str], ...]] = {
    Runtime.TRANSFORMERS: (("int8", "8-bit weights, bitsandbytes LLM.int8"), ("nf4", "4-bit NF4 weights")),
    Runtime.VLLM: (("fp8", "FP8 weights"), ("awq-4bit-g128", "4-bit AWQ checkpoint")),
    Runtime.LLAMA_CPP: (("gguf-Q8_0", "GGUF Q8_0 weights"), ("gguf-Q4_K_M", "GGUF Q4_K_M weights")),
}
"""Weight formats the planner proposes per runtime, least lossy first."""


def _with_quant(wl: Inference, name: str) -> Inference | None:
    from memfit.core.dtypes import quant

    try:
        chosen = quant(name)
    except MemfitError:
        return None
    if wl.runtime not in chosen.runtimes:
        return None
    return dataclasses.replace(wl, quant=chosen)


def _smaller_batches(wl: Workload, *, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Halved batches; training keeps the tokens per optimizer step with gradient accumulation."""
    batch = wl.batch_size // 2
    while batch >= 1:
        if isinstance(wl, Training):
            accum = wl.grad_accum * (wl.batch_size // batch)
            yield (
                f"{prefix}checkpointing, micro-batch {batch} × grad accum {accum} (same tokens per step)",
                dataclasses.replace(wl, batch_size=batch, grad_accum=accum, checkpointing=Checkpointing.FULL),
            )
        else:
            yield f"batch size {batch} (--batch-size {batch})", dataclasses.replace(wl, batch_size=batch)
        batch //= 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Cut:
    """One change that lowers the allocated peak on the same GPUs, with both peaks from one engine."""

    description: str
    workload: Training
    allocated_bytes: int      # the changed job's peak allocated
    base_bytes: int           # the job as given, by the same engine


def cut_suggestions(spec: ModelSpec, workload: Training, *,
                    estimator: Estimator = _default_estimator) -> tuple[Cut, ...]:
    """The planner's training changes that keep the GPU count and lower the allocated peak, largest saving
    first; every peak (the job's own included) comes from `estimator`, so savings never mix engines."""
    base = estimator(spec, workload, None).peak.allocated_bytes
    cuts: dict[Training, Cut] = {}
    for label, changed in _training_ladder(spec, workload):
        if changed == workload or changed in cuts or changed.parallel.num_gpus != workload.parallel.num_gpus:
            continue
        try:
            peak = estimator(spec, changed, None).peak.allocated_bytes
        except InvalidWorkload:
            continue
        if peak < base:
            cuts[changed] = Cut(description=label, workload=changed, allocated_bytes=peak, base_bytes=base)
    return tuple(sorted(cuts.values(), key=lambda c: c.allocated_bytes))


def _llama_cpp_offloads(spec: ModelSpec, wl: Inference, gpu: Gpu,
                        estimator: Estimator) -> Iterator[tuple[str, Inference]]:
    """llama.cpp's own ways to fit a model larger than the GPU, as its --fit tries them: MoE experts of the
    leading layers to the CPU (all attention stays on the GPU), then whole layers to the CPU."""
    rep = dataclasses.replace
    if spec.is_moe and wl.n_gpu_layers is None:
        experts = plan_min_cpu_moe(spec, wl, gpu, estimator=estimator)
        if experts:
            yield (f"MoE experts of the first {experts} layers in host RAM (--n-cpu-moe {experts})",
                   rep(wl, n_cpu_moe=experts))
    layers = plan_max_gpu_layers(spec, rep(wl, n_cpu_moe=0), gpu, estimator=estimator)
    if layers:
        yield (f"{layers} of {spec.num_layers + 1} layers on the GPU, the rest in host RAM "
               f"(--n-gpu-layers {layers})", rep(wl, n_gpu_layers=layers, n_cpu_moe=0))


def plan_changes(
    spec: ModelSpec, workload: Workload, gpu: Gpu, *, estimator: Estimator = _default_estimator
) -> tuple[Change, ...]:
    """The first `MAX_CHANGES` changes from the ladder (least invasive first) whose estimate fits `gpu`."""
    ladder: Iterator[tuple[str, Workload]]
    if isinstance(workload, Training):
        ladder = _training_ladder(spec, workload)
    elif workload.runtime is Runtime.LLAMA_CPP:   # experts or layers to host RAM before buying GPUs
        ladder = _inference_ladder(spec, workload,
                                   same_gpus=_llama_cpp_offloads(spec, workload, gpu, estimator))
    else:
        ladder = _inference_ladder(spec, workload)
    found: list[Change] = []
    seen: set[Workload] = {workload}
    for label, candidate in ladder:
        if candidate in seen:
            continue
        seen.add(candidate)
        est = _fits(spec, candidate, gpu, estimator)
        if est is not None:
            found.append(Change(label=label, workload=candidate, estimate=est))
            if len(found) == MAX_CHANGES:
                break
    return tuple(found)


def plan(
    spec: ModelSpec,
    workload: Workload,
    gpu: Gpu,
    *,
    maximize: str | None = None,
    estimator: Estimator = _default_estimator,
    gpu_counts: tuple[int, ...] = (),
) -> Plan:
    """Plan `workload` on `gpu`: maximize "batch" or "context", or (None) list the changes that fit; with
    `gpu_counts` (training), also every multi-GPU strategy over those GPU counts (core/strategies.py).

    Raises:
        InvalidWorkload: `maximize` is not batch or context, or the workload itself is impossible.
    """
    if maximize is not None and maximize not in MAXIMIZE_FIELDS:
        raise InvalidWorkload(f"maximize={maximize!r} is not valid; use batch, context or n-gpu-layers")
    baseline = estimator(spec, workload, gpu)
    strategies: tuple[StrategyFit, ...] = ()
    if gpu_counts:
        if not isinstance(workload, Training):
            raise InvalidWorkload("gpu_counts searches training strategies; use --task train")
        strategies = plan_strategies(spec, workload, gpu, gpu_counts=gpu_counts,
                                     gpus_per_node=workload.parallel.gpus_per_node,
                                     estimator=estimator)
    if maximize is None:
        return Plan(
            baseline=baseline, gpu=gpu, changes=plan_changes(spec, workload, gpu, estimator=estimator),
            strategies=strategies,
        )
    if maximize == "batch":
        value = plan_max_batch(spec, workload, gpu, estimator=estimator)
        best_workload = with_batch_size(workload, value) if value else None
    elif maximize == "n-gpu-layers":
        value = plan_max_gpu_layers(spec, workload, gpu, estimator=estimator)
        assert isinstance(workload, Inference)   # plan_max_gpu_layers refuses training
        best_workload = dataclasses.replace(workload, n_gpu_layers=value) if value else None
    else:
        value = plan_max_context(spec, workload, gpu, estimator=estimator)
        best_workload = with_context(workload, value) if value else None
    best = estimator(spec, best_workload, gpu) if best_workload is not None else None
    return Plan(baseline=baseline, gpu=gpu, maximize=maximize, max_value=value, best=best,
                strategies=strategies)
