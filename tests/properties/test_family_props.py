"""Laws of the analytic estimate on every family kind (GQA, sliding windows, MoE, MLA, fused qkv, ALiBi,
sinks, soft-capping, Python LayerNorm): the peak grows with the batch, no term is ever negative, and the
allocated bytes always hold the weights. (LoRA is not always lighter than full fine-tuning: on a tiny model
peft's fp32 adapter inputs outweigh the base's gradients and states.)"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.strategies import family_specs

from memfit.core.choices import AttnImpl, Checkpointing, Method
from memfit.core.errors import InvalidWorkload
from memfit.core.estimate import estimate
from memfit.core.result import Estimate, Term
from memfit.core.spec import ModelSpec
from memfit.core.workload import Inference, Lora, Training

EXAMPLES = 60


def _leaves(term: Term) -> list[Term]:
    return [term] if not term.children else [leaf for child in term.children for leaf in _leaves(child)]


def _sound(est: Estimate) -> None:
    for phase in est.phases:
        assert all(leaf.nbytes >= 0 for leaf in _leaves(phase.memory)), phase.name
        assert phase.allocated_bytes >= phase.memory.bytes_of("weights")


def _training(method: Method, attn: AttnImpl, checkpointing: bool, batch: int, seq: int) -> Training:
    lora = Lora(rank=4, alpha=8, dropout=Fraction(0)) if method is not Method.FULL else None
    return Training(seq_len=seq, batch_size=batch, method=method, lora=lora, attn=attn,
                    checkpointing=Checkpointing.FULL if checkpointing else Checkpointing.NONE)


@settings(max_examples=EXAMPLES, deadline=None)
@given(spec=family_specs(), method=st.sampled_from([Method.FULL, Method.LORA]),
       attn=st.sampled_from([AttnImpl.SDPA, AttnImpl.EAGER]), checkpointing=st.booleans(),
       batch=st.integers(1, 3), seq=st.integers(8, 256), extra=st.integers(1, 3))
def test_training_grows_with_the_batch(spec: ModelSpec, method: Method, attn: AttnImpl, checkpointing: bool,
                                       batch: int, seq: int, extra: int) -> None:
    """Every family: the training peak never falls when the micro-batch grows; no term is negative."""
    wl = _training(method, attn, checkpointing, batch, seq)
    try:
        small = estimate(spec, wl)
    except InvalidWorkload:
        return
    large = estimate(spec, dataclasses.replace(wl, batch_size=batch + extra))
    _sound(small)
    _sound(large)
    assert large.peak.allocated_bytes >= small.peak.allocated_bytes


@settings(max_examples=EXAMPLES, deadline=None)
@given(spec=family_specs(), attn=st.sampled_from([AttnImpl.SDPA, AttnImpl.EAGER]), batch=st.integers(1, 3),
       seq=st.integers(8, 256), new=st.sampled_from([0, 4]), extra=st.integers(1, 3))
def test_inference_grows_with_the_batch(spec: ModelSpec, attn: AttnImpl, batch: int, seq: int, new: int,
                                        extra: int) -> None:
    """Every family: the inference peak never falls when the batch grows; no term is negative. (Not the
    prompt: SDPA's kernel choice can make a longer prompt cheaper, e.g. fp32 GQA runs math without a mask
    and the memory-efficient kernel with one, once a sliding window is shorter than the prompt.)"""
    wl = Inference(prompt_tokens=seq, new_tokens=new, batch_size=batch, attn=attn)
    try:
        small = estimate(spec, wl)
    except InvalidWorkload:
        return
    large = estimate(spec, dataclasses.replace(wl, batch_size=batch + extra))
    _sound(small)
    _sound(large)
    assert large.peak.allocated_bytes >= small.peak.allocated_bytes
