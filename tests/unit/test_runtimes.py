"""Runtime profiles (core/runtimes.py): quirks as data, and what each runtime refuses."""

import pytest

from memfit.core.choices import KvCache, Runtime
from memfit.core.errors import InvalidWorkload
from memfit.core.runtimes import PROFILES, check_runtime_supports, profile


def test_every_runtime_has_a_profile():
    """Each Runtime member maps to its own RuntimeProfile."""
    assert set(PROFILES) == set(Runtime)
    assert all(profile(r).runtime is r for r in Runtime)


def test_vllm_pages_and_stores_mla_latents():
    """vLLM: paged cache by default, compressed MLA latent, 0.9 of the GPU taken up front."""
    vllm = profile(Runtime.VLLM)
    assert (vllm.default_kv_cache, vllm.mla_latent_cache, vllm.default_gpu_memory_utilization) == (
        KvCache.PAGED, True, (9, 10))


def test_llama_cpp_has_its_own_buffers():
    """llama.cpp does not use the torch allocator and pre-allocates its cache (static)."""
    cpp = profile(Runtime.LLAMA_CPP)
    assert (cpp.torch_allocator, cpp.default_kv_cache) == (False, KvCache.STATIC)


def test_transformers_refuses_gguf():
    """GGUF weights are llama.cpp's: transformers refuses them with one line."""
    with pytest.raises(InvalidWorkload, match="quant=gguf-Q4_K_M is not loadable by runtime=transformers"):
        check_runtime_supports(Runtime.TRANSFORMERS, quant_kind="gguf", quant_name="gguf-Q4_K_M",
                               kv_cache=KvCache.DYNAMIC)


def test_transformers_has_no_paged_cache():
    """A paged cache is a vLLM feature."""
    with pytest.raises(InvalidWorkload, match="kv_cache=paged is not offered by runtime=transformers"):
        check_runtime_supports(Runtime.TRANSFORMERS, quant_kind="none", quant_name="none",
                               kv_cache=KvCache.PAGED)
