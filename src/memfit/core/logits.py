"""LM-head outputs in inference: full-sequence logits of a plain forward, last-position logits in generate.

transformers 5.17 returns logits in the compute dtype (no fp32 upcast in `LlamaForCausalLM.forward`);
generate() passes logits_to_keep=1 and copies the last position to fp32 (`next_token_logits`).
Gemma 2-style soft-capping (logits / cap, tanh, × cap) holds one more full-size copy at a time; so does
Cohere's `logits * logit_scale` and Granite's `logits / logits_scaling` (out of place: both live at once).
Source: transformers 5.17 modeling_llama.py, generation/utils.py (_sample); groundtruth prefill rows
(logits_dtype bfloat16).
"""

from __future__ import annotations

from memfit.core.dtypes import DType
from memfit.core.kv_cache import compute_dtype
from memfit.core.result import Term
from memfit.core.runtimes import profile
from memfit.core.spec import ModelSpec
from memfit.core.workload import Inference


def logits(spec: ModelSpec, workload: Inference, *, positions: int) -> Term:
    """The `logits` Term for `positions` kept per sequence (bytes).

    bytes = batch × positions × vocab × (compute-dtype bytes, or 4 where the runtime computes in fp32)
            [+ one more copy with soft-capping] [+ one with logit scaling]
            [+ batch × vocab × 4 for generate's fp32 last-position copy].
    """
    prof = profile(workload.runtime)
    dt = compute_dtype(spec, workload) if prof.full_logits_dtype_is_compute else DType.FP32
    vocab = spec.vocab_size // workload.parallel.tp if workload.parallel.tp > 1 else spec.vocab_size
    b = workload.batch_size
    head = b * dt.nbytes(positions * vocab)
    parts = [Term(name="lm_head_output", nbytes=head)]
    if spec.final_logit_softcapping:
        parts.append(Term(name="softcap_copy", nbytes=head))
    if spec.logits_scaled:
        parts.append(Term(name="scale_copy", nbytes=head))
    if workload.new_tokens > 0 and prof.last_logits_fp32_copy:
        parts.append(Term(name="next_token_fp32", nbytes=b * spec.vocab_size * 4))
    return Term.group("logits", parts)
