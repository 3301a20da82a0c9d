"""Stand-ins for bitsandbytes on fake tensors: quantized Linear layers and 8-bit / paged optimizers.

bitsandbytes needs a real GPU, so the trace swaps each quantized layer for a module holding tensors of the
real storage sizes and dtypes, whose forward and backward allocate what bitsandbytes' kernels allocate.
Source: bitsandbytes 0.50.2 (nn/modules.py Linear4bit.forward, autograd/_functions.py matmul_4bit and
MatMul4Bit, MatMul8bitLt, backends/cuda/ops.py gemm_4bit and _dequant_linear_fallback, functional.py
quantize_4bit, dequantize_4bit) and peft 0.21 tuners/lora/bnb.py Linear4bit.forward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from memfit.core.choices import Optimizer
from memfit.core.errors import EngineUnavailable
from memfit.core.quants import bnb_4bit_fused
from memfit.core.workload import Inference, Training

NF4_BLOCK = 64
"""Weights per absmax in bnb 4-bit (elements). Source: BitsAndBytesConfig bnb_4bit_blocksize default 64."""
NESTED_BLOCK = 256
"""absmax values per second-level scale with double quant. Source: quantize_4bit → quantize_blockwise(256)."""
NF4_CODE_ENTRIES = 16
"""fp32 entries of the 4-bit code table each layer holds (get_4bit_type)."""
DYNAMIC_CODE_ENTRIES = 256
"""fp32 entries of the 8-bit dynamic map of the second-level state (create_dynamic_map)."""
SKIP_MODULES = ("lm_head",)
"""Linear layers transformers' bnb integration leaves unquantized. Source: get_keys_to_not_convert (the
output embedding)."""
INT8_BLOCK = 256
"""Elements per absmax in bnb's 8-bit blockwise optimizer states.
Source: optim/optimizer.py (blocksize 256)."""
INT8_MIN_NUMEL = 4096
"""Parameters smaller than this keep 32-bit states in bnb 8-bit optimizers. Source: min_8bit_size=4096."""


_TAG: dict[str, Any] = {"mark": None}


def set_tagger(mark: Any) -> None:
    """Route dequantisation buffers to `mark(role, tensors)` (the trace's tracker), or None."""
    _TAG["mark"] = mark


def _tag_dequant(*tensors: torch.Tensor | None) -> None:
    if _TAG["mark"] is not None:
        _TAG["mark"]("dequant", tensors)


# --- which layers are quantized ----------------------------------------------------------------------------

def is_quantized_layer(module: nn.Module) -> bool:
    """transformers' replace_with_bnb_linear rule: exactly nn.Linear (not a subclass such as FalconLinear)
    or a GPT-2-style Conv1D. Source: transformers 5.17 integrations/bitsandbytes.py replace_with_bnb_linear
    (`isinstance(module, Conv1D) or type(module) is nn.Linear`)."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D) or type(module) is nn.Linear


def layer_features(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a Linear or a Conv1D, whose weight is stored transposed (in, out).
    bnb's Linear4bit / Linear8bitLt get (in, out) and the loader transposes Conv1D's checkpoint weight
    (transformers sets `source_cls` for that), so the quantized layer is an ordinary (out, in) Linear."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    in_features, out_features = _tensor(module, "weight").shape
    return int(in_features), int(out_features)


def _tensor(module: nn.Module, name: str) -> torch.Tensor:
    value = getattr(module, name)
    assert isinstance(value, torch.Tensor)   # a Linear's or Conv1D's weight; not user input
    return value


# --- 4-bit linear ---------------------------------------------------------------------------------------

class Linear4bitStandIn(nn.Linear):
    """A bnb Linear4bit: packed uint8 weight ((n+1)//2, 1), absmax (fp32, or uint8 + second level), code."""

    def __init__(self, linear: nn.Module, *, nested: bool, compute_dtype: torch.dtype,
                 shared_code2: torch.Tensor | None = None) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = layer_features(linear)
        numel = self.in_features * self.out_features
        device = _tensor(linear, "weight").device
        self.weight = nn.Parameter(torch.empty(((numel + 1) // 2, 1), dtype=torch.uint8, device=device),
                                   requires_grad=False)
        self.bias = linear.bias  # type: ignore[assignment]   # a Parameter or None, as nn.Linear's
        self.nested, self.compute_dtype = nested, compute_dtype
        blocks = -(-numel // NF4_BLOCK)
        self.register_buffer("code", torch.empty(NF4_CODE_ENTRIES, device=device), persistent=False)
        if nested:
            self.register_buffer("absmax", torch.empty(blocks, dtype=torch.uint8, device=device),
                                 persistent=False)
            self.register_buffer("absmax2", torch.empty(-(-blocks // NESTED_BLOCK), device=device),
                                 persistent=False)
            # the 8-bit dynamic map is cached once per device (functional.name2qmap) and shared by all layers
            code2 = shared_code2
            if code2 is None:
                code2 = torch.empty(DYNAMIC_CODE_ENTRIES, device=device)
            self.register_buffer("code2", code2, persistent=False)
            self.register_buffer("offset", torch.empty((), device=device), persistent=False)
        else:
            self.register_buffer("absmax", torch.empty(blocks, device=device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp_dtype = x.dtype
        x = x.to(self.compute_dtype)
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        if torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)):
            out = _MatMul4bit.apply(x, self.weight, bias, self)  # type: ignore[no-untyped-call]
        else:
            out = _gemm_4bit(x, bias, self)
        return out.to(inp_dtype)  # type: ignore[no-any-return]


def _absmax_fp32(mod: Linear4bitStandIn) -> torch.Tensor | None:
    """Double quant: the dequantised absmax (fp32) and its + offset copy (dequantize_blockwise + offset)."""
    if not mod.nested:
        return None
    absmax_dq = torch.empty_like(_buffer(mod, "absmax"), dtype=torch.float32)
    return absmax_dq + _buffer(mod, "offset")


def _buffer(mod: nn.Module, name: str) -> torch.Tensor:
    value = getattr(mod, name)
    assert isinstance(value, torch.Tensor)   # registered in __init__; not user input
    return value


def _gemm_4bit(x: torch.Tensor, bias: torch.Tensor | None, mod: Linear4bitStandIn) -> torch.Tensor:
    """bitsandbytes::gemm_4bit on CUDA: fused kernel (output only) or dequantise + F.linear."""
    k, n = mod.in_features, mod.out_features
    if bnb_4bit_fused(x.numel() // k, n, k):
        return torch.empty((*x.shape[:-1], n), dtype=x.dtype, device=x.device)
    absmax = _absmax_fp32(mod)
    weight = torch.empty((n, k), dtype=x.dtype, device=x.device)
    _tag_dequant(absmax, weight)
    out = torch.nn.functional.linear(x, weight, bias)
    del absmax
    return out


class _MatMul4bit(torch.autograd.Function):
    """MatMul4Bit: saves nothing but the packed weight; backward dequantises it for grad_input."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                mod: Linear4bitStandIn) -> torch.Tensor:
        ctx.mod, ctx.has_bias = mod, bias is not None
        return _gemm_4bit(x, bias, mod)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        mod = ctx.mod
        grad_bias = grad_output.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            absmax = torch.empty_like(_buffer(mod, "absmax"), dtype=torch.float32) if mod.nested else None
            weight = torch.empty((mod.out_features, mod.in_features), dtype=mod.compute_dtype,
                                 device=grad_output.device)
            _tag_dequant(absmax, weight)
            del absmax
            grad_x = torch.matmul(grad_output, weight.to(grad_output.dtype))
        return grad_x, None, grad_bias, None


# --- 8-bit linear (LLM.int8) ---------------------------------------------------------------------------

INT8_THRESHOLD = 6.0
"""LLM.int8 outlier threshold: input columns holding a value with |a| ≥ this go through the fp16 side path
(absolute activation value). Source: transformers BitsAndBytesConfig llm_int8_threshold default 6.0."""
INT8_SCALE = 1 / 127
"""int8 → real factor of bnb's row-wise quantisation (per unit of the fp32 row absmax).
Source: bitsandbytes _ops.py int8_vectorwise_dequant (A * stats * 7.874015718698502e-3)."""


class Linear8bitStandIn(nn.Linear):
    """A bnb Linear8bitLt after loading: int8 weight (out, in) and fp32 row scales (out,).

    Its forward allocates what MatMul8bitLt.forward allocates for inference (has_fp16_weights=False), with
    every input column counted as an outlier when `threshold` > 0 (see `_matmul_8bit`).
    """

    def __init__(self, linear: nn.Module, *, threshold: float = INT8_THRESHOLD) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = layer_features(linear)
        device = _tensor(linear, "weight").device
        self.weight = nn.Parameter(torch.empty((self.out_features, self.in_features), dtype=torch.int8,
                                               device=device), requires_grad=False)
        self.bias = linear.bias  # type: ignore[assignment]   # a Parameter or None, as nn.Linear's
        self.threshold = threshold
        self.register_buffer("scb", torch.empty(self.out_features, device=device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # bnb computes under its own autograd Function; the frozen int8 base contributes no graph here
        with torch.no_grad():
            return _matmul_8bit(x, self)


def _matmul_8bit(x: torch.Tensor, mod: Linear8bitStandIn) -> torch.Tensor:
    """MatMul8bitLt.forward, inference fast path (bnb 0.50.2), allocation for allocation.

    Source: autograd/_functions.py MatMul8bitLt.forward; backends/cuda/ops.py int8_vectorwise_quant,
    int8_linear_matmul, int8_mm_dequant; backends/default/ops.py int8_mixed_scaled_mm, int8_scaled_mm;
    _ops.py int8_vectorwise_dequant.
    """
    k, n = mod.in_features, mod.out_features
    a = x.reshape(-1, k)
    rows = a.shape[0]
    weight, scb = mod.weight, _buffer(mod, "scb")
    # 1. int8_vectorwise_quant(A.to(float16), threshold): row scales, int8 codes, outlier mask → columns
    a16 = a.to(torch.float16)
    row_stats = torch.empty(rows, dtype=torch.float32, device=x.device)
    ca = torch.empty_like(a16, dtype=torch.int8)
    cols = None
    if mod.threshold > 0.0:
        outliers = a16.abs() >= mod.threshold
        col_mask = outliers.any(dim=0)
        # argwhere(col_mask) is value-dependent: the worst case, every column (int64 indices)
        cols = torch.arange(k, device=x.device)
        del col_mask, outliers
    del a16
    # 2. int8_mixed_scaled_mm: the outlier inputs in A's dtype and the dequantised weight columns
    sub_b = None
    sub_a = None
    if cols is not None:
        sub_a = a[:, cols]
        cb_cols = weight[:, cols]                           # int8, 1 B per weight
        scaled = cb_cols * scb.view(-1, 1)                  # fp32, 4 B
        _tag_dequant(cb_cols, scaled)
        dequant = scaled * INT8_SCALE                       # fp32, 4 B: the peak, 9 B per weight
        _tag_dequant(dequant)
        del scaled, cb_cols
        sub_b = dequant.to(a.dtype).t()                     # compute dtype, 2 B
        _tag_dequant(sub_b)
        del dequant
    # 3. int8_scaled_mm: int32 GEMM, dequantised to fp16 (bias added in place), cast to A's dtype
    acc = torch.empty((rows, n), dtype=torch.int32, device=x.device)
    out16 = torch.empty_like(acc, dtype=torch.float16)
    if mod.bias is not None:
        out16.add_(mod.bias.to(a.dtype))
    out = out16.to(a.dtype)
    del out16, acc
    # 4. the outlier columns' product, added out of place
    if sub_a is not None and sub_b is not None:
        out = out.addmm(sub_a, sub_b)
    del sub_b, sub_a, ca, row_stats, cols
    return out.reshape(*x.shape[:-1], n)


def quantize_standins(model: Any, workload: Inference | Training, assumptions: list[str]) -> None:
    """Swap every quantized Linear of `model` (on meta) for its stand-in, as from_pretrained would load it."""
    name = workload.quant.name
    compute = torch.bfloat16
    shared_code2 = torch.empty(DYNAMIC_CODE_ENTRIES, device=next(model.parameters()).device)
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if not is_quantized_layer(child) or child_name in SKIP_MODULES:
                continue
            if name.startswith(("nf4", "fp4")):
                new: nn.Module = Linear4bitStandIn(child, nested=name.endswith("-dq"), compute_dtype=compute,
                                                   shared_code2=shared_code2)
            elif name.startswith("int8"):
                new = Linear8bitStandIn(child)
            else:
                raise EngineUnavailable(f"quant={name} has no bitsandbytes stand-in; use engine=analytic")
            setattr(parent, child_name, new)
    assumptions.append(f"bitsandbytes {name} layers stood in by tensors of their real storage and kernel "
                       "transients (sm90 kernel choice)")
    if name.startswith("int8"):
        assumptions.append(f"LLM.int8 outliers (threshold {INT8_THRESHOLD}) are value-dependent: every "
                           "input column of every int8 Linear is taken as an outlier (the worst case; "
                           "random-weight runs flag most columns of down_proj), so each forward dequantises "
                           "its whole weight (9 B per weight at the peak)")


def prepare_kbit(model: Any) -> Any:
    """peft's prepare_model_for_kbit_training without checkpointing: freeze, cast 16-bit params to fp32."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)  # type: ignore[no-untyped-call]


def lora_custom_modules() -> dict[type, type]:
    """peft custom-module mapping: LoRA on a 4-bit stand-in behaves like peft's bnb Linear4bit."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    class LoraLinear4bit(LoraLinear):
        """peft's lora.bnb.Linear4bit forward: clone the base output, cast the adapter output back, add."""

        def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            result = self.base_layer(x, *args, **kwargs).clone()
            for active in self.active_adapters:
                if active not in self.lora_A:
                    continue
                lora_a, lora_b = self.lora_A[active], self.lora_B[active]
                convert = not torch.is_autocast_enabled()
                expected = result.dtype
                if convert:
                    x = self._cast_input_dtype(x, lora_a.weight.dtype)  # type: ignore[arg-type]
                output = lora_b(lora_a(self.lora_dropout[active](x))) * self.scaling[active]
                if convert:
                    output = output.to(expected)
                result = result + output
            return result  # type: ignore[no-any-return]

    return {Linear4bitStandIn: LoraLinear4bit, Linear8bitStandIn: LoraLinear4bit}


# --- optimizers ------------------------------------------------------------------------------------------

class BnbAdamWStandIn(torch.optim.Optimizer):
    """bnb AdamW8bit / PagedAdamW8bit / PagedAdamW32bit: states of their real sizes, in-place updates.

    8-bit: two uint8 moments per element plus fp32 absmax per 256 elements (params ≥ 4096 elements; smaller
    ones keep fp32 moments). Paged states live in CUDA managed memory, outside the torch allocator: they are
    created on the meta device (not counted) and reported as non_torch, evictable.
    """

    def __init__(self, params: list[nn.Parameter], *, optimizer: Optimizer, lr: float) -> None:
        super().__init__(params, {"lr": lr})
        self.kind = optimizer
        self.paged_bytes = 0

    def _state_for(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        eight_bit = self.kind is not Optimizer.PAGED_ADAMW_32BIT and p.numel() >= INT8_MIN_NUMEL
        paged = self.kind in (Optimizer.PAGED_ADAMW_8BIT, Optimizer.PAGED_ADAMW_32BIT)
        device = torch.device("meta") if paged else p.device
        dtype = torch.uint8 if eight_bit else torch.float32
        state = {"state1": torch.empty(p.shape, dtype=dtype, device=device),
                 "state2": torch.empty(p.shape, dtype=dtype, device=device)}
        if eight_bit:
            blocks = -(-p.numel() // INT8_BLOCK)
            state["absmax1"] = torch.empty(blocks, device=device)
            state["absmax2"] = torch.empty(blocks, device=device)
        if paged:
            self.paged_bytes += sum(t.numel() * t.element_size() for t in state.values())
        return state

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p not in self.state or not self.state[p]:
                    self.state[p] = self._state_for(p)
                p.add_(p.grad, alpha=-group["lr"])       # bnb's fused update is in place
