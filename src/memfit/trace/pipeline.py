"""One pipeline stage's training step: its layers, the micro-batches it holds in flight, its optimizer step.

Stage s of pp holds decoder layers [first, last) of an even split (the first `num_layers % pp` stages take
one more), the first stage the embeddings, the last the final norm, LM head and loss. transformers' own
forward runs each stage: non-last stages replace the final norm by Identity (their output is the residual
stream the next stage receives), non-first stages take that stream as `inputs_embeds` (the receive
buffer, one per micro-batch in flight) and drop the embeddings.

Under the interleaved schedule a rank holds pp_virtual_stages chunks, each cut as above from its own copy of
the model as virtual stage chunk × pp + rank of pp × pp_virtual_stages (`Chunks`): rank 0's first chunk
keeps the embeddings, the last rank's last chunk the final norm, head and loss, and every chunk micro-batch
keeps its own receive buffer and output.

The stage runs its forwards and backwards in the order its schedule gives them (core.schedule.rank_order,
after torch.distributed.pipelining's Schedule1F1B, ScheduleGPipe and ScheduleInterleaved1F1B), one micro-batch
(of one chunk) each: under 1F1B
stage s warms up with min(pp − s, m) forwards, then alternates one backward and one forward, so once
m > pp − s its later forwards and backwards run beside the gradients the earlier micro-batches left; GPipe
runs all m forwards first. Each run of consecutive forwards (backwards) is one traced "forward"
("backward") phase; the phase's peak is the most over its instances. The number of micro-batches m is the
workload's grad_accum. Non-last stages backward from a received gradient the shape of their output. The
send and receive themselves move no memory of their own beyond these buffers (NCCL's are outside the
allocator).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from memfit.core import parallel
from memfit.core.choices import PipelineSchedule
from memfit.core.errors import EngineUnavailable
from memfit.core.schedule import rank_order, stage_range
from memfit.core.workload import Training
from memfit.trace import harness
from memfit.trace.tracker import Tracker


def stage_layers(num_layers: int, stages: int, stage: int) -> range:
    """The decoder layers of `stage` of `stages`: an even split, the first num_layers % stages one more."""
    return stage_range(num_layers, stages, stage)


def in_flight(pp: int, stage: int, micro_batches: int,
              schedule: PipelineSchedule = PipelineSchedule.ONE_F_ONE_B, virtual: int = 1) -> int:
    """Micro-batches (interleaved: chunk micro-batches) whose activations stage `stage` holds at once:
    min(pp − stage, m) under 1F1B, m under GPipe (core.parallel.in_flight)."""
    return parallel.in_flight(pp, stage, micro_batches, schedule, virtual)


class Chunks(torch.nn.Module):
    """The model chunks of one interleaved pipeline rank, chunk c the virtual stage c × pp + rank."""

    def __init__(self, chunks: list[Any]) -> None:
        super().__init__()
        self.chunks = torch.nn.ModuleList(chunks)
        self.config = chunks[0].config


def check_stage(model: Any) -> None:
    """EngineUnavailable unless the model has transformers' decoder layout the stages cut."""
    base = getattr(model, "model", None)
    if base is None or not all(hasattr(base, name) for name in ("layers", "norm", "embed_tokens")) \
            or not hasattr(model, "lm_head"):
        raise EngineUnavailable(f"trace cuts pipeline stages from model.layers, model.norm, "
                                f"model.embed_tokens and lm_head, which {type(model).__name__} lacks; "
                                "use engine=analytic")


def cut(model: Any, workload: Training, stage: int) -> Any:
    """Keep the layers of (virtual) stage `stage` of pp × pp_virtual_stages (still on meta); drop what other
    stages hold."""
    stages = workload.parallel.pp * workload.parallel.pp_virtual_stages
    check_stage(model)
    base = model.model
    keep = stage_layers(len(base.layers), stages, stage)
    base.layers = torch.nn.ModuleList(base.layers[i] for i in keep)
    if stage > 0:
        base.embed_tokens = None
    if stage < stages - 1:
        base.norm = torch.nn.Identity()
        model.lm_head = None
    return model


