"""The full table of weight quantization formats, with exact bits per weight as `Fraction`s.

Each entry counts everything stored per quantized weight: packed codes, per-block scales and zeros, block
maxima. Per-row, per-input-feature and per-matrix extras are separate fields of `Quant` (dtypes.py).

- bitsandbytes (runtime transformers): LLM.int8 ("int8": int8 codes + one fp32 scale per output row, SCB),
  4-bit nf4/fp4 (two codes per byte + one fp32 absmax per block of 64) and their double-quant variants
  (absmax stored as uint8 per block of 64, plus one fp32 second-level absmax per 256 blocks).
  Source: bitsandbytes 0.50 `functional.quantize_4bit` (blocksize=64; compress_statistics → blocksize 256)
  and `Int8Params` (CB int8, SCB fp32 per row); per matrix a 16-entry fp32 quantile code, plus for
  double quant a 256-entry fp32 code and an fp32 offset.
- GPTQ and AWQ checkpoints: `bits` per weight plus one fp16 scale and one `bits`-bit zero per group;
  GPTQ also stores an int32 `g_idx` per input feature (act-order index). Source: AutoGPTQ/gptqmodel
  QuantLinear (qweight, qzeros, scales, g_idx), AutoAWQ WQLinear_GEMM (qweight, qzeros, scales).
- FP8 (e4m3/e5m2): one byte per weight and one fp32 scale per matrix (per-tensor scaling).
  Source: transformers FP8 integration / vLLM `Fp8LinearMethod` (weight_scale per tensor).
- GGUF types: bytes per block over weights per block, from ggml's `type_traits` block structs
  (ggml/src/ggml-common.h): e.g. Q4_K is 144 bytes per 256 weights, Q6_K 210, Q8_0 34 per 32.
  Presets (Q4_K_M, ...) are a per-tensor mix following llama.cpp `llama_tensor_get_type` (simplified: the
  attn_v/ffn_down upgrade on the "more bits" layers; the exact rules have more special cases).
"""

from __future__ import annotations

from fractions import Fraction

from memfit.core.choices import Runtime
from memfit.core.dtypes import QUANTS, Quant

BNB_BLOCKSIZE_4BIT = 64
"""Weights per absmax block of bnb 4-bit. Source: bitsandbytes quantize_4bit default blocksize=64."""
BNB_DQ_BLOCKSIZE = 256
"""Absmax values per second-level block under double quant. Source: bitsandbytes quantize_4bit
(compress_statistics=True quantizes absmax with blocksize=256)."""

_BNB = frozenset({Runtime.TRANSFORMERS})
_HF_AND_VLLM = frozenset({Runtime.TRANSFORMERS, Runtime.VLLM})
_GGUF_RUNTIMES = frozenset({Runtime.LLAMA_CPP})
# bnb replaces nn.Linear modules only and skips lm_head (transformers' get_keys_to_not_convert)
_BNB_KEEPS = frozenset({"embeddings", "lm_head", "norms", "router", "biases", "fused"})


def _bnb_4bit(name: str, *, double_quant: bool) -> Quant:
    block = BNB_BLOCKSIZE_4BIT
    if double_quant:
        # 4 bits + uint8 absmax per 64 + fp32 absmax per 64·256 = 2113/512
        bits = 4 + Fraction(8, block) + Fraction(32, block * BNB_DQ_BLOCKSIZE)
        per_matrix_bits = (16 * 32) + (256 * 32) + 32   # nf4 code, absmax code, absmax offset
    else:
        bits = 4 + Fraction(32, block)                  # 9/2
        per_matrix_bits = 16 * 32
    return Quant(name=name, bits_per_weight=bits, kind="bnb-4bit", tensor_overhead_bits=per_matrix_bits,
                 keeps=_BNB_KEEPS, runtimes=_HF_AND_VLLM,
                 note="bitsandbytes 4-bit: packed codes, absmax per 64 weights" +
                      (", double-quantized absmax" if double_quant else ""))


