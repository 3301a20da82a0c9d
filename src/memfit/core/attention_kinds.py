"""How a family's transformers 5.17 attention really runs: SDPA or eager, ALiBi bias, per-score temporaries.

Shared facts for the inference working set (transients.py) and training activations (activations.py):
- `runs_eager(spec, attn)`: models whose classes refuse SDPA (`spec.default_attention`) run eager;
- `alibi_bias(spec)`: Falcon-RW (config `alibi`) folds ALiBi and the causal mask into one float
  (b, heads, s, kv) bias built once per forward and passed to every layer (SDPA then takes the memory-
  efficient kernel with that bias); BLOOM adds its (b·heads, 1, kv) ALiBi through baddbmm instead;
- `eager_bytes_per_score(att, dtype)`: peak bytes per (b, heads, s, kv) score of the layer's eager
  attention (`att.eager_scores`), measured on real CPU tensors (a TorchDispatchMode summing live storages)
  with tiny configs.
Every family fact here is a spec field its mapper sets (core/families/); nothing tests a family name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memfit.core.choices import AttnImpl, EagerScores
from memfit.core.devices import DEFAULT_ARCH, arch_row, flash_grad_refused
from memfit.core.dtypes import DType
from memfit.core.spec import AttentionSpec, ModelSpec
from memfit.core.versions import Attention

if TYPE_CHECKING:
    from memfit.core.result import Gpu

FP32_BYTES = 4
"""Bytes of an fp32 element."""
FLASH_MAX_HEAD_DIM = 256
"""Largest head dim SDPA's flash kernel takes. Source: torch sdp_utils.cpp check_head_dim_size_flash."""
SDPA_LOW_PRECISION = frozenset({DType.FP16, DType.BF16})
SDPA_EFFICIENT_DTYPES = frozenset({DType.FP16, DType.BF16, DType.FP32})
SDPA_EFFICIENT_DTYPES_PRE_SM80 = frozenset({DType.FP16, DType.FP32})
"""The memory-efficient kernel's dtypes below sm80.
Source: sdp_utils.cpp less_than_sm80_mem_efficient_dtypes."""


def sdpa_backend(dtype: DType, *, q_dim: int, k_dim: int | None = None, v_dim: int | None = None,
                 grouped: bool, masked: bool, enable_gqa: bool = True, causal_offset: bool = False,
                 gpu: Gpu | None = None, needs_grad: bool = False) -> str:
    """The kernel torch's SDPA dispatcher picks on `gpu` (None: an H100): "flash", "efficient" or "math".

    Flash: a GPU with the flash backend (`Gpu.flash_attention`: CUDA sm80-sm121), fp16/bf16, no attn_mask,
    equal q/k/v head dims ≤ 256, GQA (`grouped`: fewer K/V heads than query heads) only with enable_gqa,
    is_causal only when query and key lengths match (no `causal_offset`), and on sm86/89/120 no backward
    through head dims in (192, 224] (`needs_grad`). Memory-efficient: a GPU with that backend (CUDA sm50+;
    not Apple's MPS), fp32/fp16 and bf16 from sm80 (`Arch.efficient_bf16`), masks allowed, equal head
    counts and q/k dims. Math (materialised scores) otherwise. The one rule the analytic engine
    (activations, transients) and the trace's SDPA emulation (trace/patches.py) share.
    Source: aten/src/ATen/native/transformers/cuda/sdp_utils.cpp (torch 2.13), priority order flash,
    efficient, math; check_flash_attention_hardware_support, can_use_mem_efficient_attention
    (less_than_sm80_mem_efficient_dtypes); capabilities per architecture in core/devices.py.
    """
    k_dim = q_dim if k_dim is None else k_dim
    v_dim = q_dim if v_dim is None else v_dim
    flash = gpu.flash_attention if gpu is not None else arch_row(DEFAULT_ARCH).flash_attention
    row = arch_row(gpu.arch if gpu is not None else DEFAULT_ARCH)
    grad_refused = needs_grad and gpu is not None and flash_grad_refused(gpu.compute_capability, q_dim)
    if (flash and dtype in SDPA_LOW_PRECISION and not masked and q_dim == k_dim == v_dim <= FLASH_MAX_HEAD_DIM
            and (enable_gqa or not grouped) and not causal_offset and not grad_refused):
        return "flash"
    efficient_dtypes = SDPA_EFFICIENT_DTYPES if row.efficient_bf16 else SDPA_EFFICIENT_DTYPES_PRE_SM80
    if row.efficient_attention and dtype in efficient_dtypes and not grouped and k_dim == q_dim:
        return "efficient"
    return "math"


