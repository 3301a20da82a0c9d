"""Run one trace in this process (the worker's body): build on meta, fake onto cuda:0, run, count, assemble.

Imported only after `boot.load()`; it imports torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from memfit.core.choices import Engine, KvCache, Method, PhaseName, Runtime
from memfit.core.codec import decode
from memfit.core.errors import EngineUnavailable
from memfit.core.overhead import cublas_workspace_bytes, workspace_note
from memfit.core.result import Estimate, Gpu, Phase, Term, memory, workload_from_dict
from memfit.core.spec import ModelSpec
from memfit.core.training import CUBLAS_HANDLES_TRAINING
from memfit.core.units import format_bytes
from memfit.core.workload import Inference, Training
from memfit.trace import compat, harness, patches, pipeline, sharding, targets
from memfit.trace.allocator import CachingAllocator
from memfit.trace.boot import Boot, fallback_assumption
from memfit.trace.tracker import PhasePeak, Tracker

PHASE_ROLE_DEFAULT = {"optimizer": "optimizer_step"}
"""Untagged storages at a phase's peak: step temporaries in the optimizer phase, activations elsewhere."""


def trace_request(request: dict[str, Any], boot: Boot, progress: Any = None) -> Estimate:
    """The Estimate for one worker request (see worker.py)."""
    spec = decode(ModelSpec, request["spec"])
    workload = workload_from_dict(request["workload"])
    gpu = decode(Gpu, request["gpu"]) if request.get("gpu") else None
    check_supported(spec, workload)
    note = compat.versions_note()
    targets.check(note)
    started = time.perf_counter()
    patches.set_gpu(gpu)
    tracker, assumptions = trace(spec, workload, boot, progress=progress)
    assumptions[:0] = [note, *request.get("assumptions", ())]
    assumptions.append(f"traced {tracker.num_ops} ops in {time.perf_counter() - started:.1f} s")
    return assemble(spec, workload, gpu, tracker, assumptions)


def check_supported(spec: ModelSpec, workload: Inference | Training) -> None:
    """EngineUnavailable for what the trace cannot run, naming what to use instead."""
    if workload.runtime is not Runtime.TRANSFORMERS:
        raise EngineUnavailable(f"trace runs transformers only, not runtime={workload.runtime}; "
                                "use engine=analytic")
    if workload.parallel.device_map is not None or (workload.parallel.num_gpus > 1
                                                    and not isinstance(workload, Training)):
        raise EngineUnavailable("trace runs multi-GPU training only; use engine=analytic for multi-GPU "
                                "inference or device_map splits")
    if workload.parallel.num_gpus > 1:
        from memfit.trace.ranks import check_traced

        check_traced(workload.parallel)
    if workload.quant.is_quantized and not workload.quant.kind.startswith("bnb"):
        raise EngineUnavailable(f"trace stands in for bitsandbytes only, not quant={workload.quant.name}; "
                                "use engine=analytic")
    if isinstance(workload, Inference) and workload.kv_cache_dtype not in (None, workload.dtype):
        raise EngineUnavailable(f"kv_cache_dtype={workload.kv_cache_dtype} is not traced (transformers keeps "
                                "the cache in the compute dtype); use engine=analytic")
    if isinstance(workload, Training) and workload.chunked_loss:
        raise EngineUnavailable("chunked_loss is not a transformers code path; use engine=analytic")
    if not spec.source.config_json:
        raise EngineUnavailable(f"{spec.name} has no config.json text to rebuild the model from; "
                                "use engine=analytic")


def trace(spec: ModelSpec, workload: Inference | Training, boot: Boot,
          progress: Any = None) -> tuple[Tracker, list[str]]:
    """Build, fake and run the workload under a Tracker; returns it and the assumptions made."""
    patches.install()
    assumptions: list[str] = []
    if boot.device != "cuda":
        assumptions.append(fallback_assumption(boot))
    device = boot.device

    def build() -> Any:
        return harness.build_model(spec.source.config_json, workload, spec.checkpoint_dtype, "meta",
                                   prepare=lambda m: _experts_local(_quantize(m, workload, assumptions),
                                                                    workload))

    with _Step(progress, "building the model on the meta device"):
        model = build()
    assumptions += check_code_paths(spec, workload, model)
    if isinstance(workload, Training) and workload.parallel.pp > 1:
        tracker = _trace_stages(build, model, workload, device, progress, assumptions)
    else:
        images = image_batch(spec, workload, model)
        tracker = _run(model, workload, device, progress, assumptions, images=images)
    if tracker.scalars_answered:
        assumptions.append(f"{tracker.scalars_answered} value-dependent scalar reads (.item(), bool()) "
                           "in the model code were read as 0/False; memfit assumes they pick between "
                           "same-shaped paths (RoPE factor choice, layer drop)")
    counts = patches.backend_counts()
    if counts:
        assumptions.append("SDPA backends as CUDA would pick them: "
                           + ", ".join(f"{k} ×{v}" for k, v in sorted(counts.items())))
    if isinstance(workload, Training):
        assumptions.append("one training step traced; step 2's forward and backward are step 1's plus the "
                           "optimizer states, which live through them")
    if isinstance(workload, Inference) and workload.new_tokens and workload.kv_cache is KvCache.STATIC:
        assumptions.append("generate() compiles the static-cache decode step on CUDA (torch.compile, CUDA "
                           "graphs); the trace runs it eagerly (measured gap about -1 %, Llama-3.2-1B)")
    if isinstance(workload, Inference) and workload.new_tokens:
        assumptions.append("decode traced with a loop reproducing generate()'s cache and logits handling")
    return tracker, assumptions


