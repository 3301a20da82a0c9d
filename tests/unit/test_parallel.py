"""Per-rank shares under ZeRO, FSDP, TP, PP and offload, and their effect on training phases."""

from __future__ import annotations

from fractions import Fraction

import pytest

from memfit.core.choices import FsdpStrategy, Offload, PhaseName, ZeroStage
from memfit.core.errors import InvalidWorkload
from memfit.core.parallel import rank_share, scale_term
from memfit.core.result import Term
from memfit.core.training import training_phases
from memfit.core.workload import Parallelism, Training
from memfit.sources.resolve import load_model

L1B_BYTES = 2 * 1_235_814_400


@pytest.mark.parametrize(("par", "weights", "grads", "states"), [
    (Parallelism(dp=4), 1, 1, 1),
    (Parallelism(dp=4, zero=ZeroStage.OPTIMIZER), 1, 1, Fraction(1, 4)),
    (Parallelism(dp=4, zero=ZeroStage.GRADIENTS), 1, Fraction(1, 4), Fraction(1, 4)),
    (Parallelism(dp=4, zero=ZeroStage.PARAMETERS), Fraction(1, 4), Fraction(1, 4), Fraction(1, 4)),
    (Parallelism(dp=4, fsdp=FsdpStrategy.SHARD_GRAD_OP), 1, Fraction(1, 4), Fraction(1, 4)),
    (Parallelism(dp=16, fsdp=FsdpStrategy.HYBRID), Fraction(1, 8), Fraction(1, 8), Fraction(1, 8)),
    (Parallelism(tp=2, pp=2), Fraction(1, 4), Fraction(1, 4), Fraction(1, 4)),
])
def test_rank_shares(par: Parallelism, weights: Fraction, grads: Fraction, states: Fraction) -> None:
    """ZeRO stages shard states, then grads, then weights; tp·pp divide the model; hybrid shards per node."""
    share = rank_share(load_model("Llama-3.2-1B"), par)
    assert (share.weights, share.gradients, share.optimizer_states) == (weights, grads, states)


def test_sequence_parallel_splits_the_residual_stream() -> None:
    """Without sequence parallelism norms and layer inputs stay whole on every tp rank."""
    spec = load_model("Llama-3.2-1B")
    assert rank_share(spec, Parallelism(tp=4)).residual_activations == 1
    assert rank_share(spec, Parallelism(tp=4, sequence_parallel=True)).residual_activations == Fraction(1, 4)


@pytest.mark.parametrize(("model", "par", "match"), [
    ("Llama-3.2-1B", Parallelism(tp=3),
     "tp=3 does not divide num_attention_heads=32 of Llama-3.2-1B; use tp in 1, 2, 4"),
    ("Qwen2.5-0.5B", Parallelism(tp=7),
     "tp=7 does not divide num_kv_heads=2 of Qwen2.5-0.5B; use tp in 1, 2"),
    ("Llama-3.2-1B", Parallelism(pp=17), "pp=17 exceeds num_hidden_layers=16"),
])
def test_impossible_splits_raise(model: str, par: Parallelism, match: str) -> None:
    """A tp that does not split the heads, or more stages than layers, is one InvalidWorkload line."""
    with pytest.raises(InvalidWorkload, match=match):
        rank_share(load_model(model), par)


def test_scale_term_rounds_leaves_up() -> None:
    """Each leaf is scaled and rounded up; parents are re-summed."""
    # 10/4 → 3, 6/4 → 2; parent 5
    term = Term.group("x", [Term(name="a", nbytes=10), Term(name="b", nbytes=6)])
    assert scale_term(term, Fraction(1, 4)).flat() == {"a": 3, "b": 2}


def test_zero1_adds_sharded_fp32_master_and_states() -> None:
    """DeepSpeed ZeRO-1 over bf16 params: fp32 master + fp32 AdamW states + fp32 foreach copy, over dp."""
    # optimizer phase: weights 2P + grads 2P + (master 4P + states 8P + copy 4P) / 4 = 8P, P = 1,235,814,400
    spec = load_model("Llama-3.2-1B")
    wl = Training(seq_len=64, parallel=Parallelism(dp=4, zero=ZeroStage.OPTIMIZER))
    opt = {p.name: p for p in training_phases(spec, wl)[0]}[PhaseName.OPTIMIZER]
    flat = opt.memory.flat()
    assert flat["master_weights"] == 2 * L1B_BYTES // 4
    assert flat["optimizer_states"] == 6 * L1B_BYTES // 4


def test_offloaded_states_move_to_host() -> None:
    """Offloading the optimizer leaves no states on the GPU and reports them as host bytes."""
    spec = load_model("Llama-3.2-1B")
    par = Parallelism(dp=2, zero=ZeroStage.GRADIENTS, offload_optimizer=Offload.CPU)
    wl = Training(seq_len=64, parallel=par)
    opt = {p.name: p for p in training_phases(spec, wl)[0]}[PhaseName.OPTIMIZER]
    assert opt.memory.bytes_of("optimizer_states") == 0
    # host: (master 4P + states 8P) / 2 = 6P = 3 × L1B_BYTES
    assert opt.host_bytes == 3 * L1B_BYTES
