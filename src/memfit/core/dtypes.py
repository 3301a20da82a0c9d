"""Numeric types and quantization formats, with exact bits per element as `Fraction`s.

`DType` covers tensor element types (including llama.cpp's block-quantized cache types, whose bits per
element are fractional). `Quant` is a weight quantization format: bits per weight including its scales,
zeros and block maxima, which modules it leaves unquantized, and which runtimes load it. `QUANTS` is the
table of every named format; `quant()` looks one up.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from fractions import Fraction

from memfit.core.choices import Choice, Runtime
from memfit.core.errors import InvalidWorkload


class DType(Choice):
    """Element types. `bits_per_element` is exact; block types include their per-block scales."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    FP8_E4M3 = "fp8-e4m3"
    FP8_E5M2 = "fp8-e5m2"
    INT8 = "int8"
    UINT8 = "uint8"
    INT32 = "int32"
    INT64 = "int64"
    BOOL = "bool"
    Q8_0 = "q8_0"   # llama.cpp: 32 int8 + one fp16 scale = 34 bytes per 32 elements
    Q4_0 = "q4_0"   # llama.cpp: 32 4-bit + one fp16 scale = 18 bytes per 32 elements
    Q4_1 = "q4_1"   # 32 4-bit + fp16 scale + fp16 min = 20 bytes per 32
    Q5_0 = "q5_0"   # 32 5-bit + fp16 scale = 22 bytes per 32
    Q5_1 = "q5_1"   # 24 bytes per 32
    IQ4_NL = "iq4_nl"  # 18 bytes per 32

    @property
    def bits_per_element(self) -> Fraction:
        return _BITS[self]

    @property
    def bits(self) -> int:
        """Whole bits per element; block-quantized types round up (use bits_per_element for exact sizes)."""
        return -(-_BITS[self].numerator // _BITS[self].denominator)

    @property
    def is_float(self) -> bool:
        return self in (DType.FP32, DType.BF16, DType.FP16, DType.FP8_E4M3, DType.FP8_E5M2)

    def nbytes(self, num_elements: int) -> int:
        """Bytes for `num_elements` of this type: ceil(num_elements × bits / 8)."""
        bits = num_elements * _BITS[self]
        return -(-bits.numerator // (bits.denominator * 8))


_BITS: dict[DType, Fraction] = {
    DType.FP32: Fraction(32), DType.BF16: Fraction(16), DType.FP16: Fraction(16),
    DType.FP8_E4M3: Fraction(8), DType.FP8_E5M2: Fraction(8), DType.INT8: Fraction(8),
    DType.UINT8: Fraction(8), DType.INT32: Fraction(32), DType.INT64: Fraction(64), DType.BOOL: Fraction(8),
    DType.Q8_0: Fraction(34 * 8, 32), DType.Q4_0: Fraction(18 * 8, 32), DType.Q4_1: Fraction(20 * 8, 32),
    DType.Q5_0: Fraction(22 * 8, 32), DType.Q5_1: Fraction(24 * 8, 32), DType.IQ4_NL: Fraction(18 * 8, 32),
}

_DTYPE_ALIASES = {
    "float32": DType.FP32, "float": DType.FP32, "bfloat16": DType.BF16, "float16": DType.FP16,
    "half": DType.FP16, "fp8": DType.FP8_E4M3, "float8-e4m3fn": DType.FP8_E4M3, "fp8-e4m3fn": DType.FP8_E4M3,
    "float8-e5m2": DType.FP8_E5M2, "f32": DType.FP32, "f16": DType.FP16, "bf16": DType.BF16,
    "i8": DType.INT8, "u8": DType.UINT8, "i32": DType.INT32, "i64": DType.INT64, "int4": DType.INT8,
}


def parse_dtype(text: str | DType, *, field: str = "dtype") -> DType:
    """A DType from its memfit, torch, safetensors or HF config spelling ('bfloat16', 'BF16', 'fp8')."""
    if isinstance(text, DType):
        return text
    key = str(text).strip().lower().replace("_", "-").removeprefix("torch.")
    if key in _DTYPE_ALIASES:
        return _DTYPE_ALIASES[key]
    return DType.parse(key, field=field)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleGrid:
    """One per-block tensor a quantized matrix stores beside its codes (scales, zeros, act-order index):
    one `bits`-wide entry per block of `rows` output rows × `cols` input features; 0 spans the whole
    dimension. A (fan_out, fan_in) matrix stores ceil(fan_out/rows)·ceil(fan_in/cols) entries, packed
    `pack_bits` at a time along the output rows when `pack_bits` is set (GPTQ's int32 qzeros).

    E.g. FP8 128×128 blocks: ScaleGrid(rows=128, cols=128, bits=32); MXFP4: ScaleGrid(rows=1, cols=32,
    bits=8); one per-tensor scale: ScaleGrid(rows=0, cols=0, bits=32).
    """

    name: str
    rows: int
    cols: int
    bits: int
    pack_bits: int = 0

    def entries_bits(self, fan_out: int, fan_in: int) -> int:
        """Bits this grid stores for one (fan_out, fan_in) matrix."""
        row_blocks = -(-fan_out // self.rows) if self.rows else 1
        col_blocks = -(-fan_in // self.cols) if self.cols else 1
        if self.pack_bits:   # a bit stream per column block, padded to whole words
            return col_blocks * -(-(row_blocks * self.bits) // self.pack_bits) * self.pack_bits
        return row_blocks * col_blocks * self.bits


@dataclass(frozen=True, slots=True, kw_only=True)
class Quant:
    """A weight quantization format.

    `bits_per_weight` counts everything stored per quantized weight (scales, zeros, block maxima) as an
    exact fraction; `row_overhead_bits` is added per output row (LLM.int8's fp32 row scales),
    `column_overhead_bits` per input feature and `tensor_overhead_bits` once per matrix;
    `keeps` names the module kinds the loader leaves in the compute dtype
    ("embeddings", "lm_head", "norms", "router", "biases"); `runtimes` lists who can load it.
    Checkpoint formats (`checkpoint=True`, read from a config's quantization_config) count the codes in
    `bits_per_weight` and every scale, zero and index tensor exactly by matrix shape in `grids`;
    `targets`, when set, limits conversion to those roles (gpt-oss converts only its experts).
    """

    name: str
    bits_per_weight: Fraction
    kind: str = "none"              # none | bnb | gptq | awq | gguf | fp8 | compressed-tensors
    row_overhead_bits: int = 0
    column_overhead_bits: int = 0   # per input feature (GPTQ's int32 g_idx act-order index)
    tensor_overhead_bits: int = 0   # per quantized matrix (bnb's quantile code, FP8's per-tensor scale)
    keeps: frozenset[str] = frozenset({"embeddings", "lm_head", "norms", "router", "biases"})
    runtimes: frozenset[Runtime] = frozenset(Runtime)
    note: str = ""
    mix: tuple[tuple[str, str], ...] = field(default=())  # GGUF presets: (tensor role, GGUF type) pairs
    grids: tuple[ScaleGrid, ...] = ()   # per-block scales / zeros / indices, counted per matrix shape
    targets: frozenset[str] | None = None  # roles converted (None: every role not in `keeps`)
    checkpoint: bool = False        # read from a checkpoint's quantization_config (not asked for)

    @property
    def is_quantized(self) -> bool:
        return self.kind != "none"


QUANTS: dict[str, Quant] = {
    "none": Quant(name="none", bits_per_weight=Fraction(16), kind="none", keeps=frozenset(),
                  note="weights in the workload dtype"),
    "dequantized": Quant(name="dequantized", bits_per_weight=Fraction(16), kind="none", keeps=frozenset(),
                         note="a pre-quantized checkpoint dequantized to the workload dtype at load "
                              "(transformers' dequantize=True); the same as none for other checkpoints"),
}
"""Every named weight format. Filled out in `core/quants.py` (bitsandbytes, GPTQ/AWQ, FP8, GGUF types)."""


def quant(name: str | Quant) -> Quant:
    """The Quant named `name`, or InvalidWorkload listing the close names."""
    if isinstance(name, Quant):
        return name
    from memfit.core import quants as _quants  # the full table registers itself on import

    table = _quants.ALL_QUANTS
    key = str(name).strip()
    for candidate in (key, key.lower()):
        if candidate in table:
            return table[candidate]
    lowered = {k.lower(): v for k, v in table.items()}
    for candidate in (key.lower(), f"gguf-{key.lower()}"):   # llama.cpp's own type names: Q4_K_M, Q8_0
        if candidate in lowered:
            return lowered[candidate]
    plain = {k.lower().removeprefix("gguf-").replace("_", ""): k for k in table}   # q4km ~ gguf-Q4_K_M
    close = list(dict.fromkeys(
        [*(k for k in table if k.lower().startswith(key.lower()) and key),
         *difflib.get_close_matches(key, list(table), n=3),
         *(plain[m] for m in difflib.get_close_matches(key.lower().replace("_", ""), list(plain), n=3))]))[:3]
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise InvalidWorkload(f"quant={name!r} is not a known format{hint}; `memfit catalog quants` lists them")
