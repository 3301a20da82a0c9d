"""SDPA backend emulation and the HF mask rule the trace patches in."""

import pytest
from tests.helpers import requires_transformers

pytestmark = requires_transformers

torch = pytest.importorskip("torch")

from memfit.trace import patches  # noqa: E402

B, HEADS, KV_HEADS, SEQ, HEAD_DIM = 1, 4, 2, 16, 8


def _qkv(dtype=torch.bfloat16, kv_heads=HEADS, head_dim=HEAD_DIM, q_len=SEQ, kv_len=SEQ):
    q = torch.empty(B, HEADS, q_len, head_dim, dtype=dtype, device="meta")
    k = torch.empty(B, kv_heads, kv_len, head_dim, dtype=dtype, device="meta")
    return q, k, k.clone()


@pytest.mark.parametrize(("case", "expected"), [
    ({}, "flash"),                                                    # bf16, no mask
    ({"mask": True}, "efficient"),                                    # a mask rules out flash
    ({"dtype": torch.float32}, "efficient"),                          # flash needs fp16/bf16
    ({"kv_heads": KV_HEADS, "gqa": True}, "flash"),                   # native GQA in flash
    ({"kv_heads": KV_HEADS, "gqa": True, "mask": True}, "math"),      # efficient has no GQA
    ({"head_dim": 512}, "efficient"),                                 # flash takes head_dim ≤ 256
    ({"causal": True, "kv_len": 32}, "efficient"),                    # causal flash needs q_len == kv_len
])
def test_choose_backend_follows_cuda_rules(case, expected):
    """The backend CUDA's SDPA selector would pick on sm90 for each input kind."""
    kv_len = case.get("kv_len", SEQ)
    q, k, v = _qkv(case.get("dtype", torch.bfloat16), case.get("kv_heads", HEADS),
                   case.get("head_dim", HEAD_DIM), kv_len=kv_len)
    mask = torch.ones(SEQ, kv_len, dtype=torch.bool, device="meta") if case.get("mask") else None
    chosen = patches.choose_backend(q, k, v, mask, case.get("causal", False), case.get("gqa", False))
    assert chosen == expected


@pytest.mark.parametrize(("gpu", "dtype", "kv_heads", "expected"), [
    ("T4", torch.float16, HEADS, "efficient"),      # no flash below sm80
    ("T4", torch.float16, KV_HEADS, "math"),        # ... and efficient has no GQA
    ("V100", torch.bfloat16, HEADS, "math"),        # efficient takes bf16 only from sm80
    ("A100", torch.bfloat16, KV_HEADS, "flash"),
])
def test_choose_backend_follows_the_traced_gpu(gpu, dtype, kv_heads, expected):
    """With a GPU set for the trace, the emulated selector applies that architecture's rules."""
    from memfit.sources.catalog import get_gpu

    q, k, v = _qkv(dtype, kv_heads)
    patches.set_gpu(get_gpu(gpu))
    try:
        chosen = patches.choose_backend(q, k, v, None, True, True)
    finally:
        patches.set_gpu(None)
    assert chosen == expected


def test_sdpa_math_path_matches_torch_numerically_on_cpu():
    """Where the patched function takes MATH (GQA with a mask), it computes torch's attention exactly."""
    torch.manual_seed(0)
    q = torch.randn(B, HEADS, SEQ, HEAD_DIM)
    k = torch.randn(B, KV_HEADS, SEQ, HEAD_DIM)
    v = torch.randn(B, KV_HEADS, SEQ, HEAD_DIM)
    mask = torch.ones(SEQ, SEQ, dtype=torch.bool).tril()
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    got = patches.sdpa(q, k, v, attn_mask=mask, enable_gqa=True)
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize(("q_len", "kv_len", "q_offset", "ones", "expected"), [
    (512, 512, 0, 512, True),     # prefill, dynamic cache: is_causal
    (1, 513, 512, 513, True),     # decode, dynamic cache: no mask
    (512, 768, 0, 512, True),     # prefill into a static cache: future slots are padding only
    (1, 768, 512, 513, False),    # decode on a static cache: a real mask is built
    (512, 512, 0, None, True),    # a mask the model built itself (OPT's torch.ones; the trace never pads):
                                  # all ones, so is_causal, as fast_all finds on a GPU
])
def test_ignore_causal_mask_rule(q_len, kv_len, q_offset, ones, expected):
    """HF's _ignore_causal_mask_sdpa, decided from the known unpadded length instead of mask values."""
    patches.set_unpadded_length(ones)
    try:
        padding = torch.ones(1, kv_len, dtype=torch.bool, device="meta")
        assert patches._ignore_causal_mask_sdpa(padding, q_len, kv_len, q_offset, 0) is expected
    finally:
        patches.set_unpadded_length(None)


def test_ignore_causal_mask_without_padding_mask():
    """No padding mask at all (plain prefill): the causal skip applies from offset 0."""
    assert patches._ignore_causal_mask_sdpa(None, 64, 64, 0, 0) is True


def test_grouped_mm_takes_fp32_as_cuda_fallback_does():
    """fp32 _grouped_mm (MoE in fp32 / AMP): a (10, 8) × 4 experts (8, 6) → one (10, 6) fp32 output, and
    a backward with fp32 gradients of the operands' shapes, where torch's meta kernel alone demands bf16."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from memfit.trace import patches

    with patches.installed(), FakeTensorMode():
        a = torch.empty(10, 8, requires_grad=True)
        b = torch.empty(4, 8, 6, requires_grad=True)
        out = torch._grouped_mm(a, b, offs=torch.tensor([2, 5, 7, 10], dtype=torch.int32))
        out.sum().backward()
        assert (tuple(out.shape), out.dtype) == ((10, 6), torch.float32)
        assert (tuple(a.grad.shape), tuple(b.grad.shape), b.grad.dtype) == ((10, 8), (4, 8, 6), torch.float32)


def test_installed_leaves_torch_as_it_found_it():
    """Patching inside the test process is undone on exit: SDPA, the CUDA capability answer and the HF
    mask helpers are the original objects again (a later test running a real model on CPU needs them)."""
    import torch.nn.functional as F  # noqa: N812
    from transformers import masking_utils

    before = (F.scaled_dot_product_attention, torch.cuda.get_device_capability,
              masking_utils._ignore_causal_mask_sdpa, masking_utils.create_recurrent_attention_mask)
    with patches.installed():
        assert F.scaled_dot_product_attention is patches.sdpa
        assert torch.cuda.get_device_capability() == patches.SM90_CAPABILITY
    after = (F.scaled_dot_product_attention, torch.cuda.get_device_capability,
             masking_utils._ignore_causal_mask_sdpa, masking_utils.create_recurrent_attention_mask)
    assert all(a is b for a, b in zip(before, after, strict=True))
