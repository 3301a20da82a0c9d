"""Expert parallelism (Parallelism.ep): per-rank expert bytes for training and vLLM, against hand arithmetic;
validation; the vLLM launch flag."""

from __future__ import annotations

from fractions import Fraction

import pytest

from memfit.core.choices import FsdpStrategy, Runtime, ZeroStage
from memfit.core.collectives import GradBytes, collectives, moment_terms
from memfit.core.dtypes import QUANTS, DType
from memfit.core.errors import InvalidWorkload
from memfit.core.families import spec_from_config
from memfit.core.launch import vllm_command
from memfit.core.parallel import layer_shapes, unit_padded_elements
from memfit.core.result import Phase
from memfit.core.spec import ModelSource, ModelSpec, MoeSpec
from memfit.core.training import training_phases
from memfit.core.vllm import vllm_serve_flags
from memfit.core.vllm_profile import mlp_block_bytes
from memfit.core.weights import weight_tensor_groups, weights_tree_groups
from memfit.core.workload import Inference, Lora, Parallelism, Training
from memfit.sources.resolve import load_model

TINY_MOE = {"model_type": "qwen3_moe", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 100,
            "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 96,
            "max_position_embeddings": 512}
# Parameters of TINY_MOE (Qwen3-MoE, untied head):
#   embeddings 100 × 64 = 6,400; lm_head 6,400; final norm 64
#   per layer: q 64·64 = 4,096, k 64·32 = 2,048, v 2,048, o 4,096 → 12,288; q/k norms 16 + 16 = 32;
#     input/post norms 64 + 64 = 128; router 4 × 64 = 256;
#     experts gate_up (4, 192, 64) = 49,152 + down (4, 64, 96) = 24,576 → 73,728
#     → 86,432 per layer, 172,864 for 2 layers
#   total 6,400 + 6,400 + 64 + 172,864 = 185,728; routed experts 2 × 73,728 = 147,456; the rest 38,272
EXPERT_PARAMS = 147_456
DENSE_PARAMS = 38_272


def _tiny_moe() -> ModelSpec:
    return spec_from_config(TINY_MOE, name="tiny-moe", source=ModelSource(kind="config", ref="t"))


def _optimizer_phase(par: Parallelism) -> dict[str, int]:
    phases = training_phases(_tiny_moe(), Training(seq_len=64, parallel=par))[0]
    step: Phase = phases[3]
    return step.memory.flat()


def test_ddp_ep4_holds_a_quarter_of_the_experts() -> None:
    """DDP over 4 ranks with ep=4: every rank keeps the non-expert parameters whole and 1 of the 4 experts,
    with its bf16 gradients and bf16 AdamW moments."""
    # elements per rank: 38,272 + 147,456 / 4 = 75,136 → bf16 150,272 B (one replica: 371,456 B)
    flat = _optimizer_phase(Parallelism(dp=4, ep=4))
    assert flat["weights/parameters"] == 150_272
    assert flat["gradients/trainable"] == 150_272
    # exp_avg + exp_avg_sq in the bf16 parameter dtype: 2 × 2 B × 75,136
    assert flat["optimizer_states/states"] == 300_544


def test_zero2_ep2_shards_experts_over_the_expert_data_parallel_group() -> None:
    """ZeRO-2, dp=4, ep=2: parameters whole but experts halved; gradients of the non-experts over 4 ranks,
    of the rank's experts over the dp / ep = 2 ranks of its expert-data-parallel group (DeepSpeed-MoE)."""
    # parameters: 38,272 + 147,456 / 2 = 112,000 elements → 224,000 B
    # gradients: 38,272 / 4 = 9,568 + (147,456 / 2) / 2 = 36,864 → 46,432 elements → 92,864 B
    flat = _optimizer_phase(Parallelism(dp=4, ep=2, zero=ZeroStage.GRADIENTS))
    assert flat["weights/parameters"] == 224_000
    assert flat["gradients/trainable"] == 92_864