def cut_rank(model: Any, build: Any, workload: Training, rank: int) -> Any:
    """Pipeline rank `rank`'s part of the model: its stage cut from `model`, or under the interleaved
    schedule a `Chunks` of its chunks, the first cut from `model`, each other from a fresh `build()`."""
    par = workload.parallel
    if par.pp_virtual_stages == 1:
        return cut(model, workload, rank)
    return Chunks([cut(model if chunk == 0 else build(), workload, chunk * par.pp + rank)
                   for chunk in range(par.pp_virtual_stages)])


def run_stage(model: Any, workload: Training, stage: int, tracker: Tracker, device: str) -> Any:
    """Forward and backward the stage's micro-batches in its schedule's order, then step: one pipeline step
    of one stage. Returns the optimizer (the caller decides when its states die).

    The allocator events are recorded from the last run of forwards on (when the caller records them), so
    that `Tracker.repeat_phases` replays the forward and backward it repeats with the optimizer states."""
    par = workload.parallel
    chunks = list(model.chunks) if isinstance(model, Chunks) else [model]
    stages = par.pp * par.pp_virtual_stages
    params = [p for p in model.parameters() if p.requires_grad]
    opt = harness.make_optimizer(params, workload.optimizer)
    ids = harness.random_ids(model.config.vocab_size, workload.batch_size, workload.seq_len, device)
    hidden = (workload.batch_size, workload.seq_len, model.config.hidden_size)
    dtype = harness.autocast_dtype(workload) or next(model.parameters()).dtype
    order = rank_order(par.pp, stage, workload.grad_accum, par.pp_schedule, par.pp_virtual_stages)
    runs = [(kind, [(index, chunk) for _, index, chunk in ops])
            for kind, ops in itertools.groupby(order, key=lambda op: op[0])]
    last_forwards = max(i for i, (kind, _) in enumerate(runs) if kind == "forward")
    outputs: dict[tuple[int, int], torch.Tensor] = {}
    for position, (kind, micro_batches) in enumerate(runs):
        if position == last_forwards and tracker.events is not None:
            tracker.record_events()
        with tracker.phase(kind):
            for index, chunk in micro_batches:
                virtual_stage = chunk * par.pp + stage
                last = virtual_stage == stages - 1
                if kind == "forward":
                    received = None if virtual_stage == 0 else torch.empty(
                        hidden, dtype=dtype, device=device, requires_grad=True)
                    outputs[index, chunk] = _forward(chunks[chunk], ids, received, last=last,
                                                     workload=workload, device=device)
                    continue
                out = outputs.pop((index, chunk))
                received_grad = None if last else torch.empty_like(out)     # from stage + 1
                torch.autograd.backward(out, received_grad)
                del out
            if kind == "backward":
                tracker.mark("gradients", [p.grad for p in params])
    with tracker.phase("optimizer"):
        opt.step()
        tracker.mark("host", harness.host_step_counters(opt))
        tracker.mark("optimizer_states", harness.optimizer_tensors(opt))
        opt.zero_grad(set_to_none=True)
    return opt


def _forward(model: Any, ids: torch.Tensor, received: torch.Tensor | None, *, last: bool,
             workload: Training, device: str) -> torch.Tensor:
    import contextlib

    amp = harness.autocast_dtype(workload)
    autocast = torch.autocast(device.split(":")[0], dtype=amp) if amp else contextlib.nullcontext()
    inputs: dict[str, Any] = {"input_ids": ids} if received is None else {"inputs_embeds": received}
    with autocast:
        if last:
            return model(**inputs, labels=ids).loss        # type: ignore[no-any-return]
        return model.model(**inputs).last_hidden_state     # type: ignore[no-any-return]
