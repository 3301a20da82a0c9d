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
With grad_accum > 1 gradients persist through the forward and backward of later micro-steps.
Sources: module docstrings of activations.py, loss.py and optimizers.py; groundtruth h100-2026-11.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction

from memfit.core import activations as act
from memfit.core import loss
from memfit.core.choices import AttnImpl, Method, Optimizer, PhaseName, Precision
from memfit.core.errors import InvalidWorkload
from memfit.core.optimizers import (
    ParamTensor,
    decoder_linears,
    lora_targets,
    optimizer_memory,
    param_bytes,
    peft_adapts_fused_experts,
    trainable_tensors,
)
from memfit.core.overhead import cublas_workspace_bytes, reserved_and_device_terms
from memfit.core.parallel import rank_share, scale_bytes, scale_term
from memfit.core.params import Linear, count_params, layer_linears
from memfit.core.result import Phase, Term, memory
from memfit.core.spec import ModelSpec
from memfit.core.weights import buffer_bytes
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
        if peft_adapts_fused_experts(spec, wl.lora) and wl.lora.dropout > 0:
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


def autocast_cache_bytes(spec: ModelSpec, wl: Training, adapters_bytes: int) -> int:
    """AMP: bf16/fp16 copies of every non-quantized Linear weight, kept by autograd until backward."""
    if not wl.precision.is_amp:
        return 0
    linear = 0 if wl.quant.is_quantized else sum(
        layers * lin.num_params for layers, lin in decoder_linears(spec) if lin.is_module)
    head = spec.vocab_size * spec.hidden_size
    return 2 * (linear + head) + adapters_bytes // 2


@dataclass(frozen=True, slots=True, kw_only=True)
class _Parts:
    """Every amount one phase builder needs, in bytes (Terms where they have a breakdown)."""

    weights: Term
    adapters: Term
    grads: int
    states: Term
    paged: int
    step_bytes: int
    step_note: str
    saved: Term
    cache: int
    fwd_extra: int
    recompute: int
    layer_transient: int      # the forward's last layer
    backward_transient: int   # the last layer's backward (net of its freed MLP half)
    layer_grads: int
    head_grads: int
    dequant: int
    logits_share: Fraction = Fraction(1)
    master: int = 0          # fp32 master weights (DeepSpeed ZeRO over bf16/fp16 parameters)
    gathered: int = 0        # ZeRO-3/FSDP: whole layers of parameters gathered at a time
    host: int = 0            # offloaded optimizer states (and parameters) in host RAM


def _parts(spec: ModelSpec, wl: Training) -> tuple[_Parts, act.Flow]:
    targets = lora_targets(spec, wl.lora) if wl.lora is not None and wl.method is not Method.FULL \
        else frozenset()
    flow = act.training_flow(spec, wl, lora_targets=targets)
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
    parts = _Parts(
        weights=weights_term(spec, wl),
        adapters=Term.group("adapters", [Term(name="lora", nbytes=adapters)]),
        grads=grads, states=opt.states, paged=opt.paged_bytes, step_bytes=opt.step_bytes,
        step_note=opt.step_note, saved=saved, cache=autocast_cache_bytes(spec, wl, adapters),
        fwd_extra=act.forward_extra_bytes(spec, flow, batch=b, seq_len=s),
        recompute=act.recomputed_layer_bytes(spec, flow, batch=b, seq_len=s) if flow.checkpointing else 0,
        layer_transient=act.layer_transient_bytes(spec, flow, batch=b, seq_len=s, backward=False,
                                                  dequant=dequant),
        backward_transient=act.layer_transient_bytes(spec, flow, batch=b, seq_len=s, dequant=dequant),
        layer_grads=max(per_layer.values()),
        head_grads=spec.vocab_size * spec.hidden_size * param_bytes(wl) if wl.method is Method.FULL else 0,
        dequant=dequant,
    )
    return _sharded(spec, wl, parts, tensors), flow


