"""Multi-rank trace on a tiny two-layer Llama: FSDP2 against torch's own FSDPMemTracker on the same run, and
the per-rank terms end to end (worker subprocess, fake process group, fake-CUDA shim)."""

import json
import subprocess
import sys

import pytest
from tests.helpers import requires_transformers

from memfit.core.choices import Checkpointing, Method, PhaseName, Precision
from memfit.core.families import spec_from_config
from memfit.core.result import _workload_to_dict
from memfit.core.spec import ModelSource
from memfit.core.workload import Lora, Parallelism, Training

pytestmark = requires_transformers

TINY = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
    "torch_dtype": "float32",
}

EXACT_POINTS = ("first_unshard", "forward_end", "backward_end", "optimizer_end")
"""Points where every category must agree byte for byte."""

RETAGGED = ("Sharded Grad", "Unsharded Grad", "Other")
"""Inside backward a storage's category is final only later: FSDPMemTracker tags a unit's gradients when
its post-backward hook runs, memfit when the reduce-scatter produces them (a tag holds for the storage's
whole life). At those points the sum of these categories must agree, each one need not."""


def _spec():
    return spec_from_config(TINY, name="tiny-llama", source=ModelSource(kind="config", ref="tiny-llama",
                                                                      config_json=json.dumps(TINY)))


def _crosscheck(workload):
    request = {"config_json": json.dumps(TINY), "workload": _workload_to_dict(workload)}
    done = subprocess.run([sys.executable, "-m", "memfit.trace.crosscheck"], input=json.dumps(request),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])["points"]


