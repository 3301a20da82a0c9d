"""GPU capabilities per architecture (core/devices.py), the SDPA rule and workspaces that follow them, and the
dtype checks of core/device_support.py."""

from __future__ import annotations

import dataclasses

import pytest

from memfit.core.attention_kinds import sdpa_backend
from memfit.core.device_support import workload_for_gpu
from memfit.core.devices import (
    ARCHS,
    CUBLAS_WORKSPACE_BYTES_DEFAULT,
    CUBLAS_WORKSPACE_BYTES_SM90,
    DEFAULT_ARCH,
    HIPBLAS_WORKSPACE_BYTES_GFX94,
    HIPBLASLT_WORKSPACE_BYTES,
)
from memfit.core.dtypes import DType
from memfit.core.errors import InvalidWorkload
from memfit.core.estimate import estimate
from memfit.core.overhead import cublas_workspace_bytes, workspace_note
from memfit.core.result import Gpu
from memfit.core.training import training_phases
from memfit.core.workload import Inference, Parallelism, Training
from memfit.sources.catalog import get_gpu
from memfit.sources.resolve import load_model

MiB = 2**20
KiB = 2**10


def test_cuda_default_workspace_is_cublas_workspace_config_default():
    """Below sm90 torch takes CUBLAS_WORKSPACE_CONFIG's default ':4096:2:16:8' per handle."""
    # two chunks of 4096 KiB + eight of 16 KiB = 8,388,608 + 131,072 = 8,519,680 B
    assert CUBLAS_WORKSPACE_BYTES_DEFAULT == 8_519_680
    # sm 9.x / 10.x / 12.x: 4096 KiB × 8 = 33,554,432 B
    assert CUBLAS_WORKSPACE_BYTES_SM90 == 4096 * KiB * 8 == 33_554_432


@pytest.mark.parametrize(("name", "per_handle"), [
    ("H100", 33_554_432),          # Hopper sm 9.0: 32 MiB (measured)
    ("B200", 33_554_432),          # Blackwell sm 10.0: 32 MiB
    ("RTX-5090", 33_554_432),      # Blackwell sm 12.0: 32 MiB
    ("A100", 8_519_680),           # Ampere sm 8.0: the :4096:2:16:8 default
    ("L4", 8_519_680),             # Ada sm 8.9
    ("T4", 8_519_680),             # Turing sm 7.5
    ("V100", 8_519_680),           # Volta sm 7.0
    ("MI300X", 213_909_504),       # gfx942: hipBLAS 128 MiB + hipBLASLt 76 MiB = 204 MiB
    ("MI250X", 113_246_208),       # gfx90a: hipBLAS 32 MiB + hipBLASLt 76 MiB = 108 MiB
    ("Apple-Silicon-64GB", 0),     # MPS: no cuBLAS
])
def test_workspace_per_handle_follows_the_architecture(name, per_handle):
    """Each catalog GPU gets its architecture's BLAS workspace; two handles take twice as much."""
    gpu = get_gpu(name)
    assert gpu.blas_workspace_bytes == per_handle
    assert cublas_workspace_bytes(num_handles=2, gpu=gpu) == 2 * per_handle


def test_rocm_workspace_is_both_pools():
    """CDNA3's workspace is hipBLAS's gfx94x default plus hipBLASLt's own pool."""
    assert (128 + 76) * MiB == HIPBLAS_WORKSPACE_BYTES_GFX94 + HIPBLASLT_WORKSPACE_BYTES
    assert ARCHS["cdna3"].blas_workspace_bytes == 213_909_504


@pytest.mark.parametrize(("name", "arch", "capability", "bf16", "fp8", "fp4", "flash"), [
    ("V100-SXM2-16GB", "volta", "7.0", False, False, False, False),
    ("T4-16GB", "turing", "7.5", False, False, False, False),
    ("A100-SXM-80GB", "ampere", "8.0", True, False, False, True),
    ("A10G-24GB", "ampere", "8.6", True, False, False, True),
    ("L40S-48GB", "ada", "8.9", True, True, False, True),
    ("H100-SXM-80GB", "hopper", "9.0", True, True, False, True),
    ("B200-180GB", "blackwell", "10.0", True, True, True, True),
    ("RTX-5090-32GB", "blackwell", "12.0", True, True, True, True),
    ("MI250X-GCD-64GB", "cdna2", "gfx90a", True, False, False, True),
    ("MI300X-192GB", "cdna3", "gfx942", True, True, False, True),
    ("MI325X-256GB", "cdna3", "gfx942", True, True, False, True),
    ("Apple-Silicon-128GB", "apple", "metal3", True, False, False, False),
])
def test_capabilities_of_catalog_gpus(name, arch, capability, bf16, fp8, fp4, flash):
    """bf16 from sm80, FP8 tensor cores from sm89 (and CDNA3), FP4 on Blackwell, flash from sm80."""
    gpu = get_gpu(name)
    assert (gpu.arch, gpu.compute_capability) == (arch, capability)
    assert (gpu.bf16, gpu.fp8, gpu.fp4, gpu.flash_attention) == (bf16, fp8, fp4, flash)


