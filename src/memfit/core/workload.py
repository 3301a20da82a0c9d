"""Workloads: what the user wants to run. `Inference` and `Training` are checked in `__post_init__`.

`Workload = Inference | Training`; `estimate()` dispatches on it with `match`. Every field is mirrored by a
kebab-case CLI flag and a snake_case JSON key.

The Python API means what the CLI means. Each field takes the plain values the CLI and JSON take and is
normalised on construction: `Parallelism(zero=3)` or `zero="3"` is `ZeroStage.PARAMETERS`, `quant="nf4"` is
`quant("nf4")`, `dtype="fp16"` is `DType.FP16`, `checkpointing="full"` (or True) is `Checkpointing.FULL`,
`optimizer="adamw-8bit"` is `Optimizer.ADAMW_8BIT`, `gpu_memory_utilization=0.9` (or "0.9") is
`Fraction(9, 10)`, `targets="q_proj,v_proj"` is `("q_proj", "v_proj")`. Integer fields take `int` only:
not bool, not float (2.0 is refused, as the JSON codec refuses it: one meaning everywhere), each within the
limits below. Boolean fields take `bool` only. Anything else, a setting that does not apply to the task or
the runtime, or an impossible combination is an `InvalidWorkload` whose one line starts with the field.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from memfit.core.choices import (
    MAX_SHOWN_CHARS,
    AttnImpl,
    Checkpointing,
    Choice,
    DeviceMap,
    FsdpStrategy,
    KvCache,
    Method,
    Offload,
    Optimizer,
    PipelineSchedule,
    Precision,
    Runtime,
    ZeroStage,
)
from memfit.core.deepspeed import ZeroConfig
from memfit.core.dtypes import QUANTS, DType, Quant, parse_dtype, quant
from memfit.core.errors import InvalidWorkload
from memfit.core.limits import MAX_CONTEXT_TOKENS, shown

DEFAULT_PROMPT_TOKENS = 2048
"""Prompt length when none is given (tokens); the CLI's --prompt-tokens default (cli/options.py)."""
DEFAULT_SEQ_LEN = 2048
"""Training sequence length when none is given (tokens); the CLI's --seq-len default (cli/options.py)."""
DEFAULT_BLOCK_SIZE = 16
"""Tokens per paged KV block. Source: vLLM CacheConfig block_size default (16 on CUDA)."""

MAX_BATCH_SIZE = 1 << 20
"""Most sequences per GPU (training: the micro-batch), 1,048,576: 16 × the planner's search limit
(plan.MAX_BATCH). A bound, not a model: without one, `batch_size=10**400` gives byte counts no float can
render."""
MAX_TOKENS = MAX_CONTEXT_TOKENS
"""Most tokens in any token field (prompt, new tokens, sequence, cache, block), 1,073,741,824: about 100 ×
the longest context any model advertises (10,485,760 tokens, Llama 4 Scout) and 64 × the planner's
MAX_LONGER_CONTEXT."""
MAX_GPUS = 1 << 20
"""Most GPUs in one job, 1,048,576 (dp × tp × pp, and so each degree): about 5 × the largest training
cluster built (some 200,000 GPUs in 2025)."""
MAX_SEQUENCES_PER_STEP = 1 << 30
"""Most sequences per optimizer step on one GPU (batch_size × grad_accum). A bound on the product, so that
moving sequences from the micro-batch into accumulation (as the planner does) never crosses it."""
MAX_COUNT = 1 << 30
"""Most of any other count (LoRA rank and alpha, n_gpu_layers): far above any hidden size (16,384 at 405B)
or layer count (126); there so that no field takes an unbounded int."""
MAX_IMAGES = 1 << 16
"""Most images per sequence, 65,536: far above any model's image budget (Llama 4 takes 5-10, Qwen2.5-VL's
processor a few hundred frames); there so that image token counts stay bounded."""
MAX_IMAGE_SIDE = 1 << 15
"""Longest image side in pixels, 32,768: above a 200-megapixel photo's long side (about 16,320 px)."""
MAX_GPU_MEMORY_BYTES = 1 << 50
"""Largest per-GPU cap for device_map splits, 1 PiB: over 3,000 × the largest GPU sold (288 GB)."""
MAX_FRACTION_CHARS = 32
"""Longest decimal string read as a fraction ("0.9", "9/10"): no exponents, so "1e999999999" cannot make
Fraction build a billion-digit integer."""

