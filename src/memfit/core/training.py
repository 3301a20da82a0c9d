"""Training phases: what lives on the GPU at each instant of a steady-state step, and which phase peaks.

A step as PyTorch + transformers + peft run it (HF Trainer-like: forward with labels, `loss.backward()`,
`opt.step()`, `opt.zero_grad(set_to_none=True)`); each phase is the maximum over the first two steps, and
step 2 (optimizer states exist, gradients were freed) is the larger one:

- load: weights as trained (after peft and prepare_model_for_kbit_training) and adapters.
- forward: weights + states + saved activations + the loss's peak (low-precision logits, their fp32
  copy, log_softmax's output) + cache references and the final hidden state held until forward returns.
- backward: the larger of its start (saved activations + log_softmax output and two fp32 logits-sized
  gradients) and the last layer's backward (gradients so far, a recomputed layer under checkpointing).
- optimizer: weights + gradients + states + the step's temporaries (torch's foreach AdamW: one full copy).
With grad_accum > 1 gradients persist through the forward and backward of later micro-steps (in a
pipeline, at a stage's fullest moment only when more micro-batches run than it holds in flight).

On several GPUs the same phases are built for the most loaded rank: per_rank.py divides each amount once
by its share (core/parallel.py) and adds what the strategy holds at each moment (core/collectives.py: the
FSDP root and gathered unit, all-gather and reduce-scatter buffers, DDP/ZeRO buckets, ZeRO's fp32
gradient partition); the backward also weighs the second and the second-to-last decoder layer, between
which memory moves linearly (activations freed, gradient shards added).
Sources: module docstrings of activations.py, loss.py and optimizers.py; groundtruth h100-2026-11.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

from memfit.core import activations as act
from memfit.core import loss
from memfit.core.choices import (
    AttnImpl,
    Checkpointing,
    Method,
    Offload,
    Optimizer,
    PhaseName,
    Precision,
    ZeroStage,
)
from memfit.core.collectives import moment_terms
from memfit.core.errors import InvalidWorkload
from memfit.core.optimizers import (
    decoder_linears,
    lora_targets,
    optimizer_memory,
    param_bytes,
    peft_adapts_fused_experts,
    trainable_tensors,
)
from memfit.core.overhead import cublas_workspace_bytes, reserved_and_device_terms, workspace_note
from memfit.core.parallel import rank_layers, scale_bytes, scale_term
from memfit.core.params import Linear, count_params, layer_linears
from memfit.core.per_rank import LAYER_CHILDREN, Held, Parts, compute_workload, layer_child, per_rank
from memfit.core.result import Gpu, Phase, Term, memory
from memfit.core.spec import ModelSpec, attention_of
from memfit.core.weights import buffer_bytes, unconverted_experts_note
from memfit.core.workload import Parallelism, Training

CACHED_BYTES_PER_LOGIT = Fraction(11, 4)
"""Reserved-but-free bytes per (token × vocab entry) in forward and backward: the loss's big fp32 blocks
freed and cached while others of other sizes are allocated. Source: min-max fit of peak_reserved −
peak_alloc over the eight non-AMP training rows of h100-2026-11 (errors within ±6.7 %; activations added
nothing); the AMP row's reserved peak comes from the optimizer step and is 12 % higher."""
CUBLAS_HANDLES_TRAINING = 2
"""Workspaces alive from the first backward on: the forward thread's and autograd's backward thread's.
Source: groundtruth l1b-full-bf16-adamw: bwd1 end − (params + grads) = 64 MiB, fwd1 end adds 32 MiB."""


def validate(spec: ModelSpec, wl: Training) -> None:
    """Raise InvalidWorkload for settings transformers/peft/bitsandbytes cannot run."""
    if wl.method is Method.FULL and wl.quant.is_quantized:
        raise InvalidWorkload(f"method=full cannot train quant={wl.quant.name} weights; use method=qlora "
                              "or quant=none")
    if wl.method is Method.QLORA and wl.precision is Precision.FP32:
        raise InvalidWorkload("method=qlora computes in bf16/fp16 (bnb_4bit_compute_dtype); use precision "
                              "bf16, fp16 or amp-bf16")
    if wl.attn is AttnImpl.FLASH and wl.precision is Precision.FP32:
        raise InvalidWorkload("attn=flash (flash-attention-2) needs fp16/bf16; use precision bf16 or "
                              "attn=sdpa")
    if wl.lora is not None and wl.method is not Method.FULL:
        lora_targets(spec, wl.lora)
        if peft_adapts_fused_experts(spec, wl.lora) and wl.lora.rate > 0:
            raise InvalidWorkload(
                f"lora_targets=all-linear on {spec.name} adapts its fused expert parameters (peft "
                "lora.ParamWrapper), which needs lora_dropout=0; set lora_dropout 0 or list target modules")


