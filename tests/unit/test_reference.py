"""Classic reference rules (core/reference.py): each source's own worked example, reproduced."""

from dataclasses import replace
from fractions import Fraction

import pytest

from memfit.core.choices import Method, Optimizer, Precision
from memfit.core.dtypes import DType, Quant
from memfit.core.errors import InvalidWorkload
from memfit.core.reference import (
    REFERENCE_METHODS,
    ReferenceResult,
    reference_estimates,
    specs_activation_elements,
)
from memfit.core.spec import AttentionSpec, LayerSpec, MlpSpec, ModelSource, ModelSpec
from memfit.core.units import GB, MB, GiB
from memfit.core.workload import Inference, Lora, Training


def _spec(*, hidden: int, heads: int, layers: int, vocab: int = 32000, name: str = "stub") -> ModelSpec:
    """A decoder with the shapes a rule reads (h, a, L, V); the rest is filler."""
    layer = LayerSpec(attention=AttentionSpec(num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads),
                      mlp=MlpSpec(intermediate_size=4 * hidden, gated=False))
    return ModelSpec(name=name, family="llama", vocab_size=vocab, hidden_size=hidden,
                     max_position_embeddings=8192, tie_word_embeddings=False, layers=(layer,) * layers,
                     source=ModelSource(kind="config", ref=name))


def _one(name: str, spec: ModelSpec, workload, num_params: int) -> ReferenceResult:
    result = REFERENCE_METHODS[name](spec, workload, num_params=num_params)
    assert result is not None
    return result


# Command-R+: L=64, h=12288, a=96 (its printed config), n = 104B as typed into the notebook
COMMAND_R_PLUS = _spec(hidden=12288, heads=96, layers=64, vocab=256000, name="c4ai-command-r-plus")
CMDR_PARAMS = 104 * 10**9
CMDR_TRAIN = Training(seq_len=512, batch_size=8, precision=Precision.BF16, optimizer=Optimizer.ADAMW)
CMDR_INFER = Inference(prompt_tokens=512, batch_size=8, dtype=DType.BF16)

# the Q&A answer's example: 7B, b=1, s=2048, l=32, a=32, h=4096, p=32
SEVEN_B = _spec(hidden=4096, heads=32, layers=32, name="7B")
SEVEN_B_PARAMS = 7 * 10**9


def _gib_2dp(result: ReferenceResult) -> float:
    """The notebook's print: round(bytes / 1024**3, 2)."""
    assert result.unit_bytes == GiB
    return round(result.nbytes / GiB, 2)


def test_commandr_model_memory_reproduces_193_72_gb():
    """Command-R+ at 16 bits: 104e9 × 16 / 8 = 208e9 B, printed '193.72 GB' (GiB)."""
    # 208,000,000,000 / 1,073,741,824 = 193.715… → 193.72
    result = _one("commandr-model", COMMAND_R_PLUS, CMDR_TRAIN, CMDR_PARAMS)
    assert result.nbytes == 208_000_000_000
    assert _gib_2dp(result) == 193.72


def test_commandr_optimizer_reproduces_774_86_gb():
    """Two 32-bit Adam moments: 2 × 104e9 × 32 / 8 = 832e9 B, printed '774.86 GB'."""
    # 832,000,000,000 / 1,073,741,824 = 774.860… → 774.86
    result = _one("commandr-optimizer", COMMAND_R_PLUS, CMDR_TRAIN, CMDR_PARAMS)
    assert result.nbytes == 832_000_000_000
    assert _gib_2dp(result) == 774.86


def test_commandr_activations_reproduce_5_06_per_layer():
    """One layer at s=512, b=8: (34sbh + 5as²b) × 2 = 5,435,817,984 B, printed '5.06 GB' for inference."""
    # 34·512·8·12288 = 1,711,276,032; 5·96·512²·8 = 1,006,632,960; sum 2,717,908,992 × 2 = 5,435,817,984
    # 5,435,817,984 / 2^30 = 5.0625 → 5.06
    result = _one("commandr-activations-infer", COMMAND_R_PLUS, CMDR_INFER, CMDR_PARAMS)
    assert result.nbytes == 5_435_817_984
    assert _gib_2dp(result) == 5.06


