"""Inference phases (core/inference.py): validation, phase structure and hand-computed peaks."""

from fractions import Fraction

import pytest

from memfit.api import load_model
from memfit.core.choices import KvCache, PhaseName, Runtime
from memfit.core.dtypes import DType, quant
from memfit.core.errors import InvalidWorkload
from memfit.core.estimate import estimate
from memfit.core.inference import inference_phases, vllm_kv_capacity_tokens
from memfit.core.result import TOP_TERMS, Estimate, Gpu
from memfit.core.units import GiB
from memfit.core.workload import Inference, Parallelism


def test_tp_must_divide_kv_heads():
    """tp=3 on Llama-3.1-8B is one actionable line listing the valid tp values: divisors of the 32 heads
    that split the 8 KV heads or replicate them (16, 32: one KV head per rank)."""
    with pytest.raises(InvalidWorkload, match=r"^tp=3 does not split the attention of Llama-3\.1-8B \(32 "
                                              r"heads, 8 KV heads\); use tp in 1, 2, 4, 8, 16, 32$"):
        inference_phases(load_model("Llama-3.1-8B"), Inference(prompt_tokens=8, parallel=Parallelism(tp=3)))


def test_prompt_longer_than_context_is_refused_unless_allowed():
    """GPT-2 has 1,024 positions: 1,000 + 100 tokens is refused, and accepted with allow_longer."""
    spec = load_model("gpt2")
    with pytest.raises(InvalidWorkload, match="exceeds max_position_embeddings=1024"):
        inference_phases(spec, Inference(prompt_tokens=1000, new_tokens=100))
    phases, _ = inference_phases(spec, Inference(prompt_tokens=1000, new_tokens=100, allow_longer=True))
    assert len(phases) == 3


def test_batch_zero_is_refused():
    """batch_size=0 is impossible."""
    with pytest.raises(InvalidWorkload, match="batch_size=0 must be at least 1"):
        Inference(prompt_tokens=8, batch_size=0)


def test_scoring_forward_has_load_and_prefill_only():
    """new_tokens=0 is one forward: phases load and prefill."""
    phases, _ = inference_phases(load_model("Llama-3.2-1B"), Inference(prompt_tokens=16))
    assert [p.name for p in phases] == [PhaseName.LOAD, PhaseName.PREFILL]


def test_generation_adds_decode():
    """new_tokens > 1 adds a decode phase (token 1 comes from prefill); terms are in the vocabulary."""
    phases, _ = inference_phases(load_model("Llama-3.2-1B"), Inference(prompt_tokens=16, new_tokens=4))
    assert [p.name for p in phases] == [PhaseName.LOAD, PhaseName.PREFILL, PhaseName.DECODE]
    assert all(t.name in TOP_TERMS for p in phases for t in p.memory.children)


def test_llama_3_1_8b_prefill_4096_peak_by_hand():
    """Weights 16,060,522,752 + KV 536,870,912 + logits 1,050,673,152 + final hidden 33,554,432 + ids 32,768
    + cuBLAS 33,554,432 = 17,715,208,448 B (groundtruth l8b-prefill-b1-s4096: 17,715,209,728)."""
    est = estimate(load_model("Llama-3.1-8B"), Inference(prompt_tokens=4096))
    assert est.peak.allocated_bytes == 17_715_208_448
    assert est.phase("prefill").at == "LM head"


def test_reserved_never_shrinks_between_phases():
    """The caching allocator keeps freed blocks: decode reserves at least what prefill did."""
    est = estimate(load_model("Llama-3.1-8B"), Inference(prompt_tokens=1024, new_tokens=16, batch_size=8))
    assert est.phase("decode").reserved_bytes >= est.phase("prefill").reserved_bytes


def test_nf4_generation_peak_includes_dequantised_weight():
    """nf4 prefill holds a dequantised 14,336 × 4,096 bf16 gate/up weight (117,440,512 B) in the MLP step."""
    est = estimate(load_model("Llama-3.1-8B"), Inference(prompt_tokens=512, new_tokens=8, quant=quant("nf4")))
    prefill = est.phase("prefill")
    assert prefill.memory.flat()["runtime_overhead/dequant"] == 117_440_512


