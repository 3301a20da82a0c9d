"""LM-head outputs (core/logits.py): full logits of a forward, last-position logits in generate."""

from memfit.api import load_model
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
