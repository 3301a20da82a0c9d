"""A workload against what its GPU can run: dtypes, attention kernels, and the assumptions a GPU adds.

`workload_for_gpu(spec, workload, gpu)` is applied by every engine before it sizes anything (the analytic
`estimate`, and the api for trace and measure), so the API and the CLI mean the same:
- a dtype the user chose that the GPU cannot run is refused with one line naming the GPU and what would
  work: `dtype=bf16`, `kv_cache_dtype=bf16`, training `precision=bf16 / amp-bf16` on a GPU without bf16
  (Volta, Turing), `attn=flash` (FlashAttention-2) on a GPU without it;
- a dtype the user left to the checkpoint (`Inference.dtype=None`) follows the GPU: a bf16 checkpoint on a
  GPU without bf16 is estimated in fp16, with an assumption saying so (vLLM's dtype "auto" refuses to start
  there and asks for --dtype half; transformers' dtype "auto" would run bf16 emulated, slowly, and SDPA
  would fall back to its math kernel: people pass fp16). Training's precision has no "not chosen" value
  (its default is bf16), so a bf16 training job on such a GPU is refused and the message names
  `--precision fp16` / `amp-fp16`;
- FP8 weights or an FP8 KV cache on a GPU without FP8 tensor cores are kept (stored as FP8: vLLM runs FP8
  checkpoints weight-only through Marlin on Ampere and stores an fp8 KV cache on any CUDA GPU), with a note;
- a GPU that is not NVIDIA CUDA (ROCm, Gaudi, Apple silicon) adds its architecture's note: its runtime
  overheads are assumed from the H100 measurements.
Source: vLLM worker `_check_if_gpu_supports_dtype` ("Bfloat16 is only supported on GPUs with compute
capability of at least 8.0 ... use float16 instead by explicitly setting the `dtype` flag, --dtype=half");
torch sdp_utils.cpp; capabilities per architecture in core/devices.py.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

from memfit.core.attention_kinds import runs_eager, sdpa_backend
from memfit.core.choices import AttnImpl, Method, Precision
from memfit.core.devices import DEFAULT_ARCH, arch_row
from memfit.core.dtypes import DType
from memfit.core.errors import InvalidWorkload
from memfit.core.kv_cache import compute_dtype
from memfit.core.optimizers import peft_adapts_fused_experts
from memfit.core.result import Gpu
from memfit.core.runtimes import PROFILES
from memfit.core.spec import ModelSpec
from memfit.core.workload import DEFAULT_LORA_DROPOUT, Inference, Training

FP8_DTYPES = frozenset({DType.FP8_E4M3, DType.FP8_E5M2})
"""Dtypes that need FP8 tensor cores to compute in (sm89+, CDNA3, Gaudi 2+)."""


def workload_for_gpu(spec: ModelSpec, workload: Inference | Training,
                     gpu: Gpu | None) -> tuple[Inference | Training, tuple[str, ...]]:
    """`workload` as it runs on `gpu` (the checkpoint dtype may follow the GPU), and the notes that adds.

    Raises:
        InvalidWorkload: a dtype or attention kernel the user chose that `gpu` cannot run (one line).
    """
    notes: list[str] = []
    if isinstance(workload, Training):
        workload = _lora_dropout_for_model(spec, workload, notes)
    if gpu is None:
        return workload, tuple(notes)
    if workload.attn is AttnImpl.FLASH and not gpu.flash_attention:
        raise InvalidWorkload(f"attn=flash (FlashAttention-2) does not run on {gpu.describe()}: it needs "
                              "compute capability 8.0 or later; use --attn sdpa")
    match workload:
        case Inference():
            workload = _inference_for_gpu(spec, workload, gpu, notes)
            notes += _inference_attention_note(spec, workload, gpu)
        case Training():
            _check_training(workload, gpu)
    row = arch_row(gpu.arch)
    if row.vendor != "nvidia" and row.note:
        notes.append(f"{gpu.name}: {row.note}")
    return workload, tuple(notes)


def _lora_dropout_for_model(spec: ModelSpec, workload: Training, notes: list[str]) -> Training:
    """`workload` with its LoRA dropout settled when left to memfit (Lora.dropout None): 0 where peft's
    all-linear wraps the model's fused expert Parameters (lora.ParamWrapper refuses any other value, peft
    0.21 lora/layer.py), else DEFAULT_LORA_DROPOUT. A dropout the user gave is kept (and validated later)."""
    lora = workload.lora
    if lora is None or lora.dropout is not None or workload.method is Method.FULL:
        return workload
    if peft_adapts_fused_experts(spec, lora):
        notes.append(f"LoRA dropout 0: peft's all-linear adapts the fused expert parameters of {spec.name} "
                     "(lora.ParamWrapper), which take no dropout")
        return dataclasses.replace(workload, lora=dataclasses.replace(lora, dropout=Fraction(0)))
    return dataclasses.replace(workload, lora=dataclasses.replace(lora, dropout=DEFAULT_LORA_DROPOUT))


def _inference_for_gpu(spec: ModelSpec, workload: Inference, gpu: Gpu, notes: list[str]) -> Inference:
    torch_runtime = PROFILES[workload.runtime].torch_allocator
    if not gpu.bf16:
        for field in ("dtype", "kv_cache_dtype"):
            if getattr(workload, field) is DType.BF16:
                flag = field.replace("_", "-")
                raise InvalidWorkload(f"{field}=bf16 does not run on {gpu.describe()}: it has no bf16 "
                                      f"(that needs compute capability 8.0 or later); use --{flag} fp16")
        if workload.dtype is None and spec.checkpoint_dtype is DType.BF16 and torch_runtime:
            how = PROFILES[workload.runtime].runtime
            notes.append(f"{spec.name} is stored in bf16 and {gpu.describe()} has no bf16: estimated in "
                         f"fp16, as {how} must be told to run it there (dtype=float16 / --dtype half)")
            workload = dataclasses.replace(workload, dtype=DType.FP16)
    if not gpu.fp8:
        if workload.dtype in FP8_DTYPES:
            notes.append(f"dtype={workload.dtype}: {gpu.describe()} has no FP8 tensor cores; weights are "
                         "counted as stored in FP8 (vLLM runs them weight-only, dequantised in the GEMM)")
        if workload.kv_cache_dtype in FP8_DTYPES:
            notes.append(f"kv_cache_dtype={workload.kv_cache_dtype}: {gpu.describe()} has no FP8 tensor "
                         "cores; the cache is stored in FP8 and dequantised by the attention kernel")
    return workload


def _inference_attention_note(spec: ModelSpec, workload: Inference, gpu: Gpu) -> list[str]:
    """'attention kernel on T4-16GB (turing, sm 7.5): math (...)' where the GPU is not of the
    default architecture and transformers' SDPA runs (training says its kernel in its own assumptions)."""
    sdpa = workload.attn is AttnImpl.SDPA and PROFILES[workload.runtime].torch_sdpa
    if gpu.arch == DEFAULT_ARCH or not sdpa or runs_eager(spec, workload.attn):
        return []
    dtype = compute_dtype(spec, workload)
    backends = sorted({sdpa_backend(dtype, q_dim=att.mla.qk_head_dim if att.mla else att.head_dim,
                                    v_dim=att.mla.v_head_dim if att.mla else att.head_dim,
                                    grouped=att.mla is None and att.num_kv_heads < att.num_heads,
                                    masked=False, enable_gqa=att.sdpa_gqa, gpu=gpu)
                       for att in {id(layer.attention): layer.attention for layer in spec.layers
                                   if layer.attention is not None}.values()})
    return [f"attention kernel on {gpu.describe()}: {', '.join(backends)} (SDPA prefill without a mask)"]


def _check_training(workload: Training, gpu: Gpu) -> None:
    if not gpu.bf16 and workload.precision in (Precision.BF16, Precision.AMP_BF16):
        other = "amp-fp16" if workload.precision.is_amp else "fp16"
        raise InvalidWorkload(f"precision={workload.precision} does not run on {gpu.describe()}: it has no "
                              f"bf16 (that needs compute capability 8.0 or later); use --precision {other}")