def test_fsdp_ep4_gathers_only_the_local_experts() -> None:
    """FSDP2 full, dp=4, ep=4 (torchtitan): the shard is the same 1/4 as without EP, but a layer's
    all-gather spans the expert-data-parallel group of 1 rank: only the non-expert tensors are gathered."""
    spec = _tiny_moe()
    # non-expert layer tensors padded over 4 ranks: 12,288 + 32 + 128 + 256 = 12,704 (all rows divide);
    # the rank's expert (1, 192·64) + (1, 64·96) = 18,432, not gathered → 31,136 elements (86,432 without EP)
    assert unit_padded_elements(spec, spec.layers[0], Parallelism(dp=4, fsdp=FsdpStrategy.FULL, ep=4)) \
        == 31_136
    assert unit_padded_elements(spec, spec.layers[0], Parallelism(dp=4, fsdp=FsdpStrategy.FULL)) == 86_432
    flat = _optimizer_phase(Parallelism(dp=4, fsdp=FsdpStrategy.FULL, ep=4))
    # shard: 38,272 / 4 + 147,456 / 4 = 46,432 elements → 92,864 B
    assert flat["weights/parameters"] == 92_864


def test_fsdp_ep_gathers_experts_as_a_unit_of_their_own() -> None:
    """FSDP2 full, dp=4, ep=2, bf16: the routed experts are a unit over the dp / ep = 2 ranks of their
    expert-data-parallel group, gathered after the layer's dense unit, so the flat all-gather outputs held
    differ by moment (torchtitan's apply_fsdp; FSDP2 frees the previous output at each copy-out)."""
    spec = _tiny_moe()
    par = Parallelism(dp=4, fsdp=FsdpStrategy.FULL, ep=2)
    grads = GradBytes(layer=0, head=0, root=0, total=0, gather_bytes=2, grad_bytes=2, reduce_bytes=2,
                      largest_tensor=0, largest_grad=0)
    c = collectives(spec, par, stage=0, grads=grads)
    # experts: the rank's 2 experts (2, 192·64) + (2, 64·96) = 36,864 elements over 2 ranks, no padding
    # → 73,728 B; dense: 12,704 elements over 4 ranks (as in the ep=4 test) → 25,408 B
    assert (c.expert_buffer, c.unit_buffer) == (73_728, 25_408)

    def buffers(moment: str) -> int:
        weights = next(t for t in moment_terms(c, moment) if t.name == "weights")
        return weights.bytes_of("all_gather_buffers")

    assert buffers("forward_copy_out") == 73_728 + 25_408     # the dense output beside the experts' one
    assert buffers("forward_loss") == 73_728                  # the experts were the last unit copied out
    assert buffers("backward_start") == 25_408                # the last layer's dense unit prefetched


def test_tensor_parallel_keeps_mla_latent_projections_whole() -> None:
    """tp=2 on DeepSeek-V2-Lite: q_proj, kv_b_proj and o_proj are split, kv_a_proj_with_mqa (2048 → 512 +
    64) and the router (64 × 2048) stay whole on every rank (transformers' deepseek_v2 tp plan)."""
    spec = load_model("DeepSeek-V2-Lite")
    layer = spec.layers[1]
    split = layer_shapes(spec, layer, tp=2, experts=False)
    assert (576, 2048) in split                                # kv_a_proj_with_mqa: (fan_out, fan_in)
    assert (576, 1024) not in split
    assert (64, 2048) in split                                 # the router
    assert (2048, 1024) in split                               # o_proj: 2048 of 16 · 128 inputs, halved


def test_all_to_all_buffers_are_their_own_term() -> None:
    """ep > 1 adds the dispatch and combine buffers (2 × tokens × top_k × hidden, bf16) to the layer peak."""
    # 2 × (1 × 64 tokens) × top_k 2 × hidden 64 × 2 B = 32,768 B
    phases = training_phases(_tiny_moe(), Training(seq_len=64, parallel=Parallelism(dp=4, ep=4)))[0]
    assert phases[1].memory.flat()["activations/ep_all_to_all"] == 32_768
    plain = training_phases(_tiny_moe(), Training(seq_len=64, parallel=Parallelism(dp=4)))[0]
    assert "activations/ep_all_to_all" not in plain[1].memory.flat()


def _vllm_weights(tp: int, ep: int) -> dict[str, int]:
    groups = weight_tensor_groups(_tiny_moe(), dtype=DType.BF16, quant=QUANTS["none"], runtime=Runtime.VLLM,
                                  tp=tp, ep=ep)
    return weights_tree_groups(groups).flat()