def _sharded(spec: ModelSpec, wl: Training, p: _Parts, tensors: tuple[ParamTensor, ...]) -> _Parts:
    """`p` as the most loaded GPU holds it under `wl.parallel` (see core/parallel.py)."""
    if wl.parallel == Parallelism():
        return p
    share = rank_share(spec, wl.parallel)
    states, step, paged = p.states, p.step_bytes, p.paged
    master = 0
    if share.master_weights and any(t.element_bytes < 4 for t in tensors):
        fp32 = tuple(dataclasses.replace(t, element_bytes=4) for t in tensors)
        opt = optimizer_memory(wl.optimizer, fp32)
        states, step, paged = opt.states, opt.step_bytes, opt.paged_bytes
        master = sum(t.nbytes for t in fp32)
    state_share = share.optimizer_states
    host = 0
    if share.offload_states:
        host = scale_bytes(states.nbytes + master, state_share)
        state_share = Fraction(0)
    weights = scale_term(p.weights, Fraction(0) if share.offload_params else share.weights)
    if share.offload_params:
        host += scale_bytes(p.weights.nbytes, share.weights)
    layer = share.layer_activations
    saved = Term.group("activations", [
        scale_term(c, layer if c.name == "layers" else share.residual_activations) for c in p.saved.children])
    # gathered in the compute dtype (2 B), tp-split
    layer_params = max(sum(lin.num_params for lin in layer_linears(spec, one))
                       for one in act.unique_layers(spec))
    gathered = scale_bytes(share.gathered_layers * layer_params * 2, share.layer_activations)
    return dataclasses.replace(
        p, weights=weights, adapters=scale_term(p.adapters, share.weights),
        grads=scale_bytes(p.grads, share.gradients), states=scale_term(states, state_share),
        paged=scale_bytes(paged, state_share), step_bytes=scale_bytes(step, state_share), saved=saved,
        cache=scale_bytes(p.cache, Fraction(1, wl.parallel.tp * wl.parallel.pp)),
        fwd_extra=scale_bytes(p.fwd_extra, layer), recompute=scale_bytes(p.recompute, layer),
        layer_transient=scale_bytes(p.layer_transient, layer),
        backward_transient=scale_bytes(p.backward_transient, layer),
        layer_grads=scale_bytes(p.layer_grads, share.gradients),
        head_grads=scale_bytes(p.head_grads, share.gradients), logits_share=share.logits,
        master=scale_bytes(master, state_share), gathered=gathered, host=host,
    )


def _overhead(*, handles: int, gathered: int = 0) -> Term:
    workspace = Term(name="cublas_workspace", nbytes=cublas_workspace_bytes(num_handles=handles),
                     note="one per cuBLAS handle: forward and backward threads")
    layers = Term(name="gathered_parameters", nbytes=gathered, note="ZeRO-3/FSDP all-gathered layers")
    return Term.group("runtime_overhead", [workspace, layers])


def _master(p: _Parts) -> list[Term]:
    return [Term.group("master_weights", [Term(name="fp32_copy", nbytes=p.master)])] if p.master else []


def _grads(nbytes: int, note: str = "") -> Term:
    return Term.group("gradients", [Term(name="trainable", nbytes=nbytes, note=note)])


def _activations(p: _Parts, *, extra: tuple[Term, ...] = (), drop_final: bool = False) -> Term:
    saved = [c for c in p.saved.children if not (drop_final and c.name == "final_norm")]
    cache = Term(name="autocast_weight_copies", nbytes=p.cache, note="bf16 casts saved for backward")
    return Term.group("activations", [*saved, cache, *extra])


def _steady(p: _Parts, wl: Training) -> list[Term]:
    """Terms every work phase of step 2 holds: weights, adapters, states, workspaces (+ grads if accum)."""
    terms = [p.weights, p.adapters, p.states, *_master(p),
             _overhead(handles=CUBLAS_HANDLES_TRAINING, gathered=p.gathered)]
    if wl.grad_accum > 1:
        terms.append(_grads(p.grads, "accumulated over micro-steps"))
    return terms