CROSSCHECK_CASES = [
    pytest.param(Training(seq_len=32, batch_size=2, precision=Precision.BF16,
                          parallel=Parallelism(dp=2, fsdp="full")), id="full-dp2-bf16"),
    pytest.param(Training(seq_len=32, batch_size=2, precision=Precision.AMP_BF16,
                          parallel=Parallelism(dp=4, fsdp="shard-grad-op")), id="shard-grad-op-dp4-amp"),
    pytest.param(Training(seq_len=32, batch_size=2, precision=Precision.AMP_BF16, method=Method.LORA,
                          lora=Lora(rank=4, alpha=8), checkpointing=Checkpointing.FULL,
                          parallel=Parallelism(dp=4, fsdp="full")), id="full-dp4-lora-ckpt"),
    pytest.param(Training(seq_len=32, batch_size=2, precision=Precision.AMP_BF16,
                          parallel=Parallelism(dp=16, fsdp="hybrid")), id="hybrid-dp16-amp",
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("workload", CROSSCHECK_CASES)
def test_fsdp_model_state_agrees_with_fsdp_mem_tracker(workload):
    """Sharded and unsharded parameters, all-gather and reduce-scatter buffers, gradients and optimizer
    states: memfit's tracker and torch's FSDPMemTracker agree exactly on one FSDP2 step (the issue asks
    for 1 %), at the step's phase ends, inside it and at its peak."""
    points = _crosscheck(workload)
    assert set(EXACT_POINTS) <= set(points)
    for name in EXACT_POINTS:
        assert points[name]["memfit"] == points[name]["torch"], name
    for name in ("first_post_backward", "peak"):
        mine, theirs = points[name]["memfit"], points[name]["torch"]
        for category in mine:
            if category not in RETAGGED:
                assert mine[category] == theirs[category], (name, category)
        assert sum(mine[c] for c in RETAGGED) == sum(theirs[c] for c in RETAGGED), name
    assert points["first_unshard"]["torch"]["All Gather"] > 0           # the points exercise every buffer
    assert points["first_post_backward"]["torch"]["Reduce Scatter"] > 0


def test_fsdp_local_shards_are_padded_dim0_chunks():
    """fsdp=full over 3 ranks, fp32: each parameter's shard is ceil(dim0 / 3) rows, one 512-byte-rounded
    storage per parameter; each unit's gradient shard one storage; AdamW's two moments per shard.

    Shards (rows × cols × 4 B, rounded to 512): embed and lm_head 86·64·4 = 22,016 each; final norm
    22·4 = 88 → 512. Per layer: q, o 22·64·4 = 5,632; k, v 11·64·4 = 2,816 → 3,072; gate, up 43·64·4 =
    11,008 → 11,264; down 22·128·4 = 11,264; two norms 512 each: 52,224. 2 · 52,224 + 2 · 22,016 + 512 =
    148,992.
    Gradients, one flat reduce-scatter output per unit: layer (1,408 + 704 + 704 + 1,408 + 2,752 + 2,752 +
    2,816 + 22 + 22) · 4 = 50,352 → 50,688; root (5,504 + 5,504 + 22) · 4 = 44,128 → 44,544;
    2 · 50,688 + 44,544 = 145,920. States: 2 · 148,992 = 297,984.
    """
    from memfit.trace.engine import trace_estimate

    workload = Training(seq_len=16, precision=Precision.FP32, parallel=Parallelism(dp=3, fsdp="full"))
    optimizer = trace_estimate(_spec(), workload, None).phase(PhaseName.OPTIMIZER).memory
    assert optimizer.child("weights").bytes_of("local_shards") == 148_992
    assert optimizer.child("gradients").bytes_of("sharded") == 145_920
    assert optimizer.child("optimizer_states").bytes_of("states") == 297_984


def test_fsdp_gathers_the_root_in_the_compute_dtype_and_keeps_it_through_forward():
    """AMP over 2 ranks: the root unit (embeddings, final norm, LM head) is gathered in bf16 and not
    resharded after forward, so the forward peak holds it: embed and lm_head 256·64·2 = 32,768 each,
    norm 64·2 = 128 → 512: 66,048 B of unsharded parameters at least. The shards stay fp32 halves:
    embed, lm_head 128·64·4 = 32,768 each; final norm 32·4 = 128 → 512; per layer q, o 8,192, k, v 4,096,
    gate, up, down 16,384, two norms 512 → 74,752; 2 · 32,768 + 512 + 2 · 74,752 = 215,552."""
    from memfit.trace.engine import trace_estimate

    workload = Training(seq_len=16, precision=Precision.AMP_BF16, parallel=Parallelism(dp=2, fsdp="full"))
    forward = trace_estimate(_spec(), workload, None).phase(PhaseName.FORWARD).memory
    assert forward.child("weights").bytes_of("unsharded_params") >= 66_048
    assert forward.child("weights").bytes_of("local_shards") == 215_552


def test_ddp_adds_one_bucket_the_size_of_the_gradients():
    """DDP over 2 ranks, fp32: the 427,264 B of parameters fit DDP's 1 MiB first bucket, so the Reducer
    holds one flat bucket, 427,264 → 427,520 B, beside the `.grad` tensors at the optimizer step.

    Parameters: embed, lm_head 256·64·4 = 65,536 each; per layer q, o 16,384; k, v 8,192; gate, up, down
    32,768; norms 256 each → 147,968; final norm 256: 2 · 65,536 + 2 · 147,968 + 256 = 427,264.
    The `.grad` tensors are rounded one by one: five 256 B norms take 512 B each, 428,544 B.
    """
    from memfit.trace.engine import trace_estimate

    workload = Training(seq_len=16, precision=Precision.FP32, parallel=Parallelism(dp=2))
    gradients = trace_estimate(_spec(), workload, None).phase(PhaseName.OPTIMIZER).memory.child("gradients")
    assert gradients.bytes_of("ddp_buckets") == 427_520
    assert gradients.bytes_of("param_grads") == 428_544


def test_tensor_parallel_splits_linears_and_leaves_norms_whole():
    """tp=2, fp32: q/k/v, gate/up split by rows, o/down by columns, embed and lm_head by vocab rows; the
    norms and rotary buffers stay whole.

    embed, lm_head 128·64·4 = 32,768 each; per layer q 32·64·4 = 8,192, k, v 16·64·4 = 4,096,
    o 64·32·4 = 8,192, gate, up 64·64·4 = 16,384, down 64·64·4 = 16,384 → 73,728; five norms
    64·4 = 256 → 512 each; two rotary buffers 512: 2 · 32,768 + 2 · 73,728 + 5 · 512 + 2 · 512 = 216,576.
    """
    from memfit.trace.engine import trace_estimate

    workload = Training(seq_len=16, precision=Precision.FP32, parallel=Parallelism(tp=2))
    optimizer = trace_estimate(_spec(), workload, None).phase(PhaseName.OPTIMIZER).memory
    assert optimizer.bytes_of("weights") == 216_576


def test_sequence_parallelism_shrinks_activations():
    """tp=2 with sequence parallelism keeps the norms' inputs and the residual stream split on the
    sequence: the forward holds fewer activation bytes than tp=2 alone."""
    from memfit.trace.engine import trace_estimate

    def forward_activations(sequence_parallel):
        workload = Training(seq_len=64, precision=Precision.FP32,
                            parallel=Parallelism(tp=2, sequence_parallel=sequence_parallel))
        return trace_estimate(_spec(), workload, None).phase(PhaseName.FORWARD).memory.bytes_of("activations")

    assert forward_activations(True) < forward_activations(False)


def test_pipeline_reports_the_most_loaded_stage_with_its_own_weights():
    """pp=2, fp32, 4 micro-batches: stage 0 holds the embeddings and layer 0 and 2 micro-batches in flight,
    stage 1 layer 1, the final norm, the LM head and 1 micro-batch; the trace names every stage's peak and
    reports the largest. Stage 0's weights: embed 256·64·4 = 65,536; layer 0 q, o 16,384, k, v 8,192,
    gate, up, down 32,768, two norms 256 → 512: 148,480; two rotary buffers 512: 215,040. Stage 1's:
    148,480 + final norm 512 + lm_head 65,536 + 1,024 = 215,552."""
    from memfit.trace.engine import trace_estimate

    workload = Training(seq_len=32, precision=Precision.FP32, grad_accum=4, parallel=Parallelism(pp=2))
    est = trace_estimate(_spec(), workload, None)
    note = next(a for a in est.assumptions if a.startswith("pipeline stage"))
    reported = int(note.split()[2])
    expected_weights = {0: 215_040, 1: 215_552}[reported]
    assert est.phase(PhaseName.OPTIMIZER).memory.bytes_of("weights") == expected_weights
    assert "peak allocated per stage: 0: " in note
    assert ", 1: " in note


def test_pipeline_stage_runs_later_micro_batches_beside_earlier_gradients():
    """pp=2, fp32, 3 micro-batches under 1F1B: the last stage holds one micro-batch (F0 B0 F1 B1 F2 B2), so
    its second and third forwards run beside the gradients B0 left, one per parameter, each rounded up to
    512 B: layer 1 148,480 B (as its weights above) + final norm 512 + lm_head 65,536 = 214,528 B. Stage 0
    warms up with 2 forwards (F0 F1 B0 F2 B1 B2): its third forward too. With 1 micro-batch no forward sees
    a gradient."""
    from memfit.trace.engine import trace_estimate

    def forward_gradients(micro_batches):
        workload = Training(seq_len=32, precision=Precision.FP32, grad_accum=micro_batches,
                            parallel=Parallelism(pp=2))
        est = trace_estimate(_spec(), workload, None)
        stage = int(next(a for a in est.assumptions if a.startswith("pipeline stage")).split()[2])
        return stage, est.phase(PhaseName.FORWARD).memory.bytes_of("gradients")

    assert forward_gradients(1)[1] == 0
    stage, gradients = forward_gradients(3)
    # stage 0: embed 16,384 · 4 B = 65,536 + layer 0 148,480 = 214,016
    assert gradients == {0: 214_016, 1: 214_528}[stage]


def test_interleaved_pipeline_rank_runs_its_two_chunks():
    """A 4-layer tiny model, pp=2, 2 chunks per rank, fp32, 4 micro-batches: rank 0 holds virtual stages 0
    and 2 (embeddings, layers 0 and 2), rank 1 stages 1 and 3 (layers 1 and 3, final norm, LM head), each
    chunk its own copy of the two rotary buffers (512 B each). Rank 0's weights: embed 65,536 + 2 × 148,480
    + 2 × 1,024 = 364,544; rank 1's: 2 × 148,480 + final norm 512 + lm_head 65,536 + 2 × 1,024 = 365,056.
    The trace names interleaved 1F1B and each rank's peak; the analytic engine reports the same rank."""
    from memfit.core.training import training_phases
    from memfit.trace.engine import trace_estimate

    config = {**TINY, "num_hidden_layers": 4}
    spec = spec_from_config(config, name="tiny-llama-4", source=ModelSource(
        kind="config", ref="tiny-llama-4", config_json=json.dumps(config)))
    workload = Training(seq_len=32, precision=Precision.FP32, grad_accum=4,
                        parallel=Parallelism(pp=2, pp_schedule="interleaved", pp_virtual_stages=2))
    est = trace_estimate(spec, workload, None)
    note = next(a for a in est.assumptions if a.startswith("pipeline stage"))
    assert "interleaved 1F1B over 2 model chunks per rank" in note
    reported = int(note.split()[2])
    assert est.phase(PhaseName.OPTIMIZER).memory.bytes_of("weights") == {0: 364_544, 1: 365_056}[reported]
    analytic = training_phases(spec, workload)[1]
    assert any(f"stage {reported} of 2 is the most loaded" in a for a in analytic)


def test_fsdp_cpu_offload_moves_shards_gradients_and_states_to_host_ram():
    """fsdp=full over 2 ranks with CPU offload, AMP: the GPU holds no shards, gradients or optimizer states;
    the host holds this rank's fp32 shards, 427,264 / 2 = 213,632 B (every dim 0 is even, no padding), as
    much again in gradients and twice that in AdamW states (host bytes are not rounded to 512)."""
    from memfit.trace.engine import trace_estimate

    offload = Parallelism(dp=2, fsdp="full", offload_optimizer="cpu", offload_params="cpu")
    workload = Training(seq_len=16, precision=Precision.AMP_BF16, parallel=offload)
    optimizer = trace_estimate(_spec(), workload, None).phase(PhaseName.OPTIMIZER)
    assert optimizer.memory.bytes_of("gradients") == 0
    assert optimizer.memory.child("weights").bytes_of("local_shards") == 0
    assert optimizer.memory.child("optimizer_states").bytes_of("states") == 0
    assert optimizer.host is not None
    assert optimizer.host.child("weights").bytes_of("local_shards") == 213_632
    assert optimizer.host.bytes_of("gradients") == 213_632
    assert optimizer.host.bytes_of("optimizer_states") == 2 * 213_632


TINY_MOE = {
    "model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"], "hidden_size": 64,
    "intermediate_size": 128, "moe_intermediate_size": 32, "num_experts": 8, "num_experts_per_tok": 2,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "vocab_size": 256, "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
    "torch_dtype": "float32", "norm_topk_prob": True,
}


def _moe_spec():
    return spec_from_config(TINY_MOE, name="tiny-moe", source=ModelSource(
        kind="config", ref="tiny-moe", config_json=json.dumps(TINY_MOE)))


def test_expert_parallel_rank_holds_its_experts():
    """DDP over 2 ranks with ep=2, fp32: each rank holds 4 of the 8 routed experts, everything else whole.

    Per layer (× 4 B, each tensor rounded to 512): q, o 64·64 → 16,384 each; k, v 32·64 → 8,192 each;
    q_norm, k_norm, two layer norms 16 or 64 → 512 each; router 8·64 → 2,048; experts gate_up 4·64·64 →
    65,536, down 4·64·32 → 32,768: 151,552. Root: embed, lm_head 256·64 → 65,536 each; final norm 512;
    two rotary buffers 512 each. 2 · 151,552 + 2 · 65,536 + 512 + 1,024 = 435,712."""
    from memfit.trace.engine import trace_estimate

    workload = Training(seq_len=16, precision=Precision.FP32, parallel=Parallelism(dp=2, ep=2))
    trace = trace_estimate(_moe_spec(), workload, None)
    assert trace.phase(PhaseName.OPTIMIZER).memory.bytes_of("weights") == 435_712
    assert any("balanced routing" in line for line in trace.assumptions)


def test_expert_parallel_trace_agrees_with_the_analytic_engine():
    """fsdp=full over 4 ranks with ep=2 (experts sharded over 2 ranks, tokens dispatched by all-to-all),
    bf16, 256 tokens: the analytic per-rank peak is within 5 % of the trace's, cuBLAS workspaces (64 MiB,
    the same in both) left out so the tiny model's own bytes are compared (5 %, not the 3 % of the
    published configs: at this size the 512-byte rounding of every small tensor is a few percent)."""
    from memfit.core.estimate import estimate
    from memfit.trace.engine import trace_estimate

    workload = Training(seq_len=256, precision=Precision.BF16,
                        parallel=Parallelism(dp=4, ep=2, fsdp="full"))
    trace = trace_estimate(_moe_spec(), workload, None)
    analytic = estimate(_moe_spec(), workload)
    workspace = trace.phase(PhaseName.FORWARD).memory.bytes_of("runtime_overhead")
    assert analytic.phase(PhaseName.FORWARD).memory.bytes_of("runtime_overhead") == workspace
    mine = trace.peak.allocated_bytes - workspace
    assert abs(analytic.peak.allocated_bytes - workspace - mine) <= 0.05 * mine


TINY_MLA = {
    "model_type": "deepseek_v2", "architectures": ["DeepseekV2ForCausalLM"], "hidden_size": 64,
    "intermediate_size": 128, "moe_intermediate_size": 32, "n_routed_experts": 4, "num_experts_per_tok": 2,
    "n_shared_experts": 1, "first_k_dense_replace": 1, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 4, "q_lora_rank": None, "kv_lora_rank": 32, "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 8, "v_head_dim": 16, "vocab_size": 256, "max_position_embeddings": 256,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "torch_dtype": "float32", "topk_method": "greedy",
}


def test_tensor_parallel_mla_and_experts_match_the_analytic_split():
    """tp=2 on a tiny DeepSeek-V2 (MLA, a dense first layer, fused routed and shared experts), fp32: the
    trace's weights (q_proj, kv_b_proj, gate/up column-wise; o_proj, down row-wise; the routed experts
    split on their intermediate dimension; kv_a_proj_with_mqa, its norm and the router whole) shrink from
    tp=1 exactly as the analytic engine's tp-local parameters do: the two engines differ by the same
    512-byte rounding of small tensors at tp 1 and 2 (about 3 KB; splitting kv_a_proj_with_mqa and the
    router too would move the analytic figure by 2 · 64 · 40 · 4 / 2 + 4 · 64 · 4 / 2 = 10,752 B)."""
    from memfit.core.estimate import estimate
    from memfit.trace.engine import trace_estimate

    spec = spec_from_config(TINY_MLA, name="tiny-mla", source=ModelSource(
        kind="config", ref="tiny-mla", config_json=json.dumps(TINY_MLA)))

    def gap(tp):
        workload = Training(seq_len=16, precision=Precision.FP32, parallel=Parallelism(tp=tp))
        traced = trace_estimate(spec, workload, None).phase(PhaseName.OPTIMIZER).memory.bytes_of("weights")
        return traced - estimate(spec, workload).phase(PhaseName.OPTIMIZER).memory.bytes_of("weights")

    assert abs(gap(2) - gap(1)) <= 512