def image_batch(spec: ModelSpec, workload: Inference | Training,
                model: Any) -> tuple[Inference, harness.ImageBatch] | None:
    """The decoder's workload (image placeholders in its prompt) and the images as the model takes them."""
    if not isinstance(workload, Inference) or not workload.images or spec.vision is None:
        return None
    from memfit.core.vision import ImageSizing, resized
    from memfit.core.vision_tower import decoder_workload, image_tokens

    if spec.vision.sizing is not ImageSizing.FIXED:
        raise EngineUnavailable(f"images on {spec.name}: the trace feeds fixed-size towers only (a dynamic-"
                                "resolution tower splits by data-dependent grid sizes); use engine=analytic")
    token_id = getattr(model.config, "image_token_id", None)
    if not isinstance(token_id, int):
        raise EngineUnavailable(f"{spec.name}: the config names no image_token_id; use engine=analytic")
    height, width = resized(spec.vision, workload.image_size)
    shape = (workload.batch_size * workload.images, spec.vision.num_channels, height, width)
    return decoder_workload(spec, workload), harness.ImageBatch(
        token_id=token_id, tokens=image_tokens(spec, workload), pixel_shape=shape)


def _run(model: Any, workload: Inference | Training, device: str, progress: Any, assumptions: list[str],
         stage: int | None = None, images: tuple[Inference, harness.ImageBatch] | None = None) -> Tracker:
    """Load and run `model` (or pipeline stage `stage` of it) under a fresh Tracker; with `images`, the
    decoder's workload and the images replace `workload` when running."""
    tracker = Tracker(device_type=device, allocator=CachingAllocator())
    fake = FakeTensorMode(allow_non_fake_inputs=False)
    from memfit.trace import standins

    standins.set_tagger(tracker.mark)
    with _ranks(workload, tracker, assumptions) as group, fake, tracker:
        with _Step(progress, "loading fake weights"), tracker.phase("load"):
            if group is None:
                harness.materialize(model, device)
                harness.mark_weights(model, tracker)
                if stage is None:       # a pipeline stage holds a cut of the model, built per stage
                    tracker.cached_block(_untied_head_bytes(model, workload))
            else:
                assert isinstance(workload, Training)       # _ranks yields a group for training only
                model = sharding.wrap(model, workload, group, device, tracker)
        with _Step(progress, f"running {_task(workload)}"), _loss_parallel(group):
            if isinstance(workload, Training):
                tracker.record_events()
                if stage is None:
                    optimizer = harness.run_workload(model, workload, tracker, device, training_steps=1)
                else:
                    optimizer = pipeline.run_stage(model, workload, stage, tracker, device)
                tracker.repeat_phases(("forward", "backward"), "optimizer_states", heaviest=stage is not None)
                tracker.paged_bytes = getattr(optimizer, "paged_bytes", 0)
                del optimizer
            elif images is not None:
                harness.run_workload(model, images[0], tracker, device, images=images[1])
            else:
                harness.run_workload(model, workload, tracker, device)
    return tracker


def _untied_head_bytes(model: Any, workload: Inference | Training) -> int:
    """Bytes of the LM head a random-weight build (`from_config` on the GPU, as the groundtruth and memfit
    measure do) allocates before tying it to the embeddings and then frees: its block stays cached. 0 for
    an untied head, a quantized build or core.torch_inference.RANDOM_INIT_TIED_HEAD off.
    Source: transformers 5.17 PreTrainedModel.post_init → tie_weights (the head's own Parameter is replaced
    by the embedding's); groundtruth Llama-3.2-1B load: peak − end = vocab × hidden × 2 B (+ 1 MiB)."""
    from memfit.core.torch_inference import RANDOM_INIT_TIED_HEAD

    if not RANDOM_INIT_TIED_HEAD or workload.quant.is_quantized:
        return 0
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    weight, tied = getattr(head, "weight", None), getattr(embeddings, "weight", None)
    if not isinstance(weight, torch.Tensor) or id(weight) != id(tied):      # not one tied Parameter
        return 0
    return int(weight.untyped_storage().nbytes())


