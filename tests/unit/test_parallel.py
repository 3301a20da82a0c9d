"""Per-rank training memory under DDP, ZeRO, FSDP2, TP, PP and offload, against hand arithmetic."""

from __future__ import annotations

from fractions import Fraction

import pytest

from memfit.core.choices import FsdpStrategy, Offload, PipelineSchedule, ZeroStage
from memfit.core.collectives import nccl_bytes
from memfit.core.deepspeed import ZeroConfig
from memfit.core.errors import InvalidWorkload
from memfit.core.parallel import (
    in_flight,
    layer_shapes,
    padded_elements,
    rank_share,
    scale_term,
    shard_elements,
    stage_layers,
    stage_order,
)
from memfit.core.result import Phase, Term
from memfit.core.training import training_phases
from memfit.core.units import MiB
from memfit.core.workload import Parallelism, Training
from memfit.sources.resolve import load_model

L1B_PARAMS = 1_235_814_400
L1B_BYTES = 2 * L1B_PARAMS
L8B_PARAMS = 8_030_261_248


def _phases(model: str, par: Parallelism, **training: object) -> dict[str, Phase]:
    wl = Training(seq_len=training.pop("seq_len", 64), parallel=par, **training)  # type: ignore[arg-type]
    return {str(p.name): p for p in training_phases(load_model(model), wl)[0]}


def test_fsdp_shard_pads_dim0_to_a_multiple_of_world() -> None:
    """GPT-2's [50257, 768] embedding over 8 ranks: 6,283 rows each (50,264 padded), 4,825,344 elements."""
    # ceil(50257 / 8) = 6283; 6283 × 768 = 4,825,344; unsharded padded 8 × that = 38,602,752
    assert shard_elements((50_257, 768), 8) == 4_825_344
    assert padded_elements(((50_257, 768),), 8) == 38_602_752


def test_fsdp_shares_are_padded_shards() -> None:
    """FSDP full over 5 ranks holds ceil(rows / 5) rows of every Llama-3.2-1B tensor, not exactly 1/5."""
    spec = load_model("Llama-3.2-1B")
    share = rank_share(spec, Parallelism(dp=5, fsdp=FsdpStrategy.FULL))
    # embedding 128256 rows → 25,652 per rank (4 padding rows); the tied model has no separate head
    assert share.params > Fraction(1, 5)
    assert share.params * L1B_PARAMS < Fraction(L1B_PARAMS, 5) + 4 * 2048 + 16 * 2 * 5 * 2048


@pytest.mark.parametrize(("par", "params", "grads", "states"), [
    (Parallelism(dp=4), 1, 1, 1),
    (Parallelism(dp=4, zero=ZeroStage.OPTIMIZER), 1, 1, Fraction(1, 4)),
    (Parallelism(dp=4, zero=ZeroStage.GRADIENTS), 1, Fraction(1, 4), Fraction(1, 4)),
    (Parallelism(dp=4, zero=ZeroStage.PARAMETERS), Fraction(1, 4), Fraction(1, 4), Fraction(1, 4)),
    (Parallelism(dp=4, fsdp=FsdpStrategy.SHARD_GRAD_OP), Fraction(1, 4), Fraction(1, 4), Fraction(1, 4)),
    (Parallelism(dp=16, fsdp=FsdpStrategy.HYBRID), Fraction(1, 8), Fraction(1, 8), Fraction(1, 8)),
])
def test_sharding_levels(par: Parallelism, params: Fraction, grads: Fraction, states: Fraction) -> None:
    """ZeRO stages shard states, then grads, then weights; FSDP2 always keeps a parameter shard (the
    unsharded layers of shard-grad-op are extra); hybrid FSDP shards within a node of 8.

    (Llama-3.1-8B's dims divide by 4 and 8, so FSDP's padding is zero here.)"""
    share = rank_share(load_model("Llama-3.1-8B"), par)
    assert (share.params, share.grads, share.states) == (params, grads, states)