def test_tp_halves_weights_and_cache_per_gpu():
    """tp=2 puts half of every matrix and exactly half the cache on each GPU; norms and the rotary buffer
    stay whole on both: 32 layers × 2 RMSNorms × 4,096 × 2 B + final norm 8,192 B + inv_freq 64 × 4 B =
    532,736 B counted on each GPU."""
    spec = load_model("Llama-3.1-8B")
    one = estimate(spec, Inference(prompt_tokens=1024, new_tokens=8)).phase("decode").memory
    two = estimate(spec, Inference(prompt_tokens=1024, new_tokens=8,
                                   parallel=Parallelism(tp=2))).phase("decode").memory
    assert two.bytes_of("kv_cache") * 2 == one.bytes_of("kv_cache")
    assert two.bytes_of("weights") * 2 - one.bytes_of("weights") == 532_736


def test_llama_cpp_keeps_off_gpu_layers_in_host_ram():
    """n_gpu_layers=16 of 32: the output layer and the last 15 blocks on the GPU (llama.cpp offloads the
    output first), blocks 0-16 in host RAM: 17 of 32 blocks' cache there, 15 on the GPU."""
    spec = load_model("Llama-3.1-8B")
    wl = Inference(prompt_tokens=512, new_tokens=8, runtime=Runtime.LLAMA_CPP, quant=quant("gguf-Q4_K_M"),
                   n_gpu_layers=16, kv_cache_dtype=DType.Q8_0)
    prefill = estimate(spec, wl).phase("prefill")
    assert prefill.host is not None
    assert prefill.host.bytes_of("kv_cache") * 15 == prefill.memory.bytes_of("kv_cache") * 17
    assert prefill.memory.child("weights").bytes_of("lm_head") > 0
    assert prefill.host.bytes_of("lm_head") == 0
    assert prefill.reserved_bytes == prefill.allocated_bytes


def test_vllm_capacity_is_whole_blocks():
    """vLLM's KV capacity on an 80 GiB budget is a positive multiple of the 16-token block."""
    spec = load_model("Llama-3.1-8B")
    wl = Inference(prompt_tokens=1024, new_tokens=64, runtime=Runtime.VLLM,
                   gpu_memory_utilization=Fraction(9, 10))
    tokens = vllm_kv_capacity_tokens(spec, wl, gpu_usable_bytes=79 * GiB)
    # (0.9 × 79 GiB − ~16 GiB weights − ~2.7 GiB profile, kernels, graphs) / 131,072 B ≈ 400k tokens
    assert tokens % 16 == 0
    assert 300_000 < tokens < 500_000


def test_static_cache_is_allocated_at_prefill():
    """A static cache holds prompt + new − 1 = 767 tokens at prefill (32,768 B per token)."""
    est = estimate(load_model("Llama-3.2-1B"),
                   Inference(prompt_tokens=512, new_tokens=256, kv_cache=KvCache.STATIC))
    assert est.phase("prefill").memory.bytes_of("kv_cache") == 767 * 32_768


def test_one_new_token_is_prefill_only():
    """generate(max_new_tokens=1) runs no decode step: phases load and prefill, last-position logits."""
    phases, _ = inference_phases(load_model("Llama-3.2-1B"), Inference(prompt_tokens=16, new_tokens=1))
    assert [p.name for p in phases] == [PhaseName.LOAD, PhaseName.PREFILL]


def _h100() -> Gpu:
    from memfit.sources.catalog import get_gpu

    return get_gpu("H100-SXM-80GB")


def _vllm_8b(batch: int) -> Inference:
    return Inference(prompt_tokens=1024, new_tokens=1024, batch_size=batch, dtype=DType.BF16,
                     runtime=Runtime.VLLM, gpu_memory_utilization=Fraction(9, 10))