def _trace_stages(build: Any, model: Any, workload: Training, device: str, progress: Any,
                  assumptions: list[str]) -> Tracker:
    """Every pipeline stage's step; the most loaded stage's tracker, the others' peaks as an assumption."""
    pp = workload.parallel.pp
    peaks: list[int] = []
    best: Tracker | None = None
    for stage in range(pp):
        stage_model = pipeline.cut_rank(model if stage == 0 else build(), build, workload, stage)
        tracker = _run(stage_model, workload, device, progress, assumptions, stage=stage)
        del stage_model
        peaks.append(max(record.peak_bytes for record in tracker.phases))
        if best is None or peaks[-1] == max(peaks):
            best = tracker
    assert best is not None
    worst = peaks.index(max(peaks))
    schedule = {"1f1b": "1F1B: stage s holds min(pp − s, m) micro-batches in flight",
                "gpipe": "GPipe: every stage holds all m micro-batches in flight",
                "interleaved": f"interleaved 1F1B over {workload.parallel.pp_virtual_stages} model chunks "
                               "per rank (torch ScheduleInterleaved1F1B's order)"}
    schedule_note = schedule[str(workload.parallel.pp_schedule)]
    assumptions.append(
        f"pipeline stage {worst} of {pp} is the most loaded and is reported ({schedule_note}, "
        f"{workload.grad_accum} micro-batches (grad_accum) run in the schedule's order); peak allocated "
        "per stage: " + ", ".join(f"{stage}: {format_bytes(nbytes, 'MiB')}"
                                  for stage, nbytes in enumerate(peaks)))
    return best


@contextlib.contextmanager
def _ranks(workload: Inference | Training, tracker: Tracker, assumptions: list[str]) -> Iterator[Any]:
    """One GPU: yields None. Several: the fake process group and what to wrap the model with
    (trace/ranks.py), the tracker set up for DTensors and FSDP's storage resizes."""
    par = workload.parallel
    if par.dp * par.tp == 1 or not isinstance(workload, Training):
        yield None                  # one GPU, or one pipeline stage (its sends and receives are its buffers)
        return
    from torch.distributed.tensor import DTensor

    from memfit.trace import ranks

    tracker.defer_to = (DTensor,)
    if sharding.offloads(workload):
        tracker.host_device = "cpu"         # FSDP's CPU offload: shards, gradients and states in host RAM
    with ranks.fake_group(workload.parallel) as group, tracker.resizes():
        assumptions.extend(sharding.assumptions(workload))
        yield group


def _loss_parallel(group: Any) -> contextlib.AbstractContextManager[Any]:
    """DTensor's vocab-parallel cross-entropy when the LM head is split over tensor-parallel ranks."""
    if group is None or group.tp_mesh is None:
        return contextlib.nullcontext()
    from torch.distributed.tensor.parallel import loss_parallel

    return loss_parallel()


def check_code_paths(spec: ModelSpec, workload: Inference | Training, model: Any) -> list[str]:
    """Refuse when the installed transformers runs this workload down another code path than the one memfit
    models and the measurements ran (transformers core.versions.MODELED), unless MEMFIT_TRACE_UNVERIFIED=1,
    in which case the returned assumptions say so.

    Two checks: the attention the built model really runs against the one memfit models (catches any family
    whose default moved: Gemma-2 eager from 5.21, GPT-J SDPA from 5.24), and the recorded changes
    (core.versions.CHANGES) that touch this family and attention in the installed release (Falcon's eager
    attention from 5.25). Both would trace the installed library faithfully, but for another path than the
    one the figures are verified on.
    """
    import transformers

    from memfit.core.attention_kinds import modeled_attention
    from memfit.core.versions import CHANGES, MODELED

    installed, modeled = transformers.__version__, MODELED["transformers"]
    attention = modeled_attention(spec, workload.attn)
    found = []
    ran = getattr(model.config, "_attn_implementation", None)
    if ran in ("eager", "sdpa") and ran != attention.runs:
        found.append(f"transformers {installed} runs {spec.family} with {ran} attention where memfit models "
                     f"{attention.runs} (as transformers {modeled} runs it)")
    found += [f"transformers {c.since} and later change this path: {c.what}" for c in CHANGES
              if c.package == "transformers" and not c.default_attention
              and c.applies(spec.family, installed, attention=attention)]
    if not found:
        return []
    if not compat.unverified_allowed():
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        hint = "trace with attn=eager for the eager path, " if ran != attention.runs else ""
        raise EngineUnavailable(
            f"{found[0]}{more}; {hint}install transformers=={modeled} (the verified path), set "
            f"{compat.UNVERIFIED_ENV}=1 to trace what {installed} runs, or use engine=analytic")
    return [f"UNVERIFIED: {line}; figures follow the installed {installed}" for line in found]