def _outside(paged: int, wl: Training, allocated: list[Term], *, cached: int = 0) -> list[Term]:
    """fragmentation (cached free blocks) and non_torch (CUDA context, kernels, paged optimizer states)."""
    fragmentation = Term.group("fragmentation", [
        Term(name="cached_transients", nbytes=cached,
             note="freed loss and activation blocks kept by the caching allocator")])
    _, context = reserved_and_device_terms(memory(allocated), wl)
    states = Term(name="paged_optimizer_states", nbytes=paged, evictable=True,
                  note="bitsandbytes paged states in CUDA managed memory")
    return [fragmentation, Term.group("non_torch", [*context.children, states])]


def _phase(name: PhaseName, terms: list[Term], paged: int, wl: Training, at: str, *, host: int = 0,
           cached: int = 0) -> Phase:
    offloaded = Term.group("host", [Term(name="offloaded", nbytes=host)]) if host else None
    outside = _outside(paged, wl, terms, cached=cached)
    return Phase(name=name, memory=memory([*terms, *outside]), at=at, host=offloaded)


def _cached_bytes(spec: ModelSpec, wl: Training, p: _Parts) -> int:
    """Fragmentation of forward and backward: CACHED_BYTES_PER_LOGIT per logit the loss materialises."""
    tokens = wl.batch_size * wl.seq_len
    rows = loss.chunk_tokens(spec, tokens=tokens) if wl.chunked_loss else tokens
    return scale_bytes(int(CACHED_BYTES_PER_LOGIT * rows * spec.vocab_size), p.logits_share)


def _forward(spec: ModelSpec, wl: Training, p: _Parts, flow: act.Flow) -> Phase:
    tokens = wl.batch_size * wl.seq_len
    held = Term(name="held_until_return", nbytes=p.fwd_extra, note="DynamicCache K/V, last hidden state")
    at_loss = [*_steady(p, wl), _activations(p, extra=(held,)),
               scale_term(loss.forward_peak_logits(spec, flow, tokens=tokens, chunked=wl.chunked_loss),
                          p.logits_share)]
    in_layer = Term(name="layer_transient", nbytes=p.layer_transient)
    at_layer = [*_steady(p, wl), _activations(p, extra=(held, in_layer))]
    best = max((at_loss, "loss: logits, fp32 copy, log_softmax + saved activations"),
               (at_layer, "last layer: saved activations + its transients"),
               key=lambda c: _allocated(c[0]))
    return _phase(PhaseName.FORWARD, best[0], p.paged, wl, best[1], host=p.host,
                  cached=_cached_bytes(spec, wl, p))


def _allocated(terms: list[Term]) -> int:
    return sum(t.nbytes for t in terms if t.name not in ("fragmentation", "non_torch"))