def test_vllm_expert_parallel_places_whole_experts() -> None:
    """vLLM, tp=2 with --enable-expert-parallel (ep = 2): 2 whole experts per rank, the same bytes as
    slicing all 4 experts by tp; attention stays tp-sliced in both."""
    # 147,456 expert weights × 2 B / 2 ranks = 147,456 B either way
    with_ep, without = _vllm_weights(tp=2, ep=2), _vllm_weights(tp=2, ep=1)
    assert with_ep["layers/experts"] == without["layers/experts"] == 147_456
    # attention: 2 layers × 12,288 × 2 B / 2 = 24,576, plus the whole q/k norms 2 × 32 × 2 B = 128
    assert with_ep["layers/attention"] == without["layers/attention"] == 24_704
    # ep = 4 (tp 2 × dp 2): 1 expert per rank, 147,456 × 2 B / 4 = 73,728 B
    assert _vllm_weights(tp=2, ep=4)["layers/experts"] == 73_728


def test_vllm_expert_parallel_profile_keeps_the_whole_expert_width() -> None:
    """With EP the fused-MoE workspaces are sized for the whole expert (N = 2 × 96), not N / tp."""
    moe = _tiny_moe().layers[0].mlp
    assert isinstance(moe, MoeSpec)
    # 8 tokens, hidden 64, top_k 2, 4 experts, tp 2; elements = router logits 8·4 = 32 + cache13 + cache2
    #   + output 8·64 = 512 + all-reduce output 512; routing 8 · 2 · 12 B = 192 B
    # tp slices: N = 2·48 = 96: cache13 = 8·2·max(96, 64) = 1,536, cache2 = 8·2·48 = 768
    #   → 3,360 elements × 2 B + 192 = 6,912 B
    # EP: N = 192: cache13 = 16·192 = 3,072, cache2 = 16·96 = 1,536 → 5,664 × 2 B + 192 = 11,520 B
    assert mlp_block_bytes(moe, tokens=8, hidden=64, tp=2, dtype=DType.BF16, fp8_activations=False) == 6_912
    assert mlp_block_bytes(moe, tokens=8, hidden=64, tp=2, dtype=DType.BF16, fp8_activations=False,
                           ep=2) == 11_520


@pytest.mark.parametrize(("make", "match"), [
    (lambda: Training(parallel=Parallelism(dp=4, ep=3)), "ep=3 must divide the data-parallel ranks"),
    (lambda: Training(parallel=Parallelism(dp=4, tp=2, ep=2)), "ep=2 with tp=2 is not modelled"),
    (lambda: Inference(parallel=Parallelism(tp=2, ep=2)), "ep=2 applies to runtime=vllm"),
    (lambda: Inference(runtime="vllm", parallel=Parallelism(tp=4, ep=2)), "must equal tp × dp = 4"),
])
def test_ep_settings_refused_on_construction(make, match: str) -> None:
    """An ep not carved out of dp (training) or not equal to tp × dp (vLLM) is one InvalidWorkload line."""
    with pytest.raises(InvalidWorkload, match=match):
        make()


def test_ep_needs_moe_layers_and_must_divide_the_experts() -> None:
    """ep on a dense model, or an ep that does not divide the routed experts, is refused at estimate time."""
    with pytest.raises(InvalidWorkload, match="has no MoE layers"):
        training_phases(load_model("Llama-3.2-1B"), Training(seq_len=64, parallel=Parallelism(dp=2, ep=2)))
    with pytest.raises(InvalidWorkload, match=r"does not divide the 4 routed experts of tiny-moe; use ep in "
                                              r"1, 2, 4$"):
        training_phases(_tiny_moe(), Training(seq_len=64, parallel=Parallelism(dp=8, ep=8)))


def test_vllm_launch_lines_enable_expert_parallel() -> None:
    """Both vLLM emitters add --enable-expert-parallel (and the dp size that makes ep = tp × dp)."""
    spec = _tiny_moe()
    wl = Inference(runtime="vllm", parallel=Parallelism(tp=2, ep=2))
    assert "--enable-expert-parallel" in vllm_command(spec, wl)
    assert "--enable-expert-parallel" in vllm_serve_flags(spec, wl)
    wide = Inference(runtime="vllm", parallel=Parallelism(tp=2, dp=2, ep=4))
    assert "--data-parallel-size 2 --enable-expert-parallel" in vllm_command(spec, wide)
    assert "--enable-expert-parallel" not in vllm_command(spec, Inference(runtime="vllm",
                                                                          parallel=Parallelism(tp=2)))