def _quantize(model: Any, workload: Inference | Training, assumptions: list[str]) -> Any:
    """bitsandbytes stand-ins on the meta model; QLoRA's kbit preparation (fp32 upcast) when asked."""
    if not workload.quant.is_quantized:
        return model
    from memfit.trace.standins import prepare_kbit, quantize_standins

    quantize_standins(model, workload, assumptions)
    if isinstance(workload, Training) and workload.method is Method.QLORA and workload.lora \
            and workload.lora.prepare_kbit:
        model = prepare_kbit(model)
    return model


def _experts_local(model: Any, workload: Inference | Training) -> Any:
    """With expert parallelism, the rank's num_experts / ep routed experts, before peft wraps them."""
    if isinstance(workload, Training) and workload.parallel.ep > 1:
        from memfit.trace import expert_parallel

        expert_parallel.shrink(model, workload.parallel.ep)
    return model


def _task(workload: Inference | Training) -> str:
    if isinstance(workload, Training):
        return "two training steps"
    return "prefill" if workload.new_tokens == 0 else f"prefill and {workload.new_tokens} decode steps"


class _Step:
    """A progress line for one stage (no-op without a progress bar)."""

    def __init__(self, progress: Any, text: str) -> None:
        self.progress, self.text, self.task = progress, text, None

    def __enter__(self) -> None:
        if self.progress is not None:
            self.progress.start()
            self.task = self.progress.add_task(self.text, total=None)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.remove_task(self.task)
            self.progress.stop()


# --- assembling the Estimate ------------------------------------------------------------------------------

def assemble(spec: ModelSpec, workload: Inference | Training, gpu: Gpu | None, tracker: Tracker,
             assumptions: list[str]) -> Estimate:
    """Per phase (max over traced instances), the peak split into the top-level terms."""
    is_training = isinstance(workload, Training)
    chosen: dict[str, tuple[PhasePeak, int]] = {}
    for index, record in enumerate(tracker.phases):
        handles = _cublas_handles(record.name, index, is_training)
        total = record.peak_bytes + cublas_workspace_bytes(num_handles=handles, gpu=gpu)
        best = chosen.get(record.name)
        best_total = best[0].peak_bytes + cublas_workspace_bytes(num_handles=best[1], gpu=gpu) if best else -1
        if total > best_total or (best is not None and total == best_total
                                  and record.host_peak_bytes > best[0].host_peak_bytes):
            chosen[record.name] = (record, handles)      # ties (offloaded states): the larger host side
    phases = []
    paged = getattr(tracker, "paged_bytes", 0)
    for name, (record, handles) in chosen.items():
        terms = _terms(tracker.breakdown(record, PHASE_ROLE_DEFAULT.get(name, "activations")), handles, gpu)
        phase = _with_overhead(Phase(name=PhaseName.parse(name), memory=memory(terms), at=record.op),
                               workload, assumptions, _persistent_waste(tracker, record))
        if record.peak_reserved:
            phase = _replayed_fragmentation(phase, record.peak_reserved)
        if paged and name != "load":
            phase = _add_paged(phase, paged)
        if record.host_live:
            host = tracker.breakdown(record, PHASE_ROLE_DEFAULT.get(name, "activations"), host=True)
            phase = dataclasses.replace(phase, host=Term.group("host", _grouped(host)))
        phases.append(phase)
    if paged:
        assumptions.append("paged optimizer states live in CUDA managed memory: counted in device bytes "
                           "(non_torch), evictable, not in allocated")
    assumptions.append(workspace_note(gpu, handles=max((h for _, h in chosen.values()), default=0),
                                      threads="one per thread that ran a matmul")
                       + "; fake tensors do not see it, so it is added")
    return Estimate(engine=Engine.TRACE, model=spec, workload=workload, phases=tuple(phases), gpu=gpu,
                    assumptions=tuple(dict.fromkeys(assumptions)))