def _gptq(bits: int, group: int, *, awq: bool = False) -> Quant:
    kind = "awq" if awq else "gptq"
    return Quant(
        name=f"{kind}-{bits}bit-g{group}",
        bits_per_weight=bits + Fraction(16 + bits, group),   # fp16 scale and a bits-wide zero per group
        kind=kind,
        column_overhead_bits=0 if awq else 32,              # GPTQ's int32 g_idx per input feature
        keeps=frozenset({"embeddings", "lm_head", "norms", "router", "biases"}),
        runtimes=_HF_AND_VLLM,
        note=f"{kind.upper()} {bits}-bit, group size {group}",
    )


GGUF_TYPES: dict[str, tuple[int, int]] = {
    # type: (bytes per block, weights per block). Source: ggml-common.h block structs.
    "F32": (4, 1), "F16": (2, 1), "BF16": (2, 1),
    "Q4_0": (18, 32), "Q4_1": (20, 32), "Q5_0": (22, 32), "Q5_1": (24, 32), "Q8_0": (34, 32),
    "Q2_K": (84, 256), "Q3_K": (110, 256), "Q4_K": (144, 256), "Q5_K": (176, 256), "Q6_K": (210, 256),
    "Q8_K": (292, 256),
    "IQ1_S": (50, 256), "IQ1_M": (56, 256), "IQ2_XXS": (66, 256), "IQ2_XS": (74, 256), "IQ2_S": (82, 256),
    "IQ3_XXS": (98, 256), "IQ3_S": (110, 256), "IQ4_NL": (18, 32), "IQ4_XS": (136, 256),
    "TQ1_0": (54, 256), "TQ2_0": (66, 256), "MXFP4": (17, 32),
}
"""Every GGUF tensor type memfit sizes, as (bytes per block, weights per block)."""


def gguf_bits(type_name: str) -> Fraction:
    """Exact bits per weight of a GGUF tensor type, e.g. Q4_K → 144·8/256 = 9/2."""
    nbytes, per_block = GGUF_TYPES[type_name.upper()]
    return Fraction(nbytes * 8, per_block)


GGUF_PRESETS: dict[str, tuple[tuple[str, str], ...]] = {
    # preset: ((tensor role, GGUF type), ...); "default" covers every other quantized matrix;
    # "<role>@more_bits" applies on llama.cpp's use_more_bits layers (first and last eighth, every third).
    "Q2_K": (("default", "Q2_K"), ("attn_v", "Q3_K"), ("ffn_down", "Q3_K"), ("output", "Q6_K")),
    "Q3_K_S": (("default", "Q3_K"), ("output", "Q6_K")),
    "Q3_K_M": (("default", "Q3_K"), ("attn_v", "Q5_K"), ("ffn_down", "Q4_K"), ("attn_output", "Q4_K"),
               ("output", "Q6_K")),
    "Q3_K_L": (("default", "Q3_K"), ("attn_v", "Q5_K"), ("ffn_down", "Q5_K"), ("attn_output", "Q5_K"),
               ("output", "Q6_K")),
    "Q4_0": (("default", "Q4_0"), ("output", "Q6_K")),
    "Q4_K_S": (("default", "Q4_K"), ("ffn_down@more_bits", "Q5_K"), ("output", "Q6_K")),
    "Q4_K_M": (("default", "Q4_K"), ("attn_v@more_bits", "Q6_K"), ("ffn_down@more_bits", "Q6_K"),
               ("output", "Q6_K")),
    "Q5_0": (("default", "Q5_0"), ("output", "Q6_K")),
    "Q5_K_S": (("default", "Q5_K"), ("output", "Q6_K")),
    "Q5_K_M": (("default", "Q5_K"), ("attn_v@more_bits", "Q6_K"), ("ffn_down@more_bits", "Q6_K"),
               ("output", "Q6_K")),
    "Q6_K": (("default", "Q6_K"),),
    "Q8_0": (("default", "Q8_0"),),
    "IQ4_XS": (("default", "IQ4_XS"), ("output", "Q6_K")),
    "F16": (("default", "F16"),),
}
"""llama.cpp file types as per-tensor mixes (simplified llama_tensor_get_type)."""