def _quantized(wl: Training, lin: Linear) -> bool:
    """Whether the loader quantizes this decoder matrix: nn.Linear/Conv1D only, and for bitsandbytes only
    `type(m) is nn.Linear` (subclasses such as FalconLinear stay in bf16, then fp32 after prepare_kbit).

    Source: transformers 5.17 integrations/bitsandbytes.py replace_with_bnb_linear.
    """
    bnb = wl.quant.kind.startswith("bnb")
    return wl.quant.is_quantized and lin.is_module and (lin.bnb_quantizable or not bnb)


def weights_term(spec: ModelSpec, wl: Training) -> Term:
    """Model weights as trained (bytes): full precision, or quantized Linears plus kept parts.

    Quantized: every decoder nn.Linear at the quant's exact bits; embeddings, lm_head, norms, biases and
    raw Parameters stay in bf16, or fp32 after prepare_model_for_kbit_training.
    """
    total = count_params(spec).num_params
    buffers = Term(name="buffers", nbytes=sum(buffer_bytes(spec)),
                   note="rotary inv_freq, GPT-BigCode's causal mask")
    if not wl.quant.is_quantized:
        return Term.group("weights", [Term(name="parameters", nbytes=total * param_bytes(wl)), buffers])
    quantized = sum(layers * lin.num_weights for layers, lin in decoder_linears(spec) if _quantized(wl, lin))
    bits = quantized * wl.quant.bits_per_weight
    kept_bytes = 4 if act.upcasts_kept_weights(wl) else 2
    return Term.group("weights", [
        Term(name="quantized_linears", nbytes=-(-bits.numerator // (bits.denominator * 8))),
        Term(name="kept", nbytes=(total - quantized) * kept_bytes,
             note="embeddings, lm_head, norms, biases, unconverted Linears"
             + (" upcast to fp32 by prepare_kbit" if kept_bytes == 4 else "")),
        buffers,
    ])


def autocast_cache_bytes(spec: ModelSpec, wl: Training, adapters_bytes: int, *, forward: bool = False) -> int:
    """AMP: bf16/fp16 copies of every non-quantized Linear weight, kept by autograd until backward. Under
    checkpointing the decoder layers save nothing, so after forward only the LM head's copy is kept (each
    recomputed layer casts its own again in backward: `autocast_layer_bytes`); during forward autocast's
    cache still holds the casts of the weights that require grad (full fine-tuning's, the adapters').
    Source: torch autocast cached_cast (leaf tensors requiring grad, cleared when autocast exits)."""
    if not wl.precision.is_amp:
        return 0
    head = spec.vocab_size * spec.hidden_size
    linear = 0 if wl.quant.is_quantized else sum(
        layers * lin.num_params for layers, lin in decoder_linears(spec) if lin.is_module)
    if wl.checkpointing is not Checkpointing.NONE:
        trained = (2 * linear if wl.method is Method.FULL else 0) + adapters_bytes // 2
        return 2 * head + (trained if forward else 0)
    return 2 * (linear + head) + adapters_bytes // 2


def autocast_layer_bytes(spec: ModelSpec, wl: Training) -> int:
    """AMP under checkpointing: the bf16/fp16 copies one recomputed decoder layer casts in backward."""
    if not wl.precision.is_amp or wl.checkpointing is Checkpointing.NONE or wl.quant.is_quantized:
        return 0
    return 2 * max(sum(lin.num_params for lin in layer_linears(spec, layer) if lin.is_module)
                   for layer in act.unique_layers(spec))


def _parts(spec: ModelSpec, wl: Training, *, stage: int = 0,
           gpu: Gpu | None = None) -> tuple[Parts, act.Flow]:
    targets = lora_targets(spec, wl.lora) if wl.lora is not None and wl.method is not Method.FULL \
        else frozenset()
    flow = act.training_flow(spec, compute_workload(wl), lora_targets=targets, gpu=gpu)
    tensors = trainable_tensors(spec, wl, targets)
    grads = sum(t.nbytes for t in tensors)
    opt = optimizer_memory(wl.optimizer, tensors)
    adapters = grads if wl.method is not Method.FULL else 0
    per_layer = {id(layer): 0 for layer in spec.layers}
    if wl.method is Method.FULL:
        for layer in act.unique_layers(spec):
            per_layer[id(layer)] = sum(lin.num_params for lin in layer_linears(spec, layer)) * param_bytes(wl)
    b, s = wl.batch_size, wl.seq_len
    saved = act.saved_activations(spec, flow, batch=b, seq_len=s)
    dequant = 0
    if wl.quant.is_quantized:
        dequant = 2 * max((lin.num_weights for _, lin in decoder_linears(spec) if _quantized(wl, lin)),
                          default=0)
    recompute, backward_transient = act.recompute_and_backward_transient(
        spec, flow, batch=b, seq_len=s, dequant=dequant) if flow.checkpointing else \
        (0, act.layer_transient_bytes(spec, flow, batch=b, seq_len=s, dequant=dequant))
    parts = Parts(
        weights=weights_term(spec, wl),
        adapters=Term.group("adapters", [Term(name="lora", nbytes=adapters)]),
        grads=grads, states=opt.states, paged=opt.paged_bytes, step_bytes=opt.step_bytes,
        step_note=opt.step_note, saved=saved, cache=autocast_cache_bytes(spec, wl, adapters),
        forward_cache=autocast_cache_bytes(spec, wl, adapters, forward=True),
        fwd_extra=act.forward_extra_bytes(spec, flow, batch=b, seq_len=s),
        recompute=recompute + autocast_layer_bytes(spec, compute_workload(wl)) if flow.checkpointing else 0,
        layer_transient=act.layer_transient_bytes(spec, flow, batch=b, seq_len=s, backward=False,
                                                  dequant=dequant),
        backward_transient=backward_transient,
        layer_grads=max(per_layer.values()),
        head_grads=spec.vocab_size * spec.hidden_size * param_bytes(wl) if wl.method is Method.FULL else 0,
        dequant=dequant,
    )
    if wl.parallel == Parallelism():
        return dataclasses.replace(parts, accumulates=wl.grad_accum > 1), flow
    return per_rank(spec, wl, parts, tensors, stage=stage), flow


def _overhead(*, handles: int, gpu: Gpu | None) -> Term:
    workspace = Term(name="cublas_workspace", nbytes=cublas_workspace_bytes(num_handles=handles, gpu=gpu),
                     note="one per cuBLAS handle: forward and backward threads")
    return Term.group("runtime_overhead", [workspace])


def _master(p: Parts) -> list[Term]:
    return [Term.group("master_weights", [Term(name="fp32_copy", nbytes=p.master)])] if p.master else []


def _grads(nbytes: int, note: str = "") -> Term:
    return Term.group("gradients", [Term(name="trainable", nbytes=nbytes, note=note)])


def _activations(p: Parts, *, extra: tuple[Term, ...] = (), drop_final: bool = False,
                 forward: bool = False) -> Term:
    saved = [c for c in p.saved.children if not (drop_final and c.name == "final_norm")]
    cache = Term(name="autocast_weight_copies", nbytes=p.forward_cache if forward else p.cache,
                 note="bf16 casts saved for backward")
    return Term.group("activations", [*saved, cache, *extra])


def _with(terms: list[Term], p: Parts, moment: str, *, unit_done: bool = False) -> list[Term]:
    """`terms` with what the parallel strategy holds at `moment` merged into the same top-level terms."""
    extras = {t.name: t for t in moment_terms(p.extras, moment, unit_done=unit_done)}
    if not extras:
        return terms
    out = [Term.group(t.name, [*t.children, *extras.pop(t.name).children], note=t.note)
           if t.name in extras else t for t in terms]
    return [*out, *extras.values()]


def _steady(p: Parts, wl: Training, flow: act.Flow, *, grads: bool = True) -> list[Term]:
    """Terms every work phase of step 2 holds: weights, adapters, states, workspaces (+ grads if accum,
    or a ZeRO-2/3 flat gradient partition)."""
    terms = [p.weights, p.adapters, p.states, *_master(p),
             _overhead(handles=CUBLAS_HANDLES_TRAINING, gpu=flow.gpu)]
    if grads and p.accumulates:
        terms.append(_grads(p.grads, "accumulated over micro-steps"))
    elif grads and p.grads_persist:
        terms.append(_grads(p.grads, "flat gradient partition (ZeRO)"))
    return terms


def _outside(paged: int, wl: Training, allocated: list[Term], *, cached: int = 0,
             nccl: int = 0) -> list[Term]:
    """fragmentation (cached free blocks) and non_torch (CUDA context, kernels, NCCL, paged states)."""
    fragmentation = Term.group("fragmentation", [
        Term(name="cached_transients", nbytes=cached,
             note="freed loss and activation blocks kept by the caching allocator")])
    _, context = reserved_and_device_terms(memory(allocated), wl)
    states = Term(name="paged_optimizer_states", nbytes=paged, evictable=True,
                  note="bitsandbytes paged states in CUDA managed memory")
    comm = [Term(name="nccl_buffers", nbytes=nccl, note="NCCL_BUFFSIZE × channels × peers (assumed)")] \
        if nccl else []
    return [fragmentation, Term.group("non_torch", [*context.children, *comm, states])]


def _phase(name: PhaseName, terms: list[Term], p: Parts, wl: Training, at: str, *,
           cached: int = 0, host: Term | None = None) -> Phase:
    outside = _outside(p.paged if name is not PhaseName.LOAD else 0, wl, terms, cached=cached,
                       nccl=p.extras.nccl if name is not PhaseName.LOAD else 0)
    return Phase(name=name, memory=memory([*terms, *outside]), at=at, host=host or p.host)


def _cached_bytes(spec: ModelSpec, wl: Training, p: Parts) -> int:
    """Fragmentation of forward and backward: CACHED_BYTES_PER_LOGIT per logit the loss materialises."""
    tokens = wl.batch_size * wl.seq_len
    rows = loss.chunk_tokens(spec, tokens=tokens) if wl.chunked_loss else tokens
    return scale_bytes(int(CACHED_BYTES_PER_LOGIT * rows * spec.vocab_size), p.logits_share)


def _forward(spec: ModelSpec, wl: Training, p: Parts, flow: act.Flow) -> Phase:
    tokens = wl.batch_size * wl.seq_len
    held = Term(name="held_until_return", nbytes=p.fwd_extra, note="DynamicCache K/V, last hidden state")
    at_loss = _with([*_steady(p, wl, flow), _activations(p, extra=(held,), forward=True),
                     scale_term(loss.forward_peak_logits(spec, flow, tokens=tokens, chunked=wl.chunked_loss),
                                p.logits_share)], p, "forward_loss")
    in_layer = Term(name="layer_transient", nbytes=p.layer_transient)
    at_layer = _with([*_steady(p, wl, flow), _activations(p, extra=(held, in_layer, *_dispatch(p)),
                                                          forward=True)], p,
                     "forward_layer")
    candidates = [(at_loss, "loss: logits, fp32 copy, log_softmax + saved activations"),
                  (at_layer, "last layer: saved activations + its transients")]
    for held_now in p.moments:
        if held_now.kind != "forward" or not held_now.grads:
            continue
        # an interleaved rank's later forward: the chunks whose backward ran have their gradients
        rest = _in_flight_share(p, held_now.activations)
        logits = [scale_term(loss.forward_peak_logits(spec, flow, tokens=tokens, chunked=wl.chunked_loss),
                             p.logits_share)] if held_now.loss else []
        terms = _with([*_steady(p, wl, flow, grads=False), _grads(_held_grads(p, held_now), "chunks done"),
                       _activations(rest, extra=(held, in_layer, *_dispatch(p)), forward=True), *logits],
                      p, "forward_loss" if held_now.loss else "forward_layer")
        candidates.append((terms, "interleaved forward beside the gradients of the chunks done"))
    if p.extras.unit_buffer:
        # before the last layer runs: its saved activations do not exist yet
        before_last = dataclasses.replace(p, saved=_less_one_layer(p))
        candidates.append((_with([*_steady(p, wl, flow), _activations(before_last, extra=(held,))], p,
                                 "forward_copy_out"),
                           "last unit's all-gather copy-out: two all-gather outputs + the unit"))
    best = max(candidates, key=lambda c: _allocated(c[0]))
    return _phase(PhaseName.FORWARD, best[0], p, wl, best[1], cached=_cached_bytes(spec, wl, p))


def _dispatch(p: Parts) -> tuple[Term, ...]:
    """Expert parallelism's all-to-all buffers of the MoE layer running (per_rank.ep_dispatch_bytes)."""
    if not p.ep_dispatch:
        return ()
    return (Term(name="ep_all_to_all", nbytes=p.ep_dispatch,
                 note="expert-parallel dispatch and combine buffers: 2 × tokens × top_k × hidden"),)


def _allocated(terms: list[Term]) -> int:
    return sum(t.nbytes for t in terms if t.name not in ("fragmentation", "non_torch"))


def _so_far(p: Parts, wl: Training, unsharded: int) -> int:
    """Gradients held at a backward moment besides the strategy's unsharded ones: all of them when they
    accumulate over micro-steps or live in a flat partition; none yet when units reduce-scatter as they go;
    else `unsharded` (the head's and the current layer's)."""
    if p.accumulates or p.grads_persist:
        return p.grads
    return 0 if p.sharded_grads else min(p.grads, unsharded)


def _backward(spec: ModelSpec, wl: Training, p: Parts, flow: act.Flow) -> Phase:
    tokens = wl.batch_size * wl.seq_len
    steady = _steady(p, wl, flow, grads=False)
    persistent = [_grads(p.grads, "accumulated" if p.accumulates else "flat gradient partition")] \
        if p.accumulates or p.grads_persist else []
    start = _with([*steady, *persistent, _activations(p),
                   scale_term(loss.backward_start_logits(spec, flow, tokens=tokens, chunked=wl.chunked_loss),
                              p.logits_share)], p, "backward_start")
    layer_extra = (Term(name="recomputed_layer", nbytes=p.recompute),
                   Term(name="layer_backward_transient", nbytes=p.backward_transient), *_dispatch(p))
    last = _with([*steady, _grads(_so_far(p, wl, p.head_grads + p.layer_grads), "so far"),
                  _activations(p, extra=layer_extra, drop_final=True)], p, "backward_layer")
    # tied embeddings: the head's gradient waits in autograd's input buffer and is summed out of place
    # with the embedding's, so three vocab × hidden gradients coexist at the very end
    tied = 2 * p.head_grads if spec.tie_word_embeddings and not p.sharded_grads \
        and not p.extras.embed_grad else 0
    end = _with([*steady, Term.group("gradients", [Term(name="trainable", nbytes=p.grads),
                                                   Term(name="tied_embedding_grad_sum", nbytes=tied)])],
                p, "backward_end")
    # lm_head's backward: the logits gradient in the head's dtype while the head's weight gradient forms
    logits_grad = 0 if wl.chunked_loss else scale_bytes(
        loss.logits_bytes_per_element(flow) * tokens * spec.vocab_size, p.logits_share)
    head = _with([*steady, _grads(_so_far(p, wl, p.head_grads), "lm_head"),
                  _activations(p), Term.group("logits", [Term(name="logits_grad", nbytes=logits_grad)])],
                 p, "backward_head")
    candidates = [(start, "start of backward: logits grads + saved activations"),
                  (head, "lm_head backward: logits grad + head weight grad + saved activations"),
                  (last, "last layer's backward: " + ("recomputed layer, " if p.recompute else "")
                   + "gradients so far"),
                  (end, "end of backward: all gradients")]
    if p.extras.unit_reduce:
        # memory along the decoder layers' backward is linear in the layers done (each frees its saved
        # activations and adds a gradient shard), so its peak is at the second or at the last layer
        layers = max(len(rank_layers(spec, wl.parallel, 0)), 1)
        one_unit = max(p.grads - p.root_grad_shard, 0) // layers
        done = _so_far(p, wl, 0) + max(layers - 2, 0) * one_unit
        # each at its transient peak (the MLP activation's backward: part of the unit's gradients formed)
        # and at the layer's end (all of them, its recomputed activations and transients freed)
        for unit_done, extra in ((False, layer_extra), (True, ())):
            # expert parallelism: a unit done is the layer's routed experts, whose saved tensors (the bulk of
            # the layer's) their backward has freed
            freed = 1 if unit_done and p.extras.split_units else 0
            second = _with([*steady, _grads(_so_far(p, wl, 0) + one_unit, "so far"),
                            _activations(_with_layers(p, layers - 1 - freed), extra=extra, drop_final=True)],
                           p, "backward_layer_steady", unit_done=unit_done)
            candidates.append((second, "second unit's backward: + previous unit's reduce-scatter input"))
            late = _with([*steady, _grads(done, "the other units' shards"),
                          _activations(_with_layers(p, min(2, layers) - freed), extra=extra,
                                       drop_final=True)],
                         p, "backward_last_unit", unit_done=unit_done)
            candidates.append((late, "second layer's backward: the other units reduced to shards, layer 0 "
                                     "prefetched"))
        if p.extras.split_units:
            # expert parallelism: layer 0's routed experts are gathered (their own unit, the largest) once
            # every later unit has reduced to its shard, beside layer 0's dense unit and saved activations
            gather = _with([*steady, _grads(_so_far(p, wl, 0) + max(layers - 1, 0) * one_unit,
                                            "the other units' shards"),
                            _activations(_with_layers(p, 1), drop_final=True)], p, "backward_expert_gather")
            candidates.append((gather, "layer 0's routed experts gathered: every later unit reduced"))
    if not p.extras.unit_reduce and p.layer_grads and spec.num_layers > 1:
        # layer 0's backward, the last one: every later layer's gradient formed, only layer 0's saved
        # activations left (with checkpointing, its input and its recomputation). Memory along the layers'
        # backward is linear in the layers done, so the peak is at the first (`last` above) or here.
        # Source: trace of GPT-J full AMP checkpointed (gradients of 4 B per parameter outgrow the 2 B
        # layer inputs they replace).
        embed = 0 if spec.tie_word_embeddings else p.head_grads   # the embedding's gradient comes after
        done = max(p.grads - p.layer_grads - embed, 0)
        saved_layers = layer_child(p.saved)
        per_layer = saved_layers.nbytes // spec.num_layers if saved_layers else 0
        # AMP: the later layers' weight casts went with their saved tensors; the head's stays
        head_cast = min(2 * spec.vocab_size * spec.hidden_size, p.cache) if p.cache else 0
        cache = head_cast + (p.cache - head_cast) // spec.num_layers
        one = dataclasses.replace(p, layer_saved=per_layer, cache=cache)
        first = _with([*steady, _grads(_so_far(p, wl, done), "so far"),
                       _activations(_with_layers(one, 1), extra=layer_extra, drop_final=True)],
                      p, "backward_layer")
        candidates.append((first, "first layer's backward: every later layer's gradient, "
                                  + ("recomputed layer" if p.recompute else "its saved activations")))
    candidates += _interleaved_backward(spec, wl, p, flow, layer_extra)
    if p.flight > 1 and not p.moments:
        # a pipeline stage's second in-flight micro-batch: the first's backward left every gradient of the
        # stage, the other micro-batches' activations remain
        rest = _in_flight_share(p, Fraction(p.flight - 1, p.flight))
        second_mb = _with([*steady, _grads(p.grads, "the first micro-batch's backward"),
                           _activations(rest, extra=layer_extra[1:], drop_final=True)], p, "backward_layer")
        candidates.append((second_mb, "second in-flight micro-batch's backward: the stage's gradients"))
        if p.logits_share:
            # the last stage under GPipe: the second micro-batch's backward starts at its loss, beside the
            # gradients the first one's backward left
            second_loss = _with([*steady, _grads(p.grads, "the first micro-batch's backward"),
                                 _activations(rest), scale_term(loss.backward_start_logits(
                                     spec, flow, tokens=tokens, chunked=wl.chunked_loss), p.logits_share)],
                                p, "backward_start")
            candidates.append((second_loss, "second in-flight micro-batch's loss backward: the stage's "
                                            "gradients + logits grads"))
    best = max(candidates, key=lambda c: _allocated(c[0]))
    return _phase(PhaseName.BACKWARD, best[0], p, wl, best[1], cached=_cached_bytes(spec, wl, p))


def _held_grads(p: Parts, held: Held) -> int:
    """Gradient bytes an interleaved rank holds at `held`: those of the chunks whose backward ran (all of
    them under a flat ZeRO partition)."""
    return p.grads if p.grads_persist else scale_bytes(p.grads, held.grads)


def _interleaved_backward(spec: ModelSpec, wl: Training, p: Parts, flow: act.Flow,
                          layer_extra: tuple[Term, ...]) -> list[tuple[list[Term], str]]:
    """An interleaved rank's backward ops (`p.moments`), each at its last layer's backward (the layer's
    transients; a chunk's first backward forms that layer's gradients, and on the loss chunk the head's)
    and, on the loss chunk, at its start (the logits' gradients), beside the chunk micro-batches still held
    and the gradients of the chunks done. Source: torch 2.13 ScheduleInterleaved1F1B's order
    (core/schedule.py); the multi-rank trace's interleaved ranks."""
    tokens = wl.batch_size * wl.seq_len
    out: list[tuple[list[Term], str]] = []
    for held in p.moments:
        if held.kind != "backward":
            continue
        rest = _in_flight_share(p, held.activations)
        done = _held_grads(p, held)
        forming = p.layer_grads + (p.head_grads if held.loss else 0) if held.first_backward else 0
        layer = _with([*_steady(p, wl, flow, grads=False), _grads(done + forming, "chunks done + this layer"),
                       _activations(rest, extra=layer_extra, drop_final=True)], p, "backward_layer")
        out.append((layer, "interleaved chunk backward: gradients of the chunks done + the chunk "
                           "micro-batches held"))
        if held.loss:
            start = _with([*_steady(p, wl, flow, grads=False), _grads(done, "chunks done"),
                           _activations(rest),
                           scale_term(loss.backward_start_logits(spec, flow, tokens=tokens,
                                                                 chunked=wl.chunked_loss), p.logits_share)],
                          p, "backward_start")
            out.append((start, "interleaved loss backward: logits grads + the gradients of the chunks done"))
    return out


def _less_one_layer(p: Parts) -> Term:
    """Saved activations once one decoder layer's have been freed by its backward."""
    layers = layer_child(p.saved)
    if layers is None or not layers.nbytes:
        return p.saved
    keep = Fraction(max(layers.nbytes - p.layer_saved, 0), layers.nbytes)
    return Term.group(p.saved.name, [scale_term(c, keep) if c.name in LAYER_CHILDREN else c
                                     for c in p.saved.children])


def _with_layers(p: Parts, count: int) -> Parts:
    """`p` with the saved activations of `count` decoder layers left (the rest freed by their backward)."""
    layers = layer_child(p.saved)
    if layers is None or not layers.nbytes:
        return p
    keep = Fraction(min(count * p.layer_saved, layers.nbytes), layers.nbytes)
    saved = Term.group(p.saved.name, [scale_term(c, keep) if c.name in LAYER_CHILDREN else c
                                      for c in p.saved.children])
    return dataclasses.replace(p, saved=saved)


def _in_flight_share(p: Parts, keep: Fraction) -> Parts:
    """`p` with `keep` of its in-flight micro-batches' saved activations, pipeline buffers and final norm
    inputs; of the earlier micro-batches' losses, those of the micro-batches left but the one running."""
    left = keep * p.flight
    earlier = max(left - 1, Fraction(0)) / (p.flight - 1) if p.flight > 1 else Fraction(0)
    saved = Term.group(p.saved.name, [
        scale_term(c, keep) if c.name in (*LAYER_CHILDREN, "pipeline_buffers", "final_norm")
        else scale_term(c, earlier) if c.name == "earlier_losses" else c for c in p.saved.children])
    return dataclasses.replace(p, saved=saved)


def _optimizer(wl: Training, p: Parts, flow: act.Flow) -> Phase:
    temp = Term(name="step_temporaries", nbytes=p.step_bytes, note=p.step_note)
    states = Term.group("optimizer_states", [*p.states.children, temp])
    terms = _with([p.weights, p.adapters, _grads(p.grads), states, *_master(p),
                   _overhead(handles=CUBLAS_HANDLES_TRAINING, gpu=flow.gpu)], p, "optimizer")
    at = f"optimizer step: gradients + states + {p.step_note}"
    return _phase(PhaseName.OPTIMIZER, terms, p, wl, at)


def _assumptions(spec: ModelSpec, wl: Training, flow: act.Flow) -> tuple[str, ...]:
    backends = sorted({act.attention_backend(attention_of(layer, what="training"), flow, seq_len=wl.seq_len)
                       for layer in spec.layers})
    out = [
        f"attention kernel: {', '.join(backends)} (attn={wl.attn})",
        "steady state: step 2 with optimizer states; zero_grad(set_to_none=True) between steps",
        "the model output is dropped after the loss (only the loss is kept, as HF Trainer does)",
        workspace_note(flow.gpu, handles=CUBLAS_HANDLES_TRAINING, threads="forward and autograd threads"),
    ]
    if wl.precision.is_amp:
        out.append("AMP: parameters fp32, autocast keeps bf16/fp16 weight copies until backward")
    if act.upcasts_kept_weights(wl):
        out.append("prepare_model_for_kbit_training: embeddings, lm_head and norms in fp32")
    kept = "fp32 (prepare_model_for_kbit_training upcasts them)" if act.upcasts_kept_weights(wl) else \
        "the compute dtype"
    experts = unconverted_experts_note(spec, wl.quant, kept=kept)
    if experts:
        out.append(experts)
    if wl.optimizer is Optimizer.LION:
        out.append("lion: lion-pytorch's per-tensor update")
    if wl.chunked_loss:
        out.append("chunked loss: a fused linear + cross-entropy (Liger-Kernel style), no full logits")
    if wl.optimizer in (Optimizer.PAGED_ADAMW_8BIT, Optimizer.PAGED_ADAMW_32BIT):
        out.append("paged optimizer states live in CUDA managed memory and page out under pressure")
    return tuple(out)


def _stage_phases(spec: ModelSpec, wl: Training, stage: int,
                  gpu: Gpu | None = None) -> tuple[tuple[Phase, ...], act.Flow]:
    p, flow = _parts(spec, wl, stage=stage, gpu=gpu)
    load = _phase(PhaseName.LOAD, _with([p.weights, p.adapters], p, "load"), p, wl, "model loaded",
                  host=p.load_host)
    return (load, _forward(spec, wl, p, flow), _backward(spec, wl, p, flow), _optimizer(wl, p, flow)), flow


def training_phases(spec: ModelSpec, wl: Training,
                    gpu: Gpu | None = None) -> tuple[tuple[Phase, ...], tuple[str, ...]]:
    """Phases load, forward, backward, optimizer of `wl` on its most loaded GPU, and the assumptions made.

    `gpu` (None: an H100) decides the SDPA backend and the cuBLAS workspace per handle.

    Under pipeline parallelism the first stage (embeddings, the most micro-batches in flight) and the last
    (final norm, head, loss) are both built; the one with the higher allocated peak is reported.

    Raises:
        InvalidWorkload: settings the runtime cannot run (the message names the field).
    """
    validate(spec, wl)
    stages = (0, wl.parallel.pp - 1) if wl.parallel.pp > 1 else (0,)
    built = [(*_stage_phases(spec, wl, stage, gpu), stage) for stage in stages]
    phases, flow, stage = max(built, key=lambda b: max(ph.allocated_bytes for ph in b[0]))
    notes = _assumptions(spec, wl, flow)
    if wl.parallel != Parallelism():
        notes = (*notes, *_parallel_assumptions(wl, stage))
    return phases, notes


def _parallel_assumptions(wl: Training, stage: int) -> tuple[str, ...]:
    par = wl.parallel
    out = ["figures are per GPU, the most loaded rank"]
    if par.pp > 1:
        chunks = f" ({par.pp_virtual_stages} model chunks per rank)" if par.pp_virtual_stages > 1 else ""
        out.append(f"pipeline {str(par.pp_schedule).upper()}{chunks} with {wl.grad_accum} micro-batches "
                   f"(grad_accum); stage {stage} of {par.pp} is the most loaded")
    if par.fsdp is not None:
        out.append("FSDP2 fully_shard per decoder layer plus the root; reshard_after_forward="
                   + ("False" if par.fsdp.value == "shard-grad-op" else "True")
                   + (", MixedPrecisionPolicy(bf16, reduce fp32)" if wl.precision.is_amp else ""))
    elif par.zero is not ZeroStage.NONE:
        source = "the DeepSpeed config given" if par.zero_config is not None else "DeepSpeed's defaults"
        out.append(f"DeepSpeed ZeRO-{par.zero.level} buckets and thresholds from {source}")
    elif par.dp > 1:
        out.append("DDP with bucket_cap_mb=25 and gradient_as_bucket_view=False: buckets copy every gradient")
    if par.ep > 1:
        out.append(f"expert parallelism ep={par.ep} (torchtitan ExpertParallel, DeepSpeed-MoE ep_size): each "
                   f"rank holds 1/{par.ep} of the routed experts, sharded further over dp/ep ranks; routing "
                   "balanced, so each rank's experts see tokens × top_k rows and activations are as without "
                   "EP; all-to-all dispatch and combine buffers 2 × tokens × top_k × hidden; NCCL buffers of "
                   "the all-to-all (4 MiB × 2 channels per peer) and of the expert-data-parallel ring")
    if par.num_gpus > 1:
        out.append("NCCL buffers: 4 MiB (NCCL_BUFFSIZE) × 16 channels × 2 ring peers per communicator")
    if par.offload_optimizer is not Offload.NONE or par.offload_params is not Offload.NONE:
        out.append(f"host RAM is per node of {min(par.num_gpus, par.gpus_per_node)} ranks")
    return tuple(out)