def _cublas_handles(name: str, index: int, is_training: bool) -> int:
    if name == "load":
        return 0
    if not is_training:
        return 1
    return 1 if index == 1 else CUBLAS_HANDLES_TRAINING     # phases[1] is the first forward


PERSISTENT_ROLES = frozenset({"weights", "adapters", "kv_cache", "gradients", "optimizer_states"})


def _persistent_waste(tracker: Tracker, record: PhasePeak) -> int:
    """Segment rounding of the persistent tensors live at the peak (reserved − allocated), by the
    caching allocator's segment rules (core.overhead.segment_reserved)."""
    try:
        from memfit.core.overhead import segment_reserved
    except ImportError:
        return 0
    sizes = [nbytes for serial, nbytes in sorted(record.live.items())
             if tracker.roles.get(serial) in PERSISTENT_ROLES | sharding.PERSISTENT]
    return max(0, segment_reserved(sizes) - sum(sizes))


def _replayed_fragmentation(phase: Phase, peak_reserved: int) -> Phase:
    """fragmentation = the allocator replay's peak reserved − the phase's allocated peak."""
    from memfit.core.result import replace_terms

    slack = max(0, peak_reserved - phase.allocated_bytes)
    return replace_terms(phase, Term.group("fragmentation", [
        Term(name="allocator_replay", nbytes=slack,
             note="caching-allocator segments replayed from the traced allocations and frees")]))


def _add_paged(phase: Phase, paged_bytes: int) -> Phase:
    from memfit.core.result import replace_terms

    non_torch = phase.memory.child("non_torch")
    kids = list(non_torch.children) if non_torch else []
    kids.append(Term(name="paged_optimizer_states", nbytes=paged_bytes, evictable=True,
                     note="bitsandbytes paged states in CUDA managed memory"))
    return replace_terms(phase, Term.group("non_torch", kids))


def _terms(by_role: dict[str, int], handles: int, gpu: Gpu | None) -> list[Term]:
    step = by_role.pop("optimizer_step", 0)
    dequant = by_role.pop("dequant", 0)
    terms = _grouped({role: nbytes for role, nbytes in by_role.items() if role != "optimizer_states"})
    states = by_role.get("optimizer_states", 0)
    if states or step:
        terms.append(Term.group("optimizer_states", [Term(name="states", nbytes=states),
                                                     Term(name="step_temporaries", nbytes=step)]))
    if handles or dequant:
        terms.append(Term.group("runtime_overhead", [
            Term(name="cublas_workspace", nbytes=cublas_workspace_bytes(num_handles=handles, gpu=gpu)),
            Term(name="dequant", nbytes=dequant, note="bitsandbytes dequantised weights and absmax")]))
    return terms


UNTAGGED_CHILD = {"gradients": "param_grads"}
"""The child name of a parent's plainly tagged rest: DDP's `.grad` tensors beside its buckets."""


def _grouped(by_role: dict[str, int]) -> list[Term]:
    """Terms from roles; "parent/child" roles (multi-rank: trace/sharding.py) become children of their
    parent, whose untagged rest is `other`."""
    flat: dict[str, int] = {}
    children: dict[str, list[Term]] = {}
    for role, nbytes in by_role.items():
        parent, _, child = role.partition("/")
        if child:
            children.setdefault(parent, []).append(Term(name=child, nbytes=nbytes))
        else:
            flat[parent] = flat.get(parent, 0) + nbytes
    terms = [Term(name=role, nbytes=nbytes) for role, nbytes in flat.items() if role not in children]
    for parent, kids in children.items():
        if parent in flat:
            kids.append(Term(name=UNTAGGED_CHILD.get(parent, "other"), nbytes=flat[parent]))
        terms.append(Term.group(parent, sorted(kids, key=lambda t: t.name)))
    return terms


def _with_overhead(phase: Phase, workload: Inference | Training, assumptions: list[str],
                   persistent_waste_bytes: int = 0) -> Phase:
    """Add fragmentation and non_torch from core.overhead (the same models analytic uses)."""
    from memfit.core.result import replace_terms

    try:
        from memfit.core.overhead import reserved_and_device_terms
    except ImportError:
        assumptions.append("reserved and device bytes not modelled yet (core.overhead missing): "
                           "fragmentation and non_torch are 0")
        return phase
    allocated = Term.group("allocated", [t for t in phase.memory.children])
    fragmentation, non_torch = reserved_and_device_terms(allocated, workload,
                                                         persistent_waste_bytes=persistent_waste_bytes)
    return replace_terms(phase, fragmentation, non_torch)


def torch_version() -> str:
    return str(torch.__version__)