def _backward(spec: ModelSpec, wl: Training, p: _Parts, flow: act.Flow) -> Phase:
    tokens = wl.batch_size * wl.seq_len
    start = [*_steady(p, wl), _activations(p),
             scale_term(loss.backward_start_logits(spec, flow, tokens=tokens, chunked=wl.chunked_loss),
                        p.logits_share)]
    so_far = p.grads if wl.grad_accum > 1 else min(p.grads, p.head_grads + p.layer_grads)
    layer_extra = (Term(name="recomputed_layer", nbytes=p.recompute),
                   Term(name="layer_backward_transient", nbytes=p.backward_transient))
    last = [*[t for t in _steady(p, wl) if t.name != "gradients"], _grads(so_far, "so far"),
            _activations(p, extra=layer_extra, drop_final=True)]
    # tied embeddings: the head's gradient waits in autograd's input buffer and is summed out of place
    # with the embedding's, so three vocab × hidden gradients coexist at the very end
    tied = 2 * p.head_grads if spec.tie_word_embeddings else 0
    end = [*[t for t in _steady(p, wl) if t.name != "gradients"],
           Term.group("gradients", [Term(name="trainable", nbytes=p.grads),
                                    Term(name="tied_embedding_grad_sum", nbytes=tied)])]
    # lm_head's backward: the logits gradient in the head's dtype while the head's weight gradient forms
    logits_grad = 0 if wl.chunked_loss else scale_bytes(
        loss.logits_bytes_per_element(flow) * tokens * spec.vocab_size, p.logits_share)
    head = [*[t for t in _steady(p, wl) if t.name != "gradients"],
            _grads(p.grads if wl.grad_accum > 1 else min(p.grads, p.head_grads), "lm_head"),
            _activations(p), Term.group("logits", [Term(name="logits_grad", nbytes=logits_grad)])]
    candidates = ((start, "start of backward: logits grads + saved activations"),
                  (head, "lm_head backward: logits grad + head weight grad + saved activations"),
                  (last, "last layer's backward: " + ("recomputed layer, " if p.recompute else "")
                   + "gradients so far"),
                  (end, "end of backward: all gradients"))
    best = max(candidates, key=lambda c: _allocated(c[0]))
    return _phase(PhaseName.BACKWARD, best[0], p.paged, wl, best[1], host=p.host,
                  cached=_cached_bytes(spec, wl, p))


def _optimizer(wl: Training, p: _Parts) -> Phase:
    temp = Term(name="step_temporaries", nbytes=p.step_bytes, note=p.step_note)
    states = Term.group("optimizer_states", [*p.states.children, temp])
    terms = [p.weights, p.adapters, _grads(p.grads), states, *_master(p),
             _overhead(handles=CUBLAS_HANDLES_TRAINING)]
    at = f"optimizer step: gradients + states + {p.step_note}"
    return _phase(PhaseName.OPTIMIZER, terms, p.paged, wl, at, host=p.host)


def _assumptions(spec: ModelSpec, wl: Training, flow: act.Flow) -> tuple[str, ...]:
    backends = sorted({act.attention_backend(layer.attention, flow, seq_len=wl.seq_len)
                       for layer in spec.layers})
    out = [
        f"attention kernel: {', '.join(backends)} (attn={wl.attn})",
        "steady state: step 2 with optimizer states; zero_grad(set_to_none=True) between steps",
        "the model output is dropped after the loss (only the loss is kept, as HF Trainer does)",
        "cuBLAS workspaces: 2 × 32 MiB (Hopper; forward and autograd threads)",
    ]
    if wl.precision.is_amp:
        out.append("AMP: parameters fp32, autocast keeps bf16/fp16 weight copies until backward")
    if act.upcasts_kept_weights(wl):
        out.append("prepare_model_for_kbit_training: embeddings, lm_head and norms in fp32")
    if wl.optimizer is Optimizer.LION:
        out.append("lion: lion-pytorch's per-tensor update")
    if wl.chunked_loss:
        out.append("chunked loss: a fused linear + cross-entropy (Liger-Kernel style), no full logits")
    if wl.optimizer in (Optimizer.PAGED_ADAMW_8BIT, Optimizer.PAGED_ADAMW_32BIT):
        out.append("paged optimizer states live in CUDA managed memory and page out under pressure")
    return tuple(out)


def training_phases(spec: ModelSpec, wl: Training) -> tuple[tuple[Phase, ...], tuple[str, ...]]:
    """Phases load, forward, backward, optimizer of `wl` on one GPU, and the assumptions made.

    Raises:
        InvalidWorkload: settings the runtime cannot run (the message names the field).
    """
    validate(spec, wl)
    p, flow = _parts(spec, wl)
    load = _phase(PhaseName.LOAD, [p.weights, p.adapters], 0, wl, "model loaded")
    phases = (load, _forward(spec, wl, p, flow), _backward(spec, wl, p, flow), _optimizer(wl, p))
    return phases, _assumptions(spec, wl, flow)
