"""Closed vocabularies: every choice a workload or result can name, as `str` enums.

`Choice.__str__` is the value, which is also the CLI spelling and the JSON value. Ordered levels
(`ZeroStage`, `Checkpointing`) define their order with `level`.
"""

from __future__ import annotations

import difflib
import enum
from typing import TypeVar

from memfit.core.errors import InvalidWorkload
from memfit.core.limits import SHOWN_CHARS, shown

C = TypeVar("C", bound="Choice")


class Choice(str, enum.Enum):
    """A str Enum whose str() is its value; `parse` accepts the value, case-insensitively."""

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def parse(cls: type[C], text: object, *, field: str = "") -> C:
        """The member spelled `text`, or InvalidWorkload naming the field and the options.

        Accepts a member, its value as a string (any case, '_' or '-', aliases such as "none" for ZeRO 0)
        or an int for numeric values (`ZeroStage.parse(3)`); a bool only where "true"/"false" are aliases
        (`Checkpointing`). Anything else (None, a float, a list) is refused.
        """
        if isinstance(text, cls):
            return text
        name = field or cls.__name__
        if not isinstance(text, (str, int)) or (isinstance(text, int) and not -(10**18) < text < 10**18):
            raise _invalid(cls, name, text, hint="")
        wanted = str(text).strip().lower().replace("_", "-")
        for member in cls:
            if member.value.lower().replace("_", "-") == wanted:
                return member
        for alias, value in _ALIASES.get(cls.__name__, {}).items():
            if alias == wanted:
                return cls(value)
        close = difflib.get_close_matches(str(text)[:MAX_SHOWN_CHARS], [m.value for m in cls], n=1)
        raise _invalid(cls, name, text, hint=f" (did you mean {close[0]}?)" if close else "")


MAX_SHOWN_CHARS = SHOWN_CHARS
"""Characters of a bad value quoted in an error message: the message stays one readable line."""


def _invalid(cls: type[Choice], name: str, text: object, *, hint: str) -> InvalidWorkload:
    options = ", ".join(m.value for m in cls)
    return InvalidWorkload(f"{name}={shown(text)} is not valid{hint}; use one of: {options}")


class Runtime(Choice):
    """Whose memory behaviour is modelled; its quirks are one RuntimeProfile in core/runtimes.py."""

    TRANSFORMERS = "transformers"
    VLLM = "vllm"
    LLAMA_CPP = "llama.cpp"


class Engine(Choice):
    """How an estimate was produced."""

    ANALYTIC = "analytic"
    TRACE = "trace"
    MEASURE = "measure"


class Task(Choice):
    INFER = "infer"
    TRAIN = "train"


class PhaseName(Choice):
    """Phases of a job. Inference: load, prefill, decode. Training: load, forward, backward, optimizer."""

    LOAD = "load"
    PREFILL = "prefill"
    DECODE = "decode"
    FORWARD = "forward"
    BACKWARD = "backward"
    OPTIMIZER = "optimizer"


class AttnImpl(Choice):
    """Attention implementation: transformers' attn_implementation names."""

    SDPA = "sdpa"
    EAGER = "eager"
    FLASH = "flash"


class EagerScores(Choice):
    """What a family's eager attention keeps per (b, heads, s, kv) score (see attention_kinds)."""

    SOFTMAX_FP32 = "softmax-fp32"          # eager_attention_forward: scores, fp32 copy, fp32 softmax
    BADDBMM_ALIBI = "baddbmm-alibi"        # BLOOM: baddbmm with the ALiBi, + mask, fp32 softmax
    FLOAT_ALIBI = "float-alibi"            # Falcon with ALiBi: fp32 scores + bias + mask, cast back
    SOFTMAX_IN_DTYPE = "softmax-in-dtype"  # Falcon without ALiBi: scores, + mask, softmax in the dtype
    SCORES_IN_DTYPE = "scores-in-dtype"    # GPT-2: scores, scaled, masked, softmax, two alive at a time


class SoftmaxDtype(Choice):
    """The dtype eager attention takes its softmax in."""

    FP32 = "fp32"        # softmax(..., dtype=torch.float32), then cast to q's dtype (Llama and most)
    SCORES = "scores"    # the scores' own dtype, q's (GPT-2)
    HIDDEN = "hidden"    # the hidden states' dtype (Falcon: fp32 under autocast or after prepare_kbit)


class KvCache(Choice):
    """KV cache kind: grows with tokens (dynamic), pre-allocated to max length (static), blocks (paged)."""

    DYNAMIC = "dynamic"
    STATIC = "static"
    PAGED = "paged"


