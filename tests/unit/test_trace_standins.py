"""bitsandbytes stand-ins: storage sizes of quantized layers and bnb's sm90 kernel choice."""

import pytest
from tests.helpers import requires_transformers

pytestmark = requires_transformers

torch = pytest.importorskip("torch")

from memfit.core.quants import bnb_4bit_fused  # noqa: E402
from memfit.trace.standins import Linear4bitStandIn, Linear8bitStandIn  # noqa: E402

IN, OUT = 128, 64


def _linear():
    return torch.nn.Linear(IN, OUT, bias=False, device="meta", dtype=torch.bfloat16)


def test_nf4_storage():
    """nf4 on 64×128: 8,192 weights → 4,096 packed bytes, 128 fp32 absmax (one per 64), 16-entry code."""
    layer = Linear4bitStandIn(_linear(), nested=False, compute_dtype=torch.bfloat16)
    assert (tuple(layer.weight.shape), layer.weight.dtype) == ((4096, 1), torch.uint8)
    assert (layer.absmax.numel(), layer.absmax.dtype) == (128, torch.float32)
    assert layer.code.numel() == 16


def test_nf4_double_quant_storage():
    """nf4-dq: absmax as 128 uint8, plus one fp32 second-level scale per 256 absmax (ceil(128/256) = 1)."""
    layer = Linear4bitStandIn(_linear(), nested=True, compute_dtype=torch.bfloat16)
    assert (layer.absmax.numel(), layer.absmax.dtype) == (128, torch.uint8)
    assert (layer.absmax2.numel(), layer.absmax2.dtype) == (1, torch.float32)
    assert layer.code2.numel() == 256


def test_int8_storage():
    """LLM.int8: an int8 weight of the Linear's shape and one fp32 scale per output row."""
    layer = Linear8bitStandIn(_linear())
    assert (tuple(layer.weight.shape), layer.weight.dtype) == ((OUT, IN), torch.int8)
    assert (layer.scb.numel(), layer.scb.dtype) == (OUT, torch.float32)


@pytest.mark.parametrize(("m", "n", "k", "custom"), [
    (1, 14336, 4096, True),        # decode: the fused kernel, no dequantised copy
    (512, 14336, 4096, False),     # prefill: dequantise + F.linear
    (32, 14336, 4096, True),       # 224 column blocks ≥ 132 SMs: fused up to M = 32
    (48, 14336, 4096, False),
    (16, 4096, 4096, False),       # 64 blocks < 66 (half the SMs): never fused above M = 4
])
def test_sm90_kernel_choice(m, n, k, custom):
    """bnb 0.50's sm90 heuristic for gemm_4bit on large weights."""
    assert bnb_4bit_fused(m, n, k) is custom


def _int8_forward_transient(threshold):
    """Peak bytes one Linear8bitStandIn forward adds over its weights and input (8 tokens, 128 → 64)."""
    from memfit.trace.tracker import Tracker

    layer = Linear8bitStandIn(torch.nn.Linear(IN, OUT, bias=False, dtype=torch.bfloat16), threshold=threshold)
    tracker = Tracker()
    with tracker:
        layer.register_buffer("scb", torch.ones(OUT), persistent=False)
        x = torch.randn(1, 8, IN, dtype=torch.bfloat16)
        with tracker.phase("forward") as record:
            out = layer(x)
    assert (tuple(out.shape), out.dtype) == ((1, 8, OUT), torch.bfloat16)
    return record.peak_bytes - record.start_bytes


def test_int8_forward_dequantises_every_outlier_column():
    """threshold 6.0, every column an outlier: the whole weight dequantised, 9 B per weight at the peak."""
    # int8 column copy, its ×SCB fp32 product and ×1/127 fp32 result: (1 + 4 + 4) × 64 × 128 = 73,728, plus
    # row scales (8 × 4 = 32 → 512), int8 codes (8 × 128 = 1,024), column indices (128 × 8 = 1,024) and
    # outlier inputs in bf16 (8 × 128 × 2 = 2,048): 78,336 B
    assert _int8_forward_transient(6.0) == 9 * OUT * IN + 512 + 1024 + 1024 + 2048 == 78336


def test_int8_forward_without_threshold_keeps_no_weight_copy():
    """threshold 0: no outlier side path, so no weight copy; the peak is the GEMM's output chain."""
    # int8 codes (1,024) + row scales (512) + int32 GEMM (8 × 64 × 4 = 2,048) + its fp16 dequant (8 × 64 × 2
    # = 1,024) + the bf16 cast (1,024) = 5,632 B
    assert _int8_forward_transient(0.0) == 1024 + 512 + 2048 + 1024 + 1024 == 5632


def _quantize(model, quant):
    from memfit.core.dtypes import quant as lookup
    from memfit.core.workload import Inference
    from memfit.trace.standins import quantize_standins

    quantize_standins(model, Inference(prompt_tokens=8, quant=lookup(quant)), [])
    return model


def test_conv1d_is_quantized_with_its_transposed_shape():
    """GPT-2's Conv1D(nf=64, nx=128) holds weight (128, 64) = (in, out): nf4 packs 8,192 weights → 4,096 B."""
    from transformers.pytorch_utils import Conv1D

    model = torch.nn.Sequential()
    with torch.device("meta"):
        model.add_module("c_attn", Conv1D(OUT, IN))
    layer = _quantize(model, "nf4").c_attn
    assert isinstance(layer, Linear4bitStandIn)
    assert (layer.in_features, layer.out_features) == (IN, OUT)
    assert tuple(layer.weight.shape) == (4096, 1)
    assert tuple(layer.bias.shape) == (OUT,)


def test_linear_subclasses_and_lm_head_stay_unquantized():
    """transformers quantizes `type(m) is nn.Linear` only: a FalconLinear-style subclass and lm_head stay."""

    class SubLinear(torch.nn.Linear):
        pass

    model = torch.nn.Sequential()
    with torch.device("meta"):
        model.add_module("sub", SubLinear(IN, OUT))
        model.add_module("plain", torch.nn.Linear(IN, OUT))
        model.add_module("lm_head", torch.nn.Linear(IN, OUT))
    _quantize(model, "int8")
    assert [type(m).__name__ for m in model.children()] == ["SubLinear", "Linear8bitStandIn", "Linear"]
