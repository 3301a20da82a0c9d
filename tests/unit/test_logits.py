"""LM-head outputs (core/logits.py): full logits of a forward, last-position logits in generate."""

from memfit.api import load_model
from memfit.core.dtypes import DType
from memfit.core.logits import logits
from memfit.core.workload import Inference


def test_prefill_logits_in_compute_dtype():
    """A 4,096-token forward returns bf16 logits: 4,096 × 128,256 × 2 B = 1,050,673,152 B."""
    term = logits(load_model("Llama-3.1-8B"), Inference(prompt_tokens=4096), positions=4096)
    assert term.nbytes == 1_050_673_152


def test_generate_adds_fp32_last_position_copy():
    """generate, batch 8: bf16 last logits 8 × 128,256 × 2 + fp32 copy 8 × 128,256 × 4 = 6,156,288 B."""
    term = logits(load_model("Llama-3.1-8B"), Inference(prompt_tokens=10, new_tokens=5, batch_size=8),
                  positions=1)
    assert term.nbytes == 6_156_288


def test_logit_scaling_adds_one_full_copy():
    """command-r7b s2048: 256,000 × 2,048 × 2 B = 1,048,576,000 B, twice (× logit_scale is out of place)."""
    spec = load_model("c4ai-command-r7b-12-2024")
    assert spec.logits_scaled
    assert load_model("granite-3.1-2b-base").logits_scaled
    term = logits(spec, Inference(prompt_tokens=2048, dtype=DType.BF16), positions=2048)
    assert term.flat()["scale_copy"] == 1_048_576_000
    assert term.nbytes == 2 * 1_048_576_000