def test_stored_checkpoint_splits_routed_experts_by_ep_and_the_rest_by_tp() -> None:
    """A stored fp8 checkpoint under vLLM tp=2 with EP over 4 ranks: routed expert tensors / 4, a shared
    expert's and attention's / 2."""
    from dataclasses import replace

    from memfit.core.spec import CheckpointInfo, TensorInfo

    tensors = (
        TensorInfo(name="model.layers.0.mlp.experts.0.down_proj.weight", dtype="F8_E4M3", shape=(64, 96),
                   nbytes=6_144),
        TensorInfo(name="model.layers.0.mlp.shared_experts.down_proj.weight", dtype="F8_E4M3",
                   shape=(64, 96), nbytes=6_144),
        TensorInfo(name="model.layers.0.self_attn.q_proj.weight", dtype="F8_E4M3", shape=(64, 64),
                   nbytes=4_096),
    )
    spec = replace(_tiny_moe(), checkpoint=CheckpointInfo(format="safetensors", tensors=tensors,
                                                          quant_method="fp8"))
    stored = [b for group, _ in weight_tensor_groups(spec, dtype=DType.BF16, quant=QUANTS["none"],
                                                     runtime=Runtime.VLLM, tp=2, ep=4) for _, b in group]
    # 6,144 / 4 = 1,536 (routed); 6,144 / 2 = 3,072 (shared expert); 4,096 / 2 = 2,048 (attention)
    assert stored == [1_536, 3_072, 2_048]


def test_strategy_search_tries_expert_parallel_for_moe_only() -> None:
    """`plan --gpu-counts 8` lists DDP + EP 8 and FSDP full + EP 8 for Qwen3-30B-A3B (128 experts), where
    DDP + EP holds 1/8 of the experts' weights (bf16) and FSDP + EP the same shard as FSDP; none for a dense
    model."""
    from memfit import api

    plan = api.plan("Qwen3-30B-A3B", Training(seq_len=4096), gpu="H100-SXM-80GB", gpu_counts=(8,))
    by_label = {s.label: s for s in plan.strategies}
    ddp_ep = by_label["DDP + EP 8"].estimate.phase("load").memory.flat()
    # non-expert parameters (attention, routers, norms, embeddings, head) whole + routed experts / 8:
    # Qwen3-30B-A3B: 48 layers × 128 experts × 3 × 2048 × 768 = 28,991,029,248 routed; 30,532,122,624 total
    # → 1,541,093,376 + 3,623,878,656 = 5,164,972,032 params × 2 B = 10,329,944,064 B
    assert ddp_ep["weights/parameters"] == 10_329_944_064
    assert "FSDP full + EP 8" in by_label
    dense = api.plan("Llama-3.2-1B", Training(seq_len=512), gpu="H100-SXM-80GB", gpu_counts=(2,))
    assert not any("EP" in s.label for s in dense.strategies)


def test_lora_on_fused_experts_adapts_the_ranks_own_experts() -> None:
    """peft wraps each rank's num_experts / ep experts (the trace shrinks them before get_peft_model): with
    4 experts, ep=2 and rank 8, gate_up_proj's A has 2 · 2 · 8 = 32 rows (64 without ep) of hidden 64, and
    down_proj's A 2 · 8 = 16 rows of intermediate 96. Source: peft 0.21 ParamWrapper (r × experts rows)."""
    from memfit.core.optimizers import trainable_tensors

    def a_rows(ep: int) -> dict[str, int]:
        wl = Training(seq_len=16, method="lora", lora=Lora(rank=8, alpha=16, dropout=Fraction(0)),
                      parallel=Parallelism(dp=2, ep=ep))
        return {t.name: t.rows for t in trainable_tensors(_tiny_moe(), wl, frozenset())
                if t.name.endswith("lora_A")}

    assert a_rows(2)["gate_up_proj.lora_A"] == 32
    assert a_rows(1)["gate_up_proj.lora_A"] == 64
    assert a_rows(2)["down_proj.lora_A"] == 16
