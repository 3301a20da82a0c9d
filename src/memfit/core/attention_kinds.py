"""How a family's transformers 5.17 attention really runs: SDPA or eager, ALiBi bias, per-score temporaries.

Shared facts for the inference working set (transients.py) and training activations (activations.py):
- `runs_eager(spec, attn)`: families whose classes refuse SDPA (`_supports_sdpa = False`) run eager;
- `alibi_bias(spec)`: Falcon-RW (config `alibi`) folds ALiBi and the causal mask into one float
  (b, heads, s, kv) bias built once per forward and passed to every layer (SDPA then takes the memory-
  efficient kernel with that bias); BLOOM adds its (b·heads, 1, kv) ALiBi through baddbmm instead;
- `eager_bytes_per_score(spec, dtype)`: peak bytes per (b, heads, s, kv) score of a family's eager
  attention, measured on real CPU tensors (a TorchDispatchMode summing live storages) with tiny configs.
"""

from __future__ import annotations

import json

from memfit.core.choices import AttnImpl
from memfit.core.dtypes import DType
from memfit.core.spec import ModelSpec
from memfit.core.versions import Attention

FP32_BYTES = 4
"""Bytes of an fp32 element."""
NO_SDPA_FAMILIES = frozenset({"bloom", "gpt_oss", "gptj"})
"""Families whose transformers 5.17 classes do not support SDPA: asking for SDPA raises (BLOOM) or the default
is eager (gpt-oss, whose attention sinks need eager_attention_forward's cat; GPT-J, whose attention classes
are eager and flash-attention-2 only); eager runs. Source: transformers 5.17 BloomPreTrainedModel (raises on
sdpa), GptOssPreTrainedModel._supports_sdpa, modeling_gptj.py GPTJ_ATTENTION_CLASSES (no `_supports_sdpa`);
checked per catalog family by tests/crosscheck/test_trace_targets.py."""
CONFIG_ATTENTION_KEYS = ("attn_implementation", "_attn_implementation")
"""config.json keys transformers reads as the model's attention implementation when the caller passes none
(gemma-2-27b's published config carries `"_attn_implementation": "eager"`). Source: transformers 5.17
PretrainedConfig; checked on the meta device."""
PREVIOUS_PROBS_FAMILIES = frozenset({"bloom", "falcon"})
"""Families whose model loop keeps each block's `outputs` tuple (with the attention probabilities) until
the next block returns: the previous layer's (b, heads, s, kv) probabilities live during the next softmax.
Source: transformers 5.17 BloomModel / FalconModel.forward (`outputs = block(...)`); CPU measurement."""
ALIBI_ALWAYS_FAMILIES = frozenset({"bloom"})
"""Families that always use ALiBi (no config switch). Source: transformers 5.17 modeling_bloom.py."""


def config_dict(spec: ModelSpec) -> dict[str, object]:
    """The config.json the spec carries, parsed ({} when absent or not an object)."""
    try:
        config = json.loads(spec.source.config_json) if spec.source.config_json else {}
    except ValueError:
        return {}
    return config if isinstance(config, dict) else {}


def uses_alibi(spec: ModelSpec) -> bool:
    """Whether attention adds an ALiBi bias (BLOOM always; Falcon when config `alibi` is true)."""
    return spec.family in ALIBI_ALWAYS_FAMILIES or (spec.family == "falcon"
                                                    and config_dict(spec).get("alibi") is True)


def alibi_bias(spec: ModelSpec) -> bool:
    """Whether one float (b, heads, s, kv) ALiBi+causal bias lives through the whole layer loop (Falcon-RW).

    Source: transformers 5.17 FalconModel.forward: `causal_mask = masked_fill(alibi / sqrt(head_dim), ...)`
    of shape (b, heads, s, kv), passed to SDPA as attn_mask and to eager as the added mask.
    """
    return spec.family == "falcon" and uses_alibi(spec)


def sdpa_by_default(spec: ModelSpec) -> bool:
    """Whether transformers' default attention (no attn_implementation passed) is SDPA for this model: not for
    families without SDPA, nor when the config itself asks for eager."""
    config = config_dict(spec)
    asked = next((config[k] for k in CONFIG_ATTENTION_KEYS if isinstance(config.get(k), str)), None)
    return spec.family not in NO_SDPA_FAMILIES and asked in (None, "sdpa")


def runs_eager(spec: ModelSpec, attn: AttnImpl) -> bool:
    """Whether attention runs transformers' eager path (asked for, or SDPA is not what the model runs)."""
    return attn is AttnImpl.EAGER or (attn is AttnImpl.SDPA and not sdpa_by_default(spec))


def modeled_attention(spec: ModelSpec, attn: AttnImpl) -> Attention:
    """The attention memfit models this model running under `attn`, and whether it is transformers' default
    (the `attn=sdpa` setting leaves the choice to transformers)."""
    runs = "eager" if runs_eager(spec, attn) else str(attn)
    return Attention(runs=runs, default=attn is AttnImpl.SDPA)


def eager_bytes_per_score(spec: ModelSpec, dtype: DType, *, sinks: bool = False) -> int:
    """Peak bytes per (b, heads, s, kv) score of eager attention in `dtype` (inference, no grad).

    - generic eager_attention_forward (Llama and most): the masked scores, their fp32 copy and the fp32
      softmax: dt + 4 + 4 (fp16 on CUDA: half-to-float, dt + 4; fp32: 2 × 4);
    - sinks (gpt-oss): masked scores, cat with the sink column, its max-subtracted copy and the softmax
      in the compute dtype, at most three alive: 3 dt;
    - BLOOM: baddbmm(alibi) output, + mask, fp32 copy, fp32 softmax, previous layer's probs: 3 dt + 4 + 4
      (fp32: no copy, 4 × 4);
    - Falcon with ALiBi: q·kᵀ, its fp32 copy, + alibi, + mask (fp32), the cast back, the softmax and the
      previous layer's probs: 4 dt + 3 × 4 (fp32: no copies, 5 × 4);
    - Falcon without ALiBi: q·kᵀ, + mask, softmax in dt, previous probs: 4 dt.
    Source: transformers 5.17 modeling_llama/gpt_oss/bloom/falcon eager code; peak live storages of real
    CPU forwards (bf16, b2 s256, 16 heads): BLOOM 14 B, Falcon-RW 20 B (+2 B bias), gpt-oss 6 B per score.
    """
    dt = dtype.nbytes(1)
    fp32 = dt == FP32_BYTES
    if spec.family == "bloom":
        return 3 * dt + (0 if fp32 else FP32_BYTES) + FP32_BYTES
    if spec.family == "falcon" and uses_alibi(spec):
        copies = 0 if fp32 else FP32_BYTES + dt       # the fp32 upcast and the cast back to dt
        return dt + copies + 2 * FP32_BYTES + 2 * dt
    if spec.family == "falcon":
        return 4 * dt
    if sinks:
        return 3 * dt
    match dtype:
        case DType.FP16:
            return dt + FP32_BYTES
        case DType.FP32:
            return 2 * dt
        case _:
            return dt + 2 * FP32_BYTES