def test_commandr_training_activations_exact_324_gib_not_the_printed_323_84():
    """× 64 layers = 347,892,350,976 B = 324.00 GiB; the notebook's 323.84 is 5.06 (rounded) × 64."""
    # 5,435,817,984 × 64 = 347,892,350,976 = 324 × 2^30 exactly; 5.06 × 64 = 323.84
    result = _one("commandr-activations-train", COMMAND_R_PLUS, CMDR_TRAIN, CMDR_PARAMS)
    assert result.nbytes == 324 * GiB
    assert round(5.06 * 64, 2) == 323.84


def test_commandr_totals_reproduce_198_78_inference_and_1292_fine_tuning():
    """Inference 208e9 + 5,435,817,984 B → '198.78 GB'; fine-tuning adds optimizer and 64 layers."""
    # inference: 213,435,817,984 / 2^30 = 198.777… → 198.78 (printed 198.78)
    # fine-tuning: 208e9 + 832e9 + 347,892,350,976 = 1,387,892,350,976 / 2^30 = 1292.575… → 1292.58;
    # the notebook prints 1292.42 = 193.72 + 774.86 + 323.84, its rounded parts
    infer = _one("commandr-infer-total", COMMAND_R_PLUS, CMDR_INFER, CMDR_PARAMS)
    train = _one("commandr-train-total", COMMAND_R_PLUS, CMDR_TRAIN, CMDR_PARAMS)
    assert infer.nbytes == 213_435_817_984
    assert _gib_2dp(infer) == 198.78
    assert train.nbytes == 1_387_892_350_976
    assert _gib_2dp(train) == 1292.58


def test_commandr_eight_bit_adam_uses_o_equal_8():
    """The notebook's o is the optimizer bitwidth: 8-bit Adam gives 2 × n × 8 / 8 = 2n bytes."""
    workload = replace(CMDR_TRAIN, optimizer=Optimizer.ADAMW_8BIT)
    assert _one("commandr-optimizer", COMMAND_R_PLUS, workload, CMDR_PARAMS).nbytes == 208_000_000_000


def test_specs_activations_as_written_only_first_term_times_l():
    """l·(5/2)·a·b·s² + 17·b·h·s = 10,880,024,576 for the answer's 7B example (17bhs not × l)."""
    # 32 · 5/2 · 32 · 1 · 2048² = 2560 · 4,194,304 = 10,737,418,240; 17 · 1 · 4096 · 2048 = 142,606,336
    assert specs_activation_elements(SEVEN_B, Inference(prompt_tokens=2048)) == 10_880_024_576


def test_specs_p_params_activations_reproduces_approximately_66_gb():
    """p=32 bits × (7e9 + 10,880,024,576) ÷ 8 = 71,520,098,304 B = 66.6 GiB: 'approximately 66 GB'."""
    # 17,880,024,576 × 32 = 572,160,786,432 bits ÷ 8 = 71,520,098,304 B; ÷ 2^30 = 66.608…
    # read as 10^9 it would be 71.5 GB, not ~66: the author's GB is GiB
    result = _one("specs-p-params-activations", SEVEN_B, Inference(prompt_tokens=2048, dtype=DType.FP32),
                  SEVEN_B_PARAMS)
    assert result.nbytes == 71_520_098_304
    assert result.unit == "GB"
    assert result.unit_bytes == GiB
    assert int(result.value) == 66


def test_specs_bit_quantization_reproduces_about_8_gb():
    """4-bit weights: 4 × 17,880,024,576 ÷ 8 = 8,940,012,288 B = 8.3 GiB: 'about 8 GB'."""
    # nf4's 9/2 stored bits per weight count as the nominal p = 4
    nf4 = Quant(name="nf4", bits_per_weight=Fraction(9, 2), kind="bnb")
    result = _one("specs-p-params-activations", SEVEN_B, Inference(prompt_tokens=2048, quant=nf4),
                  SEVEN_B_PARAMS)
    assert result.nbytes == 8_940_012_288
    assert int(result.value) == 8


def test_specs_two_bytes_per_parameter_reproduces_14_gb():
    """'a 7B parameter model would need approximately 14GB': 2 × 7e9 B, decimal GB."""
    result = _one("specs-2-bytes-per-param", SEVEN_B, Inference(prompt_tokens=1), SEVEN_B_PARAMS)
    assert result.nbytes == 14 * GB
    assert result.value == 14