# Llama-3.1-8B, bf16, vLLM 0.20 (the newest modelled) on H100-SXM-80GB at 0.9, vllm serve defaults
# (max_num_batched_tokens 8,192, max_num_seqs 1,024):
#   requested = ceil(0.9 × 85,017,493,504) = 76,515,744,154 B
#   weights 16,060,522,752 B
#   sampler (1,024 rows × 128,256 vocab = 131,334,144 logits): bf16 2 + fp32 4 + probs 4 + q 4 = 14 B each
#     = 1,838,678,016 + Triton top-k buffer 132 × 128,256 × 4 = 67,719,168 + the forward's hidden states
#     8,192 × 4,096 × 2 = 67,108,864 → 1,973,506,048 B (the forward's 838,860,800 B is smaller)
#   non-torch increase: lazily loaded kernels 166 MiB = 174,063,616 B (tp 1: no NCCL)
#   CUDA graphs (0.20): 32 layers × 512 tokens × (4,096 + 6,144 qkv + 4,096 out) × 2 B = 469,762,048
#     + (50 + 50) further graphs × 1 MiB = 104,857,600 → 574,619,648 B
#   cuBLAS workspace (Hopper, one handle; the profile forward's first matmul) 32 MiB = 33,554,432 B
#   non-KV = 18,816,266,496 B; available = 57,699,477,658 B
#   blocks = 57,699,477,658 // (16 × 4,096 B page) // 32 layers = 27,513 → 440,208 tokens
VLLM_8B_NON_KV = 18_816_266_496
VLLM_8B_TOKENS = 440_208


def test_vllm_kv_cache_is_the_capacity_its_budget_leaves():
    """Llama-3.1-8B on H100-SXM-80GB at 0.9: the cache is the request less vLLM's non-KV memory, in blocks."""
    spec, gpu, wl = load_model("Llama-3.1-8B"), _h100(), _vllm_8b(8)
    per_token = 32 * 2 * 8 * 128 * 2              # layers × (K, V) × kv heads × head_dim × bf16 = 131,072 B
    est = estimate(spec, wl, gpu)
    prefill = est.phase(PhaseName.PREFILL)
    non_kv = (prefill.memory.bytes_of("weights") + prefill.memory.bytes_of("activations")
              + prefill.memory.bytes_of("logits") + prefill.memory.bytes_of("runtime_overhead")
              + prefill.memory.flat()["non_torch/kernels"])
    assert non_kv == VLLM_8B_NON_KV
    for name in (PhaseName.PREFILL, PhaseName.DECODE):
        cache = est.phase(name).memory.child("kv_cache")
        assert cache is not None
        assert cache.nbytes == VLLM_8B_TOKENS * per_token
        # 440,208 // 2,048 = 214 sequences
        assert "KV capacity 440,208 tokens = 214 sequences of 2,048 tokens" in cache.children[0].note
    assert est.phase(PhaseName.LOAD).memory.bytes_of("kv_cache") == 0
    assert any("KV capacity 440,208 tokens" in line and "H100-SXM-80GB" in line for line in est.assumptions)
    assert vllm_kv_capacity_tokens(spec, wl, gpu_usable_bytes=gpu.usable_bytes) == VLLM_8B_TOKENS
    # 8 sequences × 2,048 tokens = 16,384 ≤ 440,208; the process is the request plus the CUDA context
    assert est.fits is True
    unused = 57_699_477_658 - VLLM_8B_TOKENS * per_token      # available less whole blocks
    assert est.peak.device_bytes == 76_515_744_154 - unused + 545_259_520


def test_vllm_does_not_fit_when_capacity_holds_fewer_sequences_than_the_batch():
    """batch 216 × 2,048 tokens = 442,368 > the 440,464-token capacity: fits is False, peak alone is not."""
    spec, gpu, wl = load_model("Llama-3.1-8B"), _h100(), _vllm_8b(216)
    est = estimate(spec, wl, gpu)
    # the batch size does not enter vLLM's profile run: the capacity is the same as at batch 8
    assert est.phase(PhaseName.DECODE).memory.bytes_of("kv_cache") == VLLM_8B_TOKENS * 131_072
    assert est.required_capacity_ok is False
    assert est.fits is False
    assert est.peak.device_bytes <= gpu.usable_bytes      # a plain peak comparison would have said "fits"
    assert est.to_dict()["fits"] is False
    assert Estimate.from_dict(est.to_dict()).fits is False   # the capacity verdict survives JSON


