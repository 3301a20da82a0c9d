"""Logits and the causal-LM loss of a training step: the LM head output, its fp32 upcast, loss buffers.

transformers 5.17 `ForCausalLMLoss` runs `logits.float()`, then `cross_entropy` = `log_softmax` (its fp32
output is saved for backward) + `nll_loss`, over every position (labels are shifted, not logits). The
model output (and so the low-precision logits) is dropped once the loss is taken. Per token and vocab entry:

| instant                | alive                                                          | bytes          |
|------------------------|----------------------------------------------------------------|----------------|
| forward peak           | lm_head output, its fp32 copy, log_softmax output               | b + 4 + 4      |
| end of forward         | log_softmax output                                              | 4              |
| start of backward      | log_softmax output, its gradient, the fp32 logits gradient      | 4 + 4 + 4      |

(b = 2 for bf16/fp16 logits, with no separate upcast when the LM head already computes in fp32.)
Source: transformers/loss/loss_utils.py ForCausalLMLoss; torch log_softmax_backward_data; the measured
rows of /work/shared/groundtruth/h100-2026-11.jsonl (fwd peak − fwd end = 6·T·V·... bytes for bf16
logits, bwd peak − bwd start = 8·T·V bytes, on every training row).

`chunked_loss` models a fused linear + cross-entropy in token chunks (Liger-Kernel style): no full logits;
each chunk's logits, fp32 copy and gradient are short-lived, and the hidden-state gradient is computed in
the forward pass. Source: Liger-Kernel fused_linear_cross_entropy (chunk size rule).
"""

from __future__ import annotations

from memfit.core.activations import FP32_BYTES, Flow
from memfit.core.result import Term
from memfit.core.spec import ModelSpec


def logits_bytes_per_element(flow: Flow) -> int:
    """Bytes per logit as lm_head returns it: bf16 under autocast, else the dtype of its input."""
    return 2 if flow.amp else flow.residual_bytes


def chunk_tokens(spec: ModelSpec, *, tokens: int) -> int:
    """Tokens per chunk of the fused loss: next power of two ≥ tokens / ceil(vocab / hidden).

    Source: Liger-Kernel fused_linear_cross_entropy_forward (chunk_size rule).
    """
    inc_factor = -(-spec.vocab_size // spec.hidden_size)
    wanted = max(1, -(-tokens // inc_factor))
    return min(tokens, 1 << (wanted - 1).bit_length())


def _rows(spec: ModelSpec, flow: Flow, *, tokens: int, chunked: bool) -> int:
    return chunk_tokens(spec, tokens=tokens) if chunked else tokens


def forward_peak_logits(spec: ModelSpec, flow: Flow, *, tokens: int, chunked: bool = False) -> Term:
    """Logits memory at the loss's peak inside forward (bytes): output, fp32 copy, log_softmax."""
    rows = _rows(spec, flow, tokens=tokens, chunked=chunked)
    v = spec.vocab_size
    b = logits_bytes_per_element(flow)
    children = [
        Term(name="lm_head_output", nbytes=b * rows * v),
        _softcap(spec, flow, rows=rows),
        Term(name="fp32_upcast", nbytes=FP32_BYTES * rows * v if b < FP32_BYTES else 0),
        Term(name="log_softmax", nbytes=FP32_BYTES * rows * v),
    ]
    if chunked:
        children.append(Term(name="hidden_grad", nbytes=flow.residual_bytes * spec.hidden_size * tokens,
                             note="fused loss computes the hidden-state gradient in forward"))
    return Term.group("logits", children)


def saved_logits(spec: ModelSpec, flow: Flow, *, tokens: int, chunked: bool = False) -> Term:
    """Logits memory kept from the end of forward to backward (bytes): the fp32 log_softmax output."""
    if chunked:
        return Term.group("logits", [Term(name="hidden_grad",
                                          nbytes=flow.residual_bytes * spec.hidden_size * tokens)])
    return Term.group("logits", [Term(name="log_softmax", nbytes=FP32_BYTES * tokens * spec.vocab_size),
                                 _softcap(spec, flow, rows=tokens)])


def backward_start_logits(spec: ModelSpec, flow: Flow, *, tokens: int, chunked: bool = False) -> Term:
    """Logits memory at the start of backward (bytes): log_softmax output, its grad, the logits grad."""
    if chunked:
        return saved_logits(spec, flow, tokens=tokens, chunked=True)
    tv = tokens * spec.vocab_size
    return Term.group("logits", [
        Term(name="log_softmax", nbytes=FP32_BYTES * tv),
        Term(name="log_softmax_grad", nbytes=FP32_BYTES * tv),
        Term(name="logits_grad_fp32", nbytes=FP32_BYTES * tv),
        _softcap(spec, flow, rows=tokens),
    ])


def _softcap(spec: ModelSpec, flow: Flow, *, rows: int) -> Term:
    """Gemma 2's final logit soft-capping: tanh's output (logits' dtype) is saved for backward.

    Source: transformers Gemma2ForCausalLM.forward (logits / cap → tanh → × cap).
    """
    nbytes = logits_bytes_per_element(flow) * rows * spec.vocab_size if spec.final_logit_softcapping else 0
    return Term(name="softcap_tanh", nbytes=nbytes)