class Method(Choice):
    FULL = "full"
    LORA = "lora"
    QLORA = "qlora"


class Precision(Choice):
    """Training precision: pure low precision, fp32, or autocast over fp32 parameters (AMP)."""

    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"
    AMP_BF16 = "amp-bf16"
    AMP_FP16 = "amp-fp16"

    @property
    def is_amp(self) -> bool:
        return self in (Precision.AMP_BF16, Precision.AMP_FP16)


class Optimizer(Choice):
    """Optimizers; each maps to an explicit implementation (foreach, fused or for-loop) as on CUDA."""

    ADAMW = "adamw"                       # torch.optim.AdamW, foreach (the CUDA default)
    ADAMW_FUSED = "adamw-fused"           # fused=True
    ADAMW_LOOP = "adamw-loop"             # foreach=False
    ADAM = "adam"                         # torch.optim.Adam, foreach
    SGD = "sgd"
    SGD_MOMENTUM = "sgd-momentum"
    ADAFACTOR = "adafactor"               # transformers Adafactor, factored second moments
    LION = "lion"
    ADAMW_8BIT = "adamw-8bit"             # bitsandbytes AdamW8bit
    PAGED_ADAMW_8BIT = "paged-adamw-8bit"
    PAGED_ADAMW_32BIT = "paged-adamw-32bit"


class Checkpointing(Choice):
    """Activation (gradient) checkpointing, ordered by how much it saves: `level` grows with savings."""

    NONE = "none"   # every activation kept for backward
    FULL = "full"   # non-reentrant: each decoder layer keeps its input; one layer recomputed in backward

    @property
    def level(self) -> int:
        return list(Checkpointing).index(self)


class ZeroStage(Choice):
    """DeepSpeed ZeRO stage, ordered: 0 none; 1 optimizer states; 2 + gradients; 3 + parameters sharded."""

    NONE = "0"
    OPTIMIZER = "1"
    GRADIENTS = "2"
    PARAMETERS = "3"

    @property
    def level(self) -> int:
        return int(self.value)


class FsdpStrategy(Choice):
    FULL = "full"                  # FULL_SHARD: like ZeRO-3
    SHARD_GRAD_OP = "shard-grad-op"  # like ZeRO-2
    HYBRID = "hybrid"              # full shard within a node, replicate across nodes


class PipelineSchedule(Choice):
    """The order a pipeline stage runs its micro-batches' forwards and backwards in.
    Source: torch 2.13 torch/distributed/pipelining/schedules.py (Schedule1F1B, ScheduleGPipe,
    ScheduleInterleaved1F1B)."""

    ONE_F_ONE_B = "1f1b"           # warm up with pp − stage forwards, then one backward, one forward
    GPIPE = "gpipe"                # every forward, then every backward
    INTERLEAVED = "interleaved"    # 1F1B over pp_virtual_stages model chunks per rank (virtual pipeline)


class Offload(Choice):
    NONE = "none"
    CPU = "cpu"
    NVME = "nvme"


class DeviceMap(Choice):
    AUTO = "auto"       # accelerate's device_map="auto": fill GPUs in order, the rest to CPU RAM
    BALANCED = "balanced"


class NormKind(Choice):
    """Normalisation layer kind, for parameter counts and fp32 upcasts."""

    RMS = "rms"                      # weight only
    LAYER = "layer"                  # weight and bias
    LAYER_NO_BIAS = "layer-no-bias"  # weight only (Cohere, OLMo)


class QkNorm(Choice):
    """Where query/key norms sit: none, per head (Qwen3, Gemma 3: head_dim weights) or all heads (OLMo 2);
    L2: a weightless RMS normalisation of each q and k head (Llama 4's Llama4TextL2Norm)."""

    NONE = "none"
    PER_HEAD = "per-head"
    FULL = "full"
    L2 = "l2"


_ALIASES: dict[str, dict[str, str]] = {
    "Optimizer": {"adamw-foreach": "adamw", "adamw-torch": "adamw", "adamw-torch-fused": "adamw-fused",
                  "adamw8bit": "adamw-8bit", "paged-adamw8bit": "paged-adamw-8bit"},
    "AttnImpl": {"flash-attention-2": "flash", "flash-attn": "flash", "flash_attention_2": "flash"},
    "ZeroStage": {"none": "0"},
    "Checkpointing": {"true": "full", "false": "none"},
}
