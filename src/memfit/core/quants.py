"""The full table of weight quantization formats (bitsandbytes, GPTQ/AWQ, FP8, GGUF).

A placeholder table; the inference work fills it out with exact bits per weight and sources.
"""

from __future__ import annotations

from memfit.core.dtypes import QUANTS, Quant

ALL_QUANTS: dict[str, Quant] = dict(QUANTS)
