"""Quantization formats (core/quants.py): exact bits per weight and the quant() lookup."""

from fractions import Fraction

import pytest

from memfit.core.dtypes import quant
from memfit.core.errors import InvalidWorkload
from memfit.core.quants import ALL_QUANTS, GGUF_TYPES, gguf_bits


def test_nf4_bits_per_weight():
    """nf4 stores 4 bits plus one fp32 absmax per 64 weights: 4 + 32/64 = 9/2."""
    assert quant("nf4").bits_per_weight == Fraction(9, 2)


def test_nf4_double_quant_bits_per_weight():
    """Double quant: 4 + 8/64 (uint8 absmax) + 32/(64·256) (fp32 second level) = 2113/512."""
    assert quant("nf4-dq").bits_per_weight == Fraction(2113, 512)


def test_gptq_4bit_g128_bits_and_g_idx():
    """GPTQ 4-bit g128: 4 + (16 + 4)/128 = 133/32 per weight, plus an int32 g_idx per input feature."""
    q = quant("gptq-4bit-g128")
    assert (q.bits_per_weight, q.column_overhead_bits) == (Fraction(133, 32), 32)


def test_gguf_q6_k_bits():
    """Q6_K: 210 bytes per 256 weights = 1680/256 = 105/16 bits per weight."""
    assert quant("gguf-Q6_K").bits_per_weight == Fraction(105, 16)


def test_gguf_q4_k_block_is_144_bytes_per_256_weights():
    """A Q4_K block: 2+2 (d, dmin) + 12 (scales) + 128 (codes) = 144 bytes for 256 weights."""
    assert GGUF_TYPES["Q4_K"] == (144, 256)
    assert 256 * gguf_bits("Q4_K") / 8 == 144


def test_int8_has_fp32_row_scale():
    """LLM.int8 keeps one fp32 scale (SCB) per output row."""
    q = quant("int8")
    assert (q.bits_per_weight, q.row_overhead_bits, q.kind) == (Fraction(8), 32, "bnb-int8")


def test_bnb_keeps_lm_head_and_fused_experts():
    """bitsandbytes converts nn.Linear only and skips lm_head: both stay in the compute dtype."""
    assert {"lm_head", "fused", "embeddings"} <= quant("nf4").keeps


def test_gguf_preset_is_a_mix():
    """Q4_K_M is mostly Q4_K with Q6_K for the output and the 'more bits' attn_v/ffn_down layers."""
    mix = dict(quant("gguf-Q4_K_M").mix)
    assert (mix["default"], mix["output"], mix["attn_v@more_bits"]) == ("Q4_K", "Q6_K", "Q6_K")


def test_quant_lookup_is_case_insensitive():
    """'NF4' finds nf4."""
    assert quant("NF4") is ALL_QUANTS["nf4"]


def test_unknown_quant_is_invalid_workload_with_closest():
    """A misspelt format raises one line naming the closest formats."""
    with pytest.raises(InvalidWorkload, match="closest: nf4"):
        quant("nf5")


def test_llama_cpp_type_names_find_their_gguf_format():
    """llama.cpp's own names (Q4_K_M, q8_0) are the gguf- formats; a format named first (fp8) is not one."""
    assert quant("Q4_K_M") is ALL_QUANTS["gguf-Q4_K_M"]
    assert quant("q8_0") is ALL_QUANTS["gguf-Q8_0"]
    assert quant("fp8") is ALL_QUANTS["fp8"]


@pytest.mark.parametrize(("name", "closest"), [
    ("q4km", "gguf-Q4_K_M"),            # without separators
    ("awq", "awq-4bit-g128"),           # a method without its bits and group: every variant, prefix first
    ("gptq", "gptq-4bit-g128"),
])
def test_a_short_or_unseparated_name_lists_the_formats_it_means(name, closest):
    with pytest.raises(InvalidWorkload, match=f"closest: {closest}"):
        quant(name)
