"""Logits and loss buffers at the forward peak, end of forward and start of backward."""

from __future__ import annotations

from memfit.core.activations import training_flow
from memfit.core.choices import Method, Precision
from memfit.core.dtypes import quant
from memfit.core.families import spec_from_config
from memfit.core.loss import backward_start_logits, chunk_tokens, forward_peak_logits, saved_logits
from memfit.core.spec import ModelSource, ModelSpec
from memfit.core.workload import Lora, Training

SOURCE = ModelSource(kind="config", ref="test")
VOCAB = 1000
HIDDEN = 64
TOKENS = 128
BASE = {"model_type": "llama", "hidden_size": HIDDEN, "num_hidden_layers": 1, "num_attention_heads": 4,
        "vocab_size": VOCAB, "max_position_embeddings": 256, "intermediate_size": 128}


def _spec(**extra: object) -> ModelSpec:
    return spec_from_config({**BASE, **extra}, name="tiny", source=SOURCE)


def _flow(spec: ModelSpec, wl: Training):  # type: ignore[no-untyped-def]
    return training_flow(spec, wl, lora_targets=frozenset())


def test_bf16_logits_forward_peak_is_ten_bytes_per_logit() -> None:
    """bf16 logits (2) + fp32 copy (4) + log_softmax output (4) = 10 B per token and vocab entry."""
    # 10 × 128 × 1000 = 1,280,000
    spec = _spec()
    term = forward_peak_logits(spec, _flow(spec, Training(seq_len=TOKENS)), tokens=TOKENS)
    assert term.nbytes == 1_280_000
    assert term.bytes_of("fp32_upcast") == 4 * TOKENS * VOCAB


def test_fp32_head_needs_no_upcast() -> None:
    """QLoRA after prepare_kbit: lm_head computes in fp32, so only output + log_softmax, 8 B per logit."""
    # 8 × 128 × 1000 = 1,024,000
    spec = _spec()
    wl = Training(seq_len=TOKENS, method=Method.QLORA, lora=Lora(rank=4, alpha=8), quant=quant("nf4"))
    assert forward_peak_logits(spec, _flow(spec, wl), tokens=TOKENS).nbytes == 1_024_000


def test_amp_logits_are_bf16() -> None:
    """Under autocast lm_head returns bf16 logits even though parameters are fp32."""
    spec = _spec()
    flow = _flow(spec, Training(seq_len=TOKENS, precision=Precision.AMP_BF16))
    assert forward_peak_logits(spec, flow, tokens=TOKENS).bytes_of("lm_head_output") == 2 * TOKENS * VOCAB


def test_saved_and_backward_start() -> None:
    """log_softmax's fp32 output is kept (4 B); backward adds its grad and the fp32 logits grad (12 B)."""
    # saved 4 × 128,000 = 512,000; backward start 12 × 128,000 = 1,536,000
    spec = _spec()
    flow = _flow(spec, Training(seq_len=TOKENS))
    assert saved_logits(spec, flow, tokens=TOKENS).nbytes == 512_000
    assert backward_start_logits(spec, flow, tokens=TOKENS).nbytes == 1_536_000


def test_softcapping_keeps_tanh_output() -> None:
    """Gemma 2 soft-capping saves tanh's bf16 output: 2 B per logit more at the end of forward."""
    # 4 + 2 = 6 B × 128,000 = 768,000
    spec = _spec(model_type="gemma2", head_dim=16, sliding_window=4096, final_logit_softcapping=30.0)
    flow = _flow(spec, Training(seq_len=TOKENS))
    assert saved_logits(spec, flow, tokens=TOKENS).nbytes == 768_000


def test_chunk_tokens_follows_liger_rule() -> None:
    """Chunk = next power of two ≥ tokens / ceil(vocab / hidden): 128 / ceil(1000/64) = 128/16 = 8."""
    assert chunk_tokens(_spec(), tokens=TOKENS) == 8


def test_chunked_loss_never_materialises_full_logits() -> None:
    """With the fused loss the forward peak holds one chunk of logits and the hidden-state gradient."""
    # chunk 8 × 1000 × (2 + 4 + 4) = 80,000; hidden grad 2 × 64 × 128 = 16,384 → 96,384
    spec = _spec()
    flow = _flow(spec, Training(seq_len=TOKENS))
    assert forward_peak_logits(spec, flow, tokens=TOKENS, chunked=True).nbytes == 96_384
