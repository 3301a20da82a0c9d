"""Workloads: what the user wants to run. `Inference` and `Training` are validated in `__post_init__`.

`Workload = Inference | Training`; `estimate()` dispatches on it with `match`. Every field is mirrored by a
kebab-case CLI flag and a snake_case JSON key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from memfit.core.choices import (
    AttnImpl,
    Checkpointing,
    DeviceMap,
    FsdpStrategy,
    KvCache,
    Method,
    Offload,
    Optimizer,
    Precision,
    Runtime,
    ZeroStage,
)
from memfit.core.dtypes import QUANTS, DType, Quant
from memfit.core.errors import InvalidWorkload


def _at_least(value: int, minimum: int, name: str) -> None:
    if value < minimum:
        raise InvalidWorkload(f"{name}={value} must be at least {minimum}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Parallelism:
    """How the job is split over GPUs. The defaults are one GPU."""

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

    def __post_init__(self) -> None:
        for name in ("dp", "tp", "pp"):
            _at_least(getattr(self, name), 1, name)
        if self.fsdp is not None and self.zero is not ZeroStage.NONE:
            raise InvalidWorkload(f"fsdp={self.fsdp} and zero={self.zero} are exclusive; pick one")
        if self.max_gpu_memory_bytes is not None:
            _at_least(self.max_gpu_memory_bytes, 1, "max_gpu_memory")

    @property
    def num_gpus(self) -> int:
        return self.dp * self.tp * self.pp


@dataclass(frozen=True, slots=True, kw_only=True)
class Lora:
    """A LoRA adapter configuration as peft's LoraConfig takes it."""

    rank: int
    alpha: int
    targets: tuple[str, ...] = ("all-linear",)
    dropout: Fraction = Fraction(1, 20)         # only "> 0" matters: peft then keeps a dropped copy
    prepare_kbit: bool = True                   # QLoRA: prepare_model_for_kbit_training upcasts to fp32

    def __post_init__(self) -> None:
        _at_least(self.rank, 1, "lora_rank")
        _at_least(self.alpha, 1, "lora_alpha")
        if not self.targets:
            raise InvalidWorkload("lora_targets is empty; use all-linear or module names like q_proj,v_proj")
        if not 0 <= self.dropout < 1:
            raise InvalidWorkload(f"lora_dropout={self.dropout} must be in [0, 1)")

    def targets_module(self, name: str) -> bool:
        """Whether a Linear named `name` (q_proj, gate_proj, ...) gets an adapter (all-linear: no lm_head)."""
        if "all-linear" in self.targets:
            return name != "lm_head"
        return name in self.targets


@dataclass(frozen=True, slots=True, kw_only=True)
class Inference:
    """An inference job: a prompt of `prompt_tokens`, then `new_tokens` generated (0: one scoring forward)."""

    prompt_tokens: int
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
    block_size: int = 16                        # paged cache tokens per block (vLLM default)
    max_cache_tokens: int | None = None         # static cache length; None: prompt + new tokens
    allow_longer: bool = False                  # allow prompt + new beyond max_position_embeddings

    def __post_init__(self) -> None:
        _at_least(self.prompt_tokens, 1, "prompt_tokens")
        _at_least(self.new_tokens, 0, "new_tokens")
        _at_least(self.batch_size, 1, "batch_size")
        _at_least(self.block_size, 1, "block_size")
        if self.n_gpu_layers is not None:
            _at_least(self.n_gpu_layers, 0, "n_gpu_layers")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise InvalidWorkload(
                f"gpu_memory_utilization={self.gpu_memory_utilization} must be in (0, 1]"
            )
        if self.max_cache_tokens is not None and self.max_cache_tokens < self.total_tokens:
            raise InvalidWorkload(
                f"max_cache_tokens={self.max_cache_tokens} is shorter than prompt + new tokens "
                f"= {self.total_tokens}"
            )

    @property
    def total_tokens(self) -> int:
        """Tokens per sequence at the end of the job: prompt plus generated."""
        return self.prompt_tokens + self.new_tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class Training:
    """One training step: micro-batch `batch_size` sequences of `seq_len` tokens per GPU."""

    seq_len: int
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
        _at_least(self.seq_len, 1, "seq_len")
        _at_least(self.batch_size, 1, "batch_size")
        _at_least(self.grad_accum, 1, "grad_accum")
        if self.method is not Method.FULL and self.lora is None:
            raise InvalidWorkload(f"method={self.method} needs a LoRA config (lora_rank, lora_alpha)")
        if self.method is Method.QLORA and not self.quant.is_quantized:
            raise InvalidWorkload("method=qlora needs a 4-bit quant (nf4, nf4-dq, fp4, fp4-dq)")
        if self.runtime is not Runtime.TRANSFORMERS:
            raise InvalidWorkload(f"runtime={self.runtime} does not train; use runtime=transformers")


Workload = Inference | Training