def test_apple_silicon_is_unified_memory_with_metals_working_set():
    """A 64 GB Mac: the GPU may wire 3/4 of the RAM (49152 MiB, as ggml_metal_init prints it)."""
    mac = get_gpu("M3-Max-64GB")
    assert mac.unified_memory
    assert mac.memory_bytes == 64 * 2**30
    assert mac.usable_bytes == 49152 * MiB == 3 * 64 * 2**30 // 4


def test_default_and_anonymous_gpus_are_hopper():
    """No GPU, a hand-built Gpu and a size such as 24GiB keep an H100's capabilities."""
    row = ARCHS[DEFAULT_ARCH]
    for gpu in (Gpu(name="x", memory_bytes=1, usable_bytes=1), get_gpu("24GiB")):
        assert gpu.arch == "hopper"
        assert (gpu.bf16, gpu.fp8, gpu.fp4, gpu.flash_attention) == (row.bf16, row.fp8, row.fp4,
                                                                     row.flash_attention)
        assert gpu.blas_workspace_bytes == 32 * MiB


@pytest.mark.parametrize(("gpu", "dtype", "grouped", "expected"), [
    (None, DType.BF16, False, "flash"),
    ("H100", DType.FP16, True, "flash"),          # GQA with enable_gqa: flash
    ("A100", DType.BF16, True, "flash"),
    ("T4", DType.FP16, False, "efficient"),       # no flash below sm80; efficient takes fp16
    ("T4", DType.FP16, True, "math"),             # efficient has no GQA: math
    ("V100", DType.BF16, False, "math"),          # efficient takes bf16 only from sm80
    ("V100", DType.FP32, False, "efficient"),
    ("Apple-Silicon-64GB", DType.FP16, False, "math"),
    ("MI300X", DType.BF16, False, "flash"),
])
def test_sdpa_backend_follows_the_architecture(gpu, dtype, grouped, expected):
    """torch 2.13 sdp_utils.cpp: flash on sm80+, memory-efficient on sm50+ (fp16/fp32 below sm80), or math."""
    chosen = None if gpu is None else get_gpu(gpu)
    backend = sdpa_backend(dtype, q_dim=128, grouped=grouped, masked=False, enable_gqa=True, gpu=chosen)
    assert backend == expected


def test_flash_backward_refuses_head_dims_over_192_on_sm89():
    """On sm89 (RTX 4090) flash's backward refuses head dims in (192, 224]: SDPA takes efficient there."""
    ada = get_gpu("RTX-4090")
    assert sdpa_backend(DType.BF16, q_dim=200, grouped=False, masked=False, gpu=ada) == "flash"
    assert sdpa_backend(DType.BF16, q_dim=200, grouped=False, masked=False, gpu=ada,
                        needs_grad=True) == "efficient"
    assert sdpa_backend(DType.BF16, q_dim=200, grouped=False, masked=False, gpu=get_gpu("H100"),
                        needs_grad=True) == "flash"


def test_t4_prefill_materialises_the_scores():
    """Llama-3.2-1B (GQA) on a T4 runs SDPA's math kernel: its fp32 scores and softmax appear."""
    spec = load_model("Llama-3.2-1B")
    wl = Inference(prompt_tokens=2048, dtype=DType.FP16)
    t4 = estimate(spec, wl, get_gpu("T4")).phases[1].memory.flat()
    h100 = estimate(spec, wl, get_gpu("H100")).phases[1].memory.flat()
    # (b, heads, s, kv) scores in fp32 beside their fp32 softmax: 1 × 32 × 2048 × 2048 × 2 × 4 B
    assert t4["activations/attention/scores"] == 1 * 32 * 2048 * 2048 * 2 * 4 == 1_073_741_824
    assert "activations/attention/scores" not in h100
    assert t4["runtime_overhead/cublas_workspace"] == 8_519_680
    assert h100["runtime_overhead/cublas_workspace"] == 33_554_432


def test_t4_training_uses_the_efficient_kernel_and_its_workspace():
    """GPT-2 (MHA) in fp16 on a T4: the attention kernel line says efficient, two 8,519,680 B workspaces."""
    spec = load_model("gpt2")
    wl = Training(seq_len=512, precision="fp16")
    t4_phases, t4_notes = training_phases(spec, wl, get_gpu("T4"))
    _, h100_notes = training_phases(spec, wl, get_gpu("H100"))
    assert "attention kernel: efficient (attn=sdpa)" in t4_notes
    assert "attention kernel: flash (attn=sdpa)" in h100_notes
    assert "cuBLAS workspaces: 2 × 8,519,680 B (Turing; forward and autograd threads)" in t4_notes
    assert t4_phases[1].memory.flat()["runtime_overhead/cublas_workspace"] == 2 * 8_519_680


