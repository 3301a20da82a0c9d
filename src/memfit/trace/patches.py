"""Process-global patches that make real Hugging Face code take its CUDA code paths on fake tensors.

1. SDPA backend choice. Fake CUDA tensors have no fused-kernel selector, so `F.scaled_dot_product_attention`
   would take the MATH path and materialise (seq × seq) scores. `sdpa` below applies autocast's cast, picks
   FLASH / EFFICIENT / MATH by CUDA's rules (torch/csrc/.../sdp_utils.cpp on sm90) and calls that aten op,
   which has a meta kernel and a backward. It replaces the function itself, not a TorchFunctionMode,
   because checkpoint recomputation does not see modes.
2. HF `is_tracing` branches. transformers treats fake tensors like torch.export inputs. Reviewed sites
   (transformers 5.17, masking_utils.py):
   - `find_packed_sequence_indices`: assumes packing on fake position ids → patched: None (inputs are
     unpadded, one sequence per row).
   - `_ignore_causal_mask_sdpa`: never skips the mask on fake padding masks (drops `is_causal`, flash and
     native GQA) → patched: decided from the known unpadded length (`set_unpadded_length`); a mask the
     model builds itself from ones (OPT before transformers 5.23 passes `torch.ones(b, s)` when given none)
     is all ones. Without that, OPT training under 5.17 kept a (s, s) efficient-attention bias per layer
     (+24 MiB, opt-125m b1 s1024) that a GPU never allocates; 5.23 stopped building the mask.
   - `_ignore_bidirectional_mask_sdpa`, `_can_skip_bidirectional_mask_xpu`: encoder / XPU only; not patched.
   - `create_recurrent_attention_mask` (line ~1496): keeps the 2-D padding mask of Mamba / linear-attention
     layers on fake tensors, where a GPU drops an all-ones mask (the layers then multiply every input by
     it: one more (b, s, hidden) and (b, s, conv_dim) copy each) → patched: None for the unpadded inputs
     the trace runs, in masking_utils and in the hybrid modeling modules that imported it.
   - modeling_utils.warn_if_padding_and_no_attention_mask: skips a warning only.
3. `torch.cuda.get_device_capability` answers (9, 0): transformers checks it before grouped_mm (MoE).
5. `torch._grouped_mm` (MoE experts) with fp32 / fp16 operands: its meta kernel demands bf16, but CUDA's
   `_grouped_mm_cuda` takes any float dtype, running non-bf16 through `_grouped_mm_fallback` (a loop of
   `mm_out` into the one output tensor: no other device allocation). The patched meta kernel returns that
   output for equal fp32 / fp16 operands. Source: torch aten/src/ATen/native/cuda/GroupedBlas.cpp
   (`use_fast_path = sm90/sm100 && a_b_and_out_are_bf16`, else `_grouped_mm_fallback`).
4. Autocast on "cuda" is refused when CUDA is unavailable; `amp_definitely_not_available` and
   `is_bf16_supported` are patched so autocast("cuda", bf16) runs (it is a dispatch key, no device needed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from memfit.core.attention_kinds import sdpa_backend
from memfit.core.dtypes import DType
from memfit.core.result import Gpu

TORCH_DTYPES = {torch.float16: DType.FP16, torch.bfloat16: DType.BF16, torch.float32: DType.FP32}
"""The dtypes SDPA's fused kernels take; any other runs math."""

SM90_CAPABILITY = (9, 0)
"""The compute capability the trace reports (H100): the ground truth's GPU."""

_state: dict[str, Any] = {"unpadded_length": None, "installed": False, "choices": {}, "gpu": None,
                         "saved": []}   # saved: (owner, attribute, original) per patch, for uninstall


def set_gpu(gpu: Gpu | None) -> None:
    """The GPU whose SDPA backends and BLAS workspace the trace emulates (None: an H100). The device the
    model code sees stays an sm90 one (SM90_CAPABILITY): only the backend choice and workspace follow."""
    _state["gpu"] = gpu


def current_gpu() -> Gpu | None:
    """The GPU set by `set_gpu` (None: an H100)."""
    gpu: Gpu | None = _state["gpu"]
    return gpu


def set_unpadded_length(num_tokens: int | None) -> None:
    """Tell the mask patch how many leading positions of the 2-D attention mask are ones (None: no mask)."""
    _state["unpadded_length"] = num_tokens


def backend_counts() -> dict[str, int]:
    """How many SDPA calls took each backend since install (for assumptions and tests)."""
    return dict(_state["choices"])