def sdpa_by_default(spec: ModelSpec) -> bool:
    """Whether transformers' default attention (no attn_implementation passed) is SDPA for this model: not for
    families whose classes do not support SDPA (BLOOM, gpt-oss, GPT-J), nor when the config asks for eager
    (the family mapper sets `spec.default_attention`)."""
    return spec.default_attention is AttnImpl.SDPA


def alibi_bias(spec: ModelSpec) -> bool:
    """Whether one float (b, heads, s, kv) ALiBi+causal bias lives through the whole layer loop (Falcon-RW).

    Source: transformers 5.17 FalconModel.forward: `causal_mask = masked_fill(alibi / sqrt(head_dim), ...)`
    of shape (b, heads, s, kv), passed to SDPA as attn_mask and to eager as the added mask.
    """
    return spec.alibi_float_bias


def runs_eager(spec: ModelSpec, attn: AttnImpl) -> bool:
    """Whether attention runs transformers' eager path (asked for, or SDPA is not what the model runs)."""
    return attn is AttnImpl.EAGER or (attn is AttnImpl.SDPA and not sdpa_by_default(spec))


def modeled_attention(spec: ModelSpec, attn: AttnImpl) -> Attention:
    """The attention memfit models this model running under `attn`, and whether it is transformers' default
    (the `attn=sdpa` setting leaves the choice to transformers)."""
    runs = "eager" if runs_eager(spec, attn) else str(attn)
    return Attention(runs=runs, default=attn is AttnImpl.SDPA)


def eager_bytes_per_score(att: AttentionSpec, dtype: DType, *, previous_probs: bool = False) -> int:
    """Peak bytes per (b, heads, s, kv) score of eager attention in `dtype` (inference, no grad).

    - generic eager_attention_forward (Llama and most): the masked scores, their fp32 copy and the fp32
      softmax: dt + 4 + 4 (fp16 on CUDA: half-to-float, dt + 4; fp32: 2 × 4);
    - sinks (gpt-oss): masked scores, cat with the sink column, its max-subtracted copy and the softmax
      in the compute dtype, at most three alive: 3 dt;
    - BADDBMM_ALIBI (BLOOM): baddbmm(alibi) output, + mask, fp32 copy, fp32 softmax, previous layer's probs:
      3 dt + 4 + 4 (fp32: no copy, 4 × 4);
    - FLOAT_ALIBI (Falcon with ALiBi): q·kᵀ, its fp32 copy, + alibi, + mask (fp32), the cast back, the
      softmax and the previous layer's probs: 4 dt + 3 × 4 (fp32: no copies, 5 × 4);
    - SOFTMAX_IN_DTYPE (Falcon without ALiBi): q·kᵀ, + mask, softmax in dt, previous probs: 4 dt.
    - SCORES_IN_DTYPE (GPT-2): q·kᵀ, × scaling, + mask, softmax, all in dt, each freeing the one before:
      2 dt (trace of gpt2, fp32 b8 s1000: 8 B per score).
    The previous layer's probabilities are part of the last three (both families keep them:
    `previous_probs`); the generic kinds do not keep them.
    Source: transformers 5.17 modeling_llama/gpt_oss/bloom/falcon eager code; peak live storages of real
    CPU forwards (bf16, b2 s256, 16 heads): BLOOM 14 B, Falcon-RW 20 B (+2 B bias), gpt-oss 6 B per score.
    """
    dt = dtype.nbytes(1)
    fp32 = dt == FP32_BYTES
    previous = dt if previous_probs else 0
    match att.eager_scores:
        case EagerScores.BADDBMM_ALIBI:
            return 2 * dt + (0 if fp32 else FP32_BYTES) + FP32_BYTES + previous
        case EagerScores.FLOAT_ALIBI:
            copies = 0 if fp32 else FP32_BYTES + dt       # the fp32 upcast and the cast back to dt
            return dt + copies + 2 * FP32_BYTES + dt + previous
        case EagerScores.SOFTMAX_IN_DTYPE:
            return 3 * dt + previous
        case EagerScores.SCORES_IN_DTYPE:
            return 2 * dt + previous
    if att.sinks:
        return 3 * dt
    match dtype:
        case DType.FP16:
            return dt + FP32_BYTES
        case DType.FP32:
            return 2 * dt
        case _:
            return dt + 2 * FP32_BYTES
