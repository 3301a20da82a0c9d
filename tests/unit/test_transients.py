"""Per-layer working sets (core/transients.py): MLP intermediates, attention by implementation, dequant."""

from memfit.api import load_model
from memfit.core.choices import AttnImpl
from memfit.core.dtypes import DType, quant
from memfit.core.params import layer_linears
from memfit.core.transients import Step, dequant_bytes, layer_peak, non_gated_live
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


def test_eager_scores_bf16_copy_and_fp32_softmax():
    """Eager bf16, 32 heads × 2,048²: masked scores (2 B), fp32 copy (4 B), fp32 softmax (4 B): 10 B each."""
    spec = load_model("Llama-3.2-1B")
    wl = Inference(prompt_tokens=2048, attn=AttnImpl.EAGER)
    acts, _ = layer_peak(spec, wl, Step(query_tokens=2048, kv_tokens=2048, masked=True))
    # 32 × 2,048 × 2,048 × 10 = 1,342,177,280 (trace of the real code at aten._softmax agrees)
    assert acts.flat()["attention/scores"] == 1_342_177_280


def test_bnb_4bit_dequantises_the_weight_for_many_rows():
    """nf4 gate_proj of Llama-3.1-8B: 14,336 × 4,096 × 2 B = 117,440,512 B for >1 row, nothing for one row."""
    spec = load_model("Llama-3.1-8B")
    gate = next(lin for lin in layer_linears(spec, spec.layers[0]) if lin.name == "gate_proj")
    wl = Inference(prompt_tokens=512, quant=quant("nf4"))
    assert dequant_bytes(gate, wl, tokens=512, dt=2) == 117_440_512
    assert dequant_bytes(gate, wl, tokens=1, dt=2) == 0


def test_masked_sdpa_repeats_kv_and_pads_the_mask():
    """A mask stops native GQA: K and V are repeated to 32 heads (2 × 767 × 32 × 64 × 2 B = 6,283,264 B).
    While the kernel runs: bool mask 512 × 767 = 392,704, its additive bf16 copy 785,408 and the padded
    copy 512 × 768 × 2 = 786,432, beside the 2,097,152 B output: 4,061,696. Just after: the bool mask and
    the output with its transposed copy, 392,704 + 4,194,304 = 4,587,008, the larger moment."""
    spec = load_model("Llama-3.2-1B")
    wl = Inference(prompt_tokens=512, new_tokens=256)
    from memfit.core.transients import _attention_step  # the attention step alone, whatever the peak

    term = _attention_step(spec, spec.layers[0], wl, Step(query_tokens=512, kv_tokens=767, masked=True),
                           hidden=512 * 2048 * 2, dt=2)
    assert term.bytes_of("repeat_kv") == 6_283_264
    assert (term.bytes_of("mask"), term.bytes_of("output")) == (392_704, 4_194_304)


def test_fused_gate_up_holds_four_intermediates():
    """Phi-3's fused gate_up: (2 × 8,192) output, act and product: 4 × 2,048 × 8,192 × 2 B = 134,217,728 B."""
    spec = load_model("Phi-3.5-mini-instruct")
    wl = Inference(prompt_tokens=2048)
    acts, _ = layer_peak(spec, wl, Step(query_tokens=2048, kv_tokens=2048, masked=False))
    assert acts.flat()["mlp/intermediates"] == 134_217_728


def test_fp32_gqa_sdpa_falls_back_to_math():
    """fp32 rules out flash and GQA rules out the efficient kernel: math holds fp32 scores and softmax,
    32 heads × 2,048² × (4 + 4) B = 1,073,741,824 B."""
    from memfit.core.dtypes import DType

    spec = load_model("Llama-3.2-1B")
    wl = Inference(prompt_tokens=2048, dtype=DType.FP32)
    acts, _ = layer_peak(spec, wl, Step(query_tokens=2048, kv_tokens=2048, masked=False))
    assert acts.flat()["attention/scores"] == 1_073_741_824


def test_mla_decode_expands_k_and_v_from_the_latent_cache():
    """DeepSeek-V2-Lite decode, b4 over 575 cached tokens: kv_b_proj out + new key, 16 heads × 448 × 2 B."""
    spec = load_model("DeepSeek-V2-Lite")
    wl = Inference(prompt_tokens=512, new_tokens=64, batch_size=4)
    acts, _ = layer_peak(spec, wl, Step(query_tokens=1, kv_tokens=575, masked=False))
    # 4 × 575 × 16 × (2·128 nope + 128 v + 64 rope) × 2 = 32,972,800 (trace: 31.6 MiB of activations)
    assert acts.flat()["attention/expanded_kv"] == 32_972_800


def test_python_gelu_holds_more_intermediates():
    """bf16: GPT-2's gelu_new holds 4 intermediates, BLOOM's own GELU 5, a fused GELU (Pythia) 2."""
    step = Step(query_tokens=1024, kv_tokens=1024, masked=False)
    acts, _ = layer_peak(load_model("gpt2"), Inference(prompt_tokens=1024, dtype=DType.BF16), step)
    assert acts.flat()["mlp/intermediates"] == 4 * 1024 * 3072 * 2    # 25,165,824
    bloom = load_model("bloom-560m")
    decode = Step(query_tokens=1, kv_tokens=1, masked=False)         # one token: the MLP step peaks
    acts, _ = layer_peak(bloom, Inference(prompt_tokens=1024, new_tokens=2, dtype=DType.BF16), decode)
    assert acts.flat()["mlp/intermediates"] == 5 * 4096 * 2          # 40,960
    assert non_gated_live(load_model("pythia-160m").layers[0].mlp) == 2   # a fused GELU: input and output