@pytest.mark.parametrize("workload", [
    Inference(prompt_tokens=4096, new_tokens=16),
    Inference(prompt_tokens=1024, new_tokens=8, runtime="vllm"),
    Inference(prompt_tokens=512, new_tokens=4, parallel=Parallelism(pp=2, device_map="auto")),
    Training(seq_len=2048),
    Training(seq_len=1024, precision="amp-bf16", checkpointing="full"),
], ids=["infer", "vllm", "device-map", "train", "train-amp-ckpt"])
def test_h100_and_no_gpu_give_the_same_figures(workload):
    """The catalog H100 gives the figures of a GPU with only its memory (as the catalog built it before
    architectures), and, where the GPU does not size the KV cache (vLLM does), of no GPU at all."""
    spec = load_model("Llama-3.2-1B")
    h100 = get_gpu("H100")
    memory_only = Gpu(name=h100.name, memory_bytes=h100.memory_bytes, usable_bytes=h100.usable_bytes)
    with_arch = estimate(spec, workload, h100).to_dict()
    assert estimate(spec, workload, memory_only).to_dict() == {**with_arch, "gpu": with_arch["gpu"] | {
        "source": "", "aliases": []}}
    if workload.runtime != "vllm":
        none = estimate(spec, workload).to_dict()
        for key in ("phases", "peak", "workload"):
            assert none[key] == with_arch[key]
    if isinstance(workload, Training):
        assert training_phases(spec, workload) == training_phases(spec, workload, get_gpu("H100"))


def test_unchosen_bf16_follows_the_gpu_with_a_note():
    """dtype left to a bf16 checkpoint on a T4: estimated in fp16, and the assumptions say so."""
    spec = load_model("Llama-3.2-1B")
    wl, notes = workload_for_gpu(spec, Inference(prompt_tokens=64), get_gpu("T4"))
    assert isinstance(wl, Inference)
    assert wl.dtype is DType.FP16
    switched = "stored in bf16 and T4-16GB (turing, sm 7.5) has no bf16: estimated in fp16"
    assert any(switched in n for n in notes)
    est = estimate(spec, Inference(prompt_tokens=64), get_gpu("T4"))
    assert est.workload == wl


@pytest.mark.parametrize(("workload", "message"), [
    (Inference(prompt_tokens=64, dtype=DType.BF16),
     r"dtype=bf16 does not run on T4-16GB .* use --dtype fp16"),
    (Inference(prompt_tokens=64, dtype=DType.FP16, kv_cache_dtype=DType.BF16),
     r"kv_cache_dtype=bf16 does not run on T4-16GB .* use --kv-cache-dtype fp16"),
    (Training(seq_len=64), r"precision=bf16 does not run on T4-16GB .* use --precision fp16"),
    (Training(seq_len=64, precision="amp-bf16"), r"precision=amp-bf16 .* use --precision amp-fp16"),
    (Inference(prompt_tokens=64, dtype=DType.FP16, attn="flash"),
     r"attn=flash \(FlashAttention-2\) does not run on T4-16GB .* use --attn sdpa"),
])
def test_chosen_bf16_or_flash_on_a_t4_is_refused(workload, message):
    """A dtype or kernel the user chose that the GPU lacks is one InvalidWorkload line naming the GPU."""
    with pytest.raises(InvalidWorkload, match=message):
        estimate(load_model("Llama-3.2-1B"), workload, get_gpu("T4"))


def test_fp8_without_fp8_tensor_cores_is_kept_with_a_note():
    """An fp8 KV cache on an A100 is still stored in fp8; a note says the GPU has no FP8 tensor cores."""
    spec = load_model("Llama-3.2-1B")
    wl = Inference(prompt_tokens=64, kv_cache_dtype=DType.FP8_E4M3, runtime="vllm")
    kept, notes = workload_for_gpu(spec, wl, get_gpu("A100"))
    assert kept == wl
    assert any("no FP8 tensor cores" in n for n in notes)
    _, h100_notes = workload_for_gpu(spec, wl, get_gpu("H100"))
    assert h100_notes == ()


def test_rocm_and_apple_add_their_unmeasured_overheads_note():
    """Non-CUDA device kinds say their runtime overheads are assumed, not measured."""
    spec = load_model("Llama-3.2-1B")
    for name in ("MI300X", "Apple-Silicon-36GB"):
        _, notes = workload_for_gpu(spec, Inference(prompt_tokens=64), get_gpu(name))
        assert any("unmeasured" in n for n in notes), name