RUNTIME_SETTINGS: dict[str, frozenset[Runtime]] = {
    "gpu_memory_utilization": frozenset({Runtime.VLLM}),   # vLLM LLM(gpu_memory_utilization=...)
    "block_size": frozenset({Runtime.VLLM}),               # vLLM's paged KV block size
    "max_num_batched_tokens": frozenset({Runtime.VLLM}),   # vllm serve --max-num-batched-tokens
    "max_num_seqs": frozenset({Runtime.VLLM}),             # vllm serve --max-num-seqs
    "enforce_eager": frozenset({Runtime.VLLM}),            # vllm serve --enforce-eager (no CUDA graphs)
    "kv_cache_memory": frozenset({Runtime.VLLM}),          # vllm serve --kv-cache-memory (bytes)
    "vllm_version": frozenset({Runtime.VLLM}),             # whose memory profiling is modelled
    "n_gpu_layers": frozenset({Runtime.LLAMA_CPP}),        # llama.cpp --n-gpu-layers
    "n_cpu_moe": frozenset({Runtime.LLAMA_CPP}),           # llama.cpp --n-cpu-moe
    "tensor_split": frozenset({Runtime.LLAMA_CPP}),        # llama.cpp --tensor-split
    "v_cache_dtype": frozenset({Runtime.LLAMA_CPP}),       # llama.cpp --cache-type-v
    "device_map": frozenset({Runtime.TRANSFORMERS}),       # accelerate's from_pretrained(device_map=...)
}
"""Inference settings only some runtimes read: given for another runtime they are refused, not ignored."""

_FLOAT_TYPES = frozenset(d for d in DType if d.is_float)
KV_CACHE_DTYPES: dict[Runtime, frozenset[DType]] = {
    Runtime.TRANSFORMERS: _FLOAT_TYPES,
    Runtime.VLLM: _FLOAT_TYPES,
    Runtime.LLAMA_CPP: _FLOAT_TYPES
    | {DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.IQ4_NL, DType.Q5_0, DType.Q5_1},
}
"""K/V cache element types accepted per runtime. Source: transformers and vLLM keep K/V in a float dtype
(vLLM kv_cache_dtype auto/bfloat16/fp8*); llama.cpp common/arg.cpp kv_cache_types (--cache-type-k/v: f32,
f16, bf16 and the block types). fp8 is accepted for llama.cpp too, as a what-if the property tests use."""

_FRACTION_TERM_LIMIT = 10**18    # numerators and denominators above it are refused: messages print them
_FRACTION_RE = re.compile(r"^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(/[0-9]+)?\s*$")

_Normalise = Callable[[Any, str], Any]


# --- normalisers: a plain value in, the field's type out, or InvalidWorkload naming the field ----------


def _integer(minimum: int, maximum: int, what: str) -> _Normalise:
    """An int field in [minimum, maximum]; `what` names the limit in the message."""

    unit = f" {what}" if what else ""

    def normalise(value: Any, name: str) -> int:
        try:
            if isinstance(value, bool):
                raise TypeError(name)
            number = operator.index(value)   # int and integer types such as numpy.int64; never a float
        except TypeError:
            raise InvalidWorkload(f"{name}={shown(value)} must be an integer") from None
        if number < minimum:
            raise InvalidWorkload(f"{name}={shown(number)} must be at least {minimum}")
        if number > maximum:
            raise InvalidWorkload(f"{name}={shown(number)} is more than {maximum:,}{unit}, the most memfit "
                                  "accepts")
        return number

    return normalise


def _boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidWorkload(f"{name}={shown(value)} must be true or false")
    return value


def _choice(cls: type[Choice]) -> _Normalise:
    return lambda value, name: cls.parse(value, field=name)


def _dtype(value: Any, name: str) -> DType:
    if not isinstance(value, str):
        raise InvalidWorkload(f"{name}={shown(value)} must be a dtype name such as bf16, fp16 or fp8")
    return parse_dtype(value, field=name)


def _quant(value: Any, name: str) -> Quant:
    if isinstance(value, Quant):
        return value
    if not isinstance(value, str) or len(value) > MAX_SHOWN_CHARS:
        raise InvalidWorkload(
            f"{name}={shown(value)} is not a known format; `memfit catalog quants` lists them")
    return quant(value)


def parse_fraction(value: Any, name: str) -> Fraction:
    """A Fraction from a Fraction, an int, a finite float (0.9 → 9/10, as written) or a decimal string
    ("0.9", "9/10"; no exponent: `Fraction("1e999999999")` would build a billion-digit int), else
    InvalidWorkload naming `name`. The CLI's and the JSON codec's fraction fields can use it too."""
    fraction: Fraction | None = None
    if isinstance(value, Fraction):
        fraction = value
    elif isinstance(value, float) and math.isfinite(value):
        fraction = Fraction(repr(value))
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) < _FRACTION_TERM_LIMIT:
        fraction = Fraction(value)
    elif isinstance(value, str) and len(value) <= MAX_FRACTION_CHARS and _FRACTION_RE.match(value):
        try:
            fraction = Fraction(value.strip())
        except (ValueError, ZeroDivisionError):   # "1.5/2": Fraction takes integer ratios only
            fraction = None
    if fraction is not None and max(abs(fraction.numerator), fraction.denominator) < _FRACTION_TERM_LIMIT:
        return fraction
    raise InvalidWorkload(f"{name}={shown(value)} must be a number such as 0.9 (a decimal or p/q, at most "
                          "18 digits)")


