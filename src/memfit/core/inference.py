"""Inference phases (load, prefill, decode) of one job on the most loaded GPU, with their assumptions.

`inference_phases(spec, workload, gpu=None)` validates the workload against the model and the runtime's
profile, then hands it to the module of the allocator that runs it:
- torch_inference.py: PyTorch's caching allocator (transformers; vLLM's weights and profiling run): each
  phase at its peak, reserved and device bytes with the exact segment rounding;
- device_map.py: transformers' device_map="auto" under a per-GPU cap, modules placed as accelerate does,
  offloaded weights in `Phase.host`;
- llama_cpp.py: llama.cpp's own buffers (allocated == reserved), its off-GPU layers in `Phase.host`;
- vllm.py: the KV capacity a preallocating runtime holds from its budget on a known GPU
  (`inference_parts`, `KvCapacity`).
"""

from __future__ import annotations

import dataclasses

from memfit.core.choices import AttnImpl, KvCache
from memfit.core.device_map import auto_map_applies, device_map_phases
from memfit.core.errors import InvalidWorkload
from memfit.core.kv_cache import (
    compute_dtype,
    effective_kv_cache,
)
from memfit.core.llama_cpp import llama_cpp_devices, llama_cpp_phases, llama_cpp_split_note
from memfit.core.parallel import validate_parallel
from memfit.core.result import Gpu, KvCapacity, Phase
from memfit.core.runtimes import RuntimeProfile, check_runtime_supports, profile
from memfit.core.spec import ModelSpec
from memfit.core.torch_inference import carry_reserved, torch_phases
from memfit.core.vision_tower import check_images, decoder_workload, image_assumption, vision_load
from memfit.core.vllm import vllm_parts
from memfit.core.workload import Inference


def inference_phases(spec: ModelSpec, workload: Inference,
                     gpu: Gpu | None = None) -> tuple[tuple[Phase, ...], tuple[str, ...]]:
    """The load, prefill and (when generating) decode phases, and the assumptions behind them.

    With a `gpu`, a preallocating runtime (vLLM) gets its KV cache sized as the capacity its budget leaves
    (see `inference_parts`).

    Raises:
        InvalidWorkload: the workload is impossible for this model or runtime (one line naming the field).
    """
    phases, assumptions, _ = inference_parts(spec, workload, gpu)
    return phases, assumptions

def inference_parts(spec: ModelSpec, workload: Inference,
                    gpu: Gpu | None = None) -> tuple[tuple[Phase, ...], tuple[str, ...], KvCapacity | None]:
    """`inference_phases`, plus the KV capacity of a preallocating runtime on `gpu` (None otherwise).

    A preallocating runtime (vLLM) takes gpu_memory_utilization × usable bytes up front; what weights,
    the profiling run's activations and the process overhead leave becomes KV blocks. With a GPU the
    prefill and decode phases hold that whole capacity as their `kv_cache`, and the job fits only when it
    holds batch_size sequences of prompt + new tokens (each rounded up to whole blocks). Without a GPU the
    cache is sized for the requested batch and length, and an assumption says the capacity needs a GPU.

    Raises:
        InvalidWorkload: the workload is impossible for this model or runtime (one line naming the field).
    """
    prof = profile(workload.runtime)
    check_images(spec, workload, prof)
    images = vision_load(spec, workload)
    image_line = image_assumption(spec, workload) if images else None
    workload = decoder_workload(spec, workload)   # the prompt with the image tokens added
    kind = validate(spec, workload, prof)
    assumptions = [f"runtime {prof.runtime}: {prof.source}", f"KV cache: {kind}",
                   f"compute dtype {compute_dtype(spec, workload)}"]
    if image_line:
        assumptions.append(image_line)
    if prof.own_attention_kernels and workload.attn is not AttnImpl.FLASH:
        # vLLM picks its attention backend itself (FlashAttention, FlashInfer, Triton, FlashMLA): no eager
        # score matrix whatever transformers' default for the family is
        workload = dataclasses.replace(workload, attn=AttnImpl.FLASH)
        assumptions.append(f"{prof.runtime} runs its own fused attention kernels (no score matrix)")
    if not prof.torch_allocator:
        assumptions += ["llama.cpp: own buffers, allocated = reserved; token_embd stays in host RAM; KV "
                        "cells are n_ctx rounded up to 256; the compute buffer is the larger of one layer's "
                        "fp32 intermediates with the flash-attention KQ mask and the ubatch's logits (CPU "
                        "reference: −0.2 % … +9.8 %); logits are copied to a host output buffer; the CUDA "
                        "context is an estimate (LLAMA_CPP_CONTEXT_BYTES)"]
        phases = llama_cpp_phases(spec, workload, prof)
        if workload.parallel.pp > 1:
            assumptions.append(llama_cpp_split_note(llama_cpp_devices(spec, workload, prof)))
        return phases, tuple(assumptions), None
    if auto_map_applies(workload, prof):
        return device_map_phases(spec, workload, prof, kind, assumptions, gpu), tuple(assumptions), None
    raw = torch_phases(spec, workload, prof, kind, assumptions, gpu, vision=images)
    if prof.preallocates_fraction:
        # vLLM: its profile run replaces the prefill; on a GPU the KV cache is the capacity left over
        held, capacity = vllm_parts(spec, workload, raw, gpu, assumptions)
        return carry_reserved(held), tuple(assumptions), capacity
    return carry_reserved(raw), tuple(assumptions), None

def validate(spec: ModelSpec, workload: Inference, prof: RuntimeProfile) -> KvCache:
    """Check the workload against the model and the runtime; return the effective cache kind."""
    check_runtime_supports(prof.runtime, quant_kind=workload.quant.kind, quant_name=workload.quant.name,
                           kv_cache=effective_kv_cache(workload, prof))
    total = workload.total_tokens
    if total > spec.max_position_embeddings and not workload.allow_longer:
        raise InvalidWorkload(
            f"prompt_tokens + new_tokens = {total} exceeds max_position_embeddings="
            f"{spec.max_position_embeddings} of {spec.name}; shorten the job or set allow_longer")
    validate_parallel(spec, workload.parallel)
    return effective_kv_cache(workload, prof)

def vllm_kv_capacity_tokens(spec: ModelSpec, workload: Inference, *, gpu_usable_bytes: int) -> int:
    """Tokens of KV cache vLLM holds on a GPU offering `gpu_usable_bytes` (see core/vllm.py kv_capacity)."""
    gpu = Gpu(name="usable-bytes", memory_bytes=gpu_usable_bytes, usable_bytes=gpu_usable_bytes)
    _, _, capacity = inference_parts(spec, workload, gpu)
    assert capacity is not None
    return capacity.tokens
