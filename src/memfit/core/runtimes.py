"""One `RuntimeProfile` per inference runtime: its memory quirks as data, read by the formulas.

No formula tests `runtime == ...`; it reads the profile's fields instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from memfit.core.choices import KvCache, Runtime
from memfit.core.errors import InvalidWorkload
from memfit.core.versions import MODELED


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeProfile:
    """How one runtime lays out memory."""

    runtime: Runtime
    quant_kinds: frozenset[str]          # Quant.kind values it loads
    kv_caches: frozenset[KvCache]        # cache kinds it offers
    default_kv_cache: KvCache
    torch_allocator: bool                # False: own buffers (allocated == reserved)
    num_gpus_split: str                  # --num-gpus split: device_map | tensor_parallel | layers
    mla_latent_cache: bool               # MLA cache holds the compressed latent (else full per-head K and V)
    mla_absorbed_copy: bool = False      # keeps a compute-dtype copy of kv_b_proj (W_UK, W_UV) for absorption
    sliding_cache_window: bool           # sliding layers keep only the window after the first decode step
    kv_cat_growth: bool                  # dynamic cache grows by torch.cat (a one-layer copy transient)
    full_logits_dtype_is_compute: bool   # a plain forward returns logits in the compute dtype (not fp32)
    last_logits_fp32_copy: bool          # generate copies the last-position logits to fp32
    auto_compile_static_cache: bool      # generate compiles decode with CUDA graphs for a static cache
    preallocates_fraction: bool          # takes gpu_memory_utilization of the GPU up front (vLLM)
    own_attention_kernels: bool = False  # runs its own fused attention kernels, never an eager score matrix
    default_gpu_memory_utilization: tuple[int, int] | None = None   # as a fraction (numerator, denominator)
    max_batched_tokens: int | None = None   # tokens per profiling/prefill step (vLLM chunked prefill)
    compute_ubatch_tokens: int | None = None   # llama.cpp n_ubatch: tokens per compute-buffer pass
    source: str = ""
    follows_modeled_versions: bool = False   # formulas follow core.versions.MODELED (transformers, peft, bnb)
    torch_sdpa: bool = False             # attention runs torch SDPA, whose kernel follows the GPU (sdp_utils)


PROFILES: dict[Runtime, RuntimeProfile] = {
    Runtime.TRANSFORMERS: RuntimeProfile(
        runtime=Runtime.TRANSFORMERS,
        quant_kinds=frozenset({"none", "bnb-int8", "bnb-4bit", "gptq", "awq", "fp8", "mxfp4", "nvfp4", "hqq",
                               "torchao", "eetq", "compressed-tensors"}),
        kv_caches=frozenset({KvCache.DYNAMIC, KvCache.STATIC}),
        default_kv_cache=KvCache.DYNAMIC,
        torch_allocator=True,
        num_gpus_split="device_map",
        mla_latent_cache=False,
        sliding_cache_window=True,
        kv_cat_growth=True,
        full_logits_dtype_is_compute=True,
        last_logits_fp32_copy=True,
        auto_compile_static_cache=True,
        preallocates_fraction=False,
        follows_modeled_versions=True,
        torch_sdpa=True,
        source=f"transformers {MODELED['transformers']}: "
               "cache_utils.DynamicLayer/DynamicSlidingWindowLayer/StaticLayer, "
               "generation/utils.py (logits_to_keep=1, fp32 next_token_logits, auto-compile for static "
               "caches)",
    ),
    Runtime.VLLM: RuntimeProfile(
        runtime=Runtime.VLLM,
        quant_kinds=frozenset({"none", "gptq", "awq", "fp8", "bnb-4bit", "mxfp4", "nvfp4",
                               "compressed-tensors", "torchao", "hqq"}),
        kv_caches=frozenset({KvCache.PAGED}),
        default_kv_cache=KvCache.PAGED,
        torch_allocator=True,
        num_gpus_split="tensor_parallel",
        mla_latent_cache=True,
        mla_absorbed_copy=True,          # MLACommonImpl.process_weights_after_loading: W_UK_T, W_UV
        sliding_cache_window=True,
        kv_cat_growth=False,
        full_logits_dtype_is_compute=False,
        last_logits_fp32_copy=True,
        auto_compile_static_cache=False,
        preallocates_fraction=True,
        own_attention_kernels=True,      # FlashAttention / FlashInfer / Triton / FlashMLA backends
        default_gpu_memory_utilization=(9, 10),
        max_batched_tokens=8192,
        source="vLLM V1 0.11-0.20 (core/vllm.py, core/vllm_profile.py): gpu_memory_utilization=0.9, "
               "paged KV blocks of 16 tokens (64 for MLA), profile run of max_num_batched_tokens and the "
               "sampler on max_num_seqs rows, MLA latent cache (kv_lora_rank + qk_rope_head_dim)",
    ),
    Runtime.LLAMA_CPP: RuntimeProfile(
        runtime=Runtime.LLAMA_CPP,
        quant_kinds=frozenset({"none", "gguf", "mxfp4"}),   # mxfp4: GGML_TYPE_MXFP4 (gpt-oss experts)
        kv_caches=frozenset({KvCache.STATIC}),
        default_kv_cache=KvCache.STATIC,
        torch_allocator=False,
        num_gpus_split="layers",
        mla_latent_cache=True,
        sliding_cache_window=False,
        kv_cat_growth=False,
        full_logits_dtype_is_compute=False,
        last_logits_fp32_copy=False,
        auto_compile_static_cache=False,
        preallocates_fraction=False,
        compute_ubatch_tokens=512,
        source="llama.cpp: KV cache pre-allocated to n_ctx with K and V types, compute buffers per "
               "n_ubatch=512",
    ),
}
"""Every runtime's profile."""


def profile(runtime: Runtime) -> RuntimeProfile:
    """The RuntimeProfile of `runtime`."""
    return PROFILES[runtime]


def check_runtime_supports(runtime: Runtime, *, quant_kind: str, quant_name: str, kv_cache: KvCache) -> None:
    """Raise InvalidWorkload when `runtime` cannot load `quant_name` or offer `kv_cache`."""
    prof = PROFILES[runtime]
    if quant_kind not in prof.quant_kinds:
        raise InvalidWorkload(
            f"quant={quant_name} is not loadable by runtime={runtime}; "
            f"it loads {', '.join(sorted(prof.quant_kinds))}")
    if kv_cache not in prof.kv_caches:
        options = ", ".join(sorted(str(k) for k in prof.kv_caches))
        raise InvalidWorkload(f"kv_cache={kv_cache} is not offered by runtime={runtime}; use {options}")