def _targets(value: Any, name: str) -> tuple[str, ...]:
    """LoRA target modules: a tuple or list of names, or one comma-separated string as the CLI takes it."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (tuple, list)) or not all(isinstance(t, str) for t in items):
        raise InvalidWorkload(f"{name}={shown(value)} must be module names like q_proj,v_proj or all-linear")
    return tuple(t.strip() for t in items if t.strip())


def _image_size(value: Any, name: str) -> tuple[int, int]:
    """(height, width) in pixels from "896x896", "896" (square), an int, or a pair of ints."""
    items: Any = value
    if isinstance(value, str):
        parts = value.lower().replace("×", "x").split("x")
        if len(value) > MAX_SHOWN_CHARS or not all(p.strip().isdigit() for p in parts):
            items = None
        else:
            items = [int(p) for p in parts]
    if isinstance(items, int) and not isinstance(items, bool):
        items = [items, items]
    if isinstance(items, (tuple, list)) and len(items) == 1:
        items = [items[0], items[0]]
    if not isinstance(items, (tuple, list)) or len(items) != 2:
        raise InvalidWorkload(f"{name}={shown(value)} must be HEIGHTxWIDTH in pixels, e.g. 896x896")
    side = _integer(1, MAX_IMAGE_SIDE, "pixels")
    shown_size = (f"{items[0]}x{items[1]}" if all(isinstance(i, int) for i in items) else shown(value))
    return (side(items[0], f"{name}={shown_size}: height"), side(items[1], f"{name}={shown_size}: width"))


MAX_TENSOR_SPLIT_DEVICES = 64
"""Most entries of llama.cpp's --tensor-split: far above any node's GPU count (llama.cpp's
LLAMA_MAX_DEVICES is 16)."""


def _tensor_split(value: Any, name: str) -> tuple[Fraction, ...]:
    """llama.cpp --tensor-split proportions from "3,1", "0.6,0.4" or a list of numbers (>= 0, not all 0)."""
    items: Any = value
    if isinstance(value, str):
        items = None if len(value) > MAX_SHOWN_CHARS else [part.strip() for part in value.split(",")]
    if not isinstance(items, (tuple, list)) or not 1 <= len(items) <= MAX_TENSOR_SPLIT_DEVICES:
        raise InvalidWorkload(f"{name}={shown(value)} must be proportions per GPU, e.g. 3,1")
    parts = tuple(parse_fraction(item, name) for item in items)
    if any(part < 0 for part in parts) or not any(parts):
        raise InvalidWorkload(f"{name}={shown(value)} must be proportions of at least 0, not all 0")
    return parts


_VLLM_VERSION_RE = re.compile(r"^v?[0-9]{1,4}\.[0-9]{1,4}(\.[0-9]{1,4})?([.+-][0-9A-Za-z.]{0,40})?$")


def _version(value: Any, name: str) -> str:
    """A release number such as "0.11.2" or "v0.20.0" (parsed by core.vllm_profile.parse_vllm_version)."""
    if not isinstance(value, str) or not _VLLM_VERSION_RE.match(value.strip()):
        raise InvalidWorkload(f"{name}={shown(value)} is not a release number; use e.g. 0.11.2 or 0.20.0")
    return value.strip()


def _instance(cls: type) -> _Normalise:
    def normalise(value: Any, name: str) -> Any:
        if not isinstance(value, cls):
            raise InvalidWorkload(f"{name}={shown(value)} must be a {cls.__name__}(...)")
        return value

    return normalise


def _optional(normalise: _Normalise) -> _Normalise:
    return lambda value, name: None if value is None else normalise(value, name)


def _normalise_fields(obj: Any, normalisers: dict[str, _Normalise]) -> None:
    """Replace each field of the frozen `obj` by its normalised value."""
    for name, normalise in normalisers.items():
        object.__setattr__(obj, name, normalise(getattr(obj, name), name))


_TOKENS = _integer(1, MAX_TOKENS, "tokens")
_BATCH = _integer(1, MAX_BATCH_SIZE, "sequences per GPU")
_DEGREE = _integer(1, MAX_GPUS, "GPUs")


@dataclass(frozen=True, slots=True, kw_only=True)
class Parallelism:
    """How the job is split over GPUs. The defaults are one GPU.

    ZeRO, FSDP, offload and sequence parallelism are training settings; device_map (with its per-GPU cap)
    is an inference setting of the transformers runtime. Fields take plain values (`zero=3`, `fsdp="full"`).

    Raises:
        InvalidWorkload: a value of the wrong type or range, or an impossible combination (the message
            names the field): fsdp with zero, sequence_parallel without tp, offload without sharding, ...
    """

    dp: int = 1
    tp: int = 1
    pp: int = 1
    sequence_parallel: bool = False
    zero: ZeroStage = ZeroStage.NONE
    fsdp: FsdpStrategy | None = None
    offload_optimizer: Offload = Offload.NONE
    offload_params: Offload = Offload.NONE
    device_map: DeviceMap | None = None
    max_gpu_memory_bytes: int | None = None     # per-GPU cap for device_map splits
    gpus_per_node: int = 8                      # FSDP hybrid shards within a node; host RAM is per node
    zero_config: ZeroConfig | None = None       # DeepSpeed ZeRO knobs (--deepspeed); None: DeepSpeed defaults
    ep: int = 1                                 # expert-parallel size: routed experts over ep ranks, carved
                                                # out of dp (training) or tp × dp (vLLM); not extra GPUs
    pp_schedule: PipelineSchedule = PipelineSchedule.ONE_F_ONE_B    # pipeline stages' micro-batch order
    pp_virtual_stages: int = 1                  # model chunks per pipeline rank (pp_schedule=interleaved)

    def __post_init__(self) -> None:
        _normalise_fields(self, _PARALLELISM_FIELDS)
        if self.num_gpus > MAX_GPUS:
            raise InvalidWorkload(f"dp × tp × pp = {shown(self.num_gpus)} GPUs is more than {MAX_GPUS:,}, "
                                  "the most memfit accepts")
        if self.fsdp is not None and self.zero is not ZeroStage.NONE:
            raise InvalidWorkload(f"fsdp={self.fsdp} and zero={self.zero} are exclusive; pick one")
        if (self.fsdp is FsdpStrategy.HYBRID and self.dp > self.gpus_per_node
                and self.dp % self.gpus_per_node):
            raise InvalidWorkload(f"fsdp=hybrid with dp={self.dp} does not fill whole nodes of "
                                  f"{self.gpus_per_node} GPUs; use dp ≤ {self.gpus_per_node} or a multiple "
                                  f"of {self.gpus_per_node}")
        if self.sequence_parallel and self.tp == 1:
            raise InvalidWorkload("sequence_parallel splits activations over tensor-parallel ranks; it needs "
                                  "tp > 1")
        if self.max_gpu_memory_bytes is not None and self.device_map is None:
            raise InvalidWorkload("max_gpu_memory_bytes caps a device_map split; set device_map=auto too")
        if self.zero_config is not None and self.zero is ZeroStage.NONE:
            raise InvalidWorkload("zero_config holds DeepSpeed ZeRO settings; it needs zero=1, 2 or 3")
        if self.pp_schedule is not PipelineSchedule.ONE_F_ONE_B and self.pp == 1:
            raise InvalidWorkload(f"pp_schedule={self.pp_schedule} orders pipeline stages' micro-batches; it "
                                  "needs pp > 1")
        self._check_virtual_stages()
        self._check_offload()

    def _check_virtual_stages(self) -> None:
        """Model chunks per rank exist only under the interleaved schedule, which needs two or more (with one
        it is ScheduleInterleaved1F1B's warm-up over a single chunk, not modelled).
        Source: torch 2.13 schedules.py ScheduleInterleaved1F1B (n_local_stages = len(stages))."""
        interleaved = self.pp_schedule is PipelineSchedule.INTERLEAVED
        if self.pp_virtual_stages > 1 and not interleaved:
            raise InvalidWorkload(f"pp_virtual_stages={self.pp_virtual_stages} splits each pipeline rank "
                                  "into model chunks; it needs pp_schedule=interleaved (and pp > 1)")
        if interleaved and self.pp_virtual_stages < 2:
            raise InvalidWorkload("pp_schedule=interleaved runs several model chunks per rank; set "
                                  "pp_virtual_stages to 2 or more")

    def _check_offload(self) -> None:
        """DeepSpeed offloads optimizer states from ZeRO-1 on and parameters under ZeRO-3 only, NVMe only
        under ZeRO-3 (ZeRO-Infinity); FSDP offloads with CPUOffload. Source: DeepSpeed config docs,
        zero_optimization.offload_optimizer / offload_param."""
        sharded = self.fsdp is not None
        if self.offload_optimizer is not Offload.NONE and not (sharded or self.zero.level >= 1):
            raise InvalidWorkload(
                f"offload_optimizer={self.offload_optimizer} needs zero=1, 2 or 3 (or fsdp)")
        if self.offload_params is not Offload.NONE and not (sharded or self.zero is ZeroStage.PARAMETERS):
            raise InvalidWorkload(f"offload_params={self.offload_params} needs zero=3 (or fsdp)")
        for name in ("offload_optimizer", "offload_params"):
            if getattr(self, name) is Offload.NVME and self.zero is not ZeroStage.PARAMETERS:
                raise InvalidWorkload(f"{name}=nvme needs zero=3 (DeepSpeed ZeRO-Infinity); use cpu")

    @property
    def num_gpus(self) -> int:
        return self.dp * self.tp * self.pp


def _zero_config(value: Any, name: str) -> ZeroConfig:
    if not isinstance(value, ZeroConfig):
        raise InvalidWorkload(f"{name} must be a memfit.core.deepspeed.ZeroConfig, got "
                              f"{type(value).__name__}")
    return value


_PARALLELISM_FIELDS: dict[str, _Normalise] = {
    "dp": _DEGREE, "tp": _DEGREE, "pp": _DEGREE,
    "sequence_parallel": _boolean,
    "zero": _choice(ZeroStage),
    "fsdp": _optional(_choice(FsdpStrategy)),
    "offload_optimizer": _choice(Offload),
    "offload_params": _choice(Offload),
    "device_map": _optional(_choice(DeviceMap)),
    "max_gpu_memory_bytes": _optional(_integer(1, MAX_GPU_MEMORY_BYTES, "bytes")),
    "gpus_per_node": _DEGREE,
    "zero_config": _optional(_zero_config),
    "ep": _DEGREE,
    "pp_schedule": _choice(PipelineSchedule),
    "pp_virtual_stages": _DEGREE,
}


DEFAULT_LORA_DROPOUT = Fraction(1, 20)
"""LoRA dropout when none is given: 0.05, the common fine-tuning recipes' value (peft's own default is 0)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Lora:
    """A LoRA adapter configuration as peft's LoraConfig takes it."""

    rank: int
    alpha: int
    targets: tuple[str, ...] = ("all-linear",)
    dropout: Fraction | None = None             # None: DEFAULT_LORA_DROPOUT, or 0 where peft's ParamWrapper
                                                # adapts fused experts (it takes none); only "> 0" matters
    prepare_kbit: bool = True                   # QLoRA: prepare_model_for_kbit_training upcasts to fp32

    def __post_init__(self) -> None:
        _normalise_fields(self, _LORA_FIELDS)
        if not self.targets:
            raise InvalidWorkload("lora_targets is empty; use all-linear or module names like q_proj,v_proj")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise InvalidWorkload(f"lora_dropout={self.dropout} must be in [0, 1)")

    @property
    def rate(self) -> Fraction:
        """The dropout probability peft gets: `dropout`, or DEFAULT_LORA_DROPOUT when left to memfit."""
        return DEFAULT_LORA_DROPOUT if self.dropout is None else self.dropout

    def targets_module(self, name: str) -> bool:
        """Whether a Linear named `name` (q_proj, gate_proj, ...) gets an adapter (all-linear: no lm_head)."""
        if "all-linear" in self.targets:
            return name != "lm_head"
        return name in self.targets


