"""bitsandbytes stand-ins: storage sizes of quantized layers and bnb's sm90 kernel choice."""

import pytest
from tests.helpers import requires_transformers

pytestmark = requires_transformers

torch = pytest.importorskip("torch")

from memfit.trace.standins import Linear4bitStandIn, Linear8bitStandIn, _use_custom_kernel  # noqa: E402

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
    assert _use_custom_kernel(m, n, k) is custom