def test_tensor_parallel_keeps_norm_weights_whole() -> None:
    """tp=4 on Llama-3.1-8B: Linears and the vocab split four ways, the 65 norm vectors (4096 each) not."""
    # norms: (32 × 2 + 1) × 4096 = 266,240 params whole; the rest / 4
    share = rank_share(load_model("Llama-3.1-8B"), Parallelism(tp=4))
    assert share.params == Fraction((L8B_PARAMS - 266_240) // 4 + 266_240, L8B_PARAMS)


def test_sequence_parallel_splits_the_residual_stream() -> None:
    """Without sequence parallelism norms and layer inputs stay whole on every tp rank."""
    spec = load_model("Llama-3.2-1B")
    assert rank_share(spec, Parallelism(tp=4)).residual_activations == 1
    assert rank_share(spec, Parallelism(tp=4, sequence_parallel=True)).residual_activations == Fraction(1, 4)
    assert rank_share(spec, Parallelism(tp=4)).layer_activations == Fraction(1, 4)


def test_pipeline_first_stage_holds_embeddings_and_most_micro_batches() -> None:
    """Llama-3.2-1B (16 layers, tied) at pp=4 with 8 micro-batches: stage 0 holds layers 0-3, the
    262,668,288-parameter embedding and 4 micro-batches of activations; the last stage 1 micro-batch."""
    spec = load_model("Llama-3.2-1B")
    assert len(stage_layers(spec, 4, 0)) == 4
    assert (in_flight(4, 0, 8), in_flight(4, 3, 8), in_flight(4, 0, 2)) == (4, 1, 2)
    layer_params = sum(d * r for d, r in layer_shapes(spec, spec.layers[0]))
    first = rank_share(spec, Parallelism(pp=4), stage=0, micro_batches=8)
    # embedding 128256 × 2048 = 262,668,288; 4 layers of 60,821,504
    assert first.params == Fraction(262_668_288 + 4 * layer_params, L1B_PARAMS)
    assert first.layer_activations == Fraction(4 * 4, 16)
    assert first.logits == 0


def test_scale_term_rounds_leaves_up() -> None:
    """Each leaf is scaled and rounded up; parents are re-summed."""
    # 10/4 → 3, 6/4 → 2; parent 5
    term = Term.group("x", [Term(name="a", nbytes=10), Term(name="b", nbytes=6)])
    assert scale_term(term, Fraction(1, 4)).flat() == {"a": 3, "b": 2}


@pytest.mark.parametrize(("model", "par", "match"), [
    # valid tp: divides the heads, and divides the KV heads or is a multiple of them (replicas)
    ("Llama-3.2-1B", Parallelism(tp=3),
     r"tp=3 does not split the attention of Llama-3\.2-1B \(32 heads, 8 KV heads\); "
     r"use tp in 1, 2, 4, 8, 16, 32$"),
    ("Qwen2.5-0.5B", Parallelism(tp=7),
     r"tp=7 does not split the attention of Qwen2\.5-0\.5B \(14 heads, 2 KV heads\); use tp in 1, 2, 14$"),
    ("Llama-3.2-1B", Parallelism(pp=17), "pp=17 exceeds num_hidden_layers=16"),
])
def test_impossible_splits_raise(model: str, par: Parallelism, match: str) -> None:
    """A tp that does not split the heads, or more stages than layers, is one InvalidWorkload line."""
    with pytest.raises(InvalidWorkload, match=match):
        rank_share(load_model(model), par)


def test_fsdp_root_unit_is_the_unsharded_embedding_and_head() -> None:
    """Llama-3.1-8B FSDP full over 8 ranks keeps embedding + head + final norm unsharded: 1.96 GiB."""
    # (2 × 128256 × 4096 + 4096) × 2 B = 2,101,354,496 B
    flat = _phases("Llama-3.1-8B", Parallelism(dp=8, fsdp=FsdpStrategy.FULL))["forward"].memory.flat()
    assert flat["weights/root_unit"] == 2_101_354_496
    # sharded parameters: 8,030,261,248 × 2 B / 8 (every dim divides by 8)
    assert flat["weights/parameters"] == 2_007_565_312


def test_fsdp_gathers_one_layer_in_its_dtype_with_its_all_gather_output() -> None:
    """A Llama-3.1-8B decoder layer (218,112,000 params) gathered in bf16 is 436,224,000 B, and its flat
    all-gather output is as large; under AMP (MixedPrecisionPolicy bf16) the gather stays 2 B/param."""
    # q, o 4096²; k, v 1024 × 4096; gate, up, down 14336 × 4096; 2 norms of 4096 → 218,112,000
    for precision in ("bf16", "amp-bf16"):
        phases = _phases("Llama-3.1-8B", Parallelism(dp=8, fsdp=FsdpStrategy.FULL), precision=precision,
                         seq_len=16)
        fwd = phases["forward"].memory.flat()
        assert fwd.get("weights/gathered_unit", 436_224_000) == 436_224_000
        assert fwd["weights/all_gather_buffers"] % 436_224_000 == 0


def test_shard_grad_op_keeps_the_shard_beside_every_unsharded_layer() -> None:
    """FSDP shard-grad-op at forward: the bf16 shard (P/8) plus all 32 layers unsharded plus the root."""
    fwd = _phases("Llama-3.1-8B", Parallelism(dp=8, fsdp=FsdpStrategy.SHARD_GRAD_OP))["forward"].memory.flat()
    # 32 × 436,224,000 = 13,959,168,000
    assert fwd["weights/unsharded_units"] == 13_959_168_000
    assert fwd["weights/parameters"] == 2_007_565_312


def test_ddp_buckets_copy_every_gradient() -> None:
    """DDP over 8 GPUs: its buckets hold a second bf16 copy of Llama-3.2-1B's gradients (2 × P bytes)."""
    opt = _phases("Llama-3.2-1B", Parallelism(dp=8))["optimizer"].memory.flat()
    assert opt["gradients/ddp_buckets"] == L1B_BYTES
    assert opt["gradients/trainable"] == L1B_BYTES


def test_zero2_fp32_gradient_partition_and_ipg_buckets() -> None:
    """ZeRO-2 over 4 GPUs: the step's fp32 gradient partition is 4P/4 = P bytes; DeepSpeed's default
    reduce bucket (5e8 elements, bf16) is 1e9 B, doubled with overlap_comm."""
    phases = _phases("Llama-3.2-1B", Parallelism(dp=4, zero=ZeroStage.GRADIENTS))
    opt = phases["optimizer"].memory.flat()
    assert opt["gradients/fp32_partition"] == L1B_PARAMS
    assert opt["gradients/trainable"] == L1B_BYTES // 4
    assert opt["gradients/ipg_buckets"] == 1_000_000_000
    overlap = Parallelism(dp=4, zero=ZeroStage.GRADIENTS, zero_config=ZeroConfig(overlap_comm=True))
    assert _phases("Llama-3.2-1B", overlap)["optimizer"].memory.flat()[
        "gradients/ipg_buckets"] == 2_000_000_000


def test_zero1_adds_sharded_fp32_master_and_states() -> None:
    """DeepSpeed ZeRO-1 over bf16 params: fp32 master + fp32 AdamW states + fp32 foreach copy, over dp."""
    # master 4P / 4 = P; states (8P + foreach copy 4P) / 4 = 3P
    flat = _phases("Llama-3.2-1B", Parallelism(dp=4, zero=ZeroStage.OPTIMIZER))["optimizer"].memory.flat()
    assert flat["master_weights"] == L1B_PARAMS
    assert flat["optimizer_states"] == 3 * L1B_PARAMS


def test_offloaded_states_move_to_host_per_node() -> None:
    """ZeRO-2 + CPU optimizer offload over 2 GPUs: no states or gradient partition on the GPU; the node's
    RAM holds both ranks' fp32 master, states and fp32 gradients."""
    par = Parallelism(dp=2, zero=ZeroStage.GRADIENTS, offload_optimizer=Offload.CPU)
    opt = _phases("Llama-3.2-1B", par)["optimizer"]
    assert opt.memory.bytes_of("optimizer_states") == 0
    assert opt.memory.bytes_of("master_weights") == 0
    assert opt.memory.flat().get("gradients/trainable", 0) == 0
    # per rank: master 4P/2 + states 8P/2 + fp32 grads 4P/2 = 8P (DeepSpeedCPUAdam steps in place);
    # 2 ranks → 16P
    assert opt.host_bytes == 16 * L1B_PARAMS


def test_nccl_buffers_per_communicator() -> None:
    """One communicator costs 4 MiB × 16 channels × 2 peers = 128 MiB; dp × tp × pp joins three."""
    assert nccl_bytes(Parallelism(dp=8)) == 128 * MiB
    assert nccl_bytes(Parallelism(dp=2, tp=2, pp=2)) == 3 * 128 * MiB
    assert nccl_bytes(Parallelism(dp=16, fsdp=FsdpStrategy.HYBRID)) == 2 * 128 * MiB
    assert _phases("Llama-3.2-1B", Parallelism(dp=8))["forward"].memory.flat()["non_torch/nccl_buffers"] \
        == 128 * MiB


def test_nccl_buffers_of_the_expert_groups() -> None:
    """ep adds its all-to-all (4 MiB × 2 channels from each of ep − 1 peers) and, when dp / ep > 1, the
    expert-data-parallel ring (128 MiB): dp 8 ep 2 → 128 + 1·8 + 128 = 264 MiB; dp 8 ep 8 (one rank per
    expert group) → 128 + 7·8 = 184 MiB."""
    assert nccl_bytes(Parallelism(dp=8, ep=2, fsdp=FsdpStrategy.FULL)) == 264 * MiB
    assert nccl_bytes(Parallelism(dp=8, ep=8, fsdp=FsdpStrategy.FULL)) == 184 * MiB


def test_pipeline_reports_the_more_loaded_stage() -> None:
    """pp=4 with 8 micro-batches: the first stage holds 4 micro-batches of its 4 layers (the whole model's
    layers once) and its sent hidden states; the last holds the tied head's own copy, logits and loss; the
    estimate reports whichever stage peaks higher, and says which."""
    from memfit.core.training import _stage_phases

    spec = load_model("Llama-3.2-1B")
    wl = Training(seq_len=512, grad_accum=8, parallel=Parallelism(pp=4))
    one = training_phases(spec, Training(seq_len=512))[0]
    first, last = (_stage_phases(spec, wl, stage)[0] for stage in (0, 3))
    assert first[1].memory.flat()["activations/layers"] == one[1].memory.flat()["activations/layers"]
    # 4 in flight × 512 tokens × 2048 × 2 B sent on stage 0; one received on stage 3
    assert first[1].memory.flat()["activations/pipeline_buffers"] == 4 * 512 * 2048 * 2
    assert last[1].memory.flat()["activations/pipeline_buffers"] == 512 * 2048 * 2
    phases, notes = training_phases(spec, wl)
    peaks = [max(p.allocated_bytes for p in stage) for stage in (first, last)]
    assert max(p.allocated_bytes for p in phases) == max(peaks)
    assert any(f"stage {3 if peaks[1] > peaks[0] else 0} of 4" in note for note in notes)


def test_lora_adapters_pad_over_their_rank_rows() -> None:
    """LoRA r=16 on every Linear of Llama-3.2-1B under FSDP over 64 ranks: each A (16 rows) pads to 64 rows,
    so a layer's gathered fp32 adapters are 1,687,552 elements (6,750,208 B) beside its bf16 weights."""
    # A: 16 × (2048 × 6 + 8192) = 327,680 → padded ×4 = 1,310,720; B: 16 × (2048 + 512 + 512 + 2048
    # + 8192 + 8192 + 2048) = 376,832 (every fan_out divides by 64); layer bf16 60,821,504 × 2 B
    from memfit.core.workload import Lora

    phases = _phases("Llama-3.2-1B", Parallelism(dp=64, fsdp=FsdpStrategy.FULL), method="lora",
                     lora=Lora(rank=16, alpha=32), seq_len=16)
    flat = phases["forward"].memory.flat()
    unit = 60_821_504 * 2 + 1_687_552 * 4
    assert flat["weights/all_gather_buffers"] % unit == 0
    # this rank's adapters: 16 layers × 1,687,552 / 64 × 4 B = 1,687,552 B
    assert flat["adapters/lora"] == 1_687_552


def test_router_shards_over_its_expert_rows() -> None:
    """Qwen3-30B-A3B's router is a (128, 2048) Parameter: over 8 ranks 16 rows each, no padding."""
    spec = load_model("Qwen3-30B-A3B")
    router = [s for s in layer_shapes(spec, spec.layers[0]) if s == (128, 2048)]
    assert router
    assert shard_elements(router[0], 8) * 8 == 128 * 2048


def test_zero3_keeps_small_parameters_whole() -> None:
    """ZeRO-3 leaves tensors under stage3_param_persistence_threshold (1e5) unpartitioned: Llama-3.1-8B's
    65 norm vectors of 4096 stay whole on each of 8 ranks, beyond the rank's own 1/8 of them."""
    # 65 × 4096 = 266,240 elements; 266,240 − 266,240 / 8 = 232,960 more, × 2 B = 465,920 B
    fwd = _phases("Llama-3.1-8B", Parallelism(dp=8, zero=ZeroStage.PARAMETERS))["forward"].memory.flat()
    assert fwd["weights/persistent_params"] == 465_920


def test_tensor_parallel_keeps_the_linear_inputs_whole() -> None:
    """Llama-3.1-8B at 8,192 tokens, tp=4: q/k/v and gate/up save the whole norm output (replicated, or
    all-gathered under SP), 8192 × 4096 × 2 B × 32 layers = 2 GiB each for attention and MLP; the rest
    splits four ways; the norms split only under SP."""
    spec = load_model("Llama-3.1-8B")

    def layers(par: Parallelism) -> dict[str, int]:
        flat = training_phases(spec, Training(seq_len=8192, parallel=par))[0][1].memory.flat()
        return {k.rsplit("/", 1)[1]: v for k, v in flat.items() if k.startswith("activations/layers/")}

    one, tp = layers(Parallelism()), layers(Parallelism(tp=4))
    sp = layers(Parallelism(tp=4, sequence_parallel=True))
    inputs = 8192 * 4096 * 2 * 32
    assert tp["attention"] == (one["attention"] - inputs) // 4 + inputs
    assert tp["mlp"] == (one["mlp"] - inputs) // 4 + inputs
    assert tp["norms"] == one["norms"]
    # DTensor's sequence parallelism all-gathers before q/k/v and gate/up, which save the gathered input
    assert sp["attention"] == tp["attention"]
    assert sp["norms"] == one["norms"] // 4


def test_vocab_parallel_loss_and_embedding_gradient() -> None:
    """Llama-3.1-8B at 2,048 tokens, tp=2: the vocab-parallel loss adds one fp32 logits shard,
    4 × 2048 × 128,256 / 2 = 525,336,576 B; the untied embedding's gradient spans the whole vocabulary,
    128,256 × 4096 × 2 B = 1,050,673,152 B, half of it beyond the rank's shard, kept until the step."""
    phases = {str(p.name): p for p in training_phases(
        load_model("Llama-3.1-8B"), Training(seq_len=2048, parallel=Parallelism(tp=2)))[0]}
    assert phases["forward"].memory.flat()["logits/loss_parallel_extra"] == 525_336_576
    assert phases["optimizer"].memory.flat()["gradients/embedding_full_vocab"] == 525_336_576


@pytest.mark.parametrize(("schedule", "pp", "stage", "m", "expected", "most"), [
    # 1F1B, stage 1 of 4, 5 micro-batches: warm-up min(5, 4 − 1) = 3 forwards (F0 F1 F2), then B0 F3, B1 F4,
    # then the cooldown B2 B3 B4; held after each op: 1 2 3 2 3 2 3 2 1 0 → at most 3 = pp − stage
    (PipelineSchedule.ONE_F_ONE_B, 4, 1, 5, "F0 F1 F2 B0 F3 B1 F4 B2 B3 B4", 3),
    # the last stage warms up with min(5, 1) = 1: it alternates, holding 1
    (PipelineSchedule.ONE_F_ONE_B, 4, 3, 3, "F0 B0 F1 B1 F2 B2", 1),
    # fewer micro-batches than pp − stage: min(2, 4) = 2 warm-up forwards, no steady part
    (PipelineSchedule.ONE_F_ONE_B, 4, 0, 2, "F0 F1 B0 B1", 2),
    # GPipe: every forward (all 3 held), then every backward, on any stage
    (PipelineSchedule.GPIPE, 2, 1, 3, "F0 F1 F2 B0 B1 B2", 3),
])
def test_stage_order_follows_the_schedule_and_bounds_the_micro_batches_in_flight(
        schedule, pp, stage, m, expected, most) -> None:
    """The order torch.distributed.pipelining's Schedule1F1B / ScheduleGPipe run one stage's micro-batches
    in; in_flight is the most forwards not yet matched by their backward along it."""
    order = stage_order(pp, stage, m, schedule)
    assert " ".join(f"{kind[0].upper()}{index}" for kind, index in order) == expected
    assert in_flight(pp, stage, m, schedule) == most


def test_gpipe_last_stage_keeps_every_earlier_micro_batch_loss() -> None:
    """Llama-3.2-1B, pp 2, 4 micro-batches of 512 tokens under GPipe: the last stage holds all 4 in flight,
    so 3 earlier losses keep their fp32 log_softmax output, 3 × 4 B × 512 × 128,256 = 788,004,864 B, and
    the final norm's saved input is there 4 times; under 1F1B it holds one micro-batch and neither."""
    from memfit.core.training import _stage_phases

    spec = load_model("Llama-3.2-1B")
    gpipe = Training(seq_len=512, grad_accum=4, parallel=Parallelism(pp=2, pp_schedule="gpipe"))
    one_f_one_b = Training(seq_len=512, grad_accum=4, parallel=Parallelism(pp=2))
    forward = _stage_phases(spec, gpipe, 1)[0][1].memory.flat()
    assert forward["activations/earlier_losses"] == 3 * 4 * 512 * 128_256
    reference = _stage_phases(spec, one_f_one_b, 1)[0][1].memory.flat()
    assert "activations/earlier_losses" not in reference
    assert forward["activations/final_norm"] == 4 * reference["activations/final_norm"]
    # received hidden states: 4 in flight × 512 × 2048 × 2 B (1F1B: one)
    assert forward["activations/pipeline_buffers"] == 4 * 512 * 2048 * 2
    # the second micro-batch's loss backward runs beside every gradient of the stage: layers 8-15
    # (8 × 60,821,504) + final norm 2,048 + the head's own copy 262,668,288 = 749,242,368 × 2 B
    backward = _stage_phases(spec, gpipe, 1)[0][2]
    assert backward.at.startswith("second in-flight micro-batch's loss backward")
    assert backward.memory.bytes_of("gradients") == 749_242_368 * 2


def test_pipeline_schedule_needs_a_pipeline_and_training() -> None:
    """pp_schedule orders pipeline stages: refused with pp = 1, and on an inference job; bad names list the
    schedules."""
    from memfit.core.workload import Inference

    with pytest.raises(InvalidWorkload, match=r"^pp_schedule=gpipe orders pipeline stages' micro-batches; "
                                              r"it needs pp > 1$"):
        Parallelism(pp_schedule="gpipe")
    with pytest.raises(InvalidWorkload, match=r"^pp_schedule=gpipe applies to training, not inference$"):
        Inference(prompt_tokens=16, parallel=Parallelism(pp=2, pp_schedule="gpipe"))
    with pytest.raises(InvalidWorkload, match="use one of: 1f1b, gpipe, interleaved"):
        Parallelism(pp=2, pp_schedule="zigzag")