def _gguf_type_quant(type_name: str) -> Quant:
    return Quant(name=f"gguf-{type_name}", bits_per_weight=gguf_bits(type_name), kind="gguf",
                 keeps=frozenset({"norms", "biases"}), runtimes=_GGUF_RUNTIMES,
                 mix=(("default", type_name),), note=f"every matrix as GGUF {type_name}")


def _gguf_preset(preset: str, mix: tuple[tuple[str, str], ...]) -> Quant:
    default = dict(mix)["default"]
    return Quant(name=f"gguf-{preset}", bits_per_weight=gguf_bits(default), kind="gguf",
                 keeps=frozenset({"norms", "biases"}), runtimes=_GGUF_RUNTIMES, mix=mix,
                 note=f"llama.cpp {preset}: mostly {default}, a per-tensor mix")


def _build() -> dict[str, Quant]:
    table: dict[str, Quant] = dict(QUANTS)
    table["int8"] = Quant(name="int8", bits_per_weight=Fraction(8), kind="bnb-int8", row_overhead_bits=32,
                          keeps=_BNB_KEEPS, runtimes=_BNB,
                          note="bitsandbytes LLM.int8: int8 weights, fp32 scale per output row")
    for fmt in ("nf4", "fp4"):
        table[fmt] = _bnb_4bit(fmt, double_quant=False)
        table[f"{fmt}-dq"] = _bnb_4bit(f"{fmt}-dq", double_quant=True)
    for dtype_name in ("e4m3", "e5m2"):
        table[f"fp8-{dtype_name}"] = Quant(
            name=f"fp8-{dtype_name}", bits_per_weight=Fraction(8), kind="fp8", tensor_overhead_bits=32,
            keeps=frozenset({"embeddings", "lm_head", "norms", "router", "biases"}), runtimes=_HF_AND_VLLM,
            note=f"FP8 {dtype_name} weights, one fp32 scale per matrix")
    table["fp8"] = table["fp8-e4m3"]
    for bits, group in ((4, 128), (4, 64), (4, 32), (3, 128), (8, 128), (2, 128)):
        q = _gptq(bits, group)
        table[q.name] = q
    table["awq-4bit-g128"] = _gptq(4, 128, awq=True)
    table["awq-4bit-g64"] = _gptq(4, 64, awq=True)
    for type_name in GGUF_TYPES:
        table[f"gguf-{type_name}"] = _gguf_type_quant(type_name)
    for preset, mix in GGUF_PRESETS.items():
        if preset not in GGUF_TYPES:
            table[f"gguf-{preset}"] = _gguf_preset(preset, mix)
    return table


ALL_QUANTS: dict[str, Quant] = _build()
"""Every named weight format (the `quant()` lookup in dtypes.py reads this table)."""


BNB_FUSED_4BIT_MAX_M = 4
"""At most this many rows (tokens) bnb's fused 4-bit GEMM always takes on sm90; larger large-weight matmuls
dequantize the weight and call F.linear. Source: bitsandbytes 0.50 backends/cuda/ops.py
_GEMM_4BIT_CUSTOM_FLOOR_M and the sm90 branch of _gemm_4bit_use_custom_cuda (M ≤ 64/48/32 by wave count for
weights ≥ 4 Mi elements)."""
SM90_NUM_SMS = 132
"""Streaming multiprocessors of an H100 SXM, which bnb's heuristic reads."""


def bnb_4bit_fused(m: int, n: int, k: int) -> bool:
    """Whether bitsandbytes multiplies `m` rows by an (n, k) 4-bit weight with its fused kernel (no
    dequantised copy) on sm90, rather than dequantising the weight and calling F.linear. The one rule the
    analytic engine (transients.dequant_bytes) and the trace's stand-in (trace/standins.py) follow."""
    if m <= BNB_FUSED_4BIT_MAX_M:
        return True
    if m > 64 or n * k < 4 * 1024 * 1024:
        return m < 8 if n * k >= 4 * 1024 * 1024 else m <= 16
    n_blocks = (n + 63) // 64
    if n_blocks >= SM90_NUM_SMS * 3:
        return m <= 64
    if n_blocks >= SM90_NUM_SMS * 2:
        return m <= 48
    if n_blocks >= SM90_NUM_SMS:
        return m <= 32
    return False