def choose_backend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attn_mask: torch.Tensor | None, is_causal: bool, enable_gqa: bool) -> str:
    """The backend CUDA's SDPA dispatcher picks on the traced GPU (`set_gpu`; None: sm90): "flash",
    "efficient" or "math".

    The rule is the analytic engine's, `memfit.core.attention_kinds.sdpa_backend`, fed the tensors' shapes.
    """
    dtype = TORCH_DTYPES.get(query.dtype)
    if dtype is None:
        return "math"
    same_heads = query.shape[-3] == key.shape[-3] == value.shape[-3]
    return sdpa_backend(dtype, q_dim=query.shape[-1], k_dim=key.shape[-1], v_dim=value.shape[-1],
                        grouped=not same_heads, masked=attn_mask is not None,
                        enable_gqa=enable_gqa and query.shape[-3] % key.shape[-3] == 0,
                        causal_offset=is_causal and query.shape[-2] != key.shape[-2],
                        gpu=current_gpu(), needs_grad=query.requires_grad)


def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
         dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
         enable_gqa: bool = False) -> torch.Tensor:
    """`F.scaled_dot_product_attention` as CUDA runs it: autocast cast, backend choice, the backend's op."""
    if torch.is_autocast_enabled(query.device.type):
        low = torch.get_autocast_dtype(query.device.type)
        query, key, value = (t.to(low) if t.is_floating_point() else t for t in (query, key, value))
    backend = choose_backend(query, key, value, attn_mask, is_causal, enable_gqa)
    _state["choices"][backend] = _state["choices"].get(backend, 0) + 1
    aten = torch.ops.aten
    if backend == "flash":
        out = aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal,
                                                       False, scale=scale)
        return out[0]  # type: ignore[no-any-return]
    if backend == "efficient":
        bias = _efficient_bias(attn_mask, query)
        needs_lse = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
        out = aten._scaled_dot_product_efficient_attention(query, key, value, bias, needs_lse, dropout_p,
                                                           is_causal, scale=scale)
        return out[0]  # type: ignore[no-any-return]
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        groups = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(groups, dim=-3)
        value = value.repeat_interleave(groups, dim=-3)
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = _additive_mask(attn_mask, query)
    out = aten._scaled_dot_product_attention_math(query, key, value, attn_mask, dropout_p, is_causal,
                                                  None, scale=scale)
    return out[0]  # type: ignore[no-any-return]