def test_vllm_sequences_round_up_to_whole_blocks():
    """A 1,000 + 1-token sequence takes ceil(1,001 / 16) = 63 blocks = 1,008 tokens of capacity."""
    from memfit.core.inference import inference_parts

    wl = Inference(prompt_tokens=1000, new_tokens=1, batch_size=3, dtype=DType.BF16, runtime=Runtime.VLLM)
    _, _, capacity = inference_parts(load_model("Llama-3.2-1B"), wl, _h100())
    assert capacity is not None
    assert capacity.sequence_tokens == 1008
    assert capacity.holds_batch is (capacity.tokens >= 3 * 1008)


def test_vllm_without_gpu_keeps_requested_cache_and_says_capacity_needs_gpu():
    """No GPU: the cache holds batch × prompt+new (8 × 2,048 tokens × 131,072 B) and fits is None."""
    est = estimate(load_model("Llama-3.1-8B"), _vllm_8b(8))
    assert est.phase(PhaseName.DECODE).memory.bytes_of("kv_cache") == 8 * 2048 * 131_072
    assert est.fits is None
    assert est.required_capacity_ok is None
    assert any("needs --gpu" in line for line in est.assumptions)


def test_transformers_fits_is_still_the_peak_comparison():
    """The transformers runtime does not preallocate: no capacity. A 1k-token bf16 prompt on Llama-3.1-8B
    (15 GiB of weights, ~0.5 GiB logits) fits an H100; 64 sequences of 32k tokens do not (their KV cache
    alone is 256 GiB)."""
    spec = load_model("Llama-3.1-8B")
    small = estimate(spec, Inference(prompt_tokens=1024, dtype=DType.BF16), _h100())
    assert small.required_capacity_ok is None
    assert small.fits is True
    # KV cache alone: 64 sequences × 32,768 tokens × 131,072 B = 256 GiB
    large = estimate(spec, Inference(prompt_tokens=32_768, batch_size=64, dtype=DType.BF16), _h100())
    assert large.fits is False


def test_auto_device_map_rule_by_hand():
    """Budgets 10 and 10 (cap), balanced 15/2 + 1 = 8 on GPU 0, minus the largest module still to place."""
    from memfit.core.device_map import auto_device_map

    # modules [2, 3, 3, 3, 4]: total 15; GPU 0 budget min(10, 7 + 1) = 8
    # GPU 0: 2 fits (8 − 4 kept free = 4); 2 + 3 = 5 > 4 → GPU 1 (budget 10): 3, 3, 3 → 9;
    # 9 + 4 > 10 → CPU (device 2)
    assert auto_device_map([2, 3, 3, 3, 4], num_gpus=2, cap_bytes=10, balance_buffer=1) == [0, 1, 1, 1, 2]
    # one GPU capped at 100: everything fits after keeping the largest remaining module free
    assert auto_device_map([2, 3, 3, 3, 4], num_gpus=1, cap_bytes=100, balance_buffer=0) == [0] * 5


def _device_map_8b(pp: int, cap: int) -> Inference:
    from memfit.core.choices import DeviceMap

    return Inference(prompt_tokens=512, new_tokens=64, dtype=DType.BF16,
                     parallel=Parallelism(pp=pp, device_map=DeviceMap.AUTO, max_gpu_memory_bytes=cap))


def test_device_map_auto_offloads_what_one_capped_gpu_cannot_hold():
    """Llama-3.1-8B, one GPU capped at 8 GiB: embeddings + 14 layers on the GPU, the rest in host RAM."""
    est = estimate(load_model("Llama-3.1-8B"), _device_map_8b(1, 8 * GiB))
    decode = est.phase(PhaseName.DECODE)
    weights = decode.memory.child("weights")
    assert weights is not None
    # room 8,589,934,592 − lm_head 1,050,673,152 kept free = 7,539,261,440; embeddings 1,050,673,152 +
    # 14 layers × 436,224,000 = 7,157,809,152 (a 15th would make 7,594,033,152)
    assert weights.bytes_of("embeddings") == 1_050_673_152
    assert weights.bytes_of("layers") == 14 * 436_224_000
    assert weights.bytes_of("offload_staging") == 1_050_673_152   # the offloaded lm_head runs on GPU 0
    # host: 18 layers 7,852,032,000 + lm_head 1,050,673,152 + final norm 8,192 + rotary buffer 256
    assert decode.host_bytes == 8_902_713_600
    # offloaded layers run on GPU 0: the whole cache is there (32 layers × 575 tokens × 4,096 B)
    assert decode.memory.bytes_of("kv_cache") == 32 * 575 * 4096
    line = est.assumptions[-1]
    assert 'device_map="auto" over 1 GPU(s)' in line
    assert "18 offloaded" in line


