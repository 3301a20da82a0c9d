"""Per-layer working sets (core/transients.py): MLP intermediates, attention by implementation, dequant."""

from memfit.api import load_model
from memfit.core.choices import AttnImpl
from memfit.core.dtypes import quant
from memfit.core.params import layer_linears
from memfit.core.transients import Step, dequant_bytes, layer_peak
from memfit.core.workload import Inference


def test_mlp_step_holds_three_intermediates():
    """Llama-3.1-8B, 8 × 1,024 tokens: 3 × 8,192 × 14,336 × 2 B = 704,643,072 B of MLP intermediates."""
    spec = load_model("Llama-3.1-8B")
    wl = Inference(prompt_tokens=1024, batch_size=8)
    acts, dequant = layer_peak(spec, wl, Step(query_tokens=1024, kv_tokens=1024, masked=False))
    assert acts.flat()["mlp/intermediates"] == 704_643_072
    assert dequant == 0


def test_layer_peak_matches_measured_prefill_working_set():
    """Embeddings, layer input, residual, normed (4 × 64 MiB) + 672 MiB MLP + 4 MiB cos/sin = 978,059,264."""
    # groundtruth l8b-gen-b8-p1024-n128: peak − start − KV − cuBLAS = 978,206,720 B
    spec = load_model("Llama-3.1-8B")
    wl = Inference(prompt_tokens=1024, batch_size=8)
    acts, _ = layer_peak(spec, wl, Step(query_tokens=1024, kv_tokens=1024, masked=False))
    assert acts.nbytes == 4 * 67_108_864 + 704_643_072 + 4_194_304


def test_eager_scores_in_compute_dtype_and_fp32_softmax():
    """Eager, 1 × 32 heads × 2,048²: masked scores (2 B) beside their fp32 softmax (4 B) = 805,306,368 B."""
    spec = load_model("Llama-3.2-1B")
    wl = Inference(prompt_tokens=2048, attn=AttnImpl.EAGER)
    acts, _ = layer_peak(spec, wl, Step(query_tokens=2048, kv_tokens=2048, masked=True))
    assert acts.flat()["attention/scores"] == 32 * 2048 * 2048 * 6


def test_bnb_4bit_dequantises_the_weight_for_many_rows():
    """nf4 gate_proj of Llama-3.1-8B: 14,336 × 4,096 × 2 B = 117,440,512 B for >1 row, nothing for one row."""
    spec = load_model("Llama-3.1-8B")
    gate = next(lin for lin in layer_linears(spec, spec.layers[0]) if lin.name == "gate_proj")
    wl = Inference(prompt_tokens=512, quant=quant("nf4"))
    assert dequant_bytes(gate, wl, tokens=512, dt=2) == 117_440_512
    assert dequant_bytes(gate, wl, tokens=1, dt=2) == 0


def test_static_prefill_materialises_the_padded_mask():
    """Masked SDPA over 767 cached tokens pads to 768: 1 × 32 × 512 × 768 × 2 B = 25,165,824 B of bias."""
    spec = load_model("Llama-3.2-1B")
    wl = Inference(prompt_tokens=512, new_tokens=256)
    step = Step(query_tokens=512, kv_tokens=767, masked=True)
    acts, _ = layer_peak(spec, wl, step)
    # bias 25,165,824 + bool mask 512 × 767 = 392,704
    assert acts.flat().get("attention/mask", 0) in (0, 25_165_824 + 392_704)
    from memfit.core.transients import _attention_step  # the attention step alone, whatever the peak

    hidden = 512 * 2048 * 2
    assert _attention_step(spec, spec.layers[0], wl, step, hidden=hidden, dt=2).bytes_of("mask") == 25_558_528


def test_fused_gate_up_holds_four_intermediates():
    """Phi-3's fused gate_up: (2 × 8,192) output, act and product: 4 × 2,048 × 8,192 × 2 B = 134,217,728 B."""
    spec = load_model("Phi-3.5-mini-instruct")
    wl = Inference(prompt_tokens=2048)
    acts, _ = layer_peak(spec, wl, Step(query_tokens=2048, kv_tokens=2048, masked=False))
    assert acts.flat()["mlp/intermediates"] == 134_217_728
