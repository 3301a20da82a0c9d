"""KV cache bytes (core/kv_cache.py): GQA, MLA per runtime, windows, cache dtypes, cache kinds."""

from memfit.api import load_model
from memfit.core.choices import KvCache, Runtime
from memfit.core.dtypes import DType, quant
from memfit.core.kv_cache import final_cache_tokens, kv_bytes_per_token, kv_cache, kv_cache_at
from memfit.core.workload import Inference, Parallelism


def test_llama_3_1_8b_bytes_per_token():
    """32 layers × 2 (K, V) × 8 kv heads × 128 × 2 B = 131,072 B per token."""
    assert kv_bytes_per_token(load_model("Llama-3.1-8B"), Inference(prompt_tokens=1)) == 131_072


def test_prefill_cache_4096_tokens():
    """A 4,096-token prompt caches 4,096 × 131,072 = 536,870,912 B (groundtruth l8b-prefill: 512 MiB)."""
    assert kv_cache(load_model("Llama-3.1-8B"), Inference(prompt_tokens=4096)).nbytes == 536_870_912


def test_generate_caches_prompt_plus_new_minus_one():
    """generate() never feeds back the last token: 512 + 64 − 1 = 575 cached tokens."""
    assert final_cache_tokens(Inference(prompt_tokens=512, new_tokens=64)) == 575


def test_fp8_cache_is_half_of_bf16():
    """An fp8 cache is exactly half the bf16 one: 8 × 1,024 × 131,072 / 2 = 536,870,912 B."""
    spec = load_model("Llama-3.1-8B")
    fp8 = kv_cache(spec, Inference(prompt_tokens=1024, batch_size=8, kv_cache_dtype=DType.FP8_E4M3))
    assert fp8.nbytes == 536_870_912


def test_mla_transformers_stores_the_latent_in_two_tensors():
    """DeepSeek-V3 under transformers: keys (b, 1, s, 512) + values (b, 1, s, 64) = 576 × 2 B = 1,152 B."""
    spec = load_model("DeepSeek-V3")
    assert kv_bytes_per_token(spec, Inference(prompt_tokens=1)) == 61 * 1_152


def test_mla_transformers_cache_of_deepseek_v2_lite():
    """V2-Lite, b4 × 512 tokens: 27 layers × 4 × 512 × (512 + 64) × 2 B = 63,700,992 B (trace: 60.75 MiB)."""
    term = kv_cache_at(load_model("DeepSeek-V2-Lite"), Inference(prompt_tokens=512, batch_size=4), tokens=512,
                       after_decode=False)
    assert term.child("mla").nbytes == 63_700_992


def test_mla_vllm_stores_the_latent():
    """DeepSeek-V3 under vLLM: (512 + 64) × 2 B = 1,152 B per token and layer."""
    spec = load_model("DeepSeek-V3")
    assert kv_bytes_per_token(spec, Inference(prompt_tokens=1, runtime=Runtime.VLLM)) == 61 * 1_152


def test_sliding_window_keeps_window_after_decode():
    """Mistral-7B-v0.1 (window 4,096): after decoding, 4,096 tokens × 32 × 2 × 8 × 128 × 2 B per sequence."""
    spec = load_model("Mistral-7B-v0.1")
    wl = Inference(prompt_tokens=6000, new_tokens=100)
    assert kv_cache(spec, wl).child("sliding").nbytes == 4096 * 131_072


def test_sliding_window_prefill_holds_the_whole_prompt():
    """Before the first decode step the sliding layer's view still pins the full 6,000-token storage."""
    spec = load_model("Mistral-7B-v0.1")
    wl = Inference(prompt_tokens=6000, new_tokens=100)
    assert kv_cache_at(spec, wl, tokens=6000, after_decode=False).nbytes == 6000 * 131_072


def test_llama_cpp_q8_0_keys_q4_0_values():
    """Per token and layer 1,024 K elements as q8_0 (32 blocks × 34 B) and V as q4_0 (32 × 18 B) = 1,664 B."""
    spec = load_model("Llama-3.1-8B")
    wl = Inference(prompt_tokens=1, runtime=Runtime.LLAMA_CPP, quant=quant("gguf-Q4_K_M"),
                   kv_cache_dtype=DType.Q8_0, v_cache_dtype=DType.Q4_0)
    assert kv_bytes_per_token(spec, wl) == 32 * (1_088 + 576)


def test_paged_cache_rounds_to_blocks():
    """vLLM pages of 16 tokens: 1,000 + 10 − 1 = 1,009 tokens take 64 blocks = 1,024 tokens."""
    spec = load_model("Llama-3.1-8B")
    wl = Inference(prompt_tokens=1000, new_tokens=10, runtime=Runtime.VLLM)
    assert kv_cache(spec, wl).nbytes == 1024 * 131_072


def test_static_cache_uses_max_cache_tokens():
    """A static cache of 2,048 tokens is allocated in full: 2,048 × 131,072 = 268,435,456 B."""
    spec = load_model("Llama-3.1-8B")
    wl = Inference(prompt_tokens=100, new_tokens=10, kv_cache=KvCache.STATIC, max_cache_tokens=2048)
    assert kv_cache(spec, wl).nbytes == 268_435_456


def test_tensor_parallel_splits_kv_heads():
    """tp=2: each rank caches 4 of the 8 kv heads: 65,536 B per token."""
    spec = load_model("Llama-3.1-8B")
    assert kv_bytes_per_token(spec, Inference(prompt_tokens=1, parallel=Parallelism(tp=2))) == 65_536


def test_layer_runs_group_consecutive_shared_layers():
    """[A, A, B, A] → (A, 2), (B, 1), (A, 1): runs are consecutive, counted by object identity."""
    from memfit.core.kv_cache import layer_runs
    from memfit.core.spec import AttentionSpec, LayerSpec, MlpSpec

    a = LayerSpec(attention=AttentionSpec(num_heads=4, num_kv_heads=4, head_dim=8),
                  mlp=MlpSpec(intermediate_size=64, gated=True))
    b = LayerSpec(attention=AttentionSpec(num_heads=4, num_kv_heads=2, head_dim=8),
                  mlp=MlpSpec(intermediate_size=64, gated=True))
    assert layer_runs((a, a, b, a)) == [(a, 2), (b, 1), (a, 1)]