def test_optmem_load_reproduces_gpt3_350_gb_in_bf16():
    """'the 175B parameter GPT-3 model would require roughly 350GB of VRAM in bfloat16': 2 × 175e9 B."""
    result = _one("optmem-load", SEVEN_B, Inference(prompt_tokens=1, dtype=DType.BF16), 175 * 10**9)
    assert result.nbytes == 350 * GB
    assert result.unit_bytes == GB


def test_optmem_load_is_4x_in_fp32_and_silent_for_int8():
    """4X GB in fp32; the rule names no 8-bit width, so an int8 job gets no figure."""
    fp32 = _one("optmem-load", SEVEN_B, Inference(prompt_tokens=1, dtype=DType.FP32), SEVEN_B_PARAMS)
    int8 = Quant(name="int8", bits_per_weight=Fraction(8), kind="bnb")
    assert fp32.nbytes == 28 * GB
    assert REFERENCE_METHODS["optmem-load"](SEVEN_B, Inference(prompt_tokens=1, quant=int8)) is None


def test_optmem_finetune_reproduces_7b_56_gb():
    """'fine-tuning the 7B parameter LLaMA model would require roughly 7 * 8 = 56GB' in bfloat16."""
    result = _one("optmem-finetune-8x", SEVEN_B, Training(seq_len=512), SEVEN_B_PARAMS)
    assert result.nbytes == 56 * GB


DEEPDIVE_PARAMS = 123_383_808
DEEPDIVE_SPEC = _spec(hidden=768, heads=12, layers=12, vocab=50000, name="deepdive-example")


def test_deepdive_model_memory_reproduces_494_mb():
    """'123,383,808 * 4 bytes = 493,535,232 bytes ≈ 494 MB' (decimal MB)."""
    fp32 = Inference(prompt_tokens=1, dtype=DType.FP32)
    result = _one("deepdive-model", DEEPDIVE_SPEC, fp32, DEEPDIVE_PARAMS)
    assert result.nbytes == 493_535_232
    assert result.unit_bytes == MB
    assert round(result.value) == 494


def test_deepdive_16_bit_model_memory_reproduces_247_mb():
    """'123,383,808 * 2 bytes = 246,767,616 bytes ≈ 247 MB'."""
    bf16 = Inference(prompt_tokens=1, dtype=DType.BF16)
    result = _one("deepdive-model", DEEPDIVE_SPEC, bf16, DEEPDIVE_PARAMS)
    assert result.nbytes == 246_767_616


def test_deepdive_working_and_training_memory_double_and_quadruple():
    """Inference 2 × 493,535,232 = 987,070,464 B; fp32 training 4 × = 1,974,140,928 B."""
    # the source prints 988 MB and 1,976 MB because it multiplies the rounded 494 MB
    infer = _one("deepdive-inference-2x", DEEPDIVE_SPEC, Inference(prompt_tokens=1, dtype=DType.FP32),
                 DEEPDIVE_PARAMS)
    train = _one("deepdive-training-4x", DEEPDIVE_SPEC, Training(seq_len=8, precision=Precision.FP32),
                 DEEPDIVE_PARAMS)
    assert infer.nbytes == 987_070_464
    assert train.nbytes == 1_974_140_928


def test_deepdive_steady_activations_and_peak_by_hand():
    """Tiny model (L=2, H=8, V=10, N=1000), B=2, S=4: steady 16,064, activations 2,528, peak 18,912 B."""
    # steady: 16·1000 + 8·2·4 = 16,064
    # E = 2·4·8 = 64; per layer 14·64 + 4·2·4·4 = 896 + 128 = 1,024; × 2 layers = 2,048; 6·2·4·10 = 480
    # activations = 2,048 + 480 = 2,528; peak = 16,064 + 2,528 + 4·2·4·10 (320) = 18,912
    tiny = _spec(hidden=8, heads=2, layers=2, vocab=10)
    training = Training(seq_len=4, batch_size=2)
    steady = _one("deepdive-steady-state", tiny, training, 1000)
    activations = _one("deepdive-activations", tiny, training, 1000)
    peak = _one("deepdive-peak", tiny, training, 1000)
    assert (steady.nbytes, activations.nbytes, peak.nbytes) == (16_064, 2_528, 18_912)


