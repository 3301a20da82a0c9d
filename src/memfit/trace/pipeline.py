"""One pipeline stage's training step: its layers, the micro-batches it holds in flight, its optimizer step.

Stage s of pp holds decoder layers [first, last) of an even split (the first `num_layers % pp` stages take
one more), the first stage the embeddings, the last the final norm, LM head and loss. transformers' own
forward runs each stage: non-last stages replace the final norm by Identity (their output is the residual
stream the next stage receives), non-first stages take that stream as `inputs_embeds` (the receive
buffer, one per micro-batch in flight) and drop the embeddings.

In flight under 1F1B (Narayanan et al. 2021, §2.2; torch.distributed.pipelining Schedule1F1B): stage s
runs min(pp − s, m) forwards before its first backward, so that many micro-batches' saved activations
are alive at once; GPipe holds all m. The stage runs that many forwards, keeping them, then each one's
backward (non-last stages with a received gradient the shape of their output), then the optimizer step.
The number of micro-batches m is the workload's grad_accum. The send and receive themselves move no
memory of their own beyond these buffers (NCCL's are outside the allocator).
"""

from __future__ import annotations

from typing import Any

import torch

from memfit.core.errors import EngineUnavailable
from memfit.core.workload import Training
from memfit.trace import harness
from memfit.trace.tracker import Tracker


def stage_layers(num_layers: int, pp: int, stage: int) -> range:
    """The decoder layers of `stage`: an even split, the first num_layers % pp stages one layer more."""
    base, extra = divmod(num_layers, pp)
    start = stage * base + min(stage, extra)
    return range(start, start + base + (1 if stage < extra else 0))


def in_flight(pp: int, stage: int, micro_batches: int) -> int:
    """Micro-batches whose activations stage `stage` holds at once under 1F1B: min(pp − stage, m)."""
    return min(pp - stage, micro_batches)


def check_stage(model: Any) -> None:
    """EngineUnavailable unless the model has transformers' decoder layout the stages cut."""
    base = getattr(model, "model", None)
    if base is None or not all(hasattr(base, name) for name in ("layers", "norm", "embed_tokens")) \
            or not hasattr(model, "lm_head"):
        raise EngineUnavailable(f"trace cuts pipeline stages from model.layers, model.norm, "
                                f"model.embed_tokens and lm_head, which {type(model).__name__} lacks; "
                                "use engine=analytic")


def cut(model: Any, workload: Training, stage: int) -> Any:
    """Keep the stage's layers (still on meta); drop what other stages hold."""
    pp = workload.parallel.pp
    check_stage(model)
    base = model.model
    keep = stage_layers(len(base.layers), pp, stage)
    base.layers = torch.nn.ModuleList(base.layers[i] for i in keep)
    if stage > 0:
        base.embed_tokens = None
    if stage < pp - 1:
        base.norm = torch.nn.Identity()
        model.lm_head = None
    return model


def run_stage(model: Any, workload: Training, stage: int, tracker: Tracker, device: str) -> Any:
    """Forward the stage's in-flight micro-batches, backward each, step: one pipeline step of one stage.
    Returns the optimizer (the caller decides when its states die)."""
    pp = workload.parallel.pp
    first, last = stage == 0, stage == pp - 1
    params = [p for p in model.parameters() if p.requires_grad]
    opt = harness.make_optimizer(params, workload.optimizer)
    ids = harness.random_ids(model.config.vocab_size, workload.batch_size, workload.seq_len, device)
    hidden = (workload.batch_size, workload.seq_len, model.config.hidden_size)
    dtype = harness.autocast_dtype(workload) or next(model.parameters()).dtype
    outputs = []
    with tracker.phase("forward"):
        for _ in range(in_flight(pp, stage, workload.grad_accum)):
            received = None if first else torch.empty(hidden, dtype=dtype, device=device, requires_grad=True)
            outputs.append(_forward(model, ids, received, last=last, workload=workload, device=device))
    with tracker.phase("backward"):
        while outputs:
            out = outputs.pop(0)
            received_grad = None if last else torch.empty_like(out)     # from stage + 1
            torch.autograd.backward(out, received_grad)
            del out
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