def test_workspace_note_names_the_architecture():
    """The assumption line keeps its Hopper wording and names other architectures and libraries."""
    assert workspace_note(None, handles=2, threads="t") == "cuBLAS workspaces: 2 × 32 MiB (Hopper; t)"
    assert workspace_note(get_gpu("MI300X"), handles=1, threads="t") == \
        "hipBLAS + hipBLASLt workspaces: 1 × 204 MiB (CDNA3; t)"
    assert workspace_note(get_gpu("Apple-Silicon-16GB"), handles=1, threads="t") == \
        "no cuBLAS workspace (Apple silicon: no cuBLAS)"


def test_gpu_round_trips_through_the_estimate_json():
    """The new Gpu fields survive Estimate.to_dict / from_dict."""
    from memfit.core.result import Estimate

    est = estimate(load_model("Llama-3.2-1B"), Inference(prompt_tokens=64), get_gpu("T4"))
    back = Estimate.from_dict(est.to_dict())
    assert back.gpu == est.gpu
    assert dataclasses.asdict(back.gpu)["compute_capability"] == "7.5"


def test_vllm_keeps_its_own_attention_kernels_on_a_t4():
    """vLLM does not run torch SDPA: on a T4 its profiling forward has no materialised scores."""
    spec = load_model("Llama-3.2-1B")
    wl = Inference(prompt_tokens=2048, dtype=DType.FP16, runtime="vllm")
    flat = estimate(spec, wl, get_gpu("T4")).phases[1].memory.flat()
    assert not any(key.endswith("/scores") for key in flat)
    assert flat["runtime_overhead/cublas_workspace"] == 8_519_680


def test_inference_names_the_attention_kernel_on_other_architectures():
    """Off Hopper, an inference estimate names the SDPA kernel its prefill runs; an H100 adds nothing."""
    spec = load_model("Llama-3.2-1B")
    wl = Inference(prompt_tokens=64, dtype=DType.FP16)
    t4 = estimate(spec, wl, get_gpu("T4")).assumptions
    assert "attention kernel on T4-16GB (turing, sm 7.5): math (SDPA prefill without a mask)" in t4
    assert not any(a.startswith("attention kernel") for a in estimate(spec, wl, get_gpu("H100")).assumptions)


def test_math_attention_under_autocast_saves_half_inputs_and_both_probabilities():
    """Llama-3.2-1B on a T4 (math kernel), per token and layer at s=1024, full fine-tuning."""
    from memfit.core import activations as act
    from memfit.core.per_rank import compute_workload

    spec = load_model("Llama-3.2-1B")
    att = spec.layers[0].attention
    t4 = get_gpu("T4")

    def core(precision: str) -> int:
        wl = Training(seq_len=1024, precision=precision)
        flow = act.training_flow(spec, compute_workload(wl), lora_targets=frozenset(), gpu=t4)
        assert act.attention_backend(att, flow, seq_len=1024) == "math"
        return act._attention_core(att, flow, seq_len=1024)

    # q 32 × 64 = 2,048 wide; K and V repeated to every head: 2 × 2,048; probabilities 32 heads × 1,024;
    # the output o_proj reads: 2 B × 2,048
    # fp16: fp32 q, k, v and probabilities: 4 × (2,048 + 4,096 + 32,768) + 4,096 = 159,744
    assert core("fp16") == 159_744
    # amp-fp16: fp16 casts of q, k, v: 2 × 6,144; fp32 softmax output + its fp16 cast: 6 × 32,768;
    # output 4,096 → 12,288 + 196,608 + 4,096 = 212,992
    assert core("amp-fp16") == 212_992


@pytest.mark.parametrize(("shape", "expected"), [
    # prefill, 14 heads, 2 KV heads, q = kv = 512, head dim 64 (the causal mask's add is the larger moment):
    # 2 fp32 q (2 × 1,835,008) + one fp32 K/V before the repeat (262,144) + repeated K, its scaled copy and
    # repeated V (3 × 1,835,008) + two fp32 score tensors (2 × 14,680,064) + the fp32 causal bias (1,048,576)
    ({"s": 512, "kv": 512}, 39_845_888),
    # decode, one query over 512 keys (the q·Kᵀ matmul): 2 × 3,584 + 262,144 + 4 × 1,835,008 (K, scaled K,
    # its contiguous transpose, V) + one score tensor 28,672; no mask
    ({"s": 1, "kv": 512}, 7_638_016),
])
def test_upcast_math_kernel_working_set(shape, expected):
    """fp16 GQA inputs on SDPA's math kernel: the peak live bytes measured on real CPU tensors."""
    from memfit.core.transients import _upcast_math_parts

    parts = _upcast_math_parts(b=1, heads=14, kv_heads=2, q_dim=64, v_dim=64, **shape)
    assert sum(t.nbytes for t in parts) == expected