def test_device_map_auto_two_capped_gpus_report_the_most_loaded():
    """Two GPUs capped at 6 GiB: GPU 0 takes embeddings + 9 layers, GPU 1 takes 14 (shown), 9 to CPU RAM."""
    est = estimate(load_model("Llama-3.1-8B"), _device_map_8b(2, 6 * GiB))
    decode = est.phase(PhaseName.DECODE)
    # GPU 0: room 6,442,450,944 − 1,050,673,152 = 5,391,777,792 ≥ 1,050,673,152 + 9 × 436,224,000;
    # GPU 1: 14 × 436,224,000 = 6,107,136,000 ≤ 6,442,450,944; host: 9 layers + norm + head + buffer
    assert decode.host_bytes == 9 * 436_224_000 + 1_050_673_152 + 8192 + 256
    # GPU 0: 4,976,689,152 + staged 1,050,673,152 + KV of 18 layers (9 own, 9 offloaded) × 575 tokens ×
    # 4,096 B = 6,069,755,904; GPU 1: 6,107,136,000 + 14 × 2,355,200 = 6,140,108,800 → GPU 1 is shown
    weights = decode.memory.child("weights")
    assert weights is not None
    assert weights.nbytes == 14 * 436_224_000
    assert decode.memory.bytes_of("kv_cache") == 14 * 575 * 4096
    assert any("layers per GPU [9, 14]" in line and "showing GPU 1" in line for line in est.assumptions)


def test_device_map_without_cap_keeps_the_even_split():
    """No max_gpu_memory: pp=2 keeps ceil(32 / 2) = 16 layers per GPU and no host RAM."""
    from memfit.core.choices import DeviceMap

    wl = Inference(prompt_tokens=512, new_tokens=64, dtype=DType.BF16,
                   parallel=Parallelism(pp=2, device_map=DeviceMap.AUTO))
    decode = estimate(load_model("Llama-3.1-8B"), wl).phase(PhaseName.DECODE)
    assert decode.host_bytes == 0
    assert decode.memory.child("weights").bytes_of("layers") == 16 * 436_224_000  # type: ignore[union-attr]


def test_sliding_layers_hold_the_prompt_until_their_first_decode_update():
    """Mistral-7B-v0.1 (window 4,096) after an 8,000-token prompt: decode peaks at the first step's cache."""
    # first decode step: every layer still holds prompt-length storage (+ the new token): 8,001 tokens
    # × 32 layers × 2 (K, V) × 8 kv heads × 128 × 2 B = 8,001 × 131,072 = 1,048,707,072 B
    # (at the last step each layer would keep only the 4,096-token window: 536,870,912 B)
    est = estimate(load_model("Mistral-7B-v0.1"), Inference(prompt_tokens=8000, new_tokens=32))
    assert est.phase(PhaseName.DECODE).memory.bytes_of("kv_cache") == 1_048_707_072


def test_int8_states_its_outlier_assumption_and_the_bound() -> None:
    """LLM.int8 takes every input column as an outlier; the note offers the bound: Llama-3.1-8B's largest
    int8 Linear (gate/up/down, 4096 × 14336 = 58,720,256 weights) × 7 B = 411,041,792 B."""
    _, assumptions = inference_phases(load_model("Llama-3.1-8B"), Inference(prompt_tokens=64, quant="int8"))
    assert any("411,041,792 B" in line and "upper bound" in line for line in assumptions)