def _additive_mask(attn_mask: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """A bool mask as the additive mask SDPA builds from it, directly in q's dtype (no fp32 step):
    `where(mask, 0.0, scalar_tensor(-inf, dtype))` promotes to the 0-dim tensor's dtype.
    Source: aten/src/ATen/native/transformers/attention.cpp convert_boolean_attn_mask (torch 2.11)."""
    neg_inf = torch.scalar_tensor(float("-inf"), dtype=query.dtype, device=attn_mask.device)
    return torch.where(attn_mask, 0.0, neg_inf)


def _efficient_bias(attn_mask: torch.Tensor | None, query: torch.Tensor) -> torch.Tensor | None:
    """The additive bias the efficient kernel gets: a bool mask becomes a float mask (a new tensor),
    padded so its last dim is a multiple of 16.
    Source: sdp_utils convert_boolean_attn_mask, preprocess_mask."""
    if attn_mask is None:
        return None
    if attn_mask.dtype == torch.bool:
        attn_mask = _additive_mask(attn_mask, query)
    last = attn_mask.shape[-1]
    if last % 16:
        padded = torch.nn.functional.pad(attn_mask, (0, 16 - last % 16))
        attn_mask = padded[..., :last]
    return attn_mask


def _ignore_causal_mask_sdpa(padding_mask: Any, q_length: int, kv_length: int, q_offset: int, kv_offset: int,
                             local_attention_size: int | None = None) -> bool:
    """transformers' rule, evaluated from the known unpadded length instead of the mask's values."""
    if padding_mask is None:
        ones_until = None
    else:
        ones_until = _state["unpadded_length"]
        if ones_until is None:      # a mask the model built itself (OPT's torch.ones): the trace never pads,
            ones_until = padding_mask.shape[-1]     # so it is all ones, as fast_all finds on a real GPU
    if local_attention_size is not None and kv_length >= local_attention_size:
        return False
    if isinstance(q_offset, torch.Tensor):      # StaticLayer's fake counter: tokens already cached
        q_offset = max(0, ones_until - q_length) if ones_until is not None else 0
    if ones_until is None:                      # no padding mask: HF's rule without its value checks
        return q_length == 1 or kv_length == q_length or q_offset == 0

    def all_ones(start: int, stop: int) -> bool:
        return ones_until is None or stop <= ones_until

    def all_zeros(start: int, stop: int) -> bool:
        return (ones_until is not None and start >= ones_until) or start >= stop

    if (q_length == 1 or kv_length == q_length) and all_ones(kv_offset, kv_offset + kv_length):
        return True
    return q_offset == 0 and all_ones(kv_offset, kv_offset + q_length) and all_zeros(
        kv_offset + q_length, kv_offset + kv_length)


GROUPED_MM_FALLBACK_DTYPES = (torch.float32, torch.float16)
"""Operand dtypes CUDA's _grouped_mm runs through its mm_out loop instead of the bf16 CUTLASS kernel."""


def _grouped_mm_meta(original: Any) -> Any:
    """Wrap torch's grouped-mm meta check so unscaled fp32 / fp16 operands get CUDA's fallback output."""
    from torch import _meta_registrations as meta

    def grouped_mm_common(mat_a: torch.Tensor, mat_b: torch.Tensor, scale_a: torch.Tensor | None,
                          scale_b: torch.Tensor | None, offs: torch.Tensor | None = None,
                          bias: torch.Tensor | None = None, scale_result: torch.Tensor | None = None,
                          out_dtype: torch.dtype | None = None, use_fast_accum: bool = False) -> torch.Tensor:
        if scale_a is None and scale_b is None and mat_a.dtype == mat_b.dtype \
                and mat_a.dtype in GROUPED_MM_FALLBACK_DTYPES and out_dtype in (None, mat_a.dtype):
            create: Any = meta._create_grouped_mm_output_tensor
            return create(mat_a, mat_b, offs, out_dtype)  # type: ignore[no-any-return]
        return original(mat_a, mat_b, scale_a, scale_b, offs=offs, bias=bias,  # type: ignore[no-any-return]
                        scale_result=scale_result, out_dtype=out_dtype, use_fast_accum=use_fast_accum)

    return grouped_mm_common


def install() -> None:
    """Apply every patch once per process (the worker calls it before building a model); `uninstall` or
    `installed()` undo them, so a test process that patches leaves torch and transformers as it found them."""
    if _state["installed"]:
        return
    _set(F, "scaled_dot_product_attention", sdpa)

    import torch.cuda.amp.common as amp_common

    _set(amp_common, "amp_definitely_not_available", lambda: False)
    _set(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    # transformers asks the capability before grouped_mm (MoE experts) and fused kernels: an H100 (sm90)
    _set(torch.cuda, "get_device_capability", lambda *args, **kwargs: SM90_CAPABILITY)

    from torch import _meta_registrations

    _set(_meta_registrations, "_meta_grouped_mm_common",
         _grouped_mm_meta(_meta_registrations._meta_grouped_mm_common))

    from transformers import masking_utils

    _set(masking_utils, "find_packed_sequence_indices", lambda position_ids: None)
    _set(masking_utils, "_ignore_causal_mask_sdpa", _ignore_causal_mask_sdpa)
    _patch_recurrent_mask(masking_utils)
    _state["installed"] = True


def uninstall() -> None:
    """Undo `install`: every patched attribute gets back the object it held before, last patched first."""
    saved: list[tuple[Any, str, Any]] = _state["saved"]
    while saved:
        owner, name, original = saved.pop()
        setattr(owner, name, original)
    _state["installed"] = False


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """The patches for the duration of a `with` block (in-process callers such as tests); a process that
    had them installed before keeps them."""
    already = _state["installed"]
    install()
    try:
        yield
    finally:
        if not already:
            uninstall()


def _set(owner: Any, name: str, value: Any) -> None:
    """setattr that remembers the original for `uninstall`."""
    _state["saved"].append((owner, name, getattr(owner, name)))
    setattr(owner, name, value)


RECURRENT_MASK_MODULES = ("bamba", "falcon_h1", "granitemoehybrid", "jamba", "nemotron_h", "qwen3_next")
"""transformers.models.<name>.modeling_<name> modules that import create_recurrent_attention_mask by name."""


def _patch_recurrent_mask(masking_utils: Any) -> None:
    """create_recurrent_attention_mask returns None for an all-ones mask on a GPU; trace inputs are unpadded
    (one sequence per row, all ones), so it returns None here. Source: transformers 5.17 masking_utils
    create_recurrent_attention_mask (`not is_tracing(attention_mask) and torch.all(attention_mask == 1)`)."""
    import importlib

    def no_padding(*args: Any, **kwargs: Any) -> None:
        return None

    _set(masking_utils, "create_recurrent_attention_mask", no_padding)
    for name in RECURRENT_MASK_MODULES:
        module: Any = importlib.import_module(f"transformers.models.{name}.modeling_{name}")
        if hasattr(module, "create_recurrent_attention_mask"):
            _set(module, "create_recurrent_attention_mask", no_padding)