def test_eleuther_inference_is_1_2_times_model_memory():
    """7B in fp16: 1.2 × 2 × 7e9 = 16,800,000,000 B; int8: 1.2 × 7e9 = 8,400,000,000 B."""
    half = Inference(prompt_tokens=1, dtype=DType.FP16)
    fp16 = _one("eleuther-inference-1.2x", SEVEN_B, half, SEVEN_B_PARAMS)
    int8 = Quant(name="int8", bits_per_weight=Fraction(8), kind="bnb")
    eight = _one("eleuther-inference-1.2x", SEVEN_B, Inference(prompt_tokens=1, quant=int8), SEVEN_B_PARAMS)
    assert fp16.nbytes == 16_800_000_000
    assert eight.nbytes == 8_400_000_000


def test_training_rules_are_skipped_for_inference_and_inference_rules_for_training():
    """reference_estimates drops the rules that say nothing about the job: no None in the tuple."""
    inference = Inference(prompt_tokens=16)
    infer_names = {r.name for r in reference_estimates(SEVEN_B, inference, num_params=10**9)}
    train_names = {r.name for r in reference_estimates(SEVEN_B, Training(seq_len=16), num_params=10**9)}
    assert "commandr-train-total" not in infer_names
    assert "eleuther-inference-1.2x" in infer_names
    assert "eleuther-inference-1.2x" not in train_names
    assert "deepdive-peak" in train_names
    assert infer_names | train_names == set(REFERENCE_METHODS)


def test_lora_job_gets_no_full_fine_tuning_rules():
    """A LoRA job keeps the model-memory and activation rules and loses the full fine-tuning ones."""
    lora = Training(seq_len=16, method=Method.LORA, lora=Lora(rank=8, alpha=16))
    names = {r.name for r in reference_estimates(SEVEN_B, lora, num_params=10**9)}
    assert names == {"commandr-model", "commandr-activations-train", "deepdive-model", "deepdive-activations"}


def test_named_subset_and_unknown_name():
    """A subset keeps the asked order; an unknown name raises InvalidWorkload listing the methods."""
    wanted = ("specs-2-bytes-per-param", "commandr-model")
    results = reference_estimates(SEVEN_B, Inference(prompt_tokens=1), wanted, num_params=10**9)
    assert tuple(r.name for r in results) == wanted
    with pytest.raises(InvalidWorkload, match="reference method 'rule-of-three' is unknown"):
        reference_estimates(SEVEN_B, Inference(prompt_tokens=1), ("rule-of-three",))


def test_every_result_states_its_source_formula_and_unit():
    """Each applicable rule names its source, formula and unit, and its value is nbytes in that unit."""
    for workload in (Inference(prompt_tokens=64, dtype=DType.BF16), Training(seq_len=64)):
        for result in reference_estimates(SEVEN_B, workload, num_params=SEVEN_B_PARAMS):
            assert result.source
            assert result.formula
            assert result.unit in {"GB", "MB", "B"}
            assert result.value * result.unit_bytes == result.nbytes
            assert result.nbytes > 0


def test_default_parameter_count_comes_from_count_params():
    """Without num_params the rules use count_params(spec): 2 bytes per parameter of the stub spec."""
    from memfit.core.params import count_params

    expected = 2 * count_params(SEVEN_B).num_params
    result = REFERENCE_METHODS["specs-2-bytes-per-param"](SEVEN_B, Inference(prompt_tokens=1))
    assert result is not None
    assert result.nbytes == expected


def test_qlora_model_memory_counts_the_nominal_4_bits():
    """A QLoRA job's base weights are nf4: model memory is 7e9 × 4 / 8 = 3,500,000,000 B, not 16-bit."""
    nf4 = Quant(name="nf4", bits_per_weight=Fraction(9, 2), kind="bnb")
    qlora = Training(seq_len=16, method=Method.QLORA, lora=Lora(rank=8, alpha=16), quant=nf4)
    assert _one("commandr-model", SEVEN_B, qlora, SEVEN_B_PARAMS).nbytes == 3_500_000_000