def _as(flag: str, normalise: _Normalise) -> _Normalise:
    """`normalise` with messages naming the CLI flag's field (lora_rank for Lora.rank)."""
    return lambda value, name: normalise(value, flag)


_LORA_COUNT = _integer(1, MAX_COUNT, "")
_LORA_FIELDS: dict[str, _Normalise] = {
    "rank": _as("lora_rank", _LORA_COUNT),
    "alpha": _as("lora_alpha", _LORA_COUNT),
    "targets": _as("lora_targets", _targets),
    "dropout": _optional(_as("lora_dropout", parse_fraction)),
    "prepare_kbit": _boolean,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Inference:
    """An inference job: a prompt of `prompt_tokens`, then `new_tokens` generated (0: one scoring forward).

    Defaults as the CLI's: 2,048 prompt tokens, a scoring forward, batch 1, the checkpoint dtype,
    transformers. Fields take plain values (`quant="nf4"`, `dtype="fp16"`, `runtime="vllm"`).

    Raises:
        InvalidWorkload: a value of the wrong type or range; a training setting (zero, fsdp, offload,
            sequence_parallel); a setting of another runtime (RUNTIME_SETTINGS, KV_CACHE_DTYPES).
    """

    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    new_tokens: int = 0
    batch_size: int = 1
    dtype: DType | None = None                  # None: the checkpoint dtype
    quant: Quant = QUANTS["none"]
    kv_cache_dtype: DType | None = None         # None: the compute dtype; llama.cpp: the K cache type
    v_cache_dtype: DType | None = None          # llama.cpp's V cache type; None: same as kv_cache_dtype
    kv_cache: KvCache = KvCache.DYNAMIC
    attn: AttnImpl = AttnImpl.SDPA
    parallel: Parallelism = field(default_factory=Parallelism)
    runtime: Runtime = Runtime.TRANSFORMERS
    gpu_memory_utilization: Fraction | None = None   # vLLM; None: its default 0.9
    n_gpu_layers: int | None = None             # llama.cpp; None: all layers on the GPU
    n_cpu_moe: int = 0                          # llama.cpp: MoE experts of the first N layers on the CPU
    tensor_split: tuple[Fraction, ...] | None = None   # llama.cpp -ts: layer proportions per GPU; None: even
    block_size: int = DEFAULT_BLOCK_SIZE        # paged cache tokens per block (vLLM)
    max_num_batched_tokens: int | None = None   # vLLM; None: its default for the GPU (8192 or 2048)
    max_num_seqs: int | None = None             # vLLM; None: its default for the GPU (1024 or 256)
    enforce_eager: bool = False                 # vLLM: no CUDA graphs
    kv_cache_memory: int | None = None          # vLLM: KV cache bytes, bypassing gpu_memory_utilization
    vllm_version: str | None = None             # vLLM release modelled ("0.11.2"); None: the newest
    max_cache_tokens: int | None = None         # static cache length; None: prompt + new tokens
    allow_longer: bool = False                  # allow prompt + new beyond max_position_embeddings
    images: int = 0                             # images per sequence; their tokens join the prompt
    image_size: tuple[int, int] | None = None   # (height, width) pixels; None: the model's default size

    def __post_init__(self) -> None:
        _normalise_fields(self, _INFERENCE_FIELDS)
        if self.image_size is not None and self.images == 0:
            raise InvalidWorkload(f"image_size={self.image_size[0]}x{self.image_size[1]} needs images >= 1")
        _check_inference_parallel(self.parallel)
        _check_inference_ep(self.parallel, self.runtime)
        self._check_runtime_settings()
        if self.dtype is not None and not self.dtype.is_float:
            raise InvalidWorkload(f"dtype={self.dtype} is not a compute dtype; use bf16, fp16, fp32 or fp8")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise InvalidWorkload(
                f"gpu_memory_utilization={self.gpu_memory_utilization} must be in (0, 1]"
            )
        if self.max_cache_tokens is not None and self.max_cache_tokens < self.total_tokens:
            raise InvalidWorkload(
                f"max_cache_tokens={self.max_cache_tokens} is shorter than prompt + new tokens "
                f"= {self.total_tokens}"
            )

    def _check_runtime_settings(self) -> None:
        """Runtime-only settings given for another runtime, and cache types the runtime does not offer."""
        given = {
            "gpu_memory_utilization": self.gpu_memory_utilization is not None,
            "block_size": self.block_size != DEFAULT_BLOCK_SIZE,
            "max_num_batched_tokens": self.max_num_batched_tokens is not None,
            "max_num_seqs": self.max_num_seqs is not None,
            "enforce_eager": self.enforce_eager,
            "kv_cache_memory": self.kv_cache_memory is not None,
            "vllm_version": self.vllm_version is not None,
            "n_gpu_layers": self.n_gpu_layers is not None,
            "n_cpu_moe": self.n_cpu_moe != 0,
            "tensor_split": self.tensor_split is not None,
            "v_cache_dtype": self.v_cache_dtype is not None,
            "device_map": self.parallel.device_map is not None,
        }
        for name, runtimes in RUNTIME_SETTINGS.items():
            if given[name] and self.runtime not in runtimes:
                value = getattr(self.parallel if name == "device_map" else self, name)
                owners = ", ".join(sorted(str(r) for r in runtimes))
                raise InvalidWorkload(
                    f"{name}={value} applies to runtime={owners}, not runtime={self.runtime}")
        offered = KV_CACHE_DTYPES[self.runtime]
        for name in ("kv_cache_dtype", "v_cache_dtype"):
            value = getattr(self, name)
            if value is not None and value not in offered:
                options = ", ".join(str(d) for d in DType if d in offered)
                raise InvalidWorkload(f"{name}={value} is not a cache type of runtime={self.runtime}; "
                                      f"use {options}")

    @property
    def total_tokens(self) -> int:
        """Tokens per sequence at the end of the job: prompt plus generated."""
        return self.prompt_tokens + self.new_tokens

    def summary(self) -> str:
        """One line: 'inference, batch 1 × 2048 prompt + 0 new tokens', any other runtime, any quant."""
        text = (f"inference, batch {self.batch_size} × {self.prompt_tokens} prompt + {self.new_tokens} "
                "new tokens")
        if self.runtime is not Runtime.TRANSFORMERS:
            text += f", {self.runtime}"
        if self.images:
            text += f", {self.images} image{'s' if self.images > 1 else ''} per sequence"
        return text + (f", {self.quant.name} weights" if self.quant.is_quantized else "")


_INFERENCE_FIELDS: dict[str, _Normalise] = {
    "prompt_tokens": _TOKENS,
    "new_tokens": _integer(0, MAX_TOKENS, "tokens"),
    "batch_size": _BATCH,
    "dtype": _optional(_dtype),
    "quant": _quant,
    "kv_cache_dtype": _optional(_dtype),
    "v_cache_dtype": _optional(_dtype),
    "kv_cache": _choice(KvCache),
    "attn": _choice(AttnImpl),
    "parallel": _instance(Parallelism),
    "runtime": _choice(Runtime),
    "gpu_memory_utilization": _optional(parse_fraction),
    "n_gpu_layers": _optional(_integer(0, MAX_COUNT, "layers")),
    "n_cpu_moe": _integer(0, MAX_COUNT, "layers"),
    "tensor_split": _optional(_tensor_split),
    "block_size": _TOKENS,
    "max_num_batched_tokens": _optional(_TOKENS),
    "max_num_seqs": _optional(_BATCH),
    "enforce_eager": _boolean,
    "kv_cache_memory": _optional(_integer(1, MAX_GPU_MEMORY_BYTES, "bytes")),
    "vllm_version": _optional(_version),
    "max_cache_tokens": _optional(_TOKENS),
    "allow_longer": _boolean,
    "images": _integer(0, MAX_IMAGES, "images per sequence"),
    "image_size": _optional(_image_size),
}


def _check_inference_parallel(par: Parallelism) -> None:
    """Training-only sharding (ZeRO, FSDP, offload, sequence parallelism, a pipeline schedule) on an
    inference job."""
    for name, default in (("zero", ZeroStage.NONE), ("fsdp", None), ("offload_optimizer", Offload.NONE),
                          ("offload_params", Offload.NONE), ("sequence_parallel", False),
                          ("pp_schedule", PipelineSchedule.ONE_F_ONE_B)):
        value = getattr(par, name)
        if value != default:
            raise InvalidWorkload(f"{name}={value} applies to training, not inference")


def _check_inference_ep(par: Parallelism, runtime: Runtime) -> None:
    """Expert parallelism at inference is vLLM's --enable-expert-parallel, whose EP group is every
    tensor- and data-parallel rank: ep = tp × dp. Source: vllm model_executor/layers/fused_moe/config.py
    FusedMoEParallelConfig.make (use_ep when enable_expert_parallel and dp × tp > 1; ep_size = the
    tp size flattened across dp)."""
    if par.ep == 1:
        return
    if runtime is not Runtime.VLLM:
        raise InvalidWorkload(f"ep={par.ep} applies to runtime=vllm (--enable-expert-parallel) or training, "
                              f"not runtime={runtime}")
    if par.ep != par.tp * par.dp:
        raise InvalidWorkload(f"ep={par.ep} must equal tp × dp = {par.tp * par.dp}: vLLM's expert-parallel "
                              "group spans every tensor- and data-parallel rank (--enable-expert-parallel)")


def _check_training_ep(par: Parallelism) -> None:
    """Training EP groups are carved out of the data-parallel (sharding) ranks: ep divides the ranks one
    tensor is sharded over, and experts are not also split by tp (expert tensor parallelism is not
    modelled). Source: torchtitan parallelisms ParallelDims (ep borrows from dp_shard; experts' FSDP over
    dp_shard / ep, "efsdp"); DeepSpeed moe/layer.py MoE(ep_size) (expert-data-parallel groups of dp / ep)."""
    if par.ep == 1:
        return
    world = min(par.dp, par.gpus_per_node) if par.fsdp is FsdpStrategy.HYBRID else par.dp
    if world % par.ep:
        raise InvalidWorkload(f"ep={par.ep} must divide the data-parallel ranks that shard a tensor "
                              f"({world}); expert groups are carved out of dp")
    if par.tp > 1:
        raise InvalidWorkload(f"ep={par.ep} with tp={par.tp} is not modelled for training (expert tensor "
                              "parallelism); use tp=1 or ep=1")


def _check_interleaved_micro_batches(par: Parallelism, micro_batches: int) -> None:
    """Interleaved 1F1B walks the chunks in rounds of micro_batches // rounds micro-batches, rounds =
    max(1, micro_batches // pp), and needs micro_batches to be a multiple of rounds (any count up to
    2 × pp − 1; multiples of pp above). Source: torch 2.13 schedules.py ScheduleInterleaved1F1B.__init__
    ("requires the number of microbatches to be a multiple of the number of rounds"); Megatron-LM
    asks for a multiple of pp (microbatch_group_size_per_vp_stage) too."""
    if par.pp_schedule is not PipelineSchedule.INTERLEAVED:
        return
    rounds = max(1, micro_batches // par.pp)
    if micro_batches % rounds:
        lower = max(m for m in range(1, micro_batches) if m % max(1, m // par.pp) == 0)
        upper = next(m for m in range(micro_batches + 1, 2 * micro_batches + 1)
                     if m % max(1, m // par.pp) == 0)
        raise InvalidWorkload(f"grad_accum={micro_batches} micro-batches do not split into the {rounds} "
                              f"rounds interleaved 1F1B runs with pp={par.pp}; use grad_accum {lower} or "
                              f"{upper} (a multiple of pp always works)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Training:
    """One training step: micro-batch `batch_size` sequences of `seq_len` tokens per GPU.

    Defaults as the CLI's: 2,048-token sequences, batch 1, full fine-tuning in bf16 with AdamW. Fields take
    plain values (`method="lora"`, `optimizer="adamw-8bit"`, `checkpointing="full"` or True).

    Raises:
        InvalidWorkload: a value of the wrong type or range; LoRA without a config or a config without
            LoRA; QLoRA without a 4-bit bitsandbytes quant; device_map; a runtime other than transformers.
    """

    seq_len: int = DEFAULT_SEQ_LEN
    batch_size: int = 1
    grad_accum: int = 1
    method: Method = Method.FULL
    lora: Lora | None = None
    quant: Quant = QUANTS["none"]
    precision: Precision = Precision.BF16
    optimizer: Optimizer = Optimizer.ADAMW
    checkpointing: Checkpointing = Checkpointing.NONE
    attn: AttnImpl = AttnImpl.SDPA
    parallel: Parallelism = field(default_factory=Parallelism)
    runtime: Runtime = Runtime.TRANSFORMERS
    chunked_loss: bool = False                  # chunked cross-entropy (no full fp32 logits)

    def __post_init__(self) -> None:
        _normalise_fields(self, _TRAINING_FIELDS)
        if self.batch_size * self.grad_accum > MAX_SEQUENCES_PER_STEP:
            raise InvalidWorkload(
                f"grad_accum={shown(self.grad_accum)} makes batch_size × grad_accum more than "
                f"{MAX_SEQUENCES_PER_STEP:,} sequences per step, the most memfit accepts")
        if self.runtime is not Runtime.TRANSFORMERS:
            raise InvalidWorkload(f"runtime={self.runtime} does not train; use runtime=transformers")
        _check_interleaved_micro_batches(self.parallel, self.grad_accum)
        if self.method is not Method.FULL and self.lora is None:
            raise InvalidWorkload(f"method={self.method} needs a LoRA config (lora_rank, lora_alpha)")
        if self.method is Method.FULL and self.lora is not None:
            raise InvalidWorkload("lora applies to method=lora or qlora, not method=full; set method or drop "
                                  "lora")
        if self.method is Method.QLORA and not _is_bnb_4bit(self.quant):
            raise InvalidWorkload(
                f"method=qlora needs a 4-bit bitsandbytes quant (nf4, nf4-dq, fp4, fp4-dq), not "
                f"quant={self.quant.name}")
        _check_training_ep(self.parallel)
        if self.parallel.device_map is not None:
            raise InvalidWorkload(
                f"device_map={self.parallel.device_map} applies to inference, not training; split training "
                "with dp, tp, pp, zero or fsdp")

    def summary(self) -> str:
        """One line: 'training (lora), batch 1 × 2048 tokens, adamw' and any quant."""
        text = f"training ({self.method}), batch {self.batch_size} × {self.seq_len} tokens, {self.optimizer}"
        return text + (f", {self.quant.name} weights" if self.quant.is_quantized else "")


def _is_bnb_4bit(weights: Quant) -> bool:
    """A bitsandbytes 4-bit format (nf4, fp4, double-quantized or not: 4 bits plus block scales), as QLoRA
    loads its base model. Source: Dettmers et al. 2023 (QLoRA, §3); peft prepare_model_for_kbit_training."""
    return weights.kind.startswith("bnb") and 4 <= weights.bits_per_weight < 5


_TRAINING_FIELDS: dict[str, _Normalise] = {
    "seq_len": _TOKENS,
    "batch_size": _BATCH,
    "grad_accum": _integer(1, MAX_SEQUENCES_PER_STEP, "steps"),
    "method": _choice(Method),
    "lora": _optional(_instance(Lora)),
    "quant": _quant,
    "precision": _choice(Precision),
    "optimizer": _choice(Optimizer),
    "checkpointing": _choice(Checkpointing),
    "attn": _choice(AttnImpl),
    "parallel": _instance(Parallelism),
    "runtime": _choice(Runtime),
    "chunked_loss": _boolean,
}

NORMALISED_FIELDS: dict[type, frozenset[str]] = {
    cls: frozenset(table) for cls, table in ((Parallelism, _PARALLELISM_FIELDS), (Lora, _LORA_FIELDS),
                                             (Inference, _INFERENCE_FIELDS), (Training, _TRAINING_FIELDS))
}
"""The fields each workload class normalises; a test checks that it is every field (`dataclasses.fields`)."""


Workload = Inference | Training
